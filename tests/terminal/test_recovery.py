"""Recovery of interrupted transactions (`unioncard.terminal.recovery`) with scripted cards.

A transaction whose DEBIT or CREDIT answer never came is pending in the journal;
when its purse is presented again the card is asked (GET TRANSACTION PROVE,
INITIALIZE of 0, the EF 0018 log) and the transaction completed or voided
(docs/protocol.md §10.3).  Every `PendingTransaction` here is built as the
sessions draft it, for card 42 of docs/protocol.md §2.7.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path

from unioncard.crypto import purse as pc
from unioncard.offline import Application, OfflineRecord, RecordFlags
from unioncard.tariffs import Mode, default_rules
from unioncard.terminal import (
    Decision,
    KeystoreLoadHost,
    PendingTransaction,
    Resolution,
    TransitPurchase,
)
from unioncard.terminal.session import ResolutionState

# The scripted driver and the script fragments of card 42 live in test_sessions.py (the
# model the docs point at); tests/terminal is not a package, so it is loaded by path.
_NAME = "terminal_test_sessions"
if _NAME in sys.modules:
    scripted = sys.modules[_NAME]
else:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).with_name("test_sessions.py"))
    assert _spec is not None and _spec.loader is not None
    scripted = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = scripted
    _spec.loader.exec_module(scripted)

drive, card, journal = scripted.drive, scripted.card, scripted.journal
authorize = scripted.authorize
identify, identify_etc, purchase = scripted.identify, scripted.identify_etc, scripted.purchase
log_record, bcd, tap, load, exit_lane = (scripted.log_record, scripted.bcd, scripted.tap,
                                         scripted.load, scripted.exit_lane)
H, KEYS, TRANSIT_KEYS = scripted.H, scripted.KEYS, scripted.TRANSIT_KEYS
NOW, TERMINAL, ISSUER = scripted.NOW, scripted.TERMINAL, scripted.ISSUER
F_TRANSIT, F_ETC = scripted.F_TRANSIT, scripted.F_ETC
LOAD_AT, LOAD_INIT, LOAD_ANSWER = scripted.LOAD_AT, scripted.LOAD_INIT, scripted.LOAD_ANSWER
EXIT_AT = scripted.EXIT_AT

# --- purchases ------------------------------------------------------------------------------------

LATER = NOW + dt.timedelta(minutes=2)  # within the 10-minute recovery window
NEXT_DAY = NOW + dt.timedelta(days=1)


def pending_bus(*, seq: int = 5, id: int = 7, when: dt.datetime = NOW,
                diversifier: str = F_TRANSIT, application: Application = Application.TRANSIT,
                flow: str = "bus") -> PendingTransaction:
    """A bus fare journaled before its DEBIT, as `TransitPurchase` drafts it."""
    rules = default_rules()
    draft = OfflineRecord(
        terminal_id=H(TERMINAL), terminal_seq=0x12345, issuer=H(ISSUER), diversifier=H(diversifier),
        application=application, card_seq=seq, key_version=1, tx_type=0x06, mode=int(Mode.BUS),
        card_type=0x55, category_flags=1, member_status=1, organization="市总工会",
        card_expiry=dt.date(2030, 12, 31), list_amount=200, charged_amount=180,
        balance_after=1820, rules=(0,), when=when, tac=bytes(4), flags=RecordFlags.NO_TAC,
        ruleset_version=H(rules.version))
    return PendingTransaction(flow, draft, 2000, id=id)


PROVE_SEQ_6 = "805A 0006 02 0006 08"
INIT_SEQ = f"8050 0102 0B 01 00000000 {TERMINAL} 0F"  # INITIALIZE FOR PURCHASE of 0


def test_prove_9000_within_the_window_is_this_taps_outcome_and_charges_nothing():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "BAD5D442 CC970111 9000"),
        # the proof is of seq 5; the log says whose purchase that was: ours
        card("00B2 01C4 17", f"{log_record(5, 180, 6, TERMINAL, NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal()])
    out = run.outcome
    assert out.decision is Decision.APPROVED and out.recovered
    assert (out.charged_amount, out.balance_before, out.balance_after) == (180, 2000, 1820)
    assert out.tac == H("CC970111") and out.journal_id == 7
    assert out.rules == ("bus-member-10",)
    assert "nothing more was charged" in out.reason
    assert out.record.flags == RecordFlags.RECOVERED and out.record.tac == H("CC970111")
    assert not any(s.startswith("card 8050") for s in run.sent)  # no INITIALIZE
    (written,) = run.journal
    assert written.begin is None
    assert written.resolutions == (Resolution(7, ResolutionState.COMPLETED, out.record,
                                              "the card proved the debit (GET TRANSACTION "
                                              "PROVE) and its log (EF 0018) shows it"),)
    assert out.resolutions == ()  # already journaled
    assert out.warnings[0].startswith("interrupted bus #7 of 2026-03-15T08:30:15 (180 fen): "
                                      "completed")


def test_a_proof_of_another_terminals_purchase_at_that_seq_voids_ours():
    """Ours never reached the card; the passenger then paid at terminal 3101 0000 9999,
    whose purchase took the same seq: GET TRANSACTION PROVE answers with *its* proof."""
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "0BADF00D 4271FEB1 9000"),
        card("00B2 01C4 17", f"{log_record(5, 180, 6, '310100009999', NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(),
        *purchase(180, balance=1820, seq=6, when=LATER)])
    (resolution,) = run.journal[0].resolutions
    assert resolution.state is ResolutionState.VOIDED
    assert "used by terminal 310100009999" in resolution.reason
    out = run.outcome
    assert out.decision is Decision.APPROVED and not out.recovered and out.charged_amount == 180


def test_a_proof_whose_seq_the_log_no_longer_shows_is_not_trusted_for_its_tac():
    run = drive(tap(200, now=NEXT_DAY, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "0BADF00D 4271FEB1 9000"),
        card("00B2 01C4 17", f"{log_record(9, 1000, 2, TERMINAL, NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(),
        *purchase(180, balance=1820, seq=6, when=NEXT_DAY)])
    (resolution,) = run.journal[0].resolutions
    assert resolution.state is ResolutionState.COMPLETED
    assert resolution.record.flags == (RecordFlags.NO_TAC | RecordFlags.RECOVERED
                                       | RecordFlags.UNVERIFIED)
    assert resolution.record.tac == bytes(4)


def test_prove_9406_with_the_seq_unchanged_voids_it_then_the_fare_is_charged():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(),
        card(PROVE_SEQ_6, "9406"),
        card(INIT_SEQ, "000007D0 0005 000000 01 00 11223344 9000"),
        journal(),  # the voided transaction
        *purchase(180, when=LATER),
    ])
    out = run.outcome
    assert out.decision is Decision.APPROVED and not out.recovered
    assert out.charged_amount == 180 and out.journal_id == 1
    voided, begun = run.journal
    assert voided.begin is None and begun.begin is not None
    (resolution,) = voided.resolutions
    assert (resolution.transaction_id, resolution.state) == (7, ResolutionState.VOIDED)
    assert resolution.reason == ("the card's offline seq did not move: the debit never "
                                 "happened")
    assert "interrupted bus #7" in out.warnings[0] and "voided" in out.warnings[0]


def test_seq_advanced_and_our_record_in_the_log_completes_it_without_tac():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(),
        card(PROVE_SEQ_6, "9406"),
        card(INIT_SEQ, "000006A4 0007 000000 01 00 11223344 9000"),
        card("00B2 01C4 17", f"{log_record(6, 100, 6, '310100009999', LATER)} 9000"),
        card("00B2 02C4 17", f"{log_record(5, 180, 6, TERMINAL, NOW)} 9000"),
        card("00B2 03C4 17", "6A83"),
        journal(),
    ])
    out = run.outcome
    assert out.decision is Decision.APPROVED and out.recovered and out.tac is None
    (resolution,) = run.journal[0].resolutions
    assert resolution.state is ResolutionState.COMPLETED
    assert resolution.record.flags == RecordFlags.NO_TAC | RecordFlags.RECOVERED
    assert resolution.record.tac == bytes(4)
    assert resolution.reason == "the card's log (EF 0018) shows the transaction"


def test_seq_advanced_and_another_terminal_at_that_seq_voids_it():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(),
        card(PROVE_SEQ_6, "9406"),
        card(INIT_SEQ, "000006A4 0006 000000 01 00 11223344 9000"),
        card("00B2 01C4 17", f"{log_record(5, 180, 6, '310100009999', NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(),
        *purchase(180, balance=0x6A4, seq=6, when=LATER),
    ])
    (resolution,) = run.journal[0].resolutions
    assert resolution.state is ResolutionState.VOIDED
    assert resolution.reason == ("the card's log shows seq 5 used by terminal 310100009999 "
                                 "at 20260315 083015: ours never happened")
    assert run.outcome.decision is Decision.APPROVED and not run.outcome.recovered


def test_a_load_at_that_seq_in_the_log_does_not_decide_a_purchase():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(),
        card(PROVE_SEQ_6, "9406"),
        card(INIT_SEQ, "000006A4 0006 000000 01 00 11223344 9000"),
        card("00B2 01C4 17", f"{log_record(5, 1000, 2, '310100009999', NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(),
    ])
    (resolution,) = run.journal[0].resolutions
    assert resolution.record.flags == (RecordFlags.NO_TAC | RecordFlags.RECOVERED
                                       | RecordFlags.UNVERIFIED)


def test_seq_advanced_and_the_log_without_that_seq_completes_it_unverified():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(),
        card(PROVE_SEQ_6, "9406"),
        card(INIT_SEQ, "000006A4 0009 000000 01 00 11223344 9000"),
        card("00B2 01C4 17", f"{log_record(8, 100, 6, '310100009999', LATER)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(),
    ])
    (resolution,) = run.journal[0].resolutions
    assert resolution.state is ResolutionState.COMPLETED
    assert resolution.record.flags == (RecordFlags.NO_TAC | RecordFlags.RECOVERED
                                       | RecordFlags.UNVERIFIED)
    assert resolution.reason == ("the card's counter moved past it and its log no longer "
                                 "shows it")
    assert run.outcome.recovered and run.outcome.record == resolution.record


def test_a_card_that_does_not_tell_within_the_window_refuses_the_tap():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "6985")])
    out = run.outcome
    assert out.decision is Decision.ERROR
    assert out.reason == ("an interrupted transaction of 2026-03-15T08:30:15 on this card "
                          "cannot be settled yet (the card does not tell); try again later")
    assert run.journal == []
    assert out.warnings == ("interrupted bus #7 of 2026-03-15T08:30:15 (180 fen): still "
                            "pending, the card does not tell",)


def test_a_journal_that_cannot_record_the_resolution_ends_the_tap_with_an_error():
    run = drive(tap(200, now=NEXT_DAY, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "BAD5D442 CC970111 9000"),
        card("00B2 01C4 17", f"{log_record(5, 180, 6, TERMINAL, NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(fail=OSError("disk full"))])
    assert run.outcome.decision is Decision.ERROR
    assert run.outcome.reason == "disk full (at journal write); nothing was charged"
    assert not any(s.startswith("card 8050") for s in run.sent)


def test_a_seq_that_went_back_is_not_decided():
    run = drive(tap(200, now=LATER, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "9406"),
        card(INIT_SEQ, "000007D0 0004 000000 01 00 11223344 9000")])
    assert run.outcome.decision is Decision.ERROR and run.journal == []


def test_a_card_that_does_not_tell_after_the_window_is_charged_and_stays_pending():
    run = drive(tap(200, now=NEXT_DAY, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "6985"), *purchase(180, when=NEXT_DAY)])
    out = run.outcome
    assert out.decision is Decision.APPROVED and not out.recovered
    (begun,) = run.journal  # no resolution of #7
    assert begun.begin is not None
    assert out.resolutions == (Resolution(1, ResolutionState.COMPLETED, out.record),)
    assert "still pending" in out.warnings[0]


def test_pending_transactions_of_another_card_or_purse_are_not_touched():
    other_card = pending_bus(diversifier="5500000000000043", id=8)
    other_purse = pending_bus(diversifier=F_ETC, application=Application.ETC, id=9)
    run = drive(tap(200, now=LATER, pending=[other_card, other_purse]),
                [*identify(), *purchase(180, when=LATER)])
    assert not any(s.startswith("card 805A") for s in run.sent)
    assert run.outcome.decision is Decision.APPROVED and run.outcome.warnings == ()


def test_after_the_window_a_completed_transaction_is_resolved_and_the_tap_is_charged():
    run = drive(tap(200, now=NEXT_DAY, pending=[pending_bus()]), [
        *identify(), card(PROVE_SEQ_6, "BAD5D442 CC970111 9000"),
        card("00B2 01C4 17", f"{log_record(5, 180, 6, TERMINAL, NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(),
        *purchase(180, balance=1820, seq=6, when=NEXT_DAY)])
    out = run.outcome
    assert out.decision is Decision.APPROVED and not out.recovered
    assert (out.balance_before, out.balance_after, out.journal_id) == (1820, 1640, 1)
    resolved, begun = run.journal
    assert resolved.resolutions[0].state is ResolutionState.COMPLETED
    assert resolved.resolutions[0].transaction_id == 7
    assert begun.begin is not None


def test_a_completed_transaction_of_another_flow_within_the_window_does_not_stop_the_tap():
    metro = TransitPurchase(Mode.METRO, 300, now=LATER, pending=[pending_bus()])
    run = drive(metro, [*identify(), card(PROVE_SEQ_6, "BAD5D442 CC970111 9000"),
                        card("00B2 01C4 17", f"{log_record(5, 180, 6, TERMINAL, NOW)} 9000"),
        card("00B2 02C4 17", "6A83"),
                        journal(), *purchase(270, balance=1820, seq=6, when=LATER)])
    assert run.outcome.decision is Decision.APPROVED and not run.outcome.recovered
    assert run.outcome.rules == ("metro-member-10",)


def test_pending_transactions_are_asked_about_in_card_seq_order():
    older, newer = pending_bus(seq=3, id=2), pending_bus(seq=4, id=3)
    run = drive(tap(200, now=NEXT_DAY, pending=[newer, older]), [
        *identify(),
        card("805A 0006 02 0004 08", "9406"),
        card(INIT_SEQ, "000007D0 0005 000000 01 00 11223344 9000"),
        card("00B2 01C4 17", f"{log_record(4, 180, 6, TERMINAL, NOW)} 9000"),  # read once
        card("00B2 02C4 17", f"{log_record(3, 180, 6, TERMINAL, NOW)} 9000"),
        card("00B2 03C4 17", "6A83"),
        card("805A 0006 02 0005 08", "9406"),
        card(INIT_SEQ, "000007D0 0005 000000 01 00 11223344 9000"),
        journal(),
        *purchase(180, when=NEXT_DAY),
    ])
    assert [(r.transaction_id, r.state) for r in run.journal[0].resolutions] == [
        (2, ResolutionState.COMPLETED), (3, ResolutionState.COMPLETED)]


# --- loads ----------------------------------------------------------------------------------------


def pending_load(*, seq: int = 3, id: int = 5, when: dt.datetime = LOAD_AT) -> PendingTransaction:
    draft = OfflineRecord(
        terminal_id=H(TERMINAL), terminal_seq=0, issuer=H(ISSUER), diversifier=H(F_TRANSIT),
        application=Application.TRANSIT, card_seq=seq, key_version=1, tx_type=0x02, mode=0,
        card_type=0x55, list_amount=10000, charged_amount=10000, balance_after=11820, when=when,
        tac=bytes(4), flags=RecordFlags.NO_TAC)
    return PendingTransaction("load", draft, 1820, id=id)


LOAD_INIT_SEQ = f"8050 0002 0B 01 00000000 {TERMINAL} 10"  # INITIALIZE FOR LOAD of 0


def test_load_recovery_with_the_online_seq_unchanged_voids_it_then_loads():
    later = LOAD_AT + dt.timedelta(minutes=1)
    run = drive(load(now=later, pending=[pending_load()]), [
        *identify(psam_id=False),
        card(LOAD_INIT_SEQ, "0000071C 0003 01 00 11223344 00000000 9000"),
        journal(),
        card(LOAD_INIT, LOAD_ANSWER),
        authorize(KeystoreLoadHost(KEYS)),
        journal(),
        card(_credit_at(later), "11223344 9000"),  # the terminal keeps the TAC unchecked
    ])
    voided, begun = run.journal
    assert voided.resolutions[0].state is ResolutionState.VOIDED
    assert voided.resolutions[0].reason == ("the card's online seq did not move: the credit "
                                            "never happened")
    assert begun.begin is not None and run.outcome.decision is Decision.APPROVED
    assert not any(s.startswith("card 805A") for s in run.sent)  # no PROVE for a load


def _credit_at(when: dt.datetime) -> str:
    seslk = pc.load_session_key(TRANSIT_KEYS.load, H("1A2B3C4D"), 3)
    date, time = bcd(when)
    mac2 = pc.load_mac2(seslk, 10000, 2, H(TERMINAL), H(date), H(time)).hex()
    return f"8052 0000 0B {date} {time} {mac2} 04"


def test_load_recovery_with_the_online_seq_advanced_and_logged_completes_it():
    later = LOAD_AT + dt.timedelta(minutes=1)
    run = drive(load(now=later, pending=[pending_load()]), [
        *identify(psam_id=False),
        card(LOAD_INIT_SEQ, "00002E2C 0004 01 00 11223344 00000000 9000"),
        card("00B2 01C4 17", f"{log_record(3, 10000, 2, TERMINAL, LOAD_AT)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal(),
    ])
    out = run.outcome
    assert out.decision is Decision.APPROVED and out.recovered and out.journal_id == 5
    (resolution,) = run.journal[0].resolutions
    assert resolution.state is ResolutionState.COMPLETED
    assert resolution.record.terminal_seq == 5  # a load's terminal seq is its journal id
    assert resolution.record.flags == RecordFlags.NO_TAC | RecordFlags.RECOVERED
    assert (out.balance_before, out.balance_after) == (1820, 11820)


# --- ETC ------------------------------------------------------------------------------------------


def test_etc_exit_recovery_proves_a_capp_purchase():
    draft = OfflineRecord(
        terminal_id=H(TERMINAL), terminal_seq=0x12346, issuer=H("11010000FFFFFFFF"),
        diversifier=H(F_ETC), application=Application.ETC, card_seq=0, key_version=2,
        tx_type=0x09, mode=int(Mode.ETC), card_type=0x55, list_amount=10000,
        charged_amount=9500, balance_after=10500, entry_station=0x0203,
        station=0x0007, when=EXIT_AT, tac=bytes(4), flags=RecordFlags.NO_TAC)
    pending = PendingTransaction("etc-exit", draft, 20000, id=3)
    run = drive(exit_lane(pending=[pending], now=EXIT_AT + dt.timedelta(seconds=30)), [
        *identify_etc(), card("805A 0009 02 0001 08", "580B0DD1 5096B54F 9000"),
        card("00B2 01C4 17", f"{log_record(0, 9500, 9, TERMINAL, EXIT_AT)} 9000"),
        card("00B2 02C4 17", "6A83"),
        journal()])
    out = run.outcome
    assert out.decision is Decision.APPROVED and out.recovered and out.journal_id == 3
    assert out.tac == H("5096B54F") and out.record.flags == RecordFlags.RECOVERED
    assert (out.list_amount, out.charged_amount) == (10000, 9500)
    assert not any(s.startswith("card 80DC") for s in run.sent)  # no toll record rewritten
