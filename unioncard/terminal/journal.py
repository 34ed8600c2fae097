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

A service point's journal also holds the union payments waiting for their
members' cards (`unioncard.terminal.disbursements`): a payment is linked to its
load in the commit that begins the load, and loaded in the commit that
completes it, so it is loaded exactly once.

The journal is the terminal's I/O edge, like a transport: sessions never see
it, they yield `unioncard.terminal.session.Journal` steps the driver applies.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from unioncard.errors import UnionCardError
from unioncard.offline import RECORD_LAYOUT, Application, EmvRecord, OfflineRecord, decode_record
from unioncard.terminal.session import (
    Journal,
    JournalReceipt,
    PendingTransaction,
    Resolution,
)

if TYPE_CHECKING:  # a fare never reads union disbursements
    from unioncard.terminal.disbursements import Disbursement

__all__ = ["EMV_APPLICATION", "EMV_FLOW", "SCHEMA_VERSION", "ExportedBatch",
           "ImportedDisbursements", "JournalEntry", "JournalError", "TransactionJournal",
           "default_journal_path"]

SCHEMA_VERSION = 2
"""1: transactions and batches; 2: union disbursements (a schema-1 journal is upgraded
when opened)."""
APPLICATION_ID = 0x55434A4E
"""SQLite ``PRAGMA application_id`` of a journal ("UCJN"): another program's database is
never taken for one."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal_id BLOB NOT NULL,
    batch_no INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    file_name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('writing', 'written')),
    UNIQUE (terminal_id, batch_no)
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
    is_load INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    balance_before INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    draft BLOB NOT NULL,
    record BLOB,
    reason TEXT NOT NULL DEFAULT '',
    mac_refused INTEGER NOT NULL DEFAULT 0,
    resolved_at TEXT,
    batch_id INTEGER REFERENCES batches(id),
    disbursement_id INTEGER
);
CREATE TABLE IF NOT EXISTS disbursements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reference TEXT NOT NULL UNIQUE,
    member_no TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    reason TEXT NOT NULL,
    application INTEGER NOT NULL,
    source TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'loading', 'loaded')),
    transaction_id INTEGER UNIQUE REFERENCES transactions(id),
    last_error TEXT NOT NULL DEFAULT '',
    CHECK ((state = 'pending') = (transaction_id IS NULL))
);
CREATE INDEX IF NOT EXISTS disbursements_unloaded ON disbursements(member_no, id)
    WHERE state != 'loaded';
CREATE INDEX IF NOT EXISTS transactions_pending ON transactions(state) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS transactions_unexported ON transactions(terminal_id)
    WHERE state = 'completed' AND batch_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS transactions_card_seq
    ON transactions(application, issuer, diversifier, is_load, card_seq)
    WHERE state = 'completed';
"""
EMV_FLOW = "pos-emv"
"""The flow of an EMV card sale in the journal."""
EMV_APPLICATION = 0
"""The ``application`` column of an EMV card sale (purse records have 1 transit, 2 ETC); its
``issuer`` is the PAN (10 bytes BCD), ``diversifier`` the PSN and ``card_seq`` the ATC, so the
unique index of completed transactions admits one sale per card and ATC."""
_UPGRADES = {1: "ALTER TABLE transactions ADD COLUMN disbursement_id INTEGER"}
"""What turns a journal of schema N into schema N + 1 (before _SCHEMA adds new tables)."""
_DISBURSEMENT_COLUMNS = ("id, reference, member_no, amount, reason, application, state, "
                         "transaction_id, last_error")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock."""
    return "locked" in str(exc) or "busy" in str(exc)


STALE_TEMPORARY = dt.timedelta(hours=1)


def _remove_stale_temporaries(directory: Path) -> None:
    """Temporary batch files a killed export left behind (``.NAME.ucb.*.tmp``, written by
    `unioncard.atomic_file`), an hour old or more: the directory holds batch files only."""
    import contextlib
    import time

    for leftover in directory.glob(".*.ucb.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime >= STALE_TEMPORARY.total_seconds():
                leftover.unlink()


_IDENTITY = tuple((name, offset, offset + size) for name, offset, size in RECORD_LAYOUT
                  if name in ("terminal_id", "issuer", "diversifier", "application", "card_seq",
                              "tx_type"))
"""Where a record says which transaction it is: compared byte for byte, unparsed."""


def _pan_key(record: EmvRecord) -> bytes:
    """A PAN as the journal's ``issuer`` column keeps it: 10 bytes BCD, ``F``-padded."""
    return bytes.fromhex(record.pan.ljust(20, "F"))


def _check_same_transaction(transaction_id: int, draft: bytes, record: bytes) -> None:
    """A completion must be the record of the transaction that was begun: same terminal,
    card, purse, card seq and type."""
    differ = [name for name, start, end in _IDENTITY if draft[start:end] != record[start:end]]
    if differ:
        raise JournalError(f"the record completing transaction {transaction_id} differs from "
                           f"the one begun in {', '.join(differ)}")


class JournalError(UnionCardError):
    """The journal cannot be used: not a journal, a newer schema, a write that contradicts it."""


def _meta_bytes(path: str, key: str, value: object, size: int) -> bytes:
    """A meta value of ``size`` bytes in hex; a damaged one is a `JournalError`."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise JournalError(f"{path}: the journal is damaged: its {key} {str(value)[:40]!r} is "
                           f"not {2 * size} hex digits")
    return raw


def _schema_version(path: str, value: object) -> int:
    """The journal's schema number; a damaged one is a `JournalError`."""
    text = str(value)
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise JournalError(f"{path}: the journal is damaged: its schema {text[:40]!r} is not "
                           "a number")
    return int(text)


def _check_path(path: str, create: bool) -> None:
    """Refuse before SQLite opens it (SQLite would hang on a FIFO, and leave a
    ``NAME-journal`` file beside a device): anything but a regular file, and with
    ``create=False`` a missing or empty file (SQLite would make it a new database)."""
    import os
    import stat

    from unioncard.bounded_read import reason

    try:
        info = os.stat(path)
    except FileNotFoundError:
        if create:
            return
        raise JournalError(f"no journal at {path} (give --journal FILE)") from None
    except OSError as exc:
        raise JournalError(f"{path}: cannot open the journal: {reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise JournalError(f"{path}: the journal is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a character device"
                if stat.S_ISCHR(info.st_mode) else "a block device"
                if stat.S_ISBLK(info.st_mode) else "a socket")
        raise JournalError(f"{path}: the journal is {kind}, not a regular file")
    if not create and info.st_size == 0:
        raise JournalError(f"{path}: the file is empty, not a unioncard journal")


BUSY_TIMEOUT = 30.0
"""Seconds a journal waits for another writer's commit before `JournalError` (busy)."""


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
    draft: OfflineRecord | EmvRecord
    record: OfflineRecord | EmvRecord | None
    reason: str
    resolved_at: dt.datetime | None
    batch_id: int | None

    def to_dict(self) -> dict[str, Any]:
        shown = self.record or self.draft
        if isinstance(shown, EmvRecord):  # the card by its masked PAN and PSN, its ATC
            masked = shown.to_dict()
            card, application, seq = f"{masked['pan']}/{shown.psn}", "emv", shown.atc
        else:
            card = f"{shown.issuer.hex().upper()}/{shown.diversifier.hex().upper()}"
            application, seq = shown.application.name.lower(), shown.card_seq
        return {
            "id": self.id, "flow": self.flow, "state": self.state,
            "started_at": self.started_at.isoformat(),
            "resolved_at": None if self.resolved_at is None else self.resolved_at.isoformat(),
            "reason": self.reason, "batch_id": self.batch_id,
            "terminal_id": shown.terminal_id.hex().upper(), "application": application,
            "card": card, "card_seq": seq, "amount": shown.charged_amount,
            "record": None if self.record is None else self.record.to_dict(),
        }


@dataclass(slots=True)
class ImportedDisbursements:
    """What an import did with a sheet's payments: added as pending, already known (with
    their state now), refused with the reason."""

    added: list[Disbursement] = field(default_factory=list)
    known: list[Disbursement] = field(default_factory=list)
    refused: list[tuple[Disbursement, str]] = field(default_factory=list)


def _disbursement(row: tuple[Any, ...]) -> Disbursement:
    from unioncard.terminal.disbursements import Disbursement, DisbursementState

    id_, reference, member_no, amount, reason, application, state, transaction, error = row
    return Disbursement(reference, member_no, amount, reason, Application(application), id=id_,
                        state=DisbursementState(state), transaction_id=transaction,
                        last_error=error)


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

    def __init__(self, path: str | Path, *, durable: bool = True, create: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            _check_path(self.path, create)
            if create:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        try:
            self._check_identity(create)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._transaction():
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._upgrade()
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                                 (str(SCHEMA_VERSION),))
        except sqlite3.OperationalError as exc:
            self._db.close()
            if _busy(exc):
                raise self.busy() from None
            raise JournalError(f"{self.path} is not a unioncard journal: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalError(f"{self.path} is not a unioncard journal: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def busy(self) -> JournalError:
        """The error of a journal another program is writing to for too long."""
        return JournalError(f"{self.path}: the journal is busy: another program has been "
                            f"writing to it for {BUSY_TIMEOUT:g} s; try again when it is done")

    def _check_identity(self, create: bool = True) -> None:
        """Refuse another program's database, and a journal of a newer schema, before
        touching either (no table created, no WAL switched on); with ``create=False``,
        anything but a journal (no table is created for a command that only reads)."""
        application = self._db.execute("PRAGMA application_id").fetchone()[0]
        tables = {name for (name,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if application != APPLICATION_ID and tables:
            raise JournalError(f"{self.path} is an SQLite database of another program, not a "
                               "unioncard journal")
        if not create and (application != APPLICATION_ID or "transactions" not in tables):
            raise JournalError(f"{self.path} is not a unioncard journal (an SQLite database "
                               "without one's tables)")
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is not None and _schema_version(self.path, row[0]) > SCHEMA_VERSION:
                raise JournalError(f"{self.path} has journal schema {row[0]}; this release "
                                   f"reads schema {SCHEMA_VERSION}")

    def _upgrade(self) -> None:
        """Bring a journal of an older schema to this one, in the opening transaction."""
        tables = {name for (name,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            return  # a new journal
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = SCHEMA_VERSION if row is None else _schema_version(self.path, row[0])
        while version < SCHEMA_VERSION:
            self._db.execute(_UPGRADES[version])
            version += 1

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE: no 'database is locked'
        half way); rolled back on any failure, the commit's own included."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise self.busy() from None
            raise
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                self._db.execute("ROLLBACK")
            raise

    # --- what sessions need ------------------------------------------------------------------

    def pending(self) -> list[PendingTransaction]:
        """Every pending transaction, oldest first: the input of a new session."""
        rows = self._db.execute("SELECT id, flow, draft, balance_before, disbursement_id "
                                "FROM transactions WHERE state = 'pending' ORDER BY id"
                                ).fetchall()
        return [PendingTransaction(flow, OfflineRecord.from_bytes(draft), balance, id=id_,
                                   disbursement=payment)
                for id_, flow, draft, balance, payment in rows]

    def mac_refusals(self, since: dt.datetime) -> list[OfflineRecord]:
        """Drafts of the transactions voided since ``since`` because the card refused the
        terminal's MAC1: the input of a new session, which will not retry those cards."""
        rows = self._db.execute(
            "SELECT draft FROM transactions WHERE state = 'voided' AND mac_refused = 1 "
            "AND started_at >= ? ORDER BY id", (since.isoformat(),)).fetchall()
        return [OfflineRecord.from_bytes(draft) for (draft,) in rows]

    def load_terminal_id(self, given: bytes | None) -> bytes:
        """The terminal id this journal's loads carry: the one given the first time,
        remembered, and the same ever after (a load's terminal seq is its number in this
        journal, so one journal is one load terminal).  Nothing is written here: the
        journal remembers the id in the commit that begins its first load, so a load that
        never starts (the card could not be opened) binds nothing."""
        return self._bound_terminal_id("load_terminal_id", given, first=f"load on {self.path}",
                                       point="load point", later="loads", role="load terminal")

    def _bound_terminal_id(self, key: str, given: bytes | None, *, first: str, point: str,
                           later: str, role: str) -> bytes:
        """The terminal id remembered under meta ``key``, or ``given`` when none is yet;
        `JournalError` when neither is, or when ``given`` is another (the errors name the
        ``first`` transaction, the ``point`` that gives the id, the ``later`` transactions
        and the terminal's ``role``)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            if given is None:
                raise JournalError(
                    f"the first {first} needs this {point}'s terminal id "
                    f"(--terminal-id, 12 hex digits); later {later} reuse it")
            return given
        remembered = _meta_bytes(self.path, key, row[0], 6)
        if given is not None and given != remembered:
            raise JournalError(
                f"{self.path} is the journal of {role} {row[0]}, not "
                f"{given.hex().upper()}: give each {point} its own journal")
        return remembered

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
            "diversifier, card_seq, is_load, amount, balance_before, started_at, draft, "
            "disbursement_id) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (pending.flow, draft.terminal_id, int(draft.application), draft.issuer,
             draft.diversifier, draft.card_seq, int(draft.is_load), draft.charged_amount,
             pending.balance_before, draft.when.isoformat(), draft.to_bytes(),
             pending.disbursement))
        assert cursor.lastrowid is not None
        if draft.is_load:  # the first load binds the journal to its terminal id
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('load_terminal_id', ?)",
                             (draft.terminal_id.hex().upper(),))
        if pending.disbursement is not None:
            self._link_disbursement(pending, cursor.lastrowid)
        return cursor.lastrowid

    def _link_disbursement(self, pending: PendingTransaction, transaction_id: int) -> None:
        """The payment a load credits becomes *loading*, linked to the load: only a pending
        payment of the same amount and purse can."""
        row = self._db.execute("SELECT state, amount, application FROM disbursements "
                               "WHERE id = ?", (pending.disbursement,)).fetchone()
        if row is None:
            raise JournalError(f"no disbursement {pending.disbursement} in the journal")
        state, amount, application = row
        from unioncard.terminal.disbursements import DisbursementState

        if state != DisbursementState.PENDING:
            raise JournalError(f"disbursement {pending.disbursement} is {state}: it is not "
                               "loaded again")
        if (amount, application) != (pending.amount, int(pending.draft.application)):
            raise JournalError(f"the load of {pending.amount} fen does not match disbursement "
                               f"{pending.disbursement} ({amount} fen)")
        self._db.execute("UPDATE disbursements SET state = 'loading', transaction_id = ? "
                         "WHERE id = ?", (transaction_id, pending.disbursement))

    def _resolve(self, resolutions: Sequence[Resolution]) -> None:
        now = dt.datetime.now().replace(microsecond=0).isoformat()
        for resolution in resolutions:
            row = self._db.execute("SELECT state, draft, record FROM transactions WHERE id = ?",
                                   (resolution.transaction_id,)).fetchone()
            if row is None:
                raise JournalError(f"no transaction {resolution.transaction_id} in the journal")
            state, draft, stored = row
            record = (None if resolution.record is None else resolution.record.to_bytes())
            if record is not None:
                _check_same_transaction(resolution.transaction_id, draft, record)
            if state != "pending":
                if state == resolution.state.value and stored == record:
                    continue  # already resolved the same way: applying twice changes nothing
                raise JournalError(f"transaction {resolution.transaction_id} is {state}; "
                                   f"it cannot become {resolution.state.value}"
                                   + (" with another record" if state == resolution.state.value
                                      else ""))
            try:
                self._db.execute(
                    "UPDATE transactions SET state = ?, record = ?, reason = ?, "
                    "mac_refused = ?, resolved_at = ? WHERE id = ?",
                    (resolution.state.value, record, resolution.reason,
                     int(resolution.mac_refused), now, resolution.transaction_id))
            except sqlite3.IntegrityError:
                seq = "online" if OfflineRecord.from_bytes(draft).is_load else "offline"
                raise JournalError(
                    f"transaction {resolution.transaction_id} cannot be completed: another "
                    f"completed transaction already used the same {seq} seq of that card "
                    "(a card seq is used once)") from None
            # its payment, if it loads one, follows it: loaded, or waiting again
            if resolution.record is not None:
                self._db.execute("UPDATE disbursements SET state = 'loaded', last_error = '' "
                                 "WHERE transaction_id = ?", (resolution.transaction_id,))
            else:
                self._db.execute("UPDATE disbursements SET state = 'pending', "
                                 "transaction_id = NULL, last_error = ? WHERE transaction_id = ?",
                                 (resolution.reason, resolution.transaction_id))

    # --- EMV card sales -----------------------------------------------------------------------

    def emv_terminal_id(self, given: bytes | None) -> bytes:
        """The terminal id this journal's EMV sales carry: the one given the first time,
        remembered (in the commit of the first sale), and the same ever after."""
        return self._bound_terminal_id("emv_terminal_id", given,
                                       first=f"EMV sale journaled in {self.path}", point="POS",
                                       later="sales", role="POS terminal")

    def record_emv_sale(self, terminal_id: bytes | None,
                        make: Callable[[bytes, int], EmvRecord]) -> tuple[int, EmvRecord]:
        """Journal an approved EMV sale, completed, in one durable commit; returns its
        number and its record.  ``make(terminal_id, terminal_seq)`` builds the record: its
        terminal seq is its number in this journal.  The same sale again (same card, ATC
        and cryptogram) is journaled once (its number and record are returned); another
        sale with a card's ATC already journaled is refused."""
        with self._transaction():
            terminal = self.emv_terminal_id(terminal_id)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('emv_terminal_id', ?)",
                             (terminal.hex().upper(),))
            (number,) = self._db.execute(  # the number AUTOINCREMENT gives the next row
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'transactions'), "
                "0) + 1").fetchone()
            record = make(terminal, number)
            known = self._known_emv_sale(record)
            if known is not None:
                return known
            raw = record.to_bytes()
            cursor = self._db.execute(
                "INSERT INTO transactions (flow, state, terminal_id, application, issuer, "
                "diversifier, card_seq, is_load, amount, balance_before, started_at, draft, "
                "record, resolved_at) VALUES (?, 'completed', ?, ?, ?, ?, ?, 0, ?, 0, ?, ?, ?, ?)",
                (EMV_FLOW, record.terminal_id, EMV_APPLICATION, _pan_key(record),
                 bytes.fromhex(record.psn), record.atc, record.charged_amount,
                 record.when.isoformat(), raw, raw,
                 dt.datetime.now().replace(microsecond=0).isoformat()))
            if cursor.lastrowid != number:  # pragma: no cover - AUTOINCREMENT's own rule
                raise JournalError(f"{self.path}: the journal numbered the sale "
                                   f"{cursor.lastrowid}, not {number}")
        return number, record

    def _known_emv_sale(self, record: EmvRecord) -> tuple[int, EmvRecord] | None:
        """The journaled sale of this card and ATC: the same one (None when there is none),
        or `JournalError` when it is another."""
        row = self._db.execute(
            "SELECT id, record FROM transactions WHERE state = 'completed' AND application = ? "
            "AND issuer = ? AND diversifier = ? AND is_load = 0 AND card_seq = ?",
            (EMV_APPLICATION, _pan_key(record), bytes.fromhex(record.psn), record.atc)
        ).fetchone()
        if row is None:
            return None
        known = decode_record(row[1])
        if not isinstance(known, EmvRecord) or known.ac != record.ac:
            raise JournalError(f"transaction {row[0]} of this journal already used ATC "
                               f"{record.atc} of this card with another cryptogram: the sale "
                               "is not journaled twice")
        return row[0], known

    # --- reading ---------------------------------------------------------------------------

    def entries(self, *, state: str | None = None, limit: int | None = None,
                newest_first: bool = True) -> list[JournalEntry]:
        """Journaled transactions, filtered by ``state`` (pending, completed, voided)."""
        query = ("SELECT t.id, flow, t.state, started_at, draft, record, reason, resolved_at, "
                 "b.batch_no FROM transactions t LEFT JOIN batches b ON b.id = t.batch_id")
        args: list[Any] = []
        if state is not None and state not in ("pending", "completed", "voided"):
            raise ValueError(f"state must be pending, completed or voided, not {state!r}")
        if state is not None:
            query += " WHERE t.state = ?"
            args.append(state)
        query += f" ORDER BY t.id {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        entries = []
        for id_, flow, st, started, draft, record, reason, resolved, batch in \
                self._db.execute(query, args).fetchall():
            try:
                entries.append(JournalEntry(
                    id_, flow, st, dt.datetime.fromisoformat(started),
                    decode_record(draft),
                    None if record is None else decode_record(record), reason,
                    None if resolved is None else dt.datetime.fromisoformat(resolved), batch))
            except (TypeError, ValueError) as exc:  # DecodeError is a ValueError
                raise JournalError(f"{self.path}: the journal is damaged: transaction {id_} "
                                   f"cannot be read ({' '.join(str(exc).split())[:200]})"
                                   ) from None
        return entries

    def counts(self) -> dict[str, int]:
        """How many transactions per state, and how many completed wait for export."""
        out = {s: 0 for s in ("pending", "completed", "voided")}
        out.update(self._db.execute(
            "SELECT state, COUNT(*) FROM transactions GROUP BY state").fetchall())
        out["unexported"] = self._db.execute(
            "SELECT COUNT(*) FROM transactions WHERE state = 'completed' AND batch_id IS NULL"
        ).fetchone()[0]
        return out

    # --- union disbursements ----------------------------------------------------------------

    def import_disbursements(self, payments: Sequence[Disbursement], *, source: str,
                             now: dt.datetime, progress: Any = None) -> ImportedDisbursements:
        """Add a sheet's payments as pending, in one commit (an interrupted import adds
        nothing); payments already in the journal (by reference) are counted by state,
        and one whose reference is known with other contents is refused.  ``progress``,
        when given, is called with the number of payments done so far."""
        result = ImportedDisbursements()
        with self._transaction():
            for done, payment in enumerate(payments, 1):
                row = self._db.execute(
                    f"SELECT {_DISBURSEMENT_COLUMNS} FROM disbursements WHERE reference = ?",
                    (payment.reference,)).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO disbursements (reference, member_no, amount, reason, "
                        "application, source, imported_at, state) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                        (payment.reference, payment.member_no, payment.amount, payment.reason,
                         int(payment.application), f"{source}:{payment.line}",
                         now.isoformat()))
                    result.added.append(payment)
                elif not _disbursement(row).same_payment(payment):
                    known = _disbursement(row)
                    result.refused.append((payment, (
                        f"reference {payment.reference!r} is already in the journal for member "
                        f"{known.member_no}, {known.amount} fen, {known.reason!r}")))
                else:
                    result.known.append(_disbursement(row))
                if progress is not None and (done % 500 == 0 or done == len(payments)):
                    progress(done)
        return result

    def disbursement(self, disbursement_id: int | None) -> Disbursement:
        """One payment, as the journal has it now."""
        row = self._db.execute(f"SELECT {_DISBURSEMENT_COLUMNS} FROM disbursements "
                               "WHERE id = ?", (disbursement_id,)).fetchone()
        if row is None:
            raise JournalError(f"no disbursement {disbursement_id} in the journal")
        return _disbursement(row)

    def disbursements(self, *, member_no: str | None = None, unloaded: bool = False,
                      limit: int | None = None) -> list[Disbursement]:
        """Payments, oldest first: a member's (``member_no``), only those not loaded yet
        (``unloaded``)."""
        query = f"SELECT {_DISBURSEMENT_COLUMNS} FROM disbursements WHERE 1"
        args: list[Any] = []
        if member_no is not None:
            query += " AND member_no = ?"
            args.append(member_no)
        if unloaded:
            query += " AND state != 'loaded'"
        query += " ORDER BY id"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        return [_disbursement(row) for row in self._db.execute(query, args)]

    def disbursement_counts(self) -> dict[str, dict[str, int]]:
        """Payments and fen per state."""
        from unioncard.terminal.disbursements import DisbursementState

        out = {s.value: {"count": 0, "amount": 0} for s in DisbursementState}
        for state, count, amount in self._db.execute(
                "SELECT state, COUNT(*), SUM(amount) FROM disbursements GROUP BY state"):
            out[state] = {"count": count, "amount": amount}
        return out

    def note_disbursement_refusal(self, disbursement_id: int, reason: str) -> None:
        """Why a payment could not be loaded this time (it stays pending)."""
        with self._transaction():
            self._db.execute("UPDATE disbursements SET last_error = ? WHERE id = ? AND "
                             "state = 'pending'", (reason, disbursement_id))

    # --- export ----------------------------------------------------------------------------

    def export(self, out_dir: str | Path, *, now: dt.datetime) -> list[ExportedBatch]:
        """Write every completed, not yet exported record into batch files in ``out_dir``,
        one batch per terminal id; batches a crash left unwritten are written first.

        Batches are numbered per terminal id (1, 2, 3, …), so settlement sees a missing
        file as a gap.  Two exports of one journal never run at once (a lock file beside
        the journal), so no batch is written twice.
        """
        if now.tzinfo is not None:
            raise ValueError("now is the local wall-clock time, a naive datetime")
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        created = now.replace(microsecond=0)
        with self._export_lock():
            _remove_stale_temporaries(directory)
            exported = [self._write_batch(directory, batch, rewritten=True)
                        for (batch,) in self._db.execute(
                            "SELECT id FROM batches WHERE state = 'writing' ORDER BY id")]
            new = self._assign_batches(created)
            exported += [self._write_batch(directory, batch) for batch in new]
        return exported

    def _assign_batches(self, created: dt.datetime) -> list[int]:
        """Phase one: each terminal's unexported records become its next batch (one commit)."""
        from unioncard.offline.batch import batch_file_name

        new: list[int] = []
        with self._transaction():
            terminals = [t for (t,) in self._db.execute(
                "SELECT DISTINCT terminal_id FROM transactions WHERE state = 'completed' "
                "AND batch_id IS NULL ORDER BY terminal_id").fetchall()]
            for terminal_id in terminals:
                (last,) = self._db.execute(
                    "SELECT COALESCE(MAX(batch_no), 0) FROM batches WHERE terminal_id = ?",
                    (terminal_id,)).fetchone()
                cursor = self._db.execute(
                    "INSERT INTO batches (terminal_id, batch_no, created_at, file_name, state) "
                    "VALUES (?, ?, ?, ?, 'writing')",
                    (terminal_id, last + 1, created.isoformat(),
                     batch_file_name(terminal_id, last + 1)))
                assert cursor.lastrowid is not None
                self._db.execute(
                    "UPDATE transactions SET batch_id = ? WHERE state = 'completed' "
                    "AND batch_id IS NULL AND terminal_id = ?", (cursor.lastrowid, terminal_id))
                new.append(cursor.lastrowid)
        return new

    def _write_batch(self, directory: Path, batch: int, *, rewritten: bool = False
                     ) -> ExportedBatch:
        """Phase two: the batch's file, written atomically, then the batch marked written."""
        from unioncard.offline.batch import write_batch

        terminal_id, batch_no, created, name = self._db.execute(
            "SELECT terminal_id, batch_no, created_at, file_name FROM batches WHERE id = ?",
            (batch,)).fetchone()
        records = [decode_record(raw) for (raw,) in self._db.execute(
            "SELECT record FROM transactions WHERE batch_id = ? ORDER BY id", (batch,))]
        path = directory / name
        try:
            write_batch(path, terminal_id, batch_no, dt.datetime.fromisoformat(created), records)
        except FileExistsError:
            raise JournalError(
                f"{path} is already there with other records: another journal exported batch "
                f"{batch_no} of terminal {terminal_id.hex().upper()} into this directory (one "
                "terminal id per journal); export into another directory, nothing was "
                "overwritten") from None
        with self._transaction():
            self._db.execute("UPDATE batches SET state = 'written' WHERE id = ?", (batch,))
        return ExportedBatch(terminal_id, batch_no, path, len(records), rewritten)

    @contextmanager
    def _export_lock(self) -> Iterator[None]:
        """An exclusive lock on ``<journal>.export.lock`` while exporting (none in memory);
        a second export meanwhile is refused at once rather than left waiting."""
        if self.path == ":memory:":
            yield
            return
        import fcntl
        import os
        import stat

        from unioncard.bounded_read import reason

        lock_path = self.path + ".export.lock"
        # no planted link followed; a FIFO neither waited for nor taken
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(lock_path, flags, 0o600)
        except OSError as exc:
            raise JournalError(f"{lock_path}: cannot open the export lock: {reason(exc)}"
                               ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise JournalError(f"{lock_path}: the export lock is not a regular file; not "
                               "touching it (remove it if it is not needed)")
        with os.fdopen(fd, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalError(f"another export of {self.path} is running (it holds "
                                   f"{lock_path}); try again when it is done") from None
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # --- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TransactionJournal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
