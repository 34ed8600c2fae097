"""Power cuts at every NVM write of purchase, load and CAPP purchase.

For each flow the committing command (DEBIT or CREDIT) is first run with the fault
injector recording its physical writes; then, for every write, a fresh card has the
power cut just before it and just after it.  After power-up the debit (or load)
happened completely or not at all - exactly when the cut came after the commit flag -
and GET TRANSACTION PROVE answers the right MAC2 and TAC when it happened.
"""

import datetime as dt
from dataclasses import dataclass

import pytest

from unioncard.apdu import CommandAPDU
from unioncard.apdu import purse as cmd
from unioncard.applet_sim import Phase, PowerLoss, issue_member_card, issue_psam
from unioncard.applet_sim.nvm import Step
from unioncard.terminal import Decision
from unioncard.testing.purse_rig import (
    PurseRig,
    expected_tac,
    prepare_credit,
    prepare_debit,
    select_application,
)
from unioncard.transport import Channel, InProcessTransport

AMOUNT = 700
CAPP_RECORD = b"\xaa\x29" + bytes(range(1, 42))
WHEN = dt.datetime(2026, 3, 15, 8, 30)
TERMINAL_ID = bytes.fromhex("001122334455")


@dataclass
class Prepared:
    card: Channel  # links to the card and the PSAM, for what follows the cut
    psam: Channel
    command: CommandAPDU
    seq: int  # INITIALIZE's offline or online seq
    balance: int


def links(card, psam):
    """Channels to the (powered) card and PSAM."""
    channels = []
    for device in (card, psam):
        transport = InProcessTransport(device)
        transport.power_on()
        channels.append(Channel(transport))
    return channels


def fresh(keys, member):
    card = issue_member_card(member, keys, card_no=5, transit_balance=5_000, etc_balance=5_000,
                             random_source=21)
    psam = issue_psam(keys, "001122334455", random_source=22)
    card.power_on()
    psam.power_on()
    return card, psam


def prepare(card, psam, keys, flow: str) -> Prepared:
    """Run the flow up to its committing command, which is returned unsent."""
    kind, app = flow.split("-")
    link, sam = links(card, psam)
    if kind == "load":
        load = prepare_credit(link, keys, app, AMOUNT, when=WHEN, terminal_id=TERMINAL_ID)
        return Prepared(link, sam, load.command, load.online_seq, load.balance)
    capp = kind == "capp"
    debit = prepare_debit(link, sam, app, AMOUNT, when=WHEN,
                          capp_record=CAPP_RECORD if capp else None)
    assert debit.tx_type == (0x09 if capp else 0x06)
    return Prepared(link, sam, debit.command, debit.offline_seq, debit.balance)


FLOWS = ["purchase-transit", "purchase-etc", "load-transit", "load-etc", "capp-etc"]
EXPECTED_STEPS = {
    "purchase": ["purse.balance", "purse.offline_seq", "purse.log", "purse.log_pointer",
                 "purse.proof"],
    "load": ["purse.balance", "purse.online_seq", "purse.log", "purse.log_pointer"],
    "capp": ["etc.capp_record", "purse.balance", "purse.offline_seq", "purse.log",
             "purse.log_pointer", "purse.proof"],
}


def baseline(keys, member, flow):
    card, psam = fresh(keys, member)
    prepared = prepare(card, psam, keys, flow)
    card.faults.start_trace()
    answer = card.transmit(prepared.command.to_bytes())
    assert answer[-2:] == b"\x90\x00"
    return list(card.faults.trace), answer[:-2]


TRACES = {}


def trace_of(keys, member, flow):
    if flow not in TRACES:
        TRACES[flow] = baseline(keys, member, flow)
    return TRACES[flow]


@pytest.mark.parametrize("flow", FLOWS)
def test_tear_point_counts(keys, member, flow):
    """The named steps and the physical writes (tear points) of each flow."""
    trace, _ = trace_of(keys, member, flow)
    steps = EXPECTED_STEPS[flow.split("-")[0]]
    assert [p.step for p in trace if p.phase is Phase.JOURNAL] == steps
    assert [p.step for p in trace if p.phase is Phase.APPLY] == steps
    assert [p.phase for p in trace].count(Phase.COMMIT) == 1
    assert trace[-1].step == Step.CLEAR
    assert len(trace) == 2 * len(steps) + 2  # journal + commit + apply + clear


def state(card, app):
    purse = card.purse(app)
    capp = None
    if app == "etc":
        from unioncard.applet_sim.files import read_record

        capp = read_record(card.nvm, card.fs.node("3F00/1001/0019"), 1)
    return (purse.balance, purse.online_seq, purse.offline_seq, purse.log(), purse.proof, capp,
            purse.mac_errors)


def _cuts():
    """Every (flow, write number, after) - the write counts are checked against the real
    traces by test_tear_point_counts."""
    for flow in FLOWS:
        writes = 2 * len(EXPECTED_STEPS[flow.split("-")[0]]) + 2
        for index in range(1, writes + 1):
            for after in (False, True):
                yield pytest.param((flow, index, after),
                                   id=f"{flow}-w{index}-{'after' if after else 'before'}")


@pytest.mark.parametrize("cut", list(_cuts()))
def test_power_cut(keys, member, cut):
    flow, index, after = cut
    kind, app = flow.split("-")
    trace, good_answer = trace_of(keys, member, flow)
    commit_at = next(i for i, p in enumerate(trace, 1) if p.phase is Phase.COMMIT)
    must_happen = index > commit_at or (index == commit_at and after)

    card, psam = fresh(keys, member)
    prepared = prepare(card, psam, keys, flow)
    before = state(card, app)
    card.faults.cut_at_write(index, after=after)
    with pytest.raises(PowerLoss) as loss:
        card.transmit(prepared.command.to_bytes())
    assert loss.value.point == trace[index - 1]
    assert not card.powered
    card.power_on()
    assert card.nvm.journal == [] and not card.nvm.committed
    now = state(card, app)
    balance, online, offline, log, proof, capp, _ = now
    if not must_happen:
        assert now == before
        if kind != "load":
            # no proof for the purchase that did not happen
            assert select_application(prepared.card, app).sw == 0x9000
            tx_type = 0x09 if kind == "capp" else 0x06
            prove = cmd.get_transaction_prove(tx_type, prepared.seq + 1)
            assert prepared.card.transmit(prove).sw == 0x9406
    else:
        sign = 1 if kind == "load" else -1
        assert balance == prepared.balance + sign * AMOUNT
        assert len(log) == len(before[3]) + 1 and log[0].amount == AMOUNT
        if kind == "load":
            assert (online, offline) == (prepared.seq + 1, before[2])
            assert log[0].seq == prepared.seq and log[0].tx_type == 0x02
        else:
            tx_type = 0x09 if kind == "capp" else 0x06
            assert (online, offline) == (before[1], prepared.seq + 1)
            assert log[0].seq == prepared.seq and log[0].tx_type == tx_type
            assert proof == (prepared.seq + 1, tx_type, good_answer[4:], good_answer[:4])
            assert select_application(prepared.card, app).sw == 0x9000
            answer = prepared.card.transmit(cmd.get_transaction_prove(tx_type, prepared.seq + 1))
            assert answer.sw == 0x9000
            assert answer.data == good_answer[4:] + good_answer[:4]  # MAC2 then TAC
            # MAC2 checks in the PSAM
            assert prepared.psam.transmit(cmd.sam_credit_for_purchase(answer.data[:4])).sw == 0x9000
        if kind == "capp":
            assert capp == CAPP_RECORD
    # and the card goes on working: a purchase through the terminal engine
    outcome = PurseRig.in_process(card, psam, keys).purchase(app, 1)
    assert outcome.decision is Decision.APPROVED and not outcome.warnings, outcome.reason
    assert outcome.record.tac == expected_tac(keys, outcome.record)


@pytest.mark.parametrize("index", range(1, 8))
def test_power_cut_during_recovery(keys, member, index):
    """A committed journal whose replay is itself cut is replayed again at the next power-up."""
    card, psam = fresh(keys, member)
    prepared = prepare(card, psam, keys, "capp-etc")
    card.faults.cut_after(Step.COMMIT)
    with pytest.raises(PowerLoss):
        card.transmit(prepared.command.to_bytes())
    card.faults.cut_at_write(index)
    with pytest.raises(PowerLoss):
        card.power_on()
    assert not card.powered
    card.power_on()
    balance, _, offline, log, _, capp, _ = state(card, "etc")
    assert (balance, offline, capp) == (prepared.balance - AMOUNT, prepared.seq + 1, CAPP_RECORD)
    assert log[0].tx_type == 0x09


def test_capp_cache_writes_nothing_and_dies_with_the_power(keys, member):
    card, psam = fresh(keys, member)
    link, sam = links(card, psam)
    debit = prepare_debit(link, sam, "etc", AMOUNT, when=WHEN, capp=True)
    card.faults.start_trace()
    assert link.transmit(cmd.update_capp_data_cache(CAPP_RECORD, 0x19)).sw == 0x9000
    assert card.faults.trace == []
    card.power_off()
    card.power_on()
    assert select_application(link, "etc").sw == 0x9000
    assert link.transmit(debit.command).sw == 0x6985
    assert state(card, "etc")[5] == b"\xaa\x29" + bytes(41)
