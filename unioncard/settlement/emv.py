"""Settlement of EMV card sales: the TC verified with the issuer's key, cleared per merchant.

Batch files carry EMV card records (docs/records.md, kind ``E1``) beside purse
records.  Settling one (docs/settlement.md, "EMV card sales"):

1. `split_batch` takes a file's EMV records apart from its purse records: the
   purse records become a batch file of their own (same header, its own trailer)
   for the purse pipeline, unchanged; the EMV records keep their index in the file;
2. `check_cryptogram` recomputes each record's cryptogram (docs/protocol.md §5):
   the issuer master key of the record's AID and DKI in the keystore's ``[emv]``
   section, the card's key by option A from the PAN and PSN, the PBOC CVN 01
   session key from the ATC, the AC over the covered values and the CVR;
3. `EmvClearing` classifies every record, in the run's order: ``unknown_issuer``
   (no key), ``bad_tc`` (the cryptogram does not verify), ``duplicate`` (same PAN,
   PSN and ATC, or same terminal id and terminal seq, as an earlier EMV record of
   this run), ``replay`` (settled by an earlier run: the ledger's ``emv_settled``),
   ``expired``, ``unknown_rules`` and ``amount_mismatch`` (re-priced with its rule
   set as the terminal priced it); the accepted ones become clearing lines per day,
   operator, merchant and organization (list, charged, discount, rebate), and their
   identities are written in the batch's ledger commit (`EmvClearing.commit`).

Lines and rejects have the formats of the purse pipeline's (`Ledger.record_batch`),
so both kinds of a batch go to the ledger and the report together.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unioncard.errors import CryptoError, DecodeError, SettlementError
from unioncard.offline.batch import HEADER_SIZE, TRAILER_SIZE, encode_batch, read_batch
from unioncard.offline.emv_record import EMV_RECORD_VERSION, POS_MODE, EmvRecord
from unioncard.offline.record import RECORD_SIZE, OfflineRecord
from unioncard.settlement.errors import BatchRefused

if TYPE_CHECKING:
    from unioncard.crypto.keystore import Keystore
    from unioncard.settlement.inputs import RunInputs
    from unioncard.settlement.ledger import Ledger

__all__ = ["EMV_APPLICATION", "EMV_REASONS", "EmvBatch", "EmvClearing", "SplitBatch",
           "accepted_by_batch", "analyze_emv", "check_cryptogram", "split_batch"]

EMV_REASONS = ("unknown_issuer", "bad_tc", "duplicate", "replay", "expired", "unknown_rules",
               "amount_mismatch")
"""Why an EMV record is rejected, in the order they are tried (the first that applies)."""
EMV_APPLICATION = 0
"""The ``application`` of an EMV record in the ledger's rejects (purse: 1 transit, 2 ETC)."""
_BEFORE_DUPLICATE = frozenset({"unknown_issuer", "bad_tc"})
"""A forged or unverifiable record never takes the identity of a genuine one."""
_MAX_STATUS = 3  # tariffs MemberStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS emv_settled (
    pan TEXT NOT NULL,
    psn TEXT NOT NULL,
    atc INTEGER NOT NULL,
    terminal_id BLOB NOT NULL,
    terminal_seq INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    at TEXT NOT NULL,
    amount INTEGER NOT NULL,
    ac BLOB NOT NULL,
    PRIMARY KEY (pan, psn, atc)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS emv_settled_terminal ON emv_settled(terminal_id, terminal_seq)
"""


# --- the file ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SplitBatch:
    """A batch file's records by kind: ``purse`` is a batch file of its purse records
    alone (the file itself when it holds no EMV record), ``purse_indexes`` their index
    in the file, ``emv`` the EMV records with theirs, ``data`` the whole file."""

    purse: bytes
    purse_indexes: Sequence[int]
    emv: tuple[tuple[int, EmvRecord], ...]
    data: bytes

    @property
    def digest(self) -> str:
        """The SHA-256 of the whole file: what identifies the batch (the purse part's own
        when the file holds no EMV record)."""
        return hashlib.sha256(self.data).hexdigest()


def split_batch(data: bytes, source: str = "batch") -> SplitBatch:
    """Split a batch file by record kind.  A file without EMV records comes back as it is
    (its checks are the purse pipeline's); one with EMV records is checked whole first
    (`read_batch`: `BatchRefused` naming the failure), as the purse pipeline checks its
    files: a damaged file is refused whole, never half applied."""
    data = bytes(data)
    count, extra = divmod(len(data) - HEADER_SIZE - TRAILER_SIZE, RECORD_SIZE)
    end = HEADER_SIZE + count * RECORD_SIZE
    if count <= 0 or extra or EMV_RECORD_VERSION not in data[HEADER_SIZE:end:RECORD_SIZE]:
        return SplitBatch(data, range(max(count, 0)), (), data)
    try:
        batch = read_batch(data, emv=True)
    except DecodeError as exc:
        raise BatchRefused(f"{source}: {exc}", reason=exc.message) from None
    purse = [(i, r) for i, r in enumerate(batch.records) if isinstance(r, OfflineRecord)]
    emv = tuple((i, r) for i, r in enumerate(batch.records) if isinstance(r, EmvRecord))
    return SplitBatch(encode_batch(batch.terminal_id, batch.batch_id, batch.created,
                                   [r for _, r in purse]),
                      tuple(i for i, _ in purse), emv, data)


# --- one record on its own -------------------------------------------------------------------


def check_cryptogram(record: EmvRecord, keys: Keystore) -> str | None:
    """None when the record's cryptogram is the card's over its values; else
    ``unknown_issuer`` (the keystore has no ``[emv]`` key for its AID and DKI) or
    ``bad_tc``."""
    from unioncard.crypto import emv

    try:
        master = keys.emv_issuer_keys(record.aid, record.dki).ac_mk
    except CryptoError:
        return "unknown_issuer"
    try:
        card_key = emv.derive_udk(master, record.pan, record.psn)
        expected = emv.application_cryptogram(emv.session_key(card_key, record.atc),
                                              emv.ac_data(record.ac_values(), record.cvr))
    except CryptoError:
        return "bad_tc"
    return None if expected == record.ac else "bad_tc"


@dataclass(frozen=True, slots=True)
class EmvAnalysis:
    """An EMV record's checks that depend on it alone: the reasons it failed (in
    `EMV_REASONS` order) and the rebate its terminal's quote gives."""

    index: int
    record: EmvRecord
    reasons: tuple[str, ...]
    rebate: int


def analyze_emv(records: Sequence[tuple[int, EmvRecord]], inputs: RunInputs
                ) -> list[EmvAnalysis]:
    """The order-independent checks of ``records`` ((index in the file, record))."""
    out = []
    for index, record in records:
        reasons = []
        verdict = check_cryptogram(record, inputs.keys)
        if verdict is not None:
            reasons.append(verdict)
        if record.card_expiry is not None and record.when.date() > record.card_expiry:
            reasons.append("expired")
        priced, rebate = _reprice(record, inputs)
        if priced is not None:
            reasons.append(priced)
        out.append(EmvAnalysis(index, record, tuple(reasons), rebate))
    return out


def _reprice(record: EmvRecord, inputs: RunInputs) -> tuple[str | None, int]:
    """The sale re-priced as its terminal priced it: (a reason or None, the rebate)."""
    from unioncard.tariffs import MemberStatus, Mode, QuoteContext, quote

    if record.ruleset_version == bytes(32):
        return (None if record.charged_amount == record.list_amount
                else "amount_mismatch"), 0
    rules = inputs.ruleset(record.ruleset_version)
    if rules is None or record.member_status > _MAX_STATUS:
        return "unknown_rules", 0
    quoted = quote(QuoteContext(
        mode=Mode(POS_MODE), amount=record.list_amount, card_type=record.card_type,
        at=record.when, member_categories=record.category_flags,
        member_status=MemberStatus(record.member_status or 1),
        merchant_id=record.merchant or None, merchant_category=record.mcc or None,
        organization=record.organization or None), rules)
    if quoted.charged_amount != record.charged_amount:
        return "amount_mismatch", 0
    return None, quoted.rebate


# --- the run -----------------------------------------------------------------------------------


@dataclass(slots=True)
class EmvBatch:
    """What settling a batch's EMV records gave: each record's reason (``accepted`` or one
    of `EMV_REASONS`), the clearing lines and rejects in the ledger's formats, and the
    identities of the accepted records (written by `EmvClearing.commit`)."""

    reasons: list[tuple[int, str]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)
    settled: list[EmvRecord] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Records per classification."""
        out: dict[str, int] = {}
        for _, reason in self.reasons:
            out[reason] = out.get(reason, 0) + 1
        return dict(sorted(out.items()))


class EmvClearing:
    """The order-dependent part of settling EMV records, over one ledger: the identities
    of the EMV sales settled (by this run, and by earlier ones: replays), and what each
    batch's commit writes."""

    def __init__(self, ledger: Ledger, inputs: RunInputs) -> None:
        self.ledger, self.inputs = ledger, inputs
        with ledger.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        self._cards: dict[tuple[str, str, int], int] = {}
        self._terminals: dict[tuple[bytes, int], int] = {}
        """Identities this run settled (0: not committed yet); the ledger is asked for
        the others, batch by batch (`_held`)."""

    def _held(self, cards: Sequence[tuple[str, str, int]],
              terminals: Sequence[tuple[bytes, int]]
              ) -> tuple[dict[tuple[str, str, int], int], dict[tuple[bytes, int], int]]:
        """Which of these identities the ledger holds, and in which batch row (by its
        keys: the card's (PAN, PSN, ATC), the terminal's (id, seq))."""
        with self.ledger.transaction() as db:
            return (_held_by(db, ("pan", "psn", "atc"), cards),
                    _held_by(db, ("terminal_id", "terminal_seq"), terminals))

    def _run_start(self) -> int | None:
        """The ledger row of this run's first batch (None: no run marked): identities of
        batches from there on are this run's, committed by an earlier start of it that was
        killed (docs/settlement.md, "The run"); 0 marks those not committed yet."""
        marker = self.ledger.run_marker()
        return None if marker is None else marker[1]

    def settle(self, terminal_id: bytes, records: Sequence[tuple[int, EmvRecord]]
               ) -> EmvBatch:
        """Classify and clear one batch's EMV records ((index in the file, record)), in the
        run's order."""
        result = EmvBatch()
        cards: dict[tuple[str, str, int], int] = {}
        terminals: dict[tuple[bytes, int], int] = {}
        rebates: dict[int, int] = {}
        start = self._run_start()
        held_cards, held_terminals = self._held(
            [(r.pan, r.psn, r.atc) for _, r in records],
            [(r.terminal_id, r.terminal_seq) for _, r in records])

        def this_run(row: int) -> bool:
            return row == 0 or (start is not None and row >= start)

        for item in analyze_emv(records, self.inputs):
            record = item.record
            rebates[item.index] = item.rebate
            reasons = list(item.reasons)
            if not _BEFORE_DUPLICATE.intersection(reasons):
                card = (record.pan, record.psn, record.atc)
                terminal = (record.terminal_id, record.terminal_seq)
                known = [k for k in (self._cards.get(card), held_cards.get(card),
                                     self._terminals.get(terminal), held_terminals.get(terminal))
                         if k is not None]
                if card in cards or terminal in terminals or any(map(this_run, known)):
                    reasons.append("duplicate")
                elif known:
                    reasons.append("replay")
                cards.setdefault(card, item.index)
                terminals.setdefault(terminal, item.index)
            reason = min(reasons, key=EMV_REASONS.index) if reasons else "accepted"
            result.reasons.append((item.index, reason))
            if reason == "accepted":
                result.settled.append(record)
                self._cards[(record.pan, record.psn, record.atc)] = 0
                self._terminals[(record.terminal_id, record.terminal_seq)] = 0
            else:
                result.rejects.append(_reject(item.index, reason, record))
        result.lines = self._lines(terminal_id, records, result, rebates)
        _check_conservation(records, result)
        return result

    def _lines(self, terminal_id: bytes, records: Sequence[tuple[int, EmvRecord]],
               result: EmvBatch, rebates: dict[int, int]) -> list[tuple[Any, ...]]:
        """Accepted sales summed by (day, operator, merchant, organization), as the purse
        pipeline's lines: (kind, day, operator, mode, route, merchant, organization,
        count, list, charged, discount, rebate)."""
        operator = self.inputs.operator(terminal_id)
        accepted = {index for index, reason in result.reasons if reason == "accepted"}
        sums: dict[tuple[str, str, str], list[int]] = {}
        for index, record in records:
            if index not in accepted:
                continue
            key = (record.when.date().isoformat(), record.merchant, record.organization)
            total = sums.setdefault(key, [0, 0, 0, 0])
            total[0] += 1
            total[1] += record.list_amount
            total[2] += record.charged_amount
            total[3] += rebates.get(index, 0)
        return sorted(("sale", day, operator, POS_MODE, "", merchant, organization, count,
                       listed, charged, listed - charged, rebate)
                      for (day, merchant, organization), (count, listed, charged, rebate)
                      in sums.items())

    def commit(self, db: sqlite3.Connection, batch_row: int, result: EmvBatch) -> None:
        """Write the accepted records' identities with the batch (inside the ledger's
        transaction that writes it, `Ledger.record_batch`, whose row is ``batch_row``)."""
        try:
            db.executemany(
                "INSERT INTO emv_settled VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.pan, r.psn, r.atc, r.terminal_id, r.terminal_seq, batch_row,
                  r.when.isoformat(), r.charged_amount, r.ac) for r in result.settled])
        except sqlite3.IntegrityError:
            raise SettlementError("an EMV sale settled twice (same card and ATC, or same "
                                  "terminal and seq): settle this run again") from None
        for record in result.settled:
            self._cards[(record.pan, record.psn, record.atc)] = batch_row
            self._terminals[(record.terminal_id, record.terminal_seq)] = batch_row


def _reject(index: int, reason: str, record: EmvRecord) -> tuple[Any, ...]:
    """A rejected EMV record as the ledger's rejects hold it: the card as its masked PAN
    and PSN, its ATC as the card seq."""
    masked = record.to_dict()["pan"]
    return (index, reason, record.terminal_id, record.terminal_seq, f"{masked}/{record.psn}",
            EMV_APPLICATION, record.atc, 0, record.charged_amount,
            record.when.isoformat(sep=" "))


def _check_conservation(records: Sequence[tuple[int, EmvRecord]], result: EmvBatch) -> None:
    """Every line adds up, and the lines with the rejected records add up to the records."""
    for line in result.lines:
        if line[8] != line[9] + line[10]:
            raise SettlementError(f"conservation: EMV line {line} does not add up")
    rejected = {index for index, reason in result.reasons if reason != "accepted"}
    listed = sum(line[8] for line in result.lines) + sum(
        r.list_amount for i, r in records if i in rejected)
    charged = sum(line[9] for line in result.lines) + sum(
        r.charged_amount for i, r in records if i in rejected)
    if (listed, charged) != (sum(r.list_amount for _, r in records),
                             sum(r.charged_amount for _, r in records)):
        raise SettlementError(f"conservation: the EMV records add up to {listed}/{charged} "
                              "fen in lines and rejects, not their sums")


def _held_by(db: sqlite3.Connection, columns: tuple[str, ...], keys: Sequence[Any]
             ) -> dict[Any, int]:
    """The batch row of each of ``keys`` (values of ``columns``, a key of `emv_settled`)
    the ledger holds, asked a few hundred at a time (under SQLite's 999 parameters)."""
    found: dict[Any, int] = {}
    names, per = ", ".join(columns), 900 // len(columns)
    row = f"({', '.join('?' * len(columns))})"
    for at in range(0, len(keys), per):
        part = keys[at:at + per]
        for *key, batch in db.execute(
                f"SELECT {names}, batch FROM emv_settled WHERE ({names}) IN "
                f"(VALUES {', '.join([row] * len(part))})",
                [value for each in part for value in each]):
            found[tuple(key)] = batch
    return found


def accepted_by_batch(ledger: Ledger, rows: Sequence[int]) -> dict[int, int]:
    """The EMV sales the ledger settled in each of the batches ``rows`` (for reports: the
    ledger's own count of a batch's accepted records is of its purse records)."""
    if not rows:
        return {}
    with ledger.transaction() as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'emv_settled'").fetchone() is None:
            return {}
        return dict(db.execute(
            f"SELECT batch, COUNT(*) FROM emv_settled WHERE batch IN "
            f"({','.join('?' * len(rows))}) GROUP BY batch", tuple(rows)).fetchall())
