"""The purse conformance checks (`unioncard.testing.purse_checks`) in process, on T=1 and T=0
cards, on the simulator and on a card written from the protocol alone; and proof that they
catch a card that misbehaves."""

import calendar
import datetime as dt
import doctest
import re
import subprocess
import sys

import protocol_card
import pytest

from unioncard.apdu import purse as cmd
from unioncard.apdu import records
from unioncard.applet_sim import issue_member_card, issue_psam
from unioncard.terminal import Decision
from unioncard.terminal.etc import CHINA_STANDARD_TIME
from unioncard.testing import purse_checks, purse_rig
from unioncard.testing.purse_checks import CHECKS, CheckFailure, run_check
from unioncard.testing.purse_rig import PurseRig, select_application
from unioncard.transport import Channel, InProcessTransport

CASES = [(name, app) for name, check in CHECKS.items() for app in check.apps]


@pytest.fixture(params=["T=1", "T=0"])
def pair(request, keys, member):
    card = issue_member_card(member, keys, card_no=77, transit_balance=3_000, etc_balance=0,
                             protocol=request.param, random_source=11)
    psam = issue_psam(keys, "0A0B0C0D0E0F", protocol=request.param, random_source=12)
    return card, psam


def test_the_ten_checks_and_the_purses_they_apply_to():
    assert list(CHECKS) == [
        "purchase", "load", "capp_purchase", "insufficient_balance", "bad_mac1", "bad_mac2",
        "debit_without_initialize", "blocked_application", "transaction_prove",
        "three_mac_errors"]
    assert CHECKS["capp_purchase"].apps == ("etc",)
    assert [name for name, check in CHECKS.items() if check.destructive] == ["three_mac_errors"]
    assert all(check.description for check in CHECKS.values())


@pytest.mark.parametrize(("name", "app"), CASES)
def test_check(pair, keys, name, app):
    card, psam = pair
    rig = PurseRig.in_process(card, psam, keys)
    result = run_check(name, rig, app=app)
    assert result.name == name and result.app == app and result.outcomes
    purse = card.purse(app)
    assert purse.balance == result.balance_after
    assert card.last_internal_error is None
    assert rig.journal.pending() == []
    if CHECKS[name].destructive:
        assert purse.state.name == "LOCKED"
    else:
        assert purse.state.name == "ACTIVE" and purse.mac_errors == 0


def test_all_non_destructive_checks_in_a_row_on_one_card(pair, keys):
    card, psam = pair
    rig = PurseRig.in_process(card, psam, keys)
    for name, app in CASES:
        if not CHECKS[name].destructive:
            run_check(name, rig, app=app)
    assert card.purse("etc").offline_seq > 0 and card.purse("transit").online_seq > 0
    assert rig.journal.counts()["pending"] == 0
    for app in ("transit", "etc"):
        assert card.purse(app).state.name == "ACTIVE" and card.purse(app).mac_errors == 0


@pytest.mark.parametrize("present_again", ["reset", None])
@pytest.mark.parametrize("app", ["transit", "etc"])
def test_transaction_prove_across_a_reset_or_without_one(pair, keys, app, present_again):
    card, psam = pair
    card_transport, psam_transport = InProcessTransport(card), InProcessTransport(psam)
    card_transport.power_on()
    psam_transport.power_on()
    resets = []

    def reset():
        resets.append(card_transport.reset())

    rig = PurseRig(Channel(card_transport), Channel(psam_transport), keys,
                   present_again=reset if present_again else None)
    result = run_check("transaction_prove", rig, app=app)
    assert result.balance_before - result.balance_after == 120
    assert len(resets) == (1 if present_again else 0)
    recovered = [o for o in result.outcomes if o.recovered]
    assert len(recovered) == 1 and recovered[0].decision is Decision.APPROVED
    assert [o.decision for o in result.outcomes].count(Decision.INTERRUPTED) == 1


def test_unknown_check_and_purse(pair, keys):
    card, psam = pair
    rig = PurseRig.in_process(card, psam, keys)
    with pytest.raises(KeyError):
        run_check("refund", rig)
    with pytest.raises(ValueError):
        run_check("capp_purchase", rig, app="transit")
    with pytest.raises(ValueError):
        run_check("purchase", rig, app="passbook")


def test_the_rig_clock_and_its_journal_file(pair, keys, tmp_path):
    card, psam = pair
    with pytest.raises(ValueError):
        PurseRig.in_process(card, psam, keys, step=dt.timedelta(minutes=10))
    with PurseRig.in_process(card, psam, keys, journal=tmp_path / "journal.sqlite",
                             start=dt.datetime(2026, 6, 1, 9, 0)) as rig:
        outcome = rig.purchase("transit", 200)
        assert outcome.decision is Decision.APPROVED and outcome.charged_amount == 200
        assert outcome.record is not None
        assert outcome.record.when == dt.datetime(2026, 6, 1, 9, 0)
        assert rig.tick() == dt.datetime(2026, 6, 1, 9, 1)
        assert rig.journal.counts()["completed"] == 1
    assert (tmp_path / "journal.sqlite").exists()


class Tampered:
    """A transport whose answers to commands starting with ``match`` are altered."""

    def __init__(self, transport, match: bytes, change):
        self.transport, self.match, self.change = transport, match, change

    def power_on(self):
        return self.transport.power_on()

    def power_off(self):
        self.transport.power_off()

    def transmit(self, command: bytes) -> bytes:
        response = self.transport.transmit(command)
        return self.change(response) if command.startswith(self.match) else response


def flip_first(response: bytes) -> bytes:
    return bytes([response[0] ^ 1]) + response[1:] if len(response) > 2 else response


@pytest.mark.parametrize(
    ("name", "app", "match", "change", "detail"),
    [
        ("purchase", "transit", "805401", flip_first, "^TAC .* does not verify"),
        ("purchase", "transit", "805C", flip_first, "balance INITIALIZE gave .* is 3000,"),
        ("purchase", "etc", "805401", lambda r: r[:4] + bytes([r[4] ^ 1]) + r[5:],
         "MAC2 does not verify"),
        ("load", "transit", "8052", flip_first, "^load TAC .* does not verify"),
        ("load", "transit", "805000", lambda r: r[:12] + bytes(4) + r[16:],
         "load MAC1 does not verify"),
        ("insufficient_balance", "transit", "805001", lambda r: b"\x90\x00",
         "INITIALIZE FOR PURCHASE .* answered 9000, expected 9401"),
        ("bad_mac1", "transit", "805401", lambda r: b"\x90\x00",
         "DEBIT with a wrong MAC1 answered 9000, expected 9302"),
        ("transaction_prove", "transit", "805A", flip_first, r"^proof \(MAC2, TAC\) is"),
        ("blocked_application", "transit", "00A404", lambda r: r[:-2] + b"\x90\x00",
         "SELECT transit purse answered 9000, expected 6283"),
        ("capp_purchase", "etc", "00B201CC", lambda r: r[:2] + bytes(41) + r[-2:],
         "EF 0019 record 1 after the entry is"),
        ("debit_without_initialize", "etc", "805401", lambda r: b"\x90\x00",
         "answered 9000 with 0 bytes, expected 6985"),
        ("three_mac_errors", "transit", "00A404", lambda r: r[:-2] + b"\x90\x00",
         "SELECT transit purse answered 9000, expected 9303"),
    ],
)
def test_checks_catch_a_misbehaving_card(keys, member, name, app, match, change, detail):
    card = issue_member_card(member, keys, card_no=77, transit_balance=3_000,
                             etc_balance=3_000, plate="京A12345")
    psam = issue_psam(keys, "0A0B0C0D0E0F")
    card_transport, psam_transport = InProcessTransport(card), InProcessTransport(psam)
    card_transport.power_on()
    psam_transport.power_on()
    bad = Tampered(card_transport, bytes.fromhex(match), change)
    rig = PurseRig(Channel(bad), Channel(psam_transport), keys)
    with pytest.raises(CheckFailure, match=name) as caught:
        run_check(name, rig, app=app)
    failure = caught.value
    assert (failure.check, failure.app) == (name, app) and failure.step
    assert failure.exchanges and "last exchanges: " in str(failure)
    assert failure.exchanges[-1].number == rig.count
    assert re.search(detail, failure.detail), failure.detail


def test_a_failure_names_the_check_the_step_and_the_last_exchanges(keys, member):
    card = issue_member_card(member, keys, card_no=77, transit_balance=3_000)
    psam = issue_psam(keys, "0A0B0C0D0E0F")
    card_transport, psam_transport = InProcessTransport(card), InProcessTransport(psam)
    card_transport.power_on()
    psam_transport.power_on()
    bad = Tampered(card_transport, bytes.fromhex("805401"), flip_first)
    rig = PurseRig(Channel(bad), Channel(psam_transport), keys)
    with pytest.raises(CheckFailure) as caught:
        run_check("purchase", rig)
    text = str(caught.value)
    assert text.startswith("purchase (transit purse), at purchase: TAC ")
    trail = text.split("[last exchanges: ")[1]
    assert trail.count(" -> ") == purse_checks.TRAIL
    assert "card 805401000F" in trail and "PSAM 8072000004" in trail


def test_the_entry_record_on_the_card_is_laid_out_as_protocol_section_4_5(keys, member):
    """The EF 0019 record the capp_purchase check expects (docs/protocol.md §4.5): AA 29, lock,
    network, station, lane, unix time (UTC), class, status, ..., plate (GBK)."""
    card = issue_member_card(member, keys, card_no=8, etc_balance=1_000, plate="京A1")
    rig = PurseRig.in_process(card, issue_psam(keys, "001122334455"), keys)
    outcome = rig.run(rig.entry_session())
    assert outcome.decision is Decision.APPROVED and outcome.record is not None
    assert select_application(rig.card, "etc").sw == 0x9000
    record = rig.card.transmit(cmd.read_record(0x19, 1, 43)).data
    assert len(record) == 43 and record[:2] == b"\xaa\x29"
    assert record[3:8].hex() == "1101020304"
    unix = calendar.timegm(outcome.record.when.replace(tzinfo=CHINA_STANDARD_TIME)
                           .utctimetuple())
    assert int.from_bytes(record[8:12], "big") == unix
    assert record[12:14] == b"\x01\x03"
    assert record[27:39] == "京A1".encode("gbk") + bytes(8)
    with pytest.raises(ValueError):
        records.build(records.CAPP_RECORD, lock=0, network=b"\x00\x01", station=b"\x00\x01",
                      lane=1, unix_time=0, vehicle_class=1, status=3,
                      marker_station=bytes(9), staff_no=bytes(3), shift=0,
                      plate="京A123456789012", reserved=bytes(4))


def test_the_module_example_holds():
    """unioncard.testing is left out of tests/test_doctests.py; its example runs here."""
    result = doctest.testmod(purse_checks, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_the_rig_is_importable_from_the_checks_module_too():
    """docs/simulator.md imports `PurseRig` with the checks."""
    assert purse_checks.PurseRig is purse_rig.PurseRig and "PurseRig" in purse_checks.__all__


def test_the_checks_need_neither_pytest_nor_hypothesis():
    script = ("import sys, unioncard.testing.purse_checks, unioncard.testing.purse_rig; "
              "print(sorted(m for m in ('pytest', 'hypothesis', 'unioncard.applet_sim') "
              "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("protocol", ["T=0", "T=1"])
@pytest.mark.parametrize(("name", "app"), CASES)
def test_check_on_a_card_written_from_the_protocol_alone(keys, name, app, protocol):
    """The checks rely on docs/protocol.md only: they pass on `protocol_card`, a card and a
    PSAM written from it without any unioncard code (tests/conformance/)."""
    card = protocol_card.ProtocolCard(transit_balance=3_000, etc_balance=0, protocol=protocol,
                                      seed=3)
    psam = protocol_card.ProtocolPsam(terminal_id="000000000002",
                                      purchase_keys=keys.purchase_master_keys())
    rig = PurseRig.in_process(card, psam, keys)
    result = run_check(name, rig, app=app)
    purse = next(p for p in rig.read().details["purses"] if p["application"] == app)
    if CHECKS[name].destructive:  # locked for good: a terminal cannot read its balance
        assert purse.get("state") == "locked" or "locked" in purse.get("reason", "")
    else:
        assert purse["balance"] == result.balance_after
