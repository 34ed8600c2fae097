"""EMV card sales in the terminal's journal: completed in one commit with their number as
terminal seq, once per card and ATC, exported in the same batches as the purse records."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from unioncard.offline import (
    Application,
    EmvPath,
    EmvRecord,
    OfflineRecord,
    RecordFlags,
    read_batch,
)
from unioncard.terminal.journal import JournalError, TransactionJournal
from unioncard.terminal.session import (
    Journal,
    PendingTransaction,
    Resolution,
    ResolutionState,
)

TERMINAL = bytes.fromhex("310100001234")
WHEN = dt.datetime(2026, 5, 1, 12, 0)


def sale(terminal_id: bytes, seq: int, *, atc: int = 5, ac: bytes = b"\x11" * 8) -> EmvRecord:
    return EmvRecord(
        terminal_id=terminal_id, terminal_seq=seq, pan="6230120000000004242", psn="01",
        aid=bytes.fromhex("A000000333010101"), cid=0x40, ac=ac, tvr=bytes(5),
        unpredictable_number=bytes(4), aip=bytes.fromhex("7C00"), atc=atc,
        iad=bytes.fromhex("07010103900000"), path=EmvPath.EC_OFFLINE, card_type=0x01,
        list_amount=3000, charged_amount=3000, when=WHEN)


def purse_purchase(seq: int) -> OfflineRecord:
    return OfflineRecord(
        terminal_id=TERMINAL, terminal_seq=seq, issuer=bytes.fromhex("10000000FFFFFFFF"),
        diversifier=bytes.fromhex("5500000000000042"), application=Application.TRANSIT,
        card_seq=seq, key_version=1, tx_type=6, mode=7, card_type=0x55, list_amount=200,
        charged_amount=180, balance_after=1820, when=WHEN, tac=bytes(4),
        flags=RecordFlags.NO_TAC)


def test_a_sale_is_journaled_once_with_its_number_as_terminal_seq(tmp_path: Path):
    with TransactionJournal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(JournalError, match="needs this POS's terminal id"):
            journal.record_emv_sale(None, lambda t, n: sale(t, n))
        number, record = journal.record_emv_sale(TERMINAL, lambda t, n: sale(t, n))
        assert (number, record.terminal_seq, record.terminal_id) == (1, 1, TERMINAL)
        # the same sale again (a retry): journaled once
        assert journal.record_emv_sale(None, lambda t, n: sale(t, n)) == (1, record)
        # another cryptogram for the same card and ATC is refused
        with pytest.raises(JournalError, match="already used ATC 5"):
            journal.record_emv_sale(None, lambda t, n: sale(t, n, ac=b"\x22" * 8))
        with pytest.raises(JournalError, match="give each POS its own journal"):
            journal.record_emv_sale(bytes(6), lambda t, n: sale(t, n, atc=6))
        assert journal.counts() == {"pending": 0, "completed": 1, "voided": 0, "unexported": 1}
        [entry] = journal.entries()
        assert entry.record == record and entry.to_dict()["card"] == "623012*********4242/01"
        assert (entry.flow, entry.to_dict()["application"], entry.to_dict()["card_seq"]) == (
            "pos-emv", "emv", 5)


def test_emv_sales_and_purse_records_share_the_terminal_batches(tmp_path: Path):
    with TransactionJournal(tmp_path / "j.sqlite") as journal:
        receipt = journal.write(Journal(begin=PendingTransaction(
            "purchase", purse_purchase(7), 2000)))
        completed = dataclasses.replace(purse_purchase(7), tac=b"\x1a\x2b\x3c\x4d",
                                        flags=RecordFlags(0))
        journal.resolve([Resolution(receipt.transaction_id, ResolutionState.COMPLETED,
                                    completed)])
        number, record = journal.record_emv_sale(TERMINAL, lambda t, n: sale(t, n))
        assert number == 2
        [first] = journal.export(tmp_path / "out", now=dt.datetime(2026, 5, 1, 23))
        assert (first.batch_id, first.count) == (1, 2)
        batch = read_batch(first.path, emv=True)
        assert batch.records == (completed, record)
        journal.record_emv_sale(None, lambda t, n: sale(t, n, atc=6))
        [second] = journal.export(tmp_path / "out", now=dt.datetime(2026, 5, 2, 23))
        assert (second.batch_id, second.count) == (2, 1)
        assert journal.export(tmp_path / "out", now=dt.datetime(2026, 5, 3, 23)) == []


def test_tap_reports_an_approval_it_could_not_journal_as_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import json

    from click.testing import CliRunner

    import unioncard.terminal.emv.record as emv_record
    from unioncard.applet_sim import MemberData, issue_member_card
    from unioncard.cli import root
    from unioncard.crypto import Keystore

    member = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                        dt.date(2026, 1, 1), dt.date(2030, 12, 31))
    card = tmp_path / "card.json"
    issue_member_card(member, Keystore.test(), card_no=7, ec_balance=50_000,
                      random_source=1).save(card)

    def refuse(*args: object, **kwargs: object) -> EmvRecord:
        raise ValueError("the disk is full")

    monkeypatch.setattr(emv_record, "sale_record", refuse)
    result = CliRunner().invoke(root, [
        "tap", "--mode", "pos-emv", "--card", str(card), "--amount", "3000", "--pin",
        "123456", "--journal", str(tmp_path / "j.sqlite"), "--terminal-id", "310100001234",
        "--at", "2026-12-02T10:30:00", "--json"])
    doc = json.loads(result.output)
    assert result.exit_code == 2 and doc["decision"] == "error", doc
    assert "the card approved the sale, but it could not be journaled: the disk is full" in \
        doc["reason"]
    with TransactionJournal(tmp_path / "j.sqlite") as journal:
        assert journal.counts()["completed"] == 0
