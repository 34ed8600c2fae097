"""Union disbursements: the sheet, the journal's payments, and loading each exactly once.

The end-to-end scenario (a batch interrupted in the middle, on every transport and both
kinds of card) is in test_scenarios.py; here: reading sheets, importing them again and
again, the journal's bookkeeping, a schema-1 journal upgraded, and the visits.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.applet_sim import MemberData, issue_member_card
from unioncard.crypto import Keystore
from unioncard.offline import Application
from unioncard.sheet import SheetError
from unioncard.terminal import Decision, KeystoreLoadHost, Load, TransactionJournal, run
from unioncard.terminal.disbursements import (
    Disbursement,
    DisbursementState,
    credit_pending,
    read_disbursements,
)
from unioncard.terminal.journal import JournalError
from unioncard.transport import Channel, InProcessTransport

NOW = dt.datetime(2026, 5, 2, 9, 0)
KEYS = Keystore.test()
TERMINAL = bytes.fromhex("0000000000AA")


def sheet(text: str, encoding: str = "utf-8") -> bytes:
    return text.encode(encoding)


# --- the sheet ---------------------------------------------------------------------------------


def test_a_gbk_sheet_with_chinese_headers_and_optional_columns():
    read = read_disbursements(sheet("编号,会员编号,金额,事由,钱包\n"
                                    "HZ-2026-001,20260001,50000,互助金,\n"
                                    ",20260002,1200,ETC补贴,etc\n", "gbk"))
    assert read.encoding == "gbk" and read.errors == []
    first, second = read.items
    assert (first.reference, first.member_no, first.amount, first.reason, first.application) == (
        "HZ-2026-001", "20260001", 50000, "互助金", Application.TRANSIT)
    assert second.reference.startswith("auto:") and second.application is Application.ETC
    assert (first.line, second.line) == (2, 3)


@pytest.mark.parametrize(("row", "reason"), [
    ("2026x,100,r", "member number '2026x' must be 1 to 16 digits"),
    ("20260001,1.5,r", "amount '1.5' must be a whole number of fen"),
    ("20260001,0,r", "amount 0 fen is outside 1 to 100000 fen"),
    ("20260001,100001,r", "the purse maximum; split larger payments"),
    ("20260001,100,", "reason is empty"),
    ("20260001,100," + "长" * 41, "reason is longer than 120 bytes"),
    ("20260001,100,r,x", "4 fields, the header has 3"),
])
def test_every_bad_row_is_refused_with_its_line_and_reason(row, reason):
    read = read_disbursements(sheet(f"member_no,amount,reason\n20260001,100,ok\n{row}\n"))
    assert len(read.items) == 1
    (error,) = read.errors
    assert error.line == 3 and reason in error.reason


def test_a_bad_purse_and_a_reference_used_twice_are_refused():
    read = read_disbursements(sheet("member_no,amount,reason,reference,purse\n"
                                    "20260001,100,a,R1,\n20260002,100,b,R1,\n"
                                    "20260003,100,c,,bus\n"))
    assert [(e.line, e.reason) for e in read.errors] == [
        (3, "reference 'R1' already on line 2"), (4, "purse 'bus' must be transit or etc")]


def test_an_unreadable_sheet_is_one_error():
    with pytest.raises(SheetError, match="header lacks amount"):
        read_disbursements(sheet("member_no,reason\n1,x\n"))
    with pytest.raises(SheetError, match="neither UTF-8 nor GBK"):
        read_disbursements(b"\xff\xfe\x00member")


def test_identical_rows_are_distinct_payments_and_keep_their_references_on_a_re_read():
    text = "member_no,amount,reason\n20260001,100,r\n20260001,100,r\n20260001,200,r\n"
    first, again = read_disbursements(sheet(text)), read_disbursements(sheet(text))
    references = [p.reference for p in first.items]
    assert len(set(references)) == 3
    assert references == [p.reference for p in again.items]
    reordered = read_disbursements(sheet("member_no,amount,reason\n20260001,200,r\n"
                                         "20260001,100,r\n20260001,100,r\n"))
    assert sorted(p.reference for p in reordered.items) == sorted(references)


@given(st.lists(st.tuples(st.sampled_from(["20260001", "20260002"]),
                          st.integers(1, 100_000), st.sampled_from(["a", "b", "互助金"])),
                max_size=30))
def test_a_sheet_imported_twice_adds_each_payment_once(rows):
    text = "member_no,amount,reason\n" + "".join(f"{m},{a},{r}\n" for m, a, r in rows)
    with TransactionJournal(":memory:") as journal:
        first = journal.import_disbursements(read_disbursements(sheet(text)).items,
                                             source="s.csv", now=NOW)
        second = journal.import_disbursements(read_disbursements(sheet(text)).items,
                                              source="s.csv", now=NOW)
        assert len(first.added) == len(rows) and not first.known
        assert not second.added and len(second.known) == len(rows)
        assert journal.disbursement_counts()["pending"]["count"] == len(rows)


# --- the journal ---------------------------------------------------------------------------------


def test_a_known_reference_with_other_contents_is_refused(tmp_path: Path):
    with TransactionJournal(tmp_path / "j.sqlite") as journal:
        journal.import_disbursements([Disbursement("R1", "20260001", 100, "a")], source="1.csv",
                                     now=NOW)
        result = journal.import_disbursements(
            [Disbursement("R1", "20260001", 999, "a", line=7)], source="2.csv", now=NOW)
        assert not result.added
        ((payment, reason),) = result.refused
        assert payment.line == 7 and "already in the journal for member 20260001, 100 fen" in reason


def test_an_interrupted_import_adds_nothing(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    payments = read_disbursements(sheet("member_no,amount,reason\n" + "".join(
        f"2026{i:04d},100,r\n" for i in range(2000)))).items

    def stop(done: int) -> None:
        if done >= 1000:
            raise KeyboardInterrupt

    with TransactionJournal(path) as journal, pytest.raises(KeyboardInterrupt):
        journal.import_disbursements(payments, source="s.csv", now=NOW, progress=stop)
    with TransactionJournal(path) as journal:
        assert journal.disbursements() == []
        assert len(journal.import_disbursements(payments, source="s.csv", now=NOW).added) == 2000


def test_a_schema_1_journal_is_upgraded_with_its_transactions(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    _, channel = member_card()
    with TransactionJournal(path) as journal:
        assert run(Load(Application.TRANSIT, 100, terminal_id=TERMINAL, now=NOW), card=channel,
                   journal=journal, host=KeystoreLoadHost(KEYS)).decision is Decision.APPROVED
    with sqlite3.connect(path) as db:  # as the first release left it
        db.execute("DROP TABLE disbursements")
        db.execute("ALTER TABLE transactions DROP COLUMN disbursement_id")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    with TransactionJournal(path) as journal:
        assert journal.counts()["completed"] == 1
        journal.import_disbursements([Disbursement("R1", "20260001", 100, "a")], source="s",
                                     now=NOW)
        assert journal.disbursements()[0].state is DisbursementState.PENDING
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)


def test_a_payment_is_never_linked_to_two_loads(tmp_path: Path):
    """Two service points on one journal (or a re-run racing the first): the second load
    of the same payment is refused before its CREDIT is sent."""
    card, channel = member_card()
    with TransactionJournal(tmp_path / "j.sqlite") as journal:
        journal.import_disbursements([Disbursement("R1", "20260001", 500, "a")], source="s",
                                     now=NOW)
        (payment,) = journal.disbursements()
        first = run(Load(Application.TRANSIT, 500, terminal_id=TERMINAL, now=NOW,
                         member_no="20260001", disbursement=payment.id),
                    card=channel, journal=journal, host=KeystoreLoadHost(KEYS))
        assert first.decision is Decision.APPROVED
        again = run(Load(Application.TRANSIT, 500, terminal_id=TERMINAL,
                         now=NOW + dt.timedelta(minutes=1), member_no="20260001",
                         disbursement=payment.id),
                    card=channel, journal=journal, host=KeystoreLoadHost(KEYS))
        assert again.decision is Decision.ERROR
        assert "disbursement 1 is loaded: it is not loaded again" in again.reason
        assert card.purse("transit").balance == 1000 + 500


def test_a_load_for_another_member_is_declined():
    _, channel = member_card()
    with TransactionJournal(":memory:") as journal:
        journal.import_disbursements([Disbursement("R1", "20260002", 500, "a")], source="s",
                                     now=NOW)
        outcome = run(Load(Application.TRANSIT, 500, terminal_id=TERMINAL, now=NOW,
                           member_no="20260002", disbursement=1),
                      card=channel, journal=journal, host=KeystoreLoadHost(KEYS))
        assert outcome.decision is Decision.DECLINED
        assert outcome.reason == ("this load is for member 20260002; this is the card of "
                                  "member 20260001")
        assert journal.disbursement(1).state is DisbursementState.PENDING


# --- the visits -------------------------------------------------------------------------------


def member_card(card_type: int = 0x55, **options):
    member = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                        dt.date(2026, 1, 1), dt.date(2030, 12, 31))
    card = issue_member_card(member, KEYS, card_no=1, transit_balance=1000,
                             card_type=card_type, random_source=5, **options)
    transport = InProcessTransport(card)
    transport.power_on()
    return card, Channel(transport)


def test_a_payment_that_would_pass_the_purse_maximum_stays_pending_with_the_reason():
    card, channel = member_card()
    with TransactionJournal(":memory:") as journal:
        journal.import_disbursements(read_disbursements(sheet(
            "member_no,amount,reason\n20260001,99500,big\n20260001,500,small\n")).items,
            source="s", now=NOW)
        visit = credit_pending(channel, journal=journal, host=KeystoreLoadHost(KEYS),
                               terminal_id=TERMINAL, now=NOW)
        assert visit.decision is Decision.DECLINED
        assert [o.decision for _, o in visit.loads] == [Decision.DECLINED, Decision.APPROVED]
        (waiting,) = visit.waiting
        assert waiting.amount == 99500 and "purse maximum" in waiting.last_error
        assert visit.loaded_amount == 500 and card.purse("transit").balance == 1500
        assert "1 still pending (99500 fen)" in visit.reason


def test_a_card_without_member_application_gets_nothing():
    _, channel = member_card(card_type=0x01)
    with TransactionJournal(":memory:") as journal:
        visit = credit_pending(channel, journal=journal, host=KeystoreLoadHost(KEYS),
                               terminal_id=TERMINAL, now=NOW)
        assert visit.decision is Decision.DECLINED and visit.member_no is None
        assert "no member application" in visit.reason


def test_a_load_host_that_is_down_stops_the_visit_and_the_payment_waits():
    class Down:
        def authorize(self, request):
            raise ConnectionError("host unreachable")

    _, channel = member_card()
    with TransactionJournal(":memory:") as journal:
        journal.import_disbursements([Disbursement("R1", "20260001", 500, "a"),
                                      Disbursement("R2", "20260001", 600, "b")], source="s",
                                     now=NOW)
        visit = credit_pending(channel, journal=journal, host=Down(), terminal_id=TERMINAL,
                               now=NOW)
        assert visit.decision is Decision.ERROR and len(visit.loads) == 1
        assert [d.state for d in visit.waiting] == [DisbursementState.PENDING] * 2


def test_journal_refuses_a_load_whose_amount_is_not_the_payments():
    _, channel = member_card()
    with TransactionJournal(":memory:") as journal:
        journal.import_disbursements([Disbursement("R1", "20260001", 500, "a")], source="s",
                                     now=NOW)
        outcome = run(Load(Application.TRANSIT, 700, terminal_id=TERMINAL, now=NOW,
                           member_no="20260001", disbursement=1),
                      card=channel, journal=journal, host=KeystoreLoadHost(KEYS))
        assert outcome.decision is Decision.ERROR
        assert "does not match disbursement 1 (500 fen)" in outcome.reason
        with pytest.raises(JournalError, match="no disbursement 9"):
            journal.disbursement(9)
