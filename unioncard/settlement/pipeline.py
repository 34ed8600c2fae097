"""A settlement run: batch files in header order, each classified, cleared and committed.

`Settlement` holds what the order of the run decides (docs/settlement.md): the index
of settled records (card and terminal counters and the seqs settled on each, as bits:
duplicates in this run, replays of earlier runs; started from the ledger's index
snapshot and the batches after it; a run started again after it was killed continues
it: `Settlement.begin`), the highest seq each card's counter proved, the members'
usage windows of the days and months the run reaches, and the ledger.  It takes the
`BatchAnalysis` of each file (computed by either path of `unioncard.settlement.analyze`,
here or on Dask workers), in the order of `batch_order`, and settles it:

1. the batch is already settled (same header and bytes: nothing changes) or in
   conflict with a settled one (same header, other bytes: refused whole);
2. records without TAC are proven, or not, by later TAC-verified seqs of their card;
3. duplicates and replays, by the card's and by the terminal's identity;
4. the first reason of each record; the accepted purchases re-priced with their
   members' history for the rebates owed; lines aggregated; conservation checked;
   (gaps in a card's seqs are found once the run is over, in the seqs it indexed:
   `counter_gaps`);
5. the batch written to the ledger, in a commit shared by a few batches (each batch
   is in one commit, whole).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from unioncard.settlement.analyze import BatchAnalysis, context_batch, selected_rows
from unioncard.settlement.columns import Columns, line_groups
from unioncard.settlement.emv import EmvBatch, EmvClearing
from unioncard.settlement.errors import BatchRefused, SettlementError
from unioncard.settlement.inputs import RunInputs
from unioncard.settlement.keyindex import (
    KeyedRows,
    SeqSet,
    group_rows,
    grown,
    previous_equal,
)
from unioncard.settlement.ledger import SETTLED_DTYPE, Ledger
from unioncard.settlement.reasons import Reason, bit, first_reason
from unioncard.settlement.usage import UsageStore, card_ids

__all__ = ["BatchResult", "CardCounters", "RunResult", "Settlement", "batch_order",
           "counter_gaps", "find_gaps", "read_header", "run_fingerprint"]

_BEFORE_DUPLICATE = bit(Reason.UNKNOWN_ISSUER) | bit(Reason.BAD_TAC) | bit(Reason.UNPROVEN)
SNAPSHOT_RECORDS = 1_000_000
"""A run that reads this many settled records from their batches (those since the
ledger's last index snapshot) keeps a new snapshot before it settles anything: the
next run then reads the snapshot and the batches after it, not the whole history."""
_SNAPSHOT: dict[str, tuple[str, int]] = {
    "cards": ("<u8", 3), "card_home": ("<u8", 4), "card_blocks": ("<u8", 2),
    "max_verified": ("<i4", 1), "terminals": ("<u8", 2), "terminal_home": ("<u8", 4),
    "terminal_blocks": ("<u8", 2)}
"""The parts of an index snapshot: dtype and columns (`Ledger.write_index_snapshot`)."""
COMMIT_BATCHES = 64
COMMIT_RECORDS = 250_000
"""A commit holds up to this many batches or records (each batch whole in one commit)."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What happened to one batch file in a run."""

    source: str
    state: str  # settled | already_settled | refused
    reason: str = ""
    terminal_id: bytes = b""
    batch_id: int = -1
    records: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.source, "state": self.state, "reason": self.reason,
                "terminal_id": self.terminal_id.hex().upper(), "batch_id": self.batch_id,
                "records": self.records, "reasons": self.reasons}


class CardCounters(NamedTuple):
    """The card counters a run numbered (`counter_keys`), which of them its batches hold,
    and their settled seqs (`counter_gaps`)."""

    numbered: KeyedRows
    touched: np.ndarray
    seqs: SeqSet


@dataclass(slots=True)
class RunResult:
    batches: list[BatchResult] = field(default_factory=list)
    gaps: list[tuple[str, str, int, int]] | None = None
    """The suspicious gaps in the seqs of the card counters its batches hold
    (`counter_gaps`), found at the end of the run from what it indexed."""

    @property
    def settled(self) -> list[BatchResult]:
        return [b for b in self.batches if b.state != "refused"]


def read_header(data: bytes) -> tuple[bytes, int] | None:
    """(terminal id, batch id) from a batch file's header, None when it has none."""
    if len(data) < 32 or data[:4] != b"UCOR":
        return None
    return bytes(data[8:14]), int.from_bytes(data[14:18], "big")


def batch_order(paths: Iterable[str | Path], *, head: Callable[[Path], bytes] | None = None
                ) -> list[Path]:
    """The run's order: by header (terminal id, batch id), then path; files without a
    header last (they will be refused)."""
    def key(path: Path) -> tuple[int, bytes, int, str]:
        try:
            data = head(path) if head is not None else _head(path)
        except OSError:
            data = b""
        header = read_header(data)
        if header is None:
            return (1, b"", 0, str(path))
        return (0, header[0], header[1], str(path))

    return sorted((Path(p) for p in paths), key=key)


def _head(path: Path) -> bytes:
    with path.open("rb") as stream:
        return stream.read(32)


class Settlement:
    """The order-dependent part of a run, over one ledger.  ``reference`` re-prices the
    capped benefits one record at a time with `unioncard.tariffs.quote_sequence` (the
    reference path) instead of the batch kernel."""

    def __init__(self, ledger: Ledger, inputs: RunInputs, *, reference: bool = False) -> None:
        self.ledger, self.inputs, self.reference = ledger, inputs, reference
        self._empty_index()
        self._touched = np.zeros(0, bool)
        """Which card counters the run's batches hold (settled now, or before: given again)."""
        self._usage = UsageStore(load=ledger.usage)
        self.emv = EmvClearing(ledger, inputs)
        self._pending: list[dict[str, Any]] = []
        self._pending_records = 0
        self._seen: dict[tuple[bytes, int], str] = {}

    # --- the run -------------------------------------------------------------------------------

    def begin(self, fingerprint: str) -> None:
        """Start the run of the batch files ``fingerprint`` names (`run_fingerprint`), with
        the ledger's records indexed.  If the ledger says a run of the same files was
        started and never finished (killed), this run continues it: the batches that
        start committed are this run's own (their copies are duplicates, not replays)."""
        marker = self.ledger.run_marker()
        if marker is not None and marker[0] == fingerprint:
            first = marker[1]
        else:
            first = self.ledger.mark_run(fingerprint)
        snapshot = self.ledger.index_snapshot()
        through = 0
        if snapshot is not None:
            try:
                self._restore(snapshot[1])
                through = snapshot[0]
            except (SettlementError, ValueError):  # set aside: every batch is read again
                self._empty_index()
        read = 0
        for row, records in self.ledger.settled_records(after=through, before=first):
            self._remember(records, *self._numbers(records), in_run=False)
            through, read = row, read + len(records)
        for seqs in (self._card_seqs, self._terminal_seqs):
            seqs.compact()  # the history as spans
        if read >= SNAPSHOT_RECORDS:
            self.ledger.write_index_snapshot(through, self._snapshot())
        for _row, records in self.ledger.settled_records(after=max(through, first - 1)):
            self._remember(records, *self._numbers(records), in_run=True)

    def finish(self) -> None:
        """Commit what is pending and record that the run is over."""
        self.commit()
        self.ledger.mark_run(None)

    # --- the index of settled records -------------------------------------------------------

    def _snapshot(self) -> dict[str, memoryview]:
        """The index as it stands before the run, as the parts of a ledger snapshot (the
        bytes of its arrays, not copied again)."""
        self._cover_counters()
        count = len(self._counters)
        parts = {"cards": self._counters.fields(), "terminals": self._terminals.fields(),
                 "max_verified": self._max_verified[:count]}
        for name, seqs in (("card", self._card_seqs), ("terminal", self._terminal_seqs)):
            parts[f"{name}_home"], parts[f"{name}_blocks"] = seqs.settled_before()
        return {name: np.ascontiguousarray(value, _SNAPSHOT[name][0]).reshape(-1).view(
            np.uint8).data for name, value in parts.items()}

    def _empty_index(self) -> None:
        """No counter numbered, no seq settled (a new run's index, and what a snapshot set
        aside leaves)."""
        self._counters = KeyedRows(3)
        """The cards' counters (issuer, diversifier, purse << 8 | is_load), numbered."""
        self._terminals = KeyedRows(2)
        """The terminals' counters (terminal id, is_load), numbered."""
        self._card_seqs, self._terminal_seqs = SeqSet(), SeqSet()
        """The settled seqs of each counter: the records' two identities."""
        self._max_verified = np.zeros(0, np.int32)
        """The highest TAC-verified seq settled of each card counter (-1: none): what
        proves the seq of a record without TAC."""

    def _restore(self, parts: Mapping[str, bytes | bytearray]) -> None:
        """Start from a snapshot (`_snapshot`) instead of an empty index."""
        value = {name: np.frombuffer(parts[name], dtype).reshape(-1, *shape)
                 for name, (dtype, *shape) in _SNAPSHOT.items()}
        for keys, numbered in ((value["cards"], self._counters),
                               (value["terminals"], self._terminals)):
            if not np.array_equal(numbered.add(keys), np.arange(len(keys))):
                raise SettlementError("the ledger's index snapshot numbers a key twice")
        if (len(value["max_verified"]) != len(value["cards"])
                or len(value["card_home"]) > len(value["cards"])
                or len(value["terminal_home"]) > len(value["terminals"])):
            raise SettlementError("the ledger's index snapshot has parts of other sizes")
        self._card_seqs = SeqSet.restored(value["card_home"], value["card_blocks"])
        self._terminal_seqs = SeqSet.restored(value["terminal_home"],
                                              value["terminal_blocks"])
        self._max_verified = value["max_verified"].reshape(-1).astype(np.int32)

    def _numbers(self, records: Any, rows: np.ndarray | slice = slice(None),
                 *, add: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The card counter and the terminal counter of ``rows`` of ``records`` (columns
        issuer, diversifier, application, is_load, terminal), numbered (``add``) or looked
        up (-1: never settled)."""
        cards = counter_keys(records, rows)
        terminal, is_load = records["terminal"][rows], records["is_load"][rows]
        one = bool(len(terminal)) and bool((terminal == terminal[0]).all())
        terminals = np.empty((2 if one else len(cards), 2), np.uint64)
        if one:  # a batch file's records are of its terminal: its two counters
            terminals[:, 0], terminals[:, 1] = terminal[0], (0, 1)
        else:
            terminals[:, 0], terminals[:, 1] = terminal, is_load
        number = self._counters.add if add else self._counters.find
        numbers = (self._terminals.add if add else self._terminals.find)(terminals)
        return number(cards), numbers[np.asarray(is_load, np.int64)] if one else numbers

    def _touch(self, card: np.ndarray) -> None:
        """Mark the card counters ``card`` as held by a batch of this run."""
        self._touched = grown(self._touched, len(self._counters), False)
        self._touched[card[card >= 0]] = True

    def counters(self) -> CardCounters:
        """The numbered card counters, which of them this run's batches hold, their seqs."""
        self._touched = grown(self._touched, len(self._counters), False)
        return CardCounters(self._counters, self._touched[:len(self._counters)],
                            self._card_seqs)

    def _cover_counters(self) -> None:
        """Give every numbered card counter its highest verified seq (-1 until one is
        settled): counters are numbered as records are checked, settled or not."""
        self._max_verified = grown(self._max_verified, len(self._counters), -1)

    def _remember(self, settled: np.ndarray, card: np.ndarray, terminal: np.ndarray, *,
                  in_run: bool = True) -> None:
        """Index accepted records (`SETTLED_DTYPE`) of the numbered counters ``card`` and
        ``terminal``: their seqs, and their card counters' highest verified seq."""
        if not len(settled):
            return
        self._card_seqs.add(card, settled["card_seq"], in_run=in_run)
        self._terminal_seqs.add(terminal, settled["terminal_seq"], in_run=in_run)
        self._cover_counters()
        verified = settled["verified"] == 1
        np.maximum.at(self._max_verified, card[verified],
                      settled["card_seq"][verified].astype(np.int32))

    # --- one batch ----------------------------------------------------------------------------

    def settle(self, analysis: BatchAnalysis) -> BatchResult:
        """Settle one analyzed batch (in the run's order)."""
        batch = analysis.batch
        header = (batch.terminal_id, batch.batch_id)
        base = dict(source=analysis.source, terminal_id=batch.terminal_id,
                    batch_id=batch.batch_id, records=batch.count + len(analysis.emv))
        known = self._seen.get(header)
        settled = self.ledger.batch(*header)
        digest = known if known is not None else (settled.digest if settled else None)
        if digest is not None:
            if digest == batch.digest:
                if known is None and settled is not None:  # settled by an earlier run
                    for _row, records in self.ledger.settled_records([settled.row]):
                        self._touch(self._counters.find(counter_keys(records)))
                return BatchResult(state="already_settled", **base)  # type: ignore[arg-type]
            reason = (f"conflict: batch {batch.batch_id} of terminal "
                      f"{batch.terminal_id.hex().upper()} was settled with other contents")
            return BatchResult(state="refused", reason=reason, **base)  # type: ignore[arg-type]
        r = batch.records
        cols = analysis.columns if analysis.columns is not None else Columns(r)
        mask = analysis.mask.copy()
        fields = {"issuer": cols.issuer, "diversifier": cols.diversifier, "is_load": cols.is_load,
                  "terminal": cols.terminal, "application": cols.field("application"),
                  "card_seq": cols.field("card_seq"), "terminal_seq": cols.field("terminal_seq")}
        self._prove(fields, analysis, mask)
        card, terminal = self._duplicates(fields, mask)
        reasons = first_reason(mask)
        accepted = reasons == 0
        rebate = self._rebates(r, cols, analysis, accepted)
        settled_rows = self._settled_rows(r, cols, fields, analysis, accepted, rebate)
        lines = self._lines(r, cols, accepted, rebate, batch.terminal_id)
        self._check_conservation(batch, r, accepted, lines)
        kept = selected_rows(accepted)
        rejects = self._rejects(r, cols, reasons)
        emv = self.emv.settle(batch.terminal_id, analysis.emv) if analysis.emv else None
        if emv is not None:  # the batch's EMV card sales (docs/settlement.md)
            assert analysis.purse_indexes is not None
            rejects = sorted([(analysis.purse_indexes[i], *rest) for i, *rest in rejects]
                             + emv.rejects)
            lines = sorted(lines + emv.lines)
        self._queue(analysis, settled_rows, rejects, lines, (card[kept], terminal[kept]), emv)
        self._seen[header] = batch.digest
        tally = np.bincount(reasons, minlength=len(Reason))
        counts = {Reason(i).label: int(c) for i, c in enumerate(tally) if c}
        for label, count in (emv.counts if emv is not None else {}).items():
            counts[label] = counts.get(label, 0) + count
        return BatchResult(state="settled", reasons=dict(sorted(counts.items())),
                           **base)  # type: ignore[arg-type]

    def _prove(self, fields: dict[str, np.ndarray], analysis: BatchAnalysis,
               mask: np.ndarray) -> None:
        """A record without TAC stands only if a later TAC-verified seq of its card's counter
        is known: settled before, or verified in this batch."""
        no_tac = np.flatnonzero(((analysis.batch.records["flags"] & 0x02) != 0) & (mask == 0))
        if not no_tac.size:
            return
        verified = np.flatnonzero(analysis.verified)
        card, _ = self._numbers(fields, np.concatenate([no_tac, verified]), add=False)
        self._cover_counters()
        settled = np.full(no_tac.size, -1, np.int64)
        known = card[:no_tac.size] >= 0
        settled[known] = self._max_verified[card[:no_tac.size][known]]
        seq = fields["card_seq"].astype(np.int64)
        for k, i in enumerate(no_tac.tolist()):  # few: recovered records are rare
            same = verified[_same_counter(fields, verified, i)]
            best = max(int(settled[k]), int(seq[same].max()) if same.size else -1)
            if best <= seq[i]:
                mask[i] |= bit(Reason.UNPROVEN)

    def _duplicates(self, fields: dict[str, np.ndarray], mask: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Later copies (by the card's or the terminal's identity) of an earlier record
        of this batch or this run are duplicates; of an earlier run's, replays.  The
        numbered counters of each record (-1 where not a candidate)."""
        n = len(mask)
        card, terminal = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        candidates = np.flatnonzero((mask & _BEFORE_DUPLICATE) == 0)
        if not candidates.size:
            return card, terminal
        rows = slice(None) if candidates.size == n else candidates
        card[rows], terminal[rows] = self._numbers(fields, rows)
        seq, terminal_seq = fields["card_seq"][rows], fields["terminal_seq"][rows]
        card_before, card_run = self._card_seqs.test(card[rows], seq)
        terminal_before, terminal_run = self._terminal_seqs.test(terminal[rows], terminal_seq)
        this_run = card_run | terminal_run
        seen = this_run | card_before | terminal_before
        mask[candidates[this_run]] |= bit(Reason.DUPLICATE)
        mask[candidates[seen & ~this_run]] |= bit(Reason.REPLAY)
        for owner, seqs in ((card[rows], seq), (terminal[rows], terminal_seq)):
            keys = ((owner.astype(np.uint64) + np.uint64(1)) << np.uint64(32)) | seqs.astype(
                np.uint64)
            copies = (previous_equal(keys) >= 0) & ~seen  # exact keys: no confirmation
            mask[candidates[copies]] |= bit(Reason.DUPLICATE)
        return card, terminal

    def _rebates(self, r: np.ndarray, cols: Columns, analysis: BatchAnalysis,
                 accepted: np.ndarray) -> np.ndarray:
        """What the union owes each accepted purchase's member: the rebates of its rules and
        the capped benefits the terminal left, priced with the member's history.  Only the
        purchases a capped rule matched need it (the analysis marks them deferred): the
        others settle as quoted and use no cap.  The reference path re-prices every
        purchase of a mode with capped rules."""
        rebate = np.where(accepted, analysis.rebate, 0)
        for index in np.unique(analysis.ruleset[accepted & (analysis.ruleset >= 0)]):
            rules = self.inputs.rulesets[int(index)]
            chosen = accepted & (analysis.ruleset == index)
            rows = np.flatnonzero(chosen & np.isin(cols.field("mode"), _capped_modes(rules))
                                  if self.reference else chosen & analysis.deferred)
            if not rows.size:
                continue
            self._usage.prepare(cols.when[rows])
            first, which = group_rows(np.column_stack([cols.issuer[rows], cols.diversifier[rows]]))
            distinct = card_ids(cols.issuer[rows[first]], cols.diversifier[rows[first]])
            members = distinct[which]
            if self.reference:
                book = self._usage.book_for(distinct.tolist())
                settled_charged, settled_rebate = self._quote_sequence(r, cols, rows, members,
                                                                       rules, book)
                self._usage.absorb(book)
            else:
                from unioncard.tariffs import evaluate_batch, record_batch

                contexts = context_batch(r, cols.when, member_id=members,
                                         rows=None if rows.size == len(r) else rows, cols=cols)
                result = evaluate_batch(contexts, rules, history=self._usage)
                record_batch(self._usage, contexts, result, rules)
                settled_charged, settled_rebate = result.charged, result.rebate
            rebate[rows] = (cols.field("charged_amount")[rows] - settled_charged
                            + settled_rebate)
        return rebate

    def _quote_sequence(self, r: np.ndarray, cols: Columns, rows: np.ndarray,
                        members: np.ndarray, rules: Any, book: Any
                        ) -> tuple[np.ndarray, np.ndarray]:
        from unioncard.offline.record import OfflineRecord
        from unioncard.settlement.analyze import record_context
        from unioncard.tariffs import quote_sequence

        contexts = []
        for row, member in zip(rows.tolist(), members.tolist(), strict=True):
            record = OfflineRecord.from_bytes(r[row:row + 1].tobytes())
            context = record_context(record, member_id=member or None)
            assert context is not None  # priced in the analysis
            contexts.append(context)
        quotes = quote_sequence(contexts, rules, book)
        return (np.array([q.charged_amount for q in quotes], np.int64),
                np.array([q.rebate for q in quotes], np.int64))

    def _settled_rows(self, r: np.ndarray, cols: Columns, fields: dict[str, np.ndarray],
                      analysis: BatchAnalysis, accepted: np.ndarray,
                      rebate: np.ndarray) -> np.ndarray:
        rows = selected_rows(accepted)
        out = np.zeros(int(accepted.sum()), SETTLED_DTYPE)
        for name, column in fields.items():
            out[name] = column[rows]
        out["when"] = cols.when[rows].astype(np.int64)
        out["list_amount"] = cols.field("list_amount")[rows]
        out["charged_amount"] = cols.field("charged_amount")[rows]
        out["rebate"] = rebate[rows]
        out["verified"] = analysis.verified[rows]
        out["mode"] = cols.field("mode")[rows]
        return out

    def _lines(self, r: np.ndarray, cols: Columns, accepted: np.ndarray, rebate: np.ndarray,
               terminal_id: bytes) -> list[tuple[Any, ...]]:
        """Accepted records summed by (kind, day, mode, route, merchant, organization)."""
        rows = np.flatnonzero(accepted)
        if not rows.size:
            return []
        operator = self.inputs.operator(terminal_id)
        load = cols.is_load[rows]
        day = cols.when[rows].astype("datetime64[D]").astype(np.int64)
        mode = np.where(load, cols.field("application")[rows], cols.field("mode")[rows])
        first, inverse = line_groups(r, rows, load | (mode.astype(np.int64) << 8)
                                     | (day << 16))
        at = rows[first]

        def texts(name: str) -> list[bytes]:  # numpy's S columns drop the 00 padding
            column = np.ascontiguousarray(r[name][at])
            return column.view(f"S{column.shape[1]}").ravel().tolist()

        def total(values: np.ndarray) -> list[int]:
            return np.bincount(inverse, weights=values.astype(np.float64),  # type: ignore[no-any-return]
                               minlength=len(first)).astype(np.int64).tolist()

        days = day[first].tolist()
        day_text = {d: str(np.datetime64(d, "D")) for d in set(days)}
        columns = zip(load[first].tolist(), days, mode[first].tolist(), texts("route"),
                      texts("merchant"), texts("organization"),
                      np.bincount(inverse, minlength=len(first)).tolist(),
                      total(cols.field("list_amount")[rows]),
                      total(cols.field("charged_amount")[rows]), total(rebate[rows]),
                      strict=True)
        return sorted(("load" if is_load else "sale", day_text[number], operator, modes,
                       route.decode("ascii"), merchant.decode("ascii"), org.decode("utf-8"),
                       count, listed, charged, listed - charged, rebates)
                      for is_load, number, modes, route, merchant, org, count, listed, charged,
                      rebates in columns)

    @staticmethod
    def _check_conservation(batch: Any, r: np.ndarray, accepted: np.ndarray,
                            lines: Sequence[tuple[Any, ...]]) -> None:
        """list = charged + discount on every line; the lines and the rejected records add
        up to the batch's trailer sums, to the fen."""
        for line in lines:
            if line[8] != line[9] + line[10]:
                raise SettlementError(f"conservation: line {line} does not add up")
        rejected = ~accepted
        listed = sum(line[8] for line in lines) + int(r["list_amount"][rejected].sum())
        charged = sum(line[9] for line in lines) + int(r["charged_amount"][rejected].sum())
        if (listed, charged) != (batch.list_total, batch.charged_total):
            raise SettlementError(f"conservation: batch {batch.batch_id} adds up to "
                                  f"{listed}/{charged} fen, its trailer says "
                                  f"{batch.list_total}/{batch.charged_total}")

    def _rejects(self, r: np.ndarray, cols: Columns, reasons: np.ndarray
                 ) -> list[tuple[Any, ...]]:
        rows = np.flatnonzero(reasons != 0)
        when = cols.when[rows].astype("datetime64[s]").astype(str)
        return [(int(i), Reason(int(reasons[i])).label, bytes(r["terminal_id"][i]),
                 int(r["terminal_seq"][i]),
                 f"{int(cols.issuer[i]):016X}/{int(cols.diversifier[i]):016X}",
                 int(r["application"][i]), int(r["card_seq"][i]), int(cols.is_load[i]),
                 int(r["charged_amount"][i]), str(at))
                for i, at in zip(rows.tolist(), when.tolist(), strict=True)]

    # --- commits --------------------------------------------------------------------------------

    def _queue(self, analysis: BatchAnalysis, settled: np.ndarray,
               rejects: list[tuple[Any, ...]], lines: list[tuple[Any, ...]],
               counters: tuple[np.ndarray, np.ndarray], emv: EmvBatch | None = None) -> None:
        batch = analysis.batch
        self._pending.append(dict(
            terminal_id=batch.terminal_id, batch_id=batch.batch_id, digest=batch.digest,
            source=analysis.source, created=batch.created,
            records=batch.count + len(analysis.emv),
            list_total=batch.list_total + sum(r.list_amount for _, r in analysis.emv),
            charged_total=batch.charged_total + sum(r.charged_amount for _, r in analysis.emv),
            settled=settled, rejects=rejects, lines=lines, emv=emv))
        self._remember(settled, *counters)
        self._touch(counters[0])
        self._pending_records += batch.count
        if len(self._pending) >= COMMIT_BATCHES or self._pending_records >= COMMIT_RECORDS:
            self.commit()

    def commit(self) -> None:
        """Write the settled batches not written yet, in one durable commit."""
        if not self._pending:
            return
        with self.ledger.transaction() as db:
            for entry in self._pending:
                batch = {k: v for k, v in entry.items() if k != "emv"}
                row = self.ledger.record_batch(db, **batch)
                if entry["emv"] is not None:
                    self.emv.commit(db, row, entry["emv"])
            self.ledger.record_usage(db, self._usage.changes())  # each window's last state
        self._pending, self._pending_records = [], 0


def _same_counter(fields: dict[str, np.ndarray], rows: np.ndarray, i: int) -> np.ndarray:
    """Which of ``rows`` are of the card counter of record ``i``."""
    same = np.ones(len(rows), bool)
    for name in ("issuer", "diversifier", "application", "is_load"):
        same &= fields[name][rows] == fields[name][i]
    return same


def run_settlement(paths: Sequence[str | Path], settlement: Settlement, analyze: Callable[
        [Sequence[Path]], Iterable[tuple[Path, BatchAnalysis | BatchRefused]]],
        *, progress: Callable[[int], None] | None = None) -> RunResult:
    """Settle ``paths`` in the run's order; ``analyze`` yields each path's analysis (or its
    refusal) in that order (locally, or from Dask workers)."""
    result = RunResult()
    ordered = batch_order(paths)
    settlement.begin(run_fingerprint(ordered))
    for done, (path, analysis) in enumerate(analyze(ordered), 1):
        if isinstance(analysis, BatchRefused):
            result.batches.append(BatchResult(str(path), "refused", analysis.reason))
        else:
            result.batches.append(settlement.settle(analysis))
        if progress is not None:
            progress(done)
    settlement.finish()
    result.gaps = counter_gaps(settlement.counters())
    return result


def run_fingerprint(ordered: Sequence[Path]) -> str:
    """What identifies a run: the header and size of each of its batch files, in order (a
    run started again with the same files, however named, has the same)."""
    digest = hashlib.sha256()
    for path in ordered:
        try:
            digest.update(_head(path).ljust(32, b"\0") + path.stat().st_size.to_bytes(8, "big"))
        except OSError:
            digest.update(bytes(40))
    return digest.hexdigest()


def _capped_modes(rules: Any) -> list[int]:
    """The modes in which some rule of ``rules`` is capped (they need the member's history)."""
    return sorted({int(rule.mode) for rule in rules.rules if rule.caps is not None})


def counter_keys(records: Any, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """The card counter of ``rows`` of ``records`` (columns issuer, diversifier,
    application, is_load) as ``uint64[N, 3]``: issuer, diversifier, purse << 8 | is_load."""
    is_load = records["is_load"][rows]
    keys = np.empty((len(is_load), 3), np.uint64)
    keys[:, 0], keys[:, 1] = records["issuer"][rows], records["diversifier"][rows]
    keys[:, 2] = records["application"][rows]
    keys[:, 2] <<= np.uint64(8)
    keys[:, 2] |= is_load
    return keys


def find_gaps(ledger: Ledger, rows: Sequence[int], *, limit: int = 10_000
              ) -> list[tuple[str, str, int, int]]:
    """`counter_gaps` of the counters the batches ``rows`` hold, over every seq the ledger
    settled, read from the ledger (a run finds them from what it indexed:
    `RunResult.gaps`)."""
    counters = CardCounters(KeyedRows(3), np.zeros(0, bool), SeqSet())
    for _row, records in ledger.settled_records():
        counters.seqs.add(counters.numbered.add(counter_keys(records)), records["card_seq"],
                          in_run=False)
    touched = np.zeros(len(counters.numbered), bool)
    for _row, records in ledger.settled_records(rows):
        touched[counters.numbered.find(counter_keys(records))] = True
    return counter_gaps(counters._replace(touched=touched), limit=limit)


def counter_gaps(counters: CardCounters, *, limit: int = 10_000
                 ) -> list[tuple[str, str, int, int]]:
    """Suspicious gaps: seqs missing between two settled seqs of a card's counter, for the
    counters ``counters`` marks touched (a batch that arrives later fills its gap).
    (card, kind, first missing seq, last missing seq), by card, kind (loads first), purse
    and seq, at most ``limit``."""
    held = counters.seqs.with_gaps(np.flatnonzero(counters.touched))
    keys = counters.numbered.fields(held)
    issuer, diversifier, purse = keys.T
    by_card = np.lexsort((purse >> np.uint64(8), ~purse & np.uint64(1), diversifier, issuer))
    order = held[by_card]  # by card, loads first, then by purse
    fields = dict(zip(order.tolist(), keys[by_card].tolist(), strict=True))
    gaps = []
    for counter, first, last in counters.seqs.gaps(order, limit).tolist():
        issuer, diversifier, purse = fields[counter]
        gaps.append((f"{issuer:016X}/{diversifier:016X}", "load" if purse & 1 else "purchase",
                     first, last))
    return gaps
