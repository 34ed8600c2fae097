"""The terminal engine's acceptance scenarios, on every transport and with two kinds of card.

Each scenario runs on a `Lane`: a card and a PSAM reached in process or through
pcscd + vpcd + pyscard, and a journal in SQLite on disk.  The cards are the
project's simulator and `protocol_card` (a card and a PSAM written only from
docs/protocol.md, sharing no code with unioncard), so the engine is shown to rely on
the protocol and on nothing either implementation does beyond it.  The
simulator's card speaks T=1 with a T=0 PSAM; the independent card speaks T=0
with a T=1 PSAM.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import protocol_card
import pytest

from unioncard.applet_sim import MemberData, Step, issue_member_card, issue_psam
from unioncard.crypto import Keystore
from unioncard.offline import Application, OfflineRecord, RecordFlags
from unioncard.tariffs import Mode, loads
from unioncard.terminal import (
    CardRead,
    Decision,
    EtcEntry,
    EtcExit,
    KeystoreLoadHost,
    Load,
    Outcome,
    PosPurchase,
    TransactionJournal,
    TransitPurchase,
    parse_toll_table,
    run,
)
from unioncard.terminal.disbursements import credit_pending, read_disbursements
from unioncard.terminal.purchase import MAC_REFUSAL_MEMORY
from unioncard.testing.purse_rig import expected_tac
from unioncard.transport import Channel, InProcessTransport
from unioncard.transport.recording import TraceRecorder
from unioncard.transport.replay import Replay

NOW = dt.datetime(2026, 5, 1, 8, 30)
KEYS = Keystore.test()
OTHER_KEYS = Keystore.from_toml(  # other purchase master keys (not only in the parity bits)
    KEYS.to_toml().replace('purchase_mk = "4041', 'purchase_mk = "4244')
    .replace('purchase_mk = "7071', 'purchase_mk = "7274'))
TOLLS = parse_toll_table('network = "1101"\n[[toll]]\nentry = "0203"\nexit = "0007"\n'
                         'fen = { 1 = 10000, 2 = 15000 }\n')
LOAD_TERMINAL = bytes.fromhex("0000000000AA")
PARTNER_RULES = loads("""
[ruleset]
name = "a partner supermarket"
[[rule]]
id = "supermarket-8"
mode = "pos"
[rule.when]
card_types = [0x55]
merchants = ["SUPERMARKET-0042"]
[rule.effect]
kind = "percent"
percent = "8"
[[rule]]
id = "grocery-rebate-5"
mode = "pos"
stackable = true
[rule.when]
card_types = [0x55]
merchant_categories = ["5411"]
[rule.effect]
kind = "rebate"
percent = "5"
""")


def _sim_cards(card_type: int, expiry: dt.date | None, psam_keys: Keystore) -> tuple[Any, Any]:
    member = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                        dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x02)
    card = issue_member_card(member, KEYS, card_no=7, transit_balance=5000, etc_balance=20000,
                             plate="京A12345", card_type=card_type, expiry=expiry,
                             issue_date=dt.date(2024, 1, 1), random_source=7)
    psam = issue_psam(psam_keys, "000000000001", protocol="T=0", random_source=8)
    return card, psam


def _protocol_cards(card_type: int, expiry: dt.date | None,
                    psam_keys: Keystore) -> tuple[Any, Any]:
    card = protocol_card.ProtocolCard(
        transit_balance=5000, etc_balance=20000, card_type=card_type, protocol="T=0", seed=3,
        start_date="20240101", expiry_date=(expiry or dt.date(2035, 12, 31)).strftime("%Y%m%d"))
    psam = protocol_card.ProtocolPsam(terminal_id="000000000002",
                                      purchase_keys=psam_keys.purchase_master_keys())
    return card, psam


CARD_KINDS = {"simulator": _sim_cards, "protocol-card": _protocol_cards}


@dataclass
class Lane:
    """A card and a PSAM on some transport, a journal on disk, and the means to pull the card."""

    kind: str
    card: Any
    psam: Any
    card_link: Channel
    psam_link: Channel
    journal: TransactionJournal
    present_again: Callable[[], None]
    when: dt.datetime = NOW
    outcomes: list[Outcome] = field(default_factory=list)

    def tap(self, make: Callable[..., Any], *args: Any, minutes: float = 1,
            **options: Any) -> Outcome:
        self.when += dt.timedelta(minutes=minutes)
        session = make(*args, now=self.when, pending=self.journal.pending(),
                       mac_refusals=self.journal.mac_refusals(self.when - MAC_REFUSAL_MEMORY),
                       **options)
        outcome = run(session, card=self.card_link, psam=self.psam_link, journal=self.journal,
                      host=KeystoreLoadHost(KEYS))
        self.outcomes.append(outcome)
        return outcome

    def bus(self, amount: int = 200, **options: Any) -> Outcome:
        return self.tap(TransitPurchase, Mode.BUS, amount, route="42", **options)

    def purse_lock(self) -> Any:
        """Hold the card still (the vpcd bridge serves it from another thread)."""
        bridge = getattr(self.card_link.transport, "bridge", None)
        return bridge.lock if bridge is not None else contextlib.nullcontext()

    def balance(self, app: str) -> int:
        outcome = run(CardRead(), card=self.card_link)
        return int(outcome.details["balances"][app])

    def pull_during_debit(self, committed: bool) -> None:
        """The card leaves the field at its next DEBIT, after committing it or before."""
        if self.kind == "simulator":
            if committed:
                self.card.faults.cut_after(Step.COMMIT)
            else:
                self.card.faults.cut_before(Step.PURSE_BALANCE)
        else:
            self.card.pull_at(0x54, when="after" if committed else "before")


@pytest.fixture(params=["inprocess", "pcsc"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(CARD_KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_lane(request: pytest.FixtureRequest, tmp_path: Path, kind: str,
              transport: str) -> Iterator[Callable[..., Lane]]:
    """``make_lane(card_type=, expiry=, psam_keys=)``: a lane of this test's kind and transport."""
    journals: list[TransactionJournal] = []

    def make(*, card_type: int = 0x55, expiry: dt.date | None = None,
             psam_keys: Keystore = KEYS) -> Lane:
        card, psam = CARD_KINDS[kind](card_type, expiry, psam_keys)
        journal = TransactionJournal(tmp_path / "journal.sqlite")
        journals.append(journal)
        if transport == "inprocess":
            card_transport, psam_transport = InProcessTransport(card), InProcessTransport(psam)
            card_transport.power_on()
            psam_transport.power_on()
            present_again: Callable[[], None] = card_transport.power_on
        else:
            reader = request.getfixturevalue("pcsc_serve")(card, psam)
            card_transport, psam_transport = reader.transport, reader.psam_transport

            def present_again() -> None:
                card_transport.wait_for_card(10, present=False)  # torn out of the reader...
                card_transport.wait_for_card(10)  # ...and back
                card_transport.power_on()

        return Lane(kind, card, psam, Channel(card_transport), Channel(psam_transport), journal,
                    present_again)

    yield make
    for journal in journals:
        journal.close()


@pytest.fixture
def lane(make_lane: Callable[..., Lane]) -> Lane:
    return make_lane()


def tac_verifies(record: OfflineRecord) -> bool:
    """The record's TAC, recomputed with the issuer's TAC key as settlement does."""
    return expected_tac(KEYS, record) == record.tac


# --- the scenarios ------------------------------------------------------------------------


def test_member_bus_fare_has_the_10_percent_benefit(lane):
    outcome = lane.bus(200)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert (outcome.list_amount, outcome.charged_amount) == (200, 180)
    assert outcome.rules == ("bus-member-10",)
    assert (outcome.balance_before, outcome.balance_after) == (5000, 4820)
    assert lane.balance("transit") == 4820
    assert outcome.record is not None and tac_verifies(outcome.record)
    assert not outcome.record.flags
    assert lane.journal.counts() == {"pending": 0, "completed": 1, "voided": 0, "unexported": 1}


def test_non_member_pays_the_full_fare(make_lane):
    lane = make_lane(card_type=0x01)
    outcome = lane.bus(200)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert (outcome.charged_amount, outcome.rules) == (200, ())
    assert lane.balance("transit") == 4800
    assert outcome.record is not None and outcome.record.member_status == 0


def test_etc_entry_then_exit_with_the_5_percent_benefit(lane):
    entry = lane.tap(EtcEntry, network=0x1101, station=0x0203, lane=2, vehicle_class=1)
    assert entry.decision is Decision.APPROVED, entry.reason
    assert entry.charged_amount == 0 and entry.record is not None
    assert entry.record.tx_type == 0x09 and tac_verifies(entry.record)
    exit_ = lane.tap(EtcExit, network=0x1101, station=0x0007, lane=3, tolls=TOLLS, minutes=90)
    assert exit_.decision is Decision.APPROVED, exit_.reason
    assert (exit_.list_amount, exit_.charged_amount, exit_.rules) == (10000, 9500,
                                                                      ("etc-member-5",))
    assert exit_.details["toll"]["entry_station"] == "0203"
    assert exit_.record is not None and exit_.record.entry_station == 0x0203
    assert tac_verifies(exit_.record)
    read = run(CardRead(), card=lane.card_link)
    etc = next(p for p in read.details["purses"] if p["application"] == "etc")
    assert etc["balance"] == 10500
    assert (etc["toll_record"]["status"], etc["toll_record"]["station"]) == (0x04, "0007")


def test_pos_sale_with_the_merchant_discount_and_rebate(lane):
    outcome = lane.tap(PosPurchase, 3000, merchant="SUPERMARKET-0042", mcc=5411,
                       rules=PARTNER_RULES)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert (outcome.list_amount, outcome.charged_amount) == (3000, 2760)
    assert outcome.rules == ("supermarket-8", "grocery-rebate-5")
    assert outcome.details["rebate"] == 138  # 5% of 27.60, owed to the member by settlement
    assert lane.balance("transit") == 5000 - 2760
    record = outcome.record
    assert record is not None and tac_verifies(record)
    assert (record.mode, record.merchant, record.mcc) == (Mode.POS, "SUPERMARKET-0042", 5411)
    assert record.list_amount - record.charged_amount == 240
    other = lane.tap(PosPurchase, 1500, merchant="KIOSK-7", rules=PARTNER_RULES)
    assert (other.decision, other.charged_amount, other.rules) == (Decision.APPROVED, 1500, ())
    assert other.details["rebate"] == 0


class LoseCreditAnswer:
    """A card link whose ``nth`` CREDIT FOR LOAD reaches the card, whose answer is lost."""

    def __init__(self, link: Channel, nth: int) -> None:
        self.link, self.left = link, nth

    def transmit(self, command: Any) -> Any:
        answer = self.link.transmit(command)
        if command.cla == 0x80 and command.ins == 0x52:
            self.left -= 1
            if self.left == 0:
                from unioncard.errors import TransportError

                raise TransportError("the card left the field before its CREDIT answer")
        return answer


DISBURSEMENTS = b"""member_no,amount,reason,purse
20260001,5000,2026 mutual aid,
20260001,3000,hardship subsidy,
20260001,1200,toll subsidy,etc
20269999,8000,another member's payout,
"""


def test_a_disbursement_batch_interrupted_in_the_middle_loads_nothing_twice(lane):
    sheet = read_disbursements(DISBURSEMENTS)
    assert not sheet.errors and len(sheet.items) == 4
    imported = lane.journal.import_disbursements(sheet.items, source="may.csv", now=NOW)
    assert len(imported.added) == 4
    before = {purse: lane.balance(purse) for purse in ("transit", "etc")}

    def visit(card: Any) -> Any:
        lane.when += dt.timedelta(minutes=1)
        return credit_pending(card, journal=lane.journal, host=KeystoreLoadHost(KEYS),
                              terminal_id=LOAD_TERMINAL, now=lane.when)

    first = visit(LoseCreditAnswer(lane.card_link, nth=2))  # the 2nd load's answer is lost
    assert first.decision is Decision.INTERRUPTED, first.reason
    assert [o.decision for _, o in first.loads] == [Decision.APPROVED, Decision.INTERRUPTED]
    assert [d.state.value for d in first.waiting] == ["loading", "pending"]
    again = lane.journal.import_disbursements(read_disbursements(DISBURSEMENTS).items,
                                              source="may.csv", now=NOW)  # re-run: adds nothing
    assert not again.added and len(again.known) == 4
    second = visit(lane.card_link)  # the card is presented again
    assert second.decision is Decision.APPROVED, second.reason
    assert [(d.amount, o.recovered) for d, o in second.loads] == [(3000, True), (1200, False)]
    assert second.waiting == ()
    assert lane.balance("transit") == before["transit"] + 5000 + 3000
    assert lane.balance("etc") == before["etc"] + 1200
    third = visit(lane.card_link)
    assert third.loads == () and third.reason == "no disbursement waits for member 20260001"
    loaded = lane.journal.disbursements(member_no="20260001")
    assert [d.state.value for d in loaded] == ["loaded"] * 3
    records = [e.record for e in lane.journal.entries(state="completed")]
    assert sorted(r.charged_amount for r in records if r) == [1200, 3000, 5000]
    assert all(r is not None and (tac_verifies(r) or r.flags & RecordFlags.NO_TAC)
               for r in records)
    assert [d.state.value for d in lane.journal.disbursements(member_no="20269999")] == [
        "pending"]


@pytest.mark.parametrize("purse", ["transit", "etc"])
def test_a_load_on_each_purse(lane, purse):
    before = lane.balance(purse)
    outcome = lane.tap(Load, Application[purse.upper()], 3000, terminal_id=LOAD_TERMINAL)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert outcome.balance_after == before + 3000 == lane.balance(purse)
    assert outcome.record is not None and outcome.record.tx_type == 0x02
    assert tac_verifies(outcome.record)
    assert outcome.record.terminal_seq == outcome.journal_id  # the journal's number


def test_insufficient_balance_is_declined_and_changes_nothing(lane):
    outcome = lane.bus(6000)
    assert outcome.decision is Decision.DECLINED
    assert "insufficient balance: 50.00 yuan on the card, 54.00 yuan to pay" in outcome.reason
    assert lane.balance("transit") == 5000
    assert lane.journal.counts()["pending"] == lane.journal.counts()["completed"] == 0


def test_an_expired_card_is_declined(make_lane):
    lane = make_lane(expiry=dt.date(2026, 4, 30))
    outcome = lane.bus(200)
    assert outcome.decision is Decision.DECLINED
    assert outcome.reason == "card expired on 2026-04-30"
    assert lane.balance("transit") == 5000


def test_a_psam_with_the_wrong_key_charges_nothing(make_lane):
    lane = make_lane(psam_keys=OTHER_KEYS)
    outcome = lane.bus(200)
    assert outcome.decision is Decision.ERROR  # the terminal's fault, not the card's
    assert "refused MAC1 (9302)" in outcome.reason and "PSAM" in outcome.reason
    assert lane.balance("transit") == 5000
    assert lane.journal.counts() == {"pending": 0, "completed": 0, "voided": 1, "unexported": 0}
    again = lane.bus(200)  # the member taps again at the same terminal: not tried again
    assert again.decision is Decision.ERROR
    assert "refused this terminal's MAC1" in again.reason and "not tried again" in again.reason
    assert lane.journal.counts()["voided"] == 1  # no second DEBIT was sent
    if lane.kind == "simulator":
        assert lane.card.purse("transit").mac_errors == 1  # one strike, not two


def test_card_read(lane):
    lane.bus(200)
    outcome = run(CardRead(), card=lane.card_link)
    assert outcome.decision is Decision.APPROVED
    assert outcome.details["balances"] == {"transit": 4820, "etc": 20000}
    assert outcome.details["member"]["member_no"] == "20260001"
    transit = next(p for p in outcome.details["purses"] if p["application"] == "transit")
    newest = transit["log"][0]
    assert (newest["type"], newest["amount"], newest["date"], newest["time"]) == (
        "purchase", 180, "2026-05-01", "08:31:00")


def test_pulled_after_debit_then_tapped_again_is_charged_once(lane):
    lane.pull_during_debit(committed=True)
    first = lane.bus(200)
    assert first.decision is Decision.INTERRUPTED, first.reason
    assert first.journal_id is not None
    assert lane.journal.counts()["pending"] == 1
    lane.present_again()
    second = lane.bus(200)
    assert second.decision is Decision.APPROVED, second.reason
    assert second.recovered and second.charged_amount == 180
    assert second.record is not None and second.record.flags == RecordFlags.RECOVERED
    assert tac_verifies(second.record)  # the proof's TAC (GET TRANSACTION PROVE)
    assert lane.balance("transit") == 4820  # charged once
    assert lane.journal.counts() == {"pending": 0, "completed": 1, "voided": 0, "unexported": 1}


def test_pulled_before_debit_is_voided_then_charged_once(lane):
    lane.pull_during_debit(committed=False)
    first = lane.bus(200)
    assert first.decision is Decision.INTERRUPTED, first.reason
    lane.present_again()
    assert lane.balance("transit") == 5000  # the debit never happened
    second = lane.bus(200)
    assert second.decision is Decision.APPROVED, second.reason
    assert not second.recovered and second.charged_amount == 180
    assert any("voided" in w for w in second.warnings)
    assert lane.balance("transit") == 4820
    assert lane.journal.counts() == {"pending": 0, "completed": 1, "voided": 1, "unexported": 1}


RECORDED_FLOWS: dict[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = {
    "bus": (TransitPurchase, (Mode.BUS, 200), {"route": "42"}),
    "pos": (PosPurchase, (1500,), {"merchant": "SUPERMARKET-0042", "mcc": 5411,
                                   "rules": PARTNER_RULES}),
    "etc-entry": (EtcEntry, (), {"network": 0x1101, "station": 0x0203, "vehicle_class": 1}),
    "etc-exit": (EtcExit, (), {"network": 0x1101, "station": 0x0007, "tolls": TOLLS}),
    "load": (Load, (Application.ETC, 2500), {"terminal_id": LOAD_TERMINAL}),
    "declined": (TransitPurchase, (Mode.METRO, 900_000), {}),
}


def test_a_hotlisted_card_is_refused_and_its_purse_blocked(lane):
    from unioncard.offline.hotlist import Hotlist
    from unioncard.terminal.key_host import KeystoreKeyHost

    read = run(CardRead(), card=lane.card_link)
    transit = next(p for p in read.details["purses"] if p["application"] == "transit")
    issuer, diversifier = bytes.fromhex(transit["issuer"]), bytes.fromhex(transit["diversifier"])
    listed = NOW + dt.timedelta(minutes=30)
    hotlist = Hotlist.from_entries([(issuer, diversifier, listed),
                                    (issuer, bytes(8), NOW - dt.timedelta(days=9))])
    before = lane.bus(200, hotlist=hotlist)  # a ride before the card was reported lost
    assert before.decision is Decision.APPROVED, before.reason
    lane.when = listed  # reported lost; the finder taps at a terminal that holds the key
    session = TransitPurchase(Mode.BUS, 200, now=lane.when + dt.timedelta(minutes=1),
                              hotlist=hotlist, block_hotlisted=True)
    refused = run(session, card=lane.card_link, psam=lane.psam_link, journal=lane.journal,
                  key_host=KeystoreKeyHost(KEYS))
    assert refused.decision is Decision.DECLINED
    assert refused.reason.startswith("the card is hotlisted (reported lost or cancelled, "
                                     f"listed {listed.isoformat()})")
    assert refused.reason.endswith("its purse was blocked (APPLICATION BLOCK)")
    assert refused.details["hotlisted"] == {"listed_at": listed.isoformat(), "blocked": True}
    anywhere = lane.bus(200)  # a terminal without the hotlist: the blocked purse refuses
    assert anywhere.decision is Decision.DECLINED
    assert anywhere.reason == "the card's transit purse is blocked"
    assert lane.journal.counts() == {"pending": 0, "completed": 1, "voided": 0, "unexported": 1}
    read = run(CardRead(), card=lane.card_link)  # a blocked purse is read all the same
    transit = next(p for p in read.details["purses"] if p["application"] == "transit")
    assert (transit["present"], transit["state"], transit["balance"]) == (True, "blocked", None)
    assert transit["log"][0]["amount"] == 180  # the one ride: nothing charged since
    if lane.kind == "simulator":
        with lane.purse_lock():
            assert lane.card.purse("transit").balance == 5000 - 180


def test_a_hotlisted_card_is_declined_even_without_the_key(lane):
    from unioncard.offline.hotlist import Hotlist

    read = run(CardRead(), card=lane.card_link)
    etc = next(p for p in read.details["purses"] if p["application"] == "etc")
    hotlist = Hotlist.from_entries([(bytes.fromhex(etc["issuer"]),
                                     bytes.fromhex(etc["diversifier"]), NOW)])
    outcome = lane.tap(EtcEntry, network=0x1101, station=0x0203, vehicle_class=1,
                       hotlist=hotlist)
    assert outcome.decision is Decision.DECLINED and "hotlisted" in outcome.reason
    assert outcome.details["hotlisted"]["blocked"] is False
    assert lane.tap(EtcEntry, network=0x1101, station=0x0203).decision is Decision.APPROVED


def test_recorded_traces_replay_to_the_same_outcomes(lane, tmp_path):
    """Each flow recorded from the wire (text and binary traces), then played back in place
    of the card and the PSAM: the same session gives the same outcome, byte for byte."""
    for number, (name, (make, args, options)) in enumerate(RECORDED_FLOWS.items()):
        path = tmp_path / f"{name}.{'uct' if number % 2 else 'txt'}"
        with TraceRecorder.open(path) as recorder:
            recorder.attach(lane.card_link.transport, "card")
            recorder.attach(lane.psam_link.transport, "psam")
            recorded = lane.tap(make, *args, **options)
        replay = Replay.load(path)
        assert replay.transaction_time() in (None, lane.when)
        replay.card.power_on()
        replay.psam.power_on()
        with TransactionJournal(":memory:") as journal:
            replayed = run(make(*args, now=lane.when, **options), card=Channel(replay.card),
                           psam=Channel(replay.psam), journal=journal,
                           host=KeystoreLoadHost(KEYS))
        replay.finish()  # every recorded exchange was replayed
        assert replayed.decision is recorded.decision, (name, replayed.reason)
        assert comparable(replayed) == comparable(recorded), name


def comparable(outcome: Outcome) -> dict[str, Any]:
    """An outcome's document without what its journal numbers: a load's terminal seq is its
    number in the journal (docs/records.md), and a replay journals in memory."""
    document = outcome.to_dict() | {"journal_id": None}
    if outcome.record is not None and outcome.record.is_load:
        document["record"] = document["record"] | {"terminal_seq": None}
    return document


@pytest.mark.parametrize("kind", ["simulator"])
@pytest.mark.parametrize("transport", ["pcsc"])
def test_a_card_on_a_reader_pairs_with_a_psam_in_process(pcsc_serve, tmp_path, kind, transport):
    card, psam = _sim_cards(0x55, None, KEYS)
    reader = pcsc_serve(card)  # the card alone in the virtual reader
    psam_transport = InProcessTransport(psam)
    psam_transport.power_on()
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        outcome = run(TransitPurchase(Mode.BUS, 200, now=NOW), card=Channel(reader.transport),
                      psam=Channel(psam_transport), journal=journal)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert outcome.charged_amount == 180 and outcome.record is not None
    assert outcome.record.terminal_id == bytes.fromhex("000000000001")
    with reader.bridge.lock:
        assert card.purse("transit").balance == 4820
