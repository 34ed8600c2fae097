"""The purse conformance checks through pcscd + vpcd + pyscard, on T=1 and T=0 simulated
cards, and a power cut during DEBIT seen through the virtual reader by the terminal engine."""

import pytest

from unioncard.apdu import purse as cmd
from unioncard.applet_sim import Step
from unioncard.offline import RecordFlags
from unioncard.terminal import Decision
from unioncard.testing.purse_checks import CHECKS, run_check
from unioncard.testing.purse_rig import PurseRig, expected_tac, select_application

CASES = [(name, app) for name, c in CHECKS.items() for app in c.apps if not c.destructive]
DESTRUCTIVE = [(name, app) for name, c in CHECKS.items() for app in c.apps if c.destructive]


@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_every_purse_check_through_pcscd(pcsc_serve, sim_card, sim_psam, sim_keystore,
                                         protocol):
    sim_card.protocol = sim_psam.protocol = protocol
    reader = pcsc_serve(sim_card, sim_psam)
    assert reader.transport.active_protocol == protocol
    rig = PurseRig(reader.channel, reader.psam_channel, sim_keystore,
                   present_again=reader.transport.reset)
    for name, app in CASES:
        result = run_check(name, rig, app=app)
        with reader.bridge.lock:
            purse = sim_card.purse(app)
            assert purse.balance == result.balance_after, (name, app)
            assert (purse.state.name, purse.mac_errors) == ("ACTIVE", 0), (name, app)
    for name, app in DESTRUCTIVE:  # last: it locks the purse for good
        run_check(name, rig, app=app)
        with reader.bridge.lock:
            assert sim_card.purse(app).state.name == "LOCKED"
    assert rig.journal.pending() == []
    assert sim_card.last_internal_error is None


@pytest.mark.parametrize(("cut", "committed"), [("before", False), ("after", True)])
def test_power_cut_during_debit_through_the_reader(virtual_reader, sim_card, fault_injector,
                                                   sim_keystore, cut, committed):
    """The first tap loses the card during DEBIT and stays pending; the card comes back; the
    second tap settles it (recovered when the card committed, voided and charged anew when
    it did not): charged once either way."""
    transport = virtual_reader.transport
    rig = PurseRig(virtual_reader.channel, virtual_reader.psam_channel, sim_keystore)
    before = rig.read().details["balances"]["transit"]
    if cut == "before":
        fault_injector.cut_before(Step.PURSE_BALANCE)
    else:
        fault_injector.cut_after(Step.COMMIT)
    first = rig.purchase("transit", 250)
    assert first.decision is Decision.INTERRUPTED
    assert fault_injector.fired is not None
    debit = rig.answer_to(0x54)
    assert debit is not None and debit.response is None and "did not answer" in debit.error
    [pending] = rig.journal.pending()
    assert pending.amount == 250 and pending.balance_before == before

    transport.wait_for_card(5, present=False)  # torn out of the reader...
    transport.wait_for_card(5)  # ...and back: the terminal powers it up again
    transport.power_on()
    assert select_application(rig.card, "transit").sw == 0x9000
    balance = rig.card.transmit(cmd.get_balance())
    assert int.from_bytes(balance.data, "big") == before - (250 if committed else 0)
    proof = rig.card.transmit(cmd.get_transaction_prove(0x06, pending.card_seq + 1))
    if committed:  # the card has the TAC of the purchase whose answer was lost
        assert proof.sw == 0x9000 and len(proof.data) == 8
    else:
        assert proof.sw == 0x9406

    second = rig.purchase("transit", 250)
    assert second.decision is Decision.APPROVED and second.record is not None
    assert second.recovered is committed
    assert second.record.tac == expected_tac(sim_keystore, second.record)
    if committed:
        assert second.record.tac == proof.data[4:]
        assert second.record.flags & RecordFlags.RECOVERED
    assert rig.read().details["balances"]["transit"] == before - 250  # charged once
    counts = rig.journal.counts()
    assert counts["pending"] == 0
    assert (counts["completed"], counts["voided"]) == ((1, 0) if committed else (1, 1))
