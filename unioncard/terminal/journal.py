"""The transaction journal: SQLite on disk, WAL, durable commits; pending, completed, exported.

Every transaction that may move money is written here as *pending* before its
DEBIT or CREDIT leaves the terminal, and *completed* (with its offline record)
or *voided* once its result is known; a journal commit is on disk before the
call returns (``synchronous = FULL`` in WAL mode), so ``kill -9`` at any moment
loses nothing: a transaction is either still pending, and resolved when its
card is presented again (`unioncard.terminal.recovery`), or resolved.

Completed records leave in batch files (`unioncard.offline.batch`) with
`TransactionJournal.export`.  Exporting is two-phase so that no record is ever
exported twice and none is lost: the records are first assigned to a new batch
in the journal (one commit), then the file is written atomically and the batch
marked written.  A batch left half-done by a crash is rewritten, identically,
by the next export.

The journal is the terminal's I/O edge, like a transport: sessions never see
it, they yield `unioncard.terminal.session.Journal` steps the driver applies.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from unioncard.errors import UnionCardError
from unioncard.offline import OfflineRecord
from unioncard.terminal.session import (
    Journal,
    JournalReceipt,
    PendingTransaction,
    Resolution,
)

__all__ = ["SCHEMA_VERSION", "ExportedBatch", "JournalEntry", "JournalError",
           "TransactionJournal", "default_journal_path"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal_id BLOB NOT NULL,
    created_at TEXT NOT NULL,
    file_name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('writing', 'written'))
);
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    flow TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'voided')),
    terminal_id BLOB NOT NULL,
    application INTEGER NOT NULL,
    issuer BLOB NOT NULL,
    diversifier BLOB NOT NULL,
    card_seq INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    balance_before INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    draft BLOB NOT NULL,
    record BLOB,
    reason TEXT NOT NULL DEFAULT '',
    mac_refused INTEGER NOT NULL DEFAULT 0,
    resolved_at TEXT,
    batch_id INTEGER REFERENCES batches(id)
);
CREATE INDEX IF NOT EXISTS transactions_pending ON transactions(state) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS transactions_unexported ON transactions(terminal_id)
    WHERE state = 'completed' AND batch_id IS NULL;
"""


class JournalError(UnionCardError):
    """The journal cannot be used: not a journal, a newer schema, a write that contradicts it."""


def default_journal_path() -> Path:
    """``$XDG_DATA_HOME/unioncard/journal.sqlite`` (``~/.local/share/unioncard/…`` by default)."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "unioncard" / "journal.sqlite"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled transaction, as `TransactionJournal.entries` lists it."""

    id: int
    flow: str
    state: str
    started_at: dt.datetime
    draft: OfflineRecord
    record: OfflineRecord | None
    reason: str
    resolved_at: dt.datetime | None
    batch_id: int | None

    def to_dict(self) -> dict[str, Any]:
        shown = self.record or self.draft
        return {
            "id": self.id, "flow": self.flow, "state": self.state,
            "started_at": self.started_at.isoformat(),
            "resolved_at": None if self.resolved_at is None else self.resolved_at.isoformat(),
            "reason": self.reason, "batch_id": self.batch_id,
            "terminal_id": shown.terminal_id.hex().upper(),
            "application": shown.application.name.lower(),
            "card": f"{shown.issuer.hex().upper()}/{shown.diversifier.hex().upper()}",
            "card_seq": shown.card_seq, "amount": shown.charged_amount,
            "record": None if self.record is None else self.record.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class ExportedBatch:
    terminal_id: bytes
    batch_id: int
    path: Path
    count: int
    rewritten: bool = False


class TransactionJournal:
    """A journal file (created when missing); ``":memory:"`` for a journal that keeps
    nothing.  ``durable=False`` skips fsync on commit (benchmarks, bulk tests only)."""

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path} is not a unioncard journal: {exc}") from None

    def _init_schema(self) -> None:
        self._db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise JournalError(f"{self.path} has journal schema {row[0]}; this release "
                                   f"reads schema {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- what sessions need ------------------------------------------------------------------

    def pending(self) -> list[PendingTransaction]:
        """Every pending transaction, oldest first: the input of a new session."""
        rows = self._db.execute("SELECT id, flow, draft, balance_before FROM transactions "
                                "WHERE state = 'pending' ORDER BY id").fetchall()
        return [PendingTransaction(flow, OfflineRecord.from_bytes(draft), balance, id=id_)
                for id_, flow, draft, balance in rows]

    def mac_refusals(self, since: dt.datetime) -> list[OfflineRecord]:
        """Drafts of the transactions voided since ``since`` because the card refused the
        terminal's MAC1: the input of a new session, which will not retry those cards."""
        rows = self._db.execute(
            "SELECT draft FROM transactions WHERE state = 'voided' AND mac_refused = 1 "
            "AND started_at >= ? ORDER BY id", (since.isoformat(),)).fetchall()
        return [OfflineRecord.from_bytes(draft) for (draft,) in rows]

    def write(self, step: Journal) -> JournalReceipt:
        """Apply one `Journal` step in one durable commit; returns the new transaction's id."""
        new_id: int | None = None
        with self._transaction():
            if step.begin is not None:
                new_id = self._begin(step.begin)
            self._resolve(step.resolutions)
        return JournalReceipt(new_id)

    def resolve(self, resolutions: Sequence[Resolution]) -> None:
        """Apply resolutions (an outcome's) in one durable commit."""
        if resolutions:
            with self._transaction():
                self._resolve(resolutions)

    def _begin(self, pending: PendingTransaction) -> int:
        draft = pending.draft
        cursor = self._db.execute(
            "INSERT INTO transactions (flow, state, terminal_id, application, issuer, "
            "diversifier, card_seq, amount, balance_before, started_at, draft) "
            "VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (pending.flow, draft.terminal_id, int(draft.application), draft.issuer,
             draft.diversifier, draft.card_seq, draft.charged_amount, pending.balance_before,
             draft.when.isoformat(), draft.to_bytes()))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _resolve(self, resolutions: Sequence[Resolution]) -> None:
        now = dt.datetime.now().replace(microsecond=0).isoformat()
        for resolution in resolutions:
            row = self._db.execute("SELECT state FROM transactions WHERE id = ?",
                                   (resolution.transaction_id,)).fetchone()
            if row is None:
                raise JournalError(f"no transaction {resolution.transaction_id} in the journal")
            if row[0] != "pending":
                if row[0] == resolution.state.value:
                    continue  # already resolved the same way: applying twice changes nothing
                raise JournalError(f"transaction {resolution.transaction_id} is {row[0]}; "
                                   f"it cannot become {resolution.state.value}")
            record = (None if resolution.record is None else resolution.record.to_bytes())
            self._db.execute(
                "UPDATE transactions SET state = ?, record = ?, reason = ?, mac_refused = ?, "
                "resolved_at = ? WHERE id = ?",
                (resolution.state.value, record, resolution.reason, int(resolution.mac_refused),
                 now, resolution.transaction_id))

    # --- reading ---------------------------------------------------------------------------

    def entries(self, *, state: str | None = None, limit: int | None = None,
                newest_first: bool = True) -> list[JournalEntry]:
        """Journaled transactions, filtered by ``state`` (pending, completed, voided)."""
        query = ("SELECT id, flow, state, started_at, draft, record, reason, resolved_at, "
                 "batch_id FROM transactions")
        args: list[Any] = []
        if state is not None:
            query += " WHERE state = ?"
            args.append(state)
        query += f" ORDER BY id {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        return [JournalEntry(
            id_, flow, st, dt.datetime.fromisoformat(started), OfflineRecord.from_bytes(draft),
            None if record is None else OfflineRecord.from_bytes(record), reason,
            None if resolved is None else dt.datetime.fromisoformat(resolved), batch)
            for id_, flow, st, started, draft, record, reason, resolved, batch
            in self._db.execute(query, args).fetchall()]

    def counts(self) -> dict[str, int]:
        """How many transactions per state, and how many completed wait for export."""
        out = {s: 0 for s in ("pending", "completed", "voided")}
        out.update(self._db.execute(
            "SELECT state, COUNT(*) FROM transactions GROUP BY state").fetchall())
        out["unexported"] = self._db.execute(
            "SELECT COUNT(*) FROM transactions WHERE state = 'completed' AND batch_id IS NULL"
        ).fetchone()[0]
        return out

    # --- export ----------------------------------------------------------------------------

    def export(self, out_dir: str | Path, *, now: dt.datetime) -> list[ExportedBatch]:
        """Write every completed, not yet exported record into batch files in ``out_dir``,
        one batch per terminal id; batches a crash left unwritten are written first."""
        from unioncard.offline.batch import batch_file_name

        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        created = now.replace(microsecond=0)
        exported = [self._write_batch(directory, batch_id, rewritten=True)
                    for (batch_id,) in self._db.execute(
                        "SELECT id FROM batches WHERE state = 'writing' ORDER BY id").fetchall()]
        new: list[int] = []
        with self._transaction():
            terminals = [t for (t,) in self._db.execute(
                "SELECT DISTINCT terminal_id FROM transactions WHERE state = 'completed' "
                "AND batch_id IS NULL ORDER BY terminal_id").fetchall()]
            for terminal_id in terminals:
                cursor = self._db.execute(
                    "INSERT INTO batches (terminal_id, created_at, file_name, state) "
                    "VALUES (?, ?, '', 'writing')", (terminal_id, created.isoformat()))
                batch_id = cursor.lastrowid
                assert batch_id is not None
                self._db.execute("UPDATE batches SET file_name = ? WHERE id = ?",
                                 (batch_file_name(terminal_id, batch_id), batch_id))
                self._db.execute(
                    "UPDATE transactions SET batch_id = ? WHERE state = 'completed' "
                    "AND batch_id IS NULL AND terminal_id = ?", (batch_id, terminal_id))
                new.append(batch_id)
        exported += [self._write_batch(directory, batch_id) for batch_id in new]
        return exported

    def _write_batch(self, directory: Path, batch_id: int, *, rewritten: bool = False
                     ) -> ExportedBatch:
        from unioncard.offline.batch import write_batch

        terminal_id, created, name = self._db.execute(
            "SELECT terminal_id, created_at, file_name FROM batches WHERE id = ?",
            (batch_id,)).fetchone()
        records = [OfflineRecord.from_bytes(raw) for (raw,) in self._db.execute(
            "SELECT record FROM transactions WHERE batch_id = ? ORDER BY id", (batch_id,))]
        path = directory / name
        write_batch(path, terminal_id, batch_id, dt.datetime.fromisoformat(created), records)
        with self._transaction():
            self._db.execute("UPDATE batches SET state = 'written' WHERE id = ?", (batch_id,))
        return ExportedBatch(terminal_id, batch_id, path, len(records), rewritten)

    # --- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TransactionJournal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
