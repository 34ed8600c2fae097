"""The settlement ledger: SQLite, each batch whole in one durable commit (docs/settlement.md,
"The ledger").

A batch is settled in one transaction (shared by a few batches of a run): its identity
(terminal id, batch id, SHA-256 of the file), its rejected records with their reasons,
its accepted records in compact form (`SETTLED_DTYPE`, one BLOB per batch: the
identities replays are found by, and what queries per member, terminal or day read),
the usage of capped benefits it consumed, and its clearing lines.  A run killed at any
moment leaves each batch settled or untouched.

The ledger answers "what was settled for member X / terminal Y / day Z"
(`Ledger.settled_for`), and lists batches, rejects and lines for reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from unioncard.errors import SettlementError

__all__ = ["SETTLED_DTYPE", "Ledger", "LedgerBatch", "LedgerError"]

APPLICATION_ID = 0x55434C44  # "UCLD"
SCHEMA_VERSION = 2
PAGE_SIZE = 65536
"""The page size of a new ledger (SQLite's largest): a batch's accepted records are one
BLOB of 47 bytes a record, written in fewer, larger pages."""

SNAPSHOT_FORMAT = 2
"""The layout of the index snapshot's parts (`unioncard.settlement.pipeline`)."""
SNAPSHOT_CHUNK = 4 << 20
"""Bytes of a part in one row of the snapshot table (SQLite copies each BLOB it is
given: small rows keep that copy small)."""

SETTLED_DTYPE = np.dtype([
    ("issuer", "<u8"), ("diversifier", "<u8"), ("application", "u1"), ("is_load", "u1"),
    ("card_seq", "<u2"), ("terminal", "<u8"), ("terminal_seq", "<u4"), ("when", "<i8"),
    ("list_amount", "<u4"), ("charged_amount", "<u4"), ("rebate", "<u4"),
    ("verified", "u1"), ("mode", "u1"),
])
"""An accepted record as the ledger keeps it (``when``: seconds since 1970, local time)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal_id BLOB NOT NULL,
    batch_id INTEGER NOT NULL,
    digest TEXT NOT NULL,
    source TEXT NOT NULL,
    created TEXT NOT NULL,
    settled_at TEXT NOT NULL,
    records INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    list_total INTEGER NOT NULL,
    charged_total INTEGER NOT NULL,
    settled BLOB NOT NULL,
    first_at INTEGER,
    last_at INTEGER,
    UNIQUE (terminal_id, batch_id)
);
CREATE TABLE IF NOT EXISTS rejects (
    batch INTEGER NOT NULL REFERENCES batches(id),
    record INTEGER NOT NULL,
    reason TEXT NOT NULL,
    terminal_id BLOB NOT NULL,
    terminal_seq INTEGER NOT NULL,
    card TEXT NOT NULL,
    application INTEGER NOT NULL,
    card_seq INTEGER NOT NULL,
    is_load INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (batch, record)
);
CREATE TABLE IF NOT EXISTS lines (
    batch INTEGER NOT NULL REFERENCES batches(id),
    kind TEXT NOT NULL CHECK (kind IN ('sale', 'load')),
    day TEXT NOT NULL,
    operator TEXT NOT NULL,
    mode INTEGER NOT NULL,
    route TEXT NOT NULL,
    merchant TEXT NOT NULL,
    organization TEXT NOT NULL,
    count INTEGER NOT NULL,
    list_amount INTEGER NOT NULL,
    charged_amount INTEGER NOT NULL,
    discount INTEGER NOT NULL,
    rebate INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_day ON lines(day);
CREATE TABLE IF NOT EXISTS index_snapshot (
    part TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (part, chunk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    member_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    period TEXT NOT NULL,
    key INTEGER NOT NULL,
    count INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (period, key, member_id, rule_id)
) WITHOUT ROWID;
"""
_SCHEMA_1_USAGE = "usage_schema_1"
"""Schema 1 keyed the usage table by member first; schema 2 by window first (a run reads
the windows of the days and months it settles, not every member's whole history): on
the way, the old table is renamed to this, the new one created by `_SCHEMA`, the rows
copied over."""


class LedgerError(SettlementError):
    """The ledger cannot be used: not a ledger, a newer schema, a conflicting batch."""


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    """A settled batch as the ledger lists it."""

    row: int
    terminal_id: bytes
    batch_id: int
    digest: str
    source: str
    created: str
    settled_at: str
    records: int
    accepted: int
    list_total: int
    charged_total: int


class Ledger:
    """A ledger file (created when missing; ``":memory:"`` keeps nothing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerError(f"{self.path} is not a unioncard ledger: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        application = self._db.execute("PRAGMA application_id").fetchone()[0]
        tables = {n for (n,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if application != APPLICATION_ID and tables:
            raise LedgerError(f"{self.path} is an SQLite database of another program, not a "
                              "unioncard ledger")
        schema = SCHEMA_VERSION
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            schema = int(row[0]) if row is not None else SCHEMA_VERSION
            if schema > SCHEMA_VERSION:
                raise LedgerError(f"{self.path} has ledger schema {row[0]}; this release "
                                  f"reads schema {SCHEMA_VERSION}")
        if not tables:  # a new ledger: large pages (a batch's records are one BLOB)
            self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        with self.transaction():
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            rekey = schema == 1 and "usage" in tables  # written by an earlier release
            if rekey:
                self._db.execute(f"ALTER TABLE usage RENAME TO {_SCHEMA_1_USAGE}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if rekey:
                self._db.execute(f"INSERT INTO usage SELECT member_id, rule_id, period, key, "
                                 f"count, amount FROM {_SCHEMA_1_USAGE}")
                self._db.execute(f"DROP TABLE {_SCHEMA_1_USAGE}")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                             (str(SCHEMA_VERSION),))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), rolled back on any failure."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # --- batches ------------------------------------------------------------------------------

    def batch(self, terminal_id: bytes, batch_id: int) -> LedgerBatch | None:
        row = self._db.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE terminal_id = ? "
                               "AND batch_id = ?", (terminal_id, batch_id)).fetchone()
        return None if row is None else LedgerBatch(*row)

    def batches(self, rows: Sequence[int] | None = None) -> list[LedgerBatch]:
        query = f"SELECT {_BATCH_COLUMNS} FROM batches"
        if rows is not None:
            query += f" WHERE id IN {self._chosen(rows)}"
        query += " ORDER BY terminal_id, batch_id"
        return [LedgerBatch(*row) for row in self._db.execute(query)]

    def settled_records(self, rows: Iterable[int] | None = None, *, after: int = 0,
                        before: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(batch row, accepted records as `SETTLED_DTYPE`) of every batch (of the rows
        above ``after`` and below ``before``, in order), or of ``rows``."""
        query = "SELECT id, settled FROM batches"
        if rows is None:
            for row, blob in self._db.execute(
                    query + " WHERE id > ? AND id < ? ORDER BY id",
                    (after, before if before is not None else 2**63 - 1)):
                yield row, np.frombuffer(blob, SETTLED_DTYPE)
            return
        chosen = sorted(set(rows))
        for at in range(0, len(chosen), _CHUNK):  # a few rows at a time: bound the parameters
            part = tuple(chosen[at:at + _CHUNK])
            for row, blob in self._db.execute(
                    f"{query} WHERE id IN ({','.join('?' * len(part))}) ORDER BY id", part):
                yield row, np.frombuffer(blob, SETTLED_DTYPE)

    def record_batch(self, db: sqlite3.Connection, *, terminal_id: bytes, batch_id: int,
                     digest: str, source: str, created: str, records: int,
                     list_total: int, charged_total: int, settled: np.ndarray,
                     rejects: Sequence[tuple[Any, ...]], lines: Sequence[tuple[Any, ...]],
                     usage: Sequence[tuple[str, str, str, int, int, int]] = ()) -> int:
        """Write one settled batch (inside `transaction`), and the members' usage it left
        (`record_usage`); returns its row."""
        now = dt.datetime.now().replace(microsecond=0).isoformat()
        try:
            cursor = db.execute(
                "INSERT INTO batches (terminal_id, batch_id, digest, source, created, "
                "settled_at, records, accepted, list_total, charged_total, settled, first_at, "
                "last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (terminal_id, batch_id, digest, source, created, now, records, len(settled),
                 list_total, charged_total, settled.astype(SETTLED_DTYPE, copy=False).tobytes(),
                 int(settled["when"].min()) if len(settled) else None,
                 int(settled["when"].max()) if len(settled) else None))
        except sqlite3.IntegrityError:
            raise LedgerError(f"batch {batch_id} of terminal {terminal_id.hex().upper()} is "
                              "already in the ledger") from None
        row = cursor.lastrowid
        assert row is not None
        db.executemany("INSERT INTO rejects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(row, *reject) for reject in rejects])
        db.executemany("INSERT INTO lines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(row, *line) for line in lines])
        self.record_usage(db, usage)
        return row

    @staticmethod
    def record_usage(db: sqlite3.Connection,
                     usage: Sequence[tuple[str, str, str, int, int, int]]) -> None:
        """Write members' usage of capped benefits (member, rule, period, key, count,
        amount), each replacing what the ledger held (inside `transaction`)."""
        db.executemany("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                       "count = excluded.count, amount = excluded.amount", usage)

    # --- the run in progress --------------------------------------------------------------------

    def run_marker(self) -> tuple[str, int] | None:
        """The run started and not finished (its fingerprint, and the row of its first
        batch), if any."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
        if row is None:
            return None
        fingerprint, first = str(row[0]).split(" ")
        return fingerprint, int(first)

    def mark_run(self, fingerprint: str | None) -> int:
        """Record that the run ``fingerprint`` starts (None: that it finished); the row its
        first batch will have."""
        with self.transaction() as db:
            if fingerprint is None:
                db.execute("DELETE FROM meta WHERE key = 'run'")
                return 0
            first = int(db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sqlite_sequence "
                                   "WHERE name = 'batches'").fetchone()[0])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('run', ?)", (f"{fingerprint} {first}",))
            return first

    # --- the replay index's snapshot ------------------------------------------------------------

    def index_snapshot(self) -> tuple[int, dict[str, bytearray]] | None:
        """The latest snapshot of the index of settled records (`write_index_snapshot`): the
        last batch row it covers and its parts; None when there is none, or when it is of
        another format or does not match its digest (the batches are then read again)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'index_snapshot'").fetchone()
        if row is None:
            return None
        form, through, digest = str(row[0]).split(" ")
        if int(form) != SNAPSHOT_FORMAT:
            return None
        parts: dict[str, bytearray] = {}
        for part, data in self._db.execute(
                "SELECT part, data FROM index_snapshot ORDER BY part, chunk"):
            parts.setdefault(part, bytearray()).extend(data)
        if _digest(parts) != digest:
            return None
        return int(through), parts  # the parts as read, not copied

    def write_index_snapshot(self, through: int,
                             parts: Mapping[str, bytes | memoryview]) -> None:
        """Keep ``parts`` (bytes, or byte views) as the snapshot of the index of the records
        of every batch up to row ``through``, in place of the previous one (one commit)."""
        with self.transaction() as db:
            db.execute("DELETE FROM index_snapshot")
            db.executemany("INSERT INTO index_snapshot VALUES (?, ?, ?)", (
                (part, at // SNAPSHOT_CHUNK, data[at:at + SNAPSHOT_CHUNK])
                for part, data in parts.items()
                for at in range(0, max(len(data), 1), SNAPSHOT_CHUNK)))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('index_snapshot', ?)",
                       (f"{SNAPSHOT_FORMAT} {through} {_digest(parts)}",))

    # --- what the run needs ------------------------------------------------------------------

    def usage(self, windows: Iterable[tuple[str, int]] | None = None
              ) -> Iterator[tuple[str, str, str, int, int, int]]:
        """Members' usage of capped benefits, (member, rule, period, key, count, amount):
        in the ``windows`` (period, key) given, or all of it; read as it is iterated."""
        query = "SELECT member_id, rule_id, period, key, count, amount FROM usage"
        if windows is None:
            yield from self._db.execute(query)
            return
        for window in list(windows):
            yield from self._db.execute(query + " WHERE period = ? AND key = ?", window)

    def rejects(self, rows: Sequence[int]) -> list[tuple[Any, ...]]:
        return list(self._db.execute(
            f"SELECT batch, record, reason, terminal_id, terminal_seq, card, application, "
            f"card_seq, is_load, amount, at FROM rejects WHERE batch IN {self._chosen(rows)} "
            "ORDER BY batch, record"))

    def lines(self, rows: Sequence[int]) -> list[tuple[Any, ...]]:
        return list(self._db.execute(
            f"SELECT kind, day, operator, mode, route, merchant, organization, SUM(count), "
            f"SUM(list_amount), SUM(charged_amount), SUM(discount), SUM(rebate) FROM lines "
            f"WHERE batch IN {self._chosen(rows)} GROUP BY kind, day, operator, mode, route, "
            "merchant, organization ORDER BY kind, day, operator, mode, route, merchant, "
            "organization"))

    def _chosen(self, rows: Iterable[int]) -> str:
        """SQL for the batch rows ``rows``, held in a temporary table (a run may name more
        batches than SQLite takes parameters); for one query at a time, read whole."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS chosen (id INTEGER PRIMARY KEY)")
        self._db.execute("DELETE FROM temp.chosen")
        self._db.executemany("INSERT OR IGNORE INTO temp.chosen VALUES (?)",
                             ((int(row),) for row in rows))
        return "(SELECT id FROM temp.chosen)"

    # --- queries ------------------------------------------------------------------------------

    def settled_for(self, *, member: tuple[int, int] | None = None,
                    terminal: bytes | None = None, day: dt.date | None = None
                    ) -> dict[str, Any]:
        """What was settled for a member (issuer, diversifier), a terminal and/or a day:
        counts and amounts of the accepted records, and of the rejected ones by reason."""
        count = list_total = charged = rebate = loads = 0
        batches = 0
        for _row, records in self.settled_records():
            keep = np.ones(len(records), bool)
            if member is not None:
                keep &= (records["issuer"] == member[0]) & (records["diversifier"] == member[1])
            if terminal is not None:
                keep &= records["terminal"] == int.from_bytes(terminal, "big")
            if day is not None:
                start = int(dt.datetime.combine(day, dt.time()).replace(
                    tzinfo=dt.UTC).timestamp())
                keep &= (records["when"] >= start) & (records["when"] < start + 86400)
            chosen = records[keep]
            if not len(chosen):
                continue
            batches += 1
            sales = chosen[chosen["is_load"] == 0]
            count += len(sales)
            list_total += int(sales["list_amount"].sum())
            charged += int(sales["charged_amount"].sum())
            rebate += int(sales["rebate"].sum())
            loads += int(chosen[chosen["is_load"] == 1]["charged_amount"].sum())
        rejected = self._rejected_for(member, terminal, day)
        return {"sales": count, "list_amount": list_total, "charged_amount": charged,
                "discount": list_total - charged, "rebate": rebate, "loaded_amount": loads,
                "batches": batches, "rejected": rejected}

    def _rejected_for(self, member: tuple[int, int] | None, terminal: bytes | None,
                      day: dt.date | None) -> dict[str, int]:
        query, args = "SELECT reason, COUNT(*) FROM rejects WHERE 1", list[Any]()
        if member is not None:
            query += " AND card = ?"
            args.append(f"{member[0]:016X}/{member[1]:016X}")
        if terminal is not None:
            query += " AND terminal_id = ?"
            args.append(terminal)
        if day is not None:
            query += " AND substr(at, 1, 10) = ?"
            args.append(day.isoformat())
        return dict(self._db.execute(query + " GROUP BY reason ORDER BY reason", args))

    # --- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_CHUNK = 500
"""Batch rows named per query by `Ledger.settled_records`."""


def _digest(parts: Mapping[str, Any]) -> str:
    """SHA-256 over the parts, by name (a snapshot is used only if it matches)."""
    digest = hashlib.sha256()
    for part in sorted(parts):
        digest.update(f"{part} {len(parts[part])}\n".encode())
        digest.update(parts[part])
    return digest.hexdigest()


_BATCH_COLUMNS = ("id, terminal_id, batch_id, digest, source, created, settled_at, records, "
                  "accepted, list_total, charged_total")
