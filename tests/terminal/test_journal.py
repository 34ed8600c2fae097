"""The transaction journal (`unioncard.terminal.journal`) on real SQLite files.

Opening and refusing files, one step = one commit, reading back, two-phase
export (with crashes between the phases), durability under SIGKILL of a child
process, and a Hypothesis state machine over begin / complete / void / export.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import unioncard.offline.batch as batch_module
import unioncard.terminal.journal as journal_module
from unioncard.offline import (
    Application,
    OfflineRecord,
    RecordFlags,
    TransactionType,
    batch_file_name,
    read_batch,
)
from unioncard.terminal.journal import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    JournalError,
    TransactionJournal,
)
from unioncard.terminal.session import (
    Journal,
    PendingTransaction,
    Resolution,
    ResolutionState,
)

TERMINAL_A = bytes.fromhex("310100001234")
TERMINAL_B = bytes.fromhex("310100005678")
NOW = dt.datetime(2026, 5, 1, 23, 0, 0)
ISSUER = bytes.fromhex("10000000FFFFFFFF")
ZEROS = {"pending": 0, "completed": 0, "voided": 0, "unexported": 0}


# --- helpers ------------------------------------------------------------------------------


def make_draft(terminal_id: bytes = TERMINAL_A, n: int = 1, *, load: bool = False
               ) -> OfflineRecord:
    """Transaction ``n``'s draft as `PurseSession.draft` builds it: the record as it will
    be if the card commits, TAC zero and flagged NO_TAC (``n`` makes it unique)."""
    common: dict[str, Any] = dict(
        terminal_id=terminal_id, issuer=ISSUER, diversifier=(0x55 << 56 | n).to_bytes(8, "big"),
        application=Application.TRANSIT, card_seq=n % 0x10000, key_version=1,
        card_type=0x55, balance_after=10_000 + n,
        when=dt.datetime(2026, 5, 1, 8, 30) + dt.timedelta(seconds=n),
        tac=bytes(4), flags=RecordFlags.NO_TAC)
    if load:  # a load's terminal seq is its journal number, set when completed
        return OfflineRecord(**common, terminal_seq=0, tx_type=TransactionType.EP_LOAD, mode=0,
                             list_amount=5000, charged_amount=5000)
    return OfflineRecord(**common, terminal_seq=n, tx_type=TransactionType.EP_PURCHASE, mode=1,
                         list_amount=200, charged_amount=180, rules=(0,), route="71",
                         ruleset_version=bytes(range(32)))


def pending_tx(terminal_id: bytes = TERMINAL_A, n: int = 1, *, load: bool = False
               ) -> PendingTransaction:
    draft = make_draft(terminal_id, n, load=load)
    change = draft.charged_amount if load else -draft.charged_amount
    return PendingTransaction("load" if load else "purchase", draft,
                              draft.balance_after - change)


def begin(journal: TransactionJournal, pending: PendingTransaction,
          *resolutions: Resolution) -> PendingTransaction:
    """Journal ``pending`` (and ``resolutions``, in the same step): the journaled one."""
    receipt = journal.write(Journal(begin=pending, resolutions=resolutions))
    assert isinstance(receipt.transaction_id, int)
    return pending.journaled(receipt)


REAL_WRITE_BATCH = batch_module.write_batch


def patch_write_batch(patcher: pytest.MonkeyPatch, fake: Any) -> None:
    """Replace `write_batch` where the journal finds it: it imports it from
    `unioncard.offline.batch` when an export writes a file (a journal that imports it at
    module level has its own name for it, replaced too)."""
    patcher.setattr(batch_module, "write_batch", fake)
    if hasattr(journal_module, "write_batch"):
        patcher.setattr(journal_module, "write_batch", fake)


def tac_for(n: int) -> bytes:
    return (0x1A2B0000 + n).to_bytes(4, "big")


def raw_rows(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT * FROM transactions ORDER BY id").fetchall()


def batch_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())} if out.exists() else {}


def records_in(out: Path) -> list[tuple[str, OfflineRecord]]:
    """Every (file name, record) of every batch file in ``out``; only batch files there."""
    found = []
    for name in batch_files(out):
        assert name.endswith(".ucb") and not name.startswith("."), f"stray file {name}"
        found += [(name, record) for record in read_batch(out / name).records]
    return found


def assert_each_record_in_one_file(out: Path) -> None:
    raws = [record.to_bytes() for _, record in records_in(out)]
    assert len(raws) == len(set(raws)), "a record is in two batch files"


# --- 1. opening, reopening, refusing -------------------------------------------------------


def test_a_new_journal_is_created_with_its_directories_and_reopened_with_its_content(
        tmp_path: Path) -> None:
    path = tmp_path / "terminal" / "data" / "journal.sqlite"
    with TransactionJournal(path) as journal:
        assert journal.pending() == [] and journal.counts() == ZEROS
        begun = [begin(journal, pending_tx(TERMINAL_A, 1)),
                 begin(journal, pending_tx(TERMINAL_B, 2, load=True)),
                 begin(journal, pending_tx(TERMINAL_A, 3))]
        done = begin(journal, pending_tx(TERMINAL_A, 4))
        journal.resolve([done.completed(tac_for(4))])
        before = journal.entries()
    assert path.is_file()
    ids = [p.id for p in [*begun, done]]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(set(ids))

    with TransactionJournal(path) as journal:
        again = journal.pending()
        assert again == begun  # flow, draft, balance before and id
        assert [p.draft.to_bytes() for p in again] == [p.draft.to_bytes() for p in begun]
        assert journal.entries() == before
        later = begin(journal, pending_tx(TERMINAL_A, 5))
        assert later.id is not None and later.id > max(ids)
    with closing(sqlite3.connect(path)) as db:  # the draft's 256 bytes, untouched
        drafts = [bytes(d) for (d,) in db.execute("SELECT draft FROM transactions ORDER BY id")]
    assert drafts == [p.draft.to_bytes() for p in [*begun, done, later]]


@pytest.mark.parametrize("content", [b"this is not a database\n" * 64, bytes(range(256)) * 16],
                         ids=["text", "binary"])
def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(content)
    with pytest.raises(JournalError, match="is not a unioncard journal") as refused:
        TransactionJournal(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == content


def test_a_journal_with_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with TransactionJournal(path) as journal:
        begin(journal, pending_tx())
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
        db.commit()
    with pytest.raises(JournalError, match=rf"has journal schema {SCHEMA_VERSION + 1}; this "
                                           rf"release reads schema {SCHEMA_VERSION}") as refused:
        TransactionJournal(path)
    assert str(path) in str(refused.value)


def test_refusing_a_newer_journal_leaves_it_untouched(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with closing(sqlite3.connect(path)) as db:  # a journal of a later release, schema 2
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION + 1),))
        db.execute("CREATE TABLE journal_v2 (id INTEGER PRIMARY KEY)")
        db.commit()
        schema = db.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    with pytest.raises(JournalError, match="schema"):
        TransactionJournal(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == schema
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_wal_mode_and_synchronous_full_are_in_effect(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with TransactionJournal(path) as journal:
        db = journal._db  # no public accessor: the pragmas of the journal's own connection
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        begin(journal, pending_tx())
        assert Path(f"{path}-wal").exists()
    with closing(sqlite3.connect(path)) as db:  # WAL mode is a property of the file
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with TransactionJournal(path, durable=False) as journal:
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF


# --- 2. one step, one transaction ----------------------------------------------------------


def test_a_step_with_an_unknown_transaction_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with TransactionJournal(path) as journal:
        first = begin(journal, pending_tx(n=1))
        assert first.id is not None
        rows, counts = raw_rows(path), journal.counts()
        step = Journal(begin=pending_tx(n=2), resolutions=(
            first.completed(tac_for(1)),  # valid, and applied before the bad one
            Resolution(first.id + 99, ResolutionState.VOIDED, reason="no such thing")))
        with pytest.raises(JournalError, match=f"no transaction {first.id + 99} in the journal"):
            journal.write(step)
        assert raw_rows(path) == rows and journal.counts() == counts
        assert journal.pending() == [first]
        # the begin was not inserted: its number goes to the next transaction
        assert begin(journal, pending_tx(n=3)).id == first.id + 1


def test_completing_a_voided_transaction_is_refused_and_the_step_applies_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with TransactionJournal(path) as journal:
        refused = begin(journal, pending_tx(n=1))
        journal.resolve([refused.voided("DEBIT refused: 9401")])
        other = begin(journal, pending_tx(n=2))
        rows = raw_rows(path)
        with pytest.raises(JournalError, match=rf"transaction {refused.id} is voided; it "
                                               "cannot become completed"):
            journal.write(Journal(begin=pending_tx(n=3), resolutions=(
                other.completed(tac_for(2)), refused.completed(tac_for(1)))))
        assert raw_rows(path) == rows and journal.pending() == [other]
        with pytest.raises(JournalError, match="is voided"):
            journal.resolve([refused.completed(None)])
        journal.resolve([other.completed(tac_for(2))])
        with pytest.raises(JournalError, match=rf"transaction {other.id} is completed; it "
                                               "cannot become voided"):
            journal.resolve([other.voided("too late")])
        entries = {e.id: e for e in journal.entries()}
        assert (entries[refused.id].state, entries[refused.id].reason) == \
            ("voided", "DEBIT refused: 9401")
        assert entries[other.id].state == "completed"
        assert journal.counts() == {"pending": 0, "completed": 1, "voided": 1, "unexported": 1}


class _Later(dt.datetime):
    """A clock two years ahead: an update of ``resolved_at`` would show."""

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> _Later:
        return cls(2028, 6, 1, 12, 0, 0)


def test_applying_the_same_resolution_twice_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.sqlite"
    with TransactionJournal(path) as journal:
        done, refused = begin(journal, pending_tx(n=1)), begin(journal, pending_tx(n=2))
        resolutions = (done.completed(tac_for(1)), refused.voided("card refused"))
        journal.write(Journal(resolutions=resolutions))
        rows, entries = raw_rows(path), journal.entries()

        monkeypatch.setattr(journal_module, "dt", SimpleNamespace(datetime=_Later))
        journal.resolve(resolutions)
        journal.resolve(resolutions[::-1])
        journal.write(Journal(resolutions=resolutions))
        receipt = journal.write(Journal(begin=pending_tx(n=3), resolutions=resolutions))
        assert raw_rows(path)[:2] == rows
        assert journal.entries(newest_first=False)[:2] == entries[::-1]
        # the later clock is in effect: a real resolution now would carry it
        third = pending_tx(n=3).journaled(receipt)
        journal.resolve([third.voided("checking the clock")])
        assert journal.entries(limit=1)[0].resolved_at == dt.datetime(2028, 6, 1, 12, 0, 0)


def test_completing_a_completed_transaction_with_another_record_is_refused(
        tmp_path: Path) -> None:
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        tx = begin(journal, pending_tx())
        journal.resolve([tx.completed(tac_for(1))])
        with pytest.raises(JournalError):
            journal.resolve([tx.completed(None, RecordFlags.RECOVERED)])


def test_a_completion_with_a_record_of_another_terminal_is_refused(tmp_path: Path) -> None:
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        tx = begin(journal, pending_tx(TERMINAL_A))
        completed = tx.completed(tac_for(1))
        assert completed.record is not None and tx.id is not None
        foreign = dataclasses.replace(completed.record, terminal_id=TERMINAL_B)
        with pytest.raises(JournalError):
            journal.resolve([Resolution(tx.id, ResolutionState.COMPLETED, foreign)])


def test_an_empty_step_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with TransactionJournal(path) as journal:
        assert journal.write(Journal()).transaction_id is None
        journal.resolve([])
        assert journal.counts() == ZEROS and raw_rows(path) == []


def test_a_full_disk_fails_the_step_and_the_journal_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with TransactionJournal(path) as journal:
        kept = [begin(journal, pending_tx(n=1))]
        pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
        journal._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
        with pytest.raises(sqlite3.Error):  # once the free pages are used
            for n in range(2, 500):
                kept.append(begin(journal, pending_tx(n=n)))
        journal._db.execute("PRAGMA max_page_count = 1073741823")  # room again
        assert journal.pending() == kept
        kept.append(begin(journal, pending_tx(n=1000)))
        assert journal.pending() == kept


def test_a_full_disk_is_reported_as_a_full_disk(tmp_path: Path) -> None:
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        begin(journal, pending_tx(n=1))
        pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
        journal._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(sqlite3.Error, match="disk is full"):
            for n in range(2, 500):
                begin(journal, pending_tx(n=n))


def test_two_handles_on_one_journal_see_each_other(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two connections (two processes, in effect): writes are serialized, ids stay unique,
    and an export started while another runs is refused at once: every record lands in
    exactly one batch file, written once."""
    path, out = tmp_path / "journal.sqlite", tmp_path / "out"
    with TransactionJournal(path) as one, TransactionJournal(path) as two:
        a = begin(one, pending_tx(TERMINAL_A, 1))
        b = begin(two, pending_tx(TERMINAL_B, 2))
        assert a.id is not None and b.id == a.id + 1
        assert one.pending() == two.pending() == [a, b]
        two.resolve([a.completed(tac_for(1))])
        one.resolve([b.completed(tac_for(2))])
        assert one.counts() == two.counts() == {"pending": 0, "completed": 2, "voided": 0,
                                                "unexported": 2}

        # `two` exports while `one` is between assigning its batches and writing them
        real, raced = REAL_WRITE_BATCH, []

        def race(*args: Any, **kwargs: Any) -> Path:
            if not raced:
                raced.append(True)
                with pytest.raises(JournalError, match=r"another export of .* is running"):
                    two.export(out, now=NOW + dt.timedelta(minutes=5))
                raced.append(False)
            return real(*args, **kwargs)

        patch_write_batch(monkeypatch, race)
        exported = one.export(out, now=NOW)
        assert len(raced) == 2, "the racing export did not run"
        assert sorted(batch_files(out)) == sorted(e.path.name for e in exported)
        assert sorted(r.to_bytes() for _, r in records_in(out)) == sorted(
            e.record.to_bytes() for e in one.entries() if e.record is not None)
        assert_each_record_in_one_file(out)
        for e in exported:
            assert read_batch(e.path).created == NOW  # the batch's time, whoever wrote it
        assert one.export(out, now=NOW) == [] and two.export(out, now=NOW) == []


# --- 3. reading -----------------------------------------------------------------------------

DOCUMENTED_KEYS = {"id", "flow", "state", "started_at", "resolved_at", "reason", "batch_id",
                   "terminal_id", "application", "card", "card_seq", "amount", "record"}


def _mixed(journal: TransactionJournal, out: Path) -> list[PendingTransaction]:
    """Six transactions: 1 completed and exported, 2 pending, 3 load completed without TAC
    and exported, 4 voided, 5 completed after the export, 6 pending."""
    txs = [begin(journal, pending_tx(TERMINAL_A if n % 2 else TERMINAL_B, n, load=n == 3))
           for n in range(1, 7)]
    journal.resolve([txs[0].completed(tac_for(1)), txs[2].completed(None),
                     txs[3].voided("DEBIT refused: 9401")])
    journal.export(out, now=NOW)
    journal.resolve([txs[4].completed(tac_for(5))])
    return txs


def test_entries_are_filtered_and_ordered(tmp_path: Path) -> None:
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        txs = _mixed(journal, tmp_path / "out")
        ids = [t.id for t in txs]
        assert [e.id for e in journal.entries()] == ids[::-1]
        assert [e.id for e in journal.entries(newest_first=False)] == ids
        assert [e.id for e in journal.entries(state="pending")] == [ids[5], ids[1]]
        assert [e.id for e in journal.entries(state="completed", newest_first=False)] == \
            [ids[0], ids[2], ids[4]]
        assert [e.id for e in journal.entries(state="voided")] == [ids[3]]
        assert [e.id for e in journal.entries(limit=2)] == [ids[5], ids[4]]
        assert [e.id for e in journal.entries(state="completed", limit=1,
                                              newest_first=False)] == [ids[0]]

        by_id = {e.id: e for e in journal.entries()}
        first, load, voided, late, waiting = (by_id[ids[i]] for i in (0, 2, 3, 4, 5))
        assert (first.flow, first.state, first.reason) == ("purchase", "completed", "")
        assert first.draft == txs[0].draft and first.started_at == txs[0].draft.when
        assert first.record == txs[0].completed(tac_for(1)).record
        assert first.resolved_at is not None and first.batch_id is not None
        assert (load.flow, load.batch_id) == ("load", first.batch_id)  # both terminal A
        assert load.record is not None and load.record.terminal_seq == ids[2]
        assert load.record.flags == RecordFlags.NO_TAC and load.record.tac == bytes(4)
        assert (voided.record, voided.reason, voided.batch_id) == \
            (None, "DEBIT refused: 9401", None)
        assert late.state == "completed" and late.batch_id is None
        assert (waiting.state, waiting.record, waiting.resolved_at) == ("pending", None, None)


def test_entries_of_an_exported_batch_name_it(tmp_path: Path) -> None:
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        txs = _mixed(journal, tmp_path / "out")
        batches = {b.terminal_id: b.batch_id for b in journal.export(tmp_path / "more", now=NOW)}
        by_id = {e.id: e for e in journal.entries()}
        assert by_id[txs[4].id].batch_id == batches[TERMINAL_A]


def test_counts(tmp_path: Path) -> None:
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        assert journal.counts() == ZEROS
        _mixed(journal, tmp_path / "out")
        assert journal.counts() == {"pending": 2, "completed": 3, "voided": 1, "unexported": 1}
        journal.export(tmp_path / "out", now=NOW)
        assert journal.counts() == {"pending": 2, "completed": 3, "voided": 1, "unexported": 0}


def test_an_entry_as_a_dict_is_json_with_the_documented_keys(tmp_path: Path) -> None:
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        txs = _mixed(journal, tmp_path / "out")
        for entry in journal.entries():
            shown = entry.to_dict()
            assert set(shown) == DOCUMENTED_KEYS
            assert json.loads(json.dumps(shown)) == shown
        by_id = {e.id: e.to_dict() for e in journal.entries()}
        first = by_id[txs[0].id]
        record = txs[0].completed(tac_for(1)).record
        assert record is not None
        assert first == {
            "id": txs[0].id, "flow": "purchase", "state": "completed",
            "started_at": "2026-05-01T08:30:01", "resolved_at": first["resolved_at"],
            "reason": "", "batch_id": first["batch_id"], "terminal_id": "310100001234",
            "application": "transit", "card": "10000000FFFFFFFF/5500000000000001",
            "card_seq": 1, "amount": 180, "record": record.to_dict()}
        assert dt.datetime.fromisoformat(first["resolved_at"]) and first["batch_id"] >= 1
        waiting = by_id[txs[1].id]
        assert (waiting["state"], waiting["record"], waiting["resolved_at"],
                waiting["batch_id"], waiting["terminal_id"]) == \
            ("pending", None, None, None, "310100005678")
        assert by_id[txs[3].id]["reason"] == "DEBIT refused: 9401"


# --- 4. export ------------------------------------------------------------------------------


def _scenario(journal: TransactionJournal
              ) -> tuple[dict[bytes, list[OfflineRecord]], list[PendingTransaction],
                         list[PendingTransaction]]:
    """Eight transactions of two terminals: completed (one a load, one without TAC, one in
    the same step as the next begin), pending, voided.  Returns the completed records per
    terminal in journal order, the pending ones and the voided ones."""
    expected: dict[bytes, list[OfflineRecord]] = {TERMINAL_A: [], TERMINAL_B: []}
    pending, voided = [], []
    carried: tuple[Resolution, ...] = ()
    for n in range(1, 9):
        terminal = TERMINAL_B if n % 3 == 0 else TERMINAL_A
        tx = begin(journal, pending_tx(terminal, n, load=n == 4), *carried)
        carried = ()
        if n in (3, 7):
            pending.append(tx)
        elif n == 5:
            journal.resolve([tx.voided("DEBIT refused: 9401")])
            voided.append(tx)
        else:
            done = tx.completed(None if n == 8 else tac_for(n))
            assert done.record is not None
            expected[terminal].append(done.record)
            if n == 1:
                carried = (done,)  # journaled with the next begin
            else:
                journal.resolve([done])
    return expected, pending, voided


def test_export_writes_one_batch_file_per_terminal(tmp_path: Path) -> None:
    out = tmp_path / "batches" / "today"
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        expected, pending, voided = _scenario(journal)
        exported = journal.export(out, now=NOW.replace(microsecond=654321))
        assert [b.terminal_id for b in exported] == [TERMINAL_A, TERMINAL_B]
        assert [b.batch_id for b in exported] == [1, 1]  # each terminal's first batch
        assert sorted(batch_files(out)) == sorted(batch_file_name(b.terminal_id, b.batch_id)
                                                  for b in exported)
        for b in exported:
            assert b.path == out / batch_file_name(b.terminal_id, b.batch_id)
            assert not b.rewritten and b.count == len(expected[b.terminal_id])
            batch = read_batch(b.path)
            assert (batch.terminal_id, batch.batch_id, batch.created) == \
                (b.terminal_id, b.batch_id, NOW)
            assert list(batch.records) == expected[b.terminal_id]  # journal order
        batch_of = {b.terminal_id: b.batch_id for b in exported}
        for entry in journal.entries():
            wanted = batch_of[entry.draft.terminal_id] if entry.state == "completed" else None
            assert entry.batch_id == wanted
        assert journal.counts()["unexported"] == 0
        never = {t.draft.diversifier for t in [*pending, *voided]}
        assert not [r for _, r in records_in(out) if r.diversifier in never]


def test_export_twice_exports_nothing_and_later_completions_go_to_new_batches(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        _, pending, voided = _scenario(journal)
        first = journal.export(out, now=NOW)
        files = batch_files(out)
        assert journal.export(out, now=NOW + dt.timedelta(hours=1)) == []
        assert batch_files(out) == files

        # one that was pending during the first export (terminal B) completes in the step
        # that begins a new one (terminal A), which completes too
        late = pending[0].completed(tac_for(103))
        new = begin(journal, pending_tx(TERMINAL_A, 20), late)
        journal.resolve([new.completed(tac_for(20))])
        second = journal.export(out, now=NOW + dt.timedelta(hours=2))
        assert [(b.terminal_id, b.count, b.rewritten) for b in second] == \
            [(TERMINAL_A, 1, False), (TERMINAL_B, 1, False)]
        assert min(b.batch_id for b in second) > max(b.batch_id for b in first)
        by_terminal = {b.terminal_id: read_batch(b.path) for b in second}
        assert list(by_terminal[TERMINAL_A].records) == [new.completed(tac_for(20)).record]
        assert list(by_terminal[TERMINAL_B].records) == [late.record]
        assert by_terminal[TERMINAL_A].created == NOW + dt.timedelta(hours=2)
        assert {k: v for k, v in batch_files(out).items() if k in files} == files
        assert len(batch_files(out)) == 4
        assert journal.export(out, now=NOW + dt.timedelta(hours=3)) == []

        assert_each_record_in_one_file(out)
        never = {pending[1].draft.diversifier, *(t.draft.diversifier for t in voided)}
        assert not [r for _, r in records_in(out) if r.diversifier in never]
        assert journal.pending() == [pending[1]]


def _more(journal: TransactionJournal) -> None:
    """Completions after the first export: the first pending one, and a new one."""
    oldest = journal.pending()[0]
    new = begin(journal, pending_tx(TERMINAL_A, 30), oldest.completed(tac_for(300)))
    journal.resolve([new.completed(tac_for(30))])


@pytest.mark.parametrize("crash_at", [0, 1], ids=["first-batch", "second-batch"])
@pytest.mark.parametrize("crash", ["before-write", "inside-write", "after-write"])
def test_an_interrupted_export_is_finished_identically(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: str, crash_at: int) -> None:
    """A crash between assigning the records and marking the batch written: the next export
    writes the batch with the same name and bytes an uninterrupted export gives."""
    out, twin_out = tmp_path / "out", tmp_path / "twin-out"
    with TransactionJournal(tmp_path / "journal.sqlite") as journal, \
            TransactionJournal(tmp_path / "twin.sqlite") as twin:
        _scenario(journal)
        _scenario(twin)
        twin_first = twin.export(twin_out, now=NOW)  # uninterrupted
        real_write, real_link, calls = REAL_WRITE_BATCH, os.link, []

        def write_batch(path: Path, *args: Any) -> Path:
            calls.append(path)
            if len(calls) == crash_at + 1 and crash == "before-write":
                raise OSError(errno.EIO, "simulated crash before the batch file is written")
            written = real_write(path, *args)
            if len(calls) == crash_at + 1 and crash == "after-write":
                raise OSError(errno.EIO, "simulated crash before the batch is marked written")
            return written

        def link(source: Any, target: Any) -> None:  # inside write_batch: after the fsync
            if crash == "inside-write" and len(calls) == crash_at + 1:
                raise OSError(errno.ENOSPC, "simulated crash while naming the batch file")
            real_link(source, target)

        with monkeypatch.context() as patch:
            patch_write_batch(patch, write_batch)
            patch.setattr(os, "link", link)
            with pytest.raises(OSError, match="simulated crash"):
                journal.export(out, now=NOW)
        left = batch_files(out)  # no temporary file, whatever the crash
        assert all(name.endswith(".ucb") and not name.startswith(".") for name in left)
        assert len(left) == crash_at + (crash == "after-write")
        assert journal.counts()["unexported"] == 0  # every record is in a batch already

        _more(journal)
        _more(twin)
        finished = journal.export(out, now=NOW + dt.timedelta(hours=1))
        unfinished = 2 - crash_at  # batches of the crashed export not marked written
        assert [b.rewritten for b in finished] == [True] * unfinished + [False, False]
        twin_second = twin.export(twin_out, now=NOW + dt.timedelta(hours=1))
        assert [(b.batch_id, b.path.name, b.count) for b in finished] == \
            [(b.batch_id, b.path.name, b.count) for b in [*twin_first[crash_at:], *twin_second]]
        assert batch_files(out) == batch_files(twin_out)  # same names, same bytes
        assert_each_record_in_one_file(out)
        assert journal.export(out, now=NOW + dt.timedelta(hours=2)) == []


def test_an_export_refused_for_its_time_does_not_block_later_exports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with TransactionJournal(tmp_path / "journal.sqlite") as journal:
        _scenario(journal)
        with pytest.raises(ValueError, match="naive"):
            journal.export(out, now=NOW.replace(tzinfo=dt.UTC))
        assert len(journal.export(out, now=NOW)) == 2
        assert journal.counts()["unexported"] == 0


# --- 5. durability under SIGKILL ------------------------------------------------------------

CHILD = r"""
import datetime as dt, random, sys
from unioncard.offline import Application, OfflineRecord, RecordFlags, TransactionType
from unioncard.terminal.journal import TransactionJournal
from unioncard.terminal.session import Journal, PendingTransaction

path, round_no = sys.argv[1], int(sys.argv[2])
rng = random.Random(round_no)
journal = TransactionJournal(path)
unresolved = journal.pending()
print("ready", flush=True)
for i in range(1_000_000):
    n = round_no * 100_000 + i
    draft = OfflineRecord(
        terminal_id=bytes.fromhex("310100001234"), terminal_seq=n, issuer=bytes(8),
        diversifier=n.to_bytes(8, "big"), application=Application.TRANSIT,
        card_seq=i % 65536, key_version=1, tx_type=TransactionType.EP_PURCHASE, mode=1,
        card_type=0x55,
        list_amount=200, charged_amount=180, balance_after=1000,
        when=dt.datetime(2026, 5, 1, 8, 30), tac=bytes(4), flags=RecordFlags.NO_TAC)
    resolutions, resolved = (), "-"
    if unresolved and rng.random() < 0.6:
        victim = unresolved.pop(rng.randrange(len(unresolved)))
        if rng.random() < 0.7:
            resolutions, resolved = (victim.completed((n + 1).to_bytes(4, "big")),), "completed"
        else:
            resolutions, resolved = (victim.voided("the card says no"),), "voided"
        resolved = f"{victim.id}:{resolved}"
    pending = PendingTransaction("purchase", draft, 1180)
    receipt = journal.write(Journal(begin=pending, resolutions=resolutions))
    unresolved.append(pending.journaled(receipt))
    print(receipt.transaction_id, n, resolved, flush=True)
"""


def _run_and_kill(path: Path, round_no: int, lines: int | None, delay: float) -> list[str]:
    """Start the child, read ``lines`` lines after "ready" (None: do not even wait for it),
    wait ``delay`` s, SIGKILL it; every complete line it printed."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(round_no)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    got: list[str] = []
    try:
        if lines is not None:
            got.append(child.stdout.readline())
            if got[0] != "ready\n":
                child.kill()
                pytest.fail(f"the child did not start: {child.communicate()[1][-2000:]}")
            got += [child.stdout.readline() for _ in range(lines)]
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        rest, errors = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, errors[-2000:]
    assert errors == ""
    text = "".join(got) + rest
    return [line for line in text.splitlines(keepends=True)  # a line cut by the kill is
            if line.endswith("\n") and line != "ready\n"]    # no report


def test_sigkill_loses_no_reported_commit(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    rng = random.Random(20260501)
    known: dict[int, str] = {}  # the journal's states, as checked after the previous round
    started = time.monotonic()
    plans = [(None, 0.05), (0, 0.0), (1, 0.002), (5, 0.01), (20, rng.uniform(0, 0.03)),
             (rng.randint(1, 60), rng.uniform(0, 0.03)), (rng.randint(1, 60), 0.0)]
    for round_no, (lines, delay) in enumerate(plans, start=1):
        reports = _run_and_kill(path, round_no, lines, delay)
        expected, seqs = dict(known), {}
        for line in reports:
            new_id, n, resolved = line.split()
            expected[int(new_id)] = "pending"
            seqs[int(new_id)] = int(n)
            if resolved != "-":
                victim, state = resolved.split(":")
                assert expected[int(victim)] == "pending"
                expected[int(victim)] = state
        with TransactionJournal(path) as journal:  # opening recovers the WAL
            entries = {e.id: e for e in journal.entries()}
            assert set(expected) <= set(entries), "a reported commit is lost"
            # the only difference allowed: the one step the child had not reported yet
            # (a new pending transaction and at most one resolution, all or nothing)
            extra = set(entries) - set(expected)
            changed = {i for i, state in expected.items() if entries[i].state != state}
            assert len(extra) <= 1 and len(changed) <= 1
            if extra:
                (unreported,) = extra
                assert unreported > max(expected, default=0)
                assert entries[unreported].state == "pending"
            if changed:
                (victim,) = changed
                assert extra, "a resolution was applied without its step's begin"
                assert expected[victim] == "pending"
            for new_id, n in seqs.items():
                assert entries[new_id].draft.terminal_seq == n
            assert [p.id for p in journal.pending()] == \
                [i for i in sorted(entries) if entries[i].state == "pending"]
            known = {i: e.state for i, e in entries.items()}
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert len(known) > 10, "the children hardly wrote anything"
    with TransactionJournal(path) as journal:  # and the journal goes on
        tx = begin(journal, pending_tx(TERMINAL_A, 1))
        journal.resolve([tx.completed(tac_for(1))])
        exported = journal.export(tmp_path / "out", now=NOW)
        assert sum(b.count for b in exported) == journal.counts()["completed"] > 0
    assert time.monotonic() - started < 10


# --- 6. any interleaving keeps the invariants ------------------------------------------------


@dataclasses.dataclass
class _ModelBatch:
    terminal_id: bytes
    ids: list[int]
    created: dt.datetime
    written: bool = False
    no: int = 0  # the batch's number among its terminal's batches: 1, 2, 3, ...


class JournalMachine(RuleBasedStateMachine):
    """begin (alone or with a resolution), complete, void, resolve again, export (crashing
    at any batch, or not), reopen; the model says what the journal and the files hold."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="unioncard-journal-"))
        self.path, self.out = self.dir / "journal.sqlite", self.dir / "batches"
        self.journal = TransactionJournal(self.path, durable=False)
        self.n = 0
        self.begun: dict[int, PendingTransaction] = {}
        self.pending: dict[int, PendingTransaction] = {}
        self.completed: dict[int, OfflineRecord] = {}
        self.voided: set[int] = set()
        self.unassigned: set[int] = set()
        self.batches: dict[int, _ModelBatch] = {}
        self.next_batch = 1
        self.clock = NOW

    def _draw_resolution(self, data: st.DataObject) -> Resolution:
        tx = self.pending[data.draw(st.sampled_from(sorted(self.pending)), label="resolve")]
        how = data.draw(st.sampled_from(["tac", "no tac", "void"]), label="how")
        if how == "void":
            return tx.voided("DEBIT refused")
        return tx.completed(tac_for(tx.id or 0) if how == "tac" else None)

    def _apply(self, resolution: Resolution) -> None:
        tid = resolution.transaction_id
        del self.pending[tid]
        if resolution.record is None:
            self.voided.add(tid)
        else:
            self.completed[tid] = resolution.record
            self.unassigned.add(tid)

    @rule(terminal=st.sampled_from([TERMINAL_A, TERMINAL_B]), load=st.booleans(),
          data=st.data())
    def begin_transaction(self, terminal: bytes, load: bool, data: st.DataObject) -> None:
        self.n += 1
        resolutions = ()
        if self.pending and data.draw(st.booleans(), label="resolve in the same step"):
            resolutions = (self._draw_resolution(data),)
        tx = begin(self.journal, pending_tx(terminal, self.n, load=load), *resolutions)
        assert tx.id is not None and tx.id not in self.begun
        for resolution in resolutions:
            self._apply(resolution)
        self.begun[tx.id] = self.pending[tx.id] = tx

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def resolve(self, data: st.DataObject) -> None:
        resolution = self._draw_resolution(data)
        self.journal.resolve([resolution])
        self._apply(resolution)

    @precondition(lambda self: self.completed or self.voided)
    @rule(data=st.data())
    def resolve_again(self, data: st.DataObject) -> None:
        """The same resolution again changes nothing; the opposite one is refused, with
        the begin of its step."""
        tid = data.draw(st.sampled_from(sorted([*self.completed, *self.voided])))
        tx = self.begun[tid]
        if tid in self.completed:
            same = Resolution(tid, ResolutionState.COMPLETED, self.completed[tid])
            opposite = tx.voided("late")
        else:
            same, opposite = tx.voided("again"), tx.completed(tac_for(tid))
        self.journal.resolve([same])
        self.n += 1
        with pytest.raises(JournalError, match="cannot become"):
            self.journal.write(Journal(begin=pending_tx(TERMINAL_A, self.n),
                                       resolutions=(opposite,)))

    def _writing(self) -> list[int]:
        return sorted(b for b, m in self.batches.items() if not m.written)

    def _batch_writes(self) -> int:
        """How many batch files the next export writes (unfinished ones, then new ones)."""
        terminals = {self.completed[i].terminal_id for i in self.unassigned}
        return len(self._writing()) + len(terminals)

    @rule()
    def export(self) -> None:
        self._export(None)

    @precondition(lambda self: self._batch_writes())
    @rule(data=st.data())
    def export_crashing(self, data: st.DataObject) -> None:
        """The process dies while writing the n-th batch file (before it is marked written)."""
        self._export(data.draw(st.integers(0, self._batch_writes() - 1), label="crash at"))

    def _export(self, crash_at: int | None) -> None:
        self.clock += dt.timedelta(minutes=1)
        writing = self._writing()
        terminals = sorted({self.completed[i].terminal_id for i in self.unassigned})
        calls = len(writing) + len(terminals)
        crashes = crash_at is not None and crash_at < calls
        real, made = REAL_WRITE_BATCH, []

        def write_batch(*args: Any) -> Path:
            made.append(args[0])
            if len(made) - 1 == crash_at:
                raise OSError(errno.EIO, "simulated crash")
            return real(*args)

        with pytest.MonkeyPatch.context() as patch:
            patch_write_batch(patch, write_batch)
            if crashes:
                with pytest.raises(OSError, match="simulated crash"):
                    self.journal.export(self.out, now=self.clock)
            else:
                exported = self.journal.export(self.out, now=self.clock)

        done = crash_at if crashes else calls
        assert done is not None
        expected = []
        for k, batch_id in enumerate(writing):
            if k < done:
                self.batches[batch_id].written = True
                expected.append((self.batches[batch_id].terminal_id,
                                 self.batches[batch_id].no, True))
        if done >= len(writing):  # the new batches were assigned
            for k, terminal in enumerate(terminals, start=len(writing)):
                ids = sorted(i for i in self.unassigned
                             if self.completed[i].terminal_id == terminal)
                no = 1 + max((m.no for m in self.batches.values()
                              if m.terminal_id == terminal), default=0)
                self.batches[self.next_batch] = _ModelBatch(terminal, ids, self.clock,
                                                            written=k < done, no=no)
                expected.append((terminal, no, False))
                self.next_batch += 1
            self.unassigned.clear()
        if not crashes:
            assert [(b.terminal_id, b.batch_id, b.rewritten) for b in exported] == expected
            by_number = {(m.terminal_id, m.no): m for m in self.batches.values()}
            for b in exported:
                model = by_number[(b.terminal_id, b.batch_id)]
                assert b.count == len(model.ids)

    @rule()
    def reopen(self) -> None:
        self.journal.close()
        self.journal = TransactionJournal(self.path, durable=False)

    @invariant()
    def pending_is_exactly_the_begun_but_unresolved(self) -> None:
        assert self.journal.pending() == [self.pending[i] for i in sorted(self.pending)]

    @invariant()
    def the_journal_agrees_with_the_model(self) -> None:
        assert self.journal.counts() == {
            "pending": len(self.pending), "completed": len(self.completed),
            "voided": len(self.voided), "unexported": len(self.unassigned)}
        batch_of = {i: m.no for m in self.batches.values() for i in m.ids}
        for entry in self.journal.entries():
            assert entry.draft == self.begun[entry.id].draft
            assert entry.record == self.completed.get(entry.id)
            assert entry.batch_id == batch_of.get(entry.id)

    @invariant()
    def the_files_are_the_written_batches(self) -> None:
        written = {batch_file_name(m.terminal_id, m.no): (m.no, m)
                   for m in self.batches.values() if m.written}
        assert sorted(batch_files(self.out)) == sorted(written)
        seen: set[int] = set()
        for name, (batch_id, model) in written.items():
            batch = read_batch(self.out / name)
            assert (batch.terminal_id, batch.batch_id, batch.created) == \
                (model.terminal_id, batch_id, model.created)
            assert list(batch.records) == [self.completed[i] for i in model.ids]
            assert seen.isdisjoint(model.ids), "a transaction in two batches"
            seen.update(model.ids)

    def teardown(self) -> None:
        try:
            self._export(None)  # a final export: every completed transaction exactly once
            self.the_files_are_the_written_batches()
            in_files = sorted(i for m in self.batches.values() for i in m.ids)
            assert in_files == sorted(self.completed)
            assert self.journal.export(self.out, now=self.clock) == []
        finally:
            self.journal.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def test_any_interleaving_keeps_the_invariants() -> None:
    run_state_machine_as_test(JournalMachine, settings=settings(
        max_examples=30, stateful_step_count=15, deadline=None))


def test_concurrent_writers_are_serialized(tmp_path: Path) -> None:
    """Three connections (as three processes would) write steps at once: none fails with
    "database is locked", every step is there, ids are unique."""
    path = tmp_path / "journal.sqlite"
    TransactionJournal(path).close()
    steps, failures, begun = 100, [], []

    def writer(worker: int) -> None:
        try:
            with TransactionJournal(path, durable=False) as journal:  # locking, not fsync
                previous = None
                for i in range(steps):  # begin with a resolution, then a resolution alone
                    tx = pending_tx(TERMINAL_A, worker * 1000 + i)
                    if previous is None or i % 2:
                        done = () if previous is None else (previous.completed(tac_for(i)),)
                        previous = begin(journal, tx, *done)
                    else:
                        journal.resolve([previous.completed(tac_for(i))])
                        previous = begin(journal, tx)
                    begun.append(previous)
        except Exception as exc:  # reported below, with the worker
            failures.append((worker, exc))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    with TransactionJournal(path) as journal:
        assert len({t.id for t in begun}) == len(begun) == 3 * steps
        assert journal.counts() == {"pending": 3, "completed": 3 * (steps - 1), "voided": 0,
                                    "unexported": 3 * (steps - 1)}
        assert sorted(journal.pending(), key=lambda t: t.id or 0) == \
            sorted([t for t in begun if t.draft.card_seq % 1000 == steps - 1],
                   key=lambda t: t.id or 0)
