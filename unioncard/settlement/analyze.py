"""One batch file, on its own: ingest, TAC verification and the checks of one record.

Everything here depends on the file and the run's inputs alone, never on other
batches or the ledger, so batch files are analyzed in any order, on any worker
(docs/settlement.md, "Scale-out"); what depends on the order of the run
(duplicates, replays, proofs, capped benefits) is `unioncard.settlement.pipeline`'s.

Two paths give the same `BatchAnalysis`, mask for mask:

- `analyze_batch` (fast): the file mapped onto numpy columns
  (`unioncard.settlement.columns`), TACs verified in bulk by numba DES
  (`unioncard.crypto.tac_batch`), purchases re-priced by the tariffs batch kernel;
- `analyze_batch_reference`: `read_batch` builds every `OfflineRecord`, each TAC is
  computed with `cryptography` (`unioncard.crypto.purse`) and each purchase quoted
  with `unioncard.tariffs.quote`: obviously right, and slow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from unioncard.offline.record import RecordFlags
from unioncard.settlement.columns import Columns, DecodedBatch, decode_batch
from unioncard.settlement.emv import split_batch
from unioncard.settlement.reasons import Reason, bit

if TYPE_CHECKING:
    from unioncard.offline.emv_record import EmvRecord
    from unioncard.offline.record import OfflineRecord
    from unioncard.settlement.inputs import RunInputs
    from unioncard.tariffs import ContextBatch, QuoteContext

__all__ = ["BatchAnalysis", "analyze_batch", "analyze_batch_reference", "record_context"]

_NO_TAC = int(RecordFlags.NO_TAC)
_MAX_MODE = 7  # tariffs Mode: the modes a rule set can price
_MAX_STATUS = 3  # tariffs MemberStatus


@dataclass(frozen=True, slots=True)
class BatchAnalysis:
    """A batch file checked on its own.

    ``mask`` holds, per record, the bits (`unioncard.settlement.reasons.bit`) of the
    checks it failed here; ``verified`` marks the records whose TAC verified (they
    can prove a seq used); ``ruleset`` is the index in the run's rule sets of the one
    that re-priced each purchase (-1: none, loads and unknown ones); ``rebate`` the
    rebate its terminal's quote gives (capped benefits aside: they need the member's
    history, which only the run has); ``deferred`` marks the purchases a capped rule
    matched, left to settlement (only they need that history: without one, the
    others settle as their terminal's quote).
    """

    source: str
    batch: DecodedBatch
    mask: np.ndarray
    verified: np.ndarray
    ruleset: np.ndarray
    rebate: np.ndarray
    deferred: np.ndarray
    emv: tuple[tuple[int, EmvRecord], ...] = ()
    purse_indexes: Sequence[int] | None = None
    columns: Columns | None = None
    """The fast path's columns of ``batch.records``, kept for the run (the reference
    path leaves it to the run to derive them)."""


def analyze_batch(data: bytes, source: str, inputs: RunInputs) -> BatchAnalysis:
    """The fast path: columns, numba TACs, the tariffs batch kernel."""
    from unioncard.crypto.tac_batch import verify_card_tacs

    split = split_batch(data, source)
    batch = decode_batch(split.purse, source)
    if split.emv:  # the batch is known by the whole file
        batch = dataclasses.replace(batch, digest=split.digest)
    r, cols = batch.records, Columns(batch.records)
    n = len(r)
    mask = np.zeros(n, np.uint16)
    masters, key_row = inputs.tac_master_keys(cols.issuer, cols.field("key_version"))
    known = key_row >= 0
    mask[~known] |= bit(Reason.UNKNOWN_ISSUER)
    check = known & ((cols.field("flags") & _NO_TAC) == 0)
    verified = np.zeros(n, bool)
    rows = selected_rows(check)
    if check.any():
        def field(name: str) -> np.ndarray:
            return cols.field(name)[rows]

        verified[rows] = verify_card_tacs(  # each card's TAC key derived in the same pass
            field("tac"), masters, key_row[rows], field("diversifier"),
            tx_type=field("tx_type"), amount=field("charged_amount"),
            terminal_id=field("terminal_id"), terminal_seq=field("terminal_seq"),
            date=field("date"), time=field("time"), balance_after=field("balance_after"),
            card_seq=field("card_seq"))
    mask[check & ~verified] |= bit(Reason.BAD_TAC)
    mask |= _hotlisted(inputs, cols) * np.uint16(bit(Reason.HOTLISTED))
    when_day = cols.when.astype("datetime64[D]")
    expired = ~np.isnat(cols.expiry) & (when_day > cols.expiry)
    mask[expired] |= bit(Reason.EXPIRED)
    ruleset = np.full(n, -1, np.int16)
    rebate = np.zeros(n, np.int64)
    deferred = np.zeros(n, bool)
    _price(inputs, r, cols, mask, ruleset, rebate, deferred)
    return BatchAnalysis(source, batch, mask, verified, ruleset, rebate, deferred, split.emv,
                         split.purse_indexes, cols)


def selected_rows(chosen: np.ndarray) -> np.ndarray | slice:
    """The rows ``chosen`` marks, as an index: all of them (the usual case) as a slice,
    which takes a column as a view instead of a copy."""
    return slice(None) if chosen.all() else np.flatnonzero(chosen)


def _hotlisted(inputs: RunInputs, cols: Columns) -> np.ndarray:
    """Records whose card was listed at or before the transaction (one lookup per card)."""
    hotlist = inputs.hotlist
    n = len(cols)
    if hotlist is None or n == 0:
        return np.zeros(n, bool)
    cards = np.empty(n, dtype=[("issuer", "u8"), ("diversifier", "u8")])
    cards["issuer"], cards["diversifier"] = cols.issuer, cols.diversifier
    distinct, inverse = np.unique(cards, return_inverse=True)
    listed = np.full(len(distinct), np.datetime64("NaT"), "datetime64[s]")
    for i, (issuer, diversifier) in enumerate(distinct.tolist()):
        at = hotlist.listed_at(int(issuer).to_bytes(8, "big"), int(diversifier).to_bytes(8, "big"))
        if at is not None:
            listed[i] = np.datetime64(at, "s")
    since = listed[inverse.ravel()]
    return np.asarray(~np.isnat(since) & (since <= cols.when))


def _price(inputs: RunInputs, r: np.ndarray, cols: Columns, mask: np.ndarray,
           ruleset: np.ndarray, rebate: np.ndarray, deferred: np.ndarray) -> None:
    """Re-price every purchase with its rule set as an offline terminal does; mark the
    unknown rule sets and the charged amounts the rules do not give."""
    purchase = ~cols.is_load
    versions = cols.version  # a rule set per hash, where the bytes confirm it
    zero = versions == 0
    mode, charged = cols.field("mode"), cols.field("charged_amount")
    priceable = (mode >= 1) & (mode <= _MAX_MODE) & (cols.field("member_status") <= _MAX_STATUS)
    unpriced = purchase & zero
    mask[unpriced & (charged != cols.field("list_amount"))] |= bit(Reason.AMOUNT_MISMATCH)
    for version in np.unique(versions[purchase & ~zero]):
        rows = np.flatnonzero(purchase & (versions == version))
        if cols.version_confirmed[rows].all():
            groups = [rows]
        else:  # two versions share the 64-bit hash: price each on its own
            _, which = np.unique(r["ruleset_version"][rows], axis=0, return_inverse=True)
            groups = [rows[which.ravel() == k] for k in range(int(which.max()) + 1)]
        for group in groups:
            _price_group(inputs, r, cols, group, priceable, mask, ruleset, rebate, deferred)


def _price_group(inputs: RunInputs, r: np.ndarray, cols: Columns, rows: np.ndarray,
                 priceable: np.ndarray, mask: np.ndarray, ruleset: np.ndarray,
                 rebate: np.ndarray, deferred: np.ndarray) -> None:
    """Purchases naming one rule set version: re-priced with it, or unknown."""
    from unioncard.tariffs import evaluate_batch

    rules = inputs.ruleset(bytes(r["ruleset_version"][rows[0]]))
    usable = rows[priceable[rows]] if rules is not None else rows[:0]
    mask[np.setdiff1d(rows, usable, assume_unique=True)] |= bit(Reason.UNKNOWN_RULES)
    if not usable.size or rules is None:
        return
    ruleset[usable] = inputs.rulesets.index(rules)
    quoted = evaluate_batch(context_batch(r, cols.when, rows=None if usable.size == len(r)
                                          else usable, cols=cols), rules)
    rebate[usable] = quoted.rebate
    deferred[usable] = quoted.deferred
    wrong = quoted.charged != cols.field("charged_amount")[usable]
    mask[usable[wrong]] |= bit(Reason.AMOUNT_MISMATCH)


def context_batch(r: np.ndarray, when: np.ndarray, member_id: np.ndarray | None = None,
                  *, rows: np.ndarray | None = None, cols: Columns | None = None
                  ) -> ContextBatch:
    """The tariff contexts of purchase records (of ``rows`` of ``r`` and ``when``, when
    given: each column is taken alone, cheaper than copying whole records), as their
    terminal quoted them; integer fields from ``cols`` when given (native columns)."""
    from unioncard.tariffs import ContextBatch

    def column(name: str) -> np.ndarray:
        values = r[name] if cols is None else cols.field(name)
        return np.asarray(values if rows is None else values[rows], np.int64)

    def text(name: str) -> np.ndarray:
        return r[name] if rows is None else r[name][rows]

    status, mcc, vehicle = column("member_status"), column("mcc"), column("vehicle_class")
    return ContextBatch.from_columns(
        mode=column("mode"), amount=column("list_amount"), card_type=column("card_type"),
        at=when if rows is None else when[rows], member_categories=column("category_flags"),
        member_status=np.where(status == 0, 1, status),
        merchant_id=_text(text("merchant")), route=_text(text("route")),
        merchant_category=np.where(mcc == 0, -1, mcc),
        vehicle_class=np.where(vehicle == 0, -1, vehicle),
        organization=np.ascontiguousarray(text("organization")).view(  # UTF-8, 00-padded
            f"S{r.dtype['organization'].itemsize}").ravel(),
        member_id=member_id)


def _text(field: np.ndarray) -> np.ndarray:
    """``00``-padded text byte columns as a numpy bytes column (b'' for none), as
    `ContextBatch` reads them."""
    field = np.ascontiguousarray(field)
    return field.view(f"S{field.shape[1]}").ravel()


# --- the reference path --------------------------------------------------------------------


def analyze_batch_reference(data: bytes, source: str, inputs: RunInputs) -> BatchAnalysis:
    """The reference path: `read_batch`, then one record at a time with `cryptography` and
    `unioncard.tariffs.quote`."""
    from unioncard.errors import CryptoError, DecodeError
    from unioncard.offline.batch import read_batch
    from unioncard.settlement.columns import unchecked_batch
    from unioncard.settlement.errors import BatchRefused

    try:
        split = split_batch(data, source)
        records = read_batch(split.purse).records
    except DecodeError as exc:
        raise BatchRefused(f"{source}: {exc}", reason=exc.message) from None
    batch = dataclasses.replace(unchecked_batch(split.purse), digest=split.digest)
    n = len(records)
    mask = np.zeros(n, np.uint16)
    verified = np.zeros(n, bool)
    ruleset = np.full(n, -1, np.int16)
    rebate = np.zeros(n, np.int64)
    deferred = np.zeros(n, bool)
    hotlist = inputs.hotlist
    for i, record in enumerate(records):
        try:
            keys = inputs.keys.for_card(record.issuer, record.key_version)
        except CryptoError:
            mask[i] |= bit(Reason.UNKNOWN_ISSUER)
        else:
            if not record.flags & RecordFlags.NO_TAC:
                verified[i] = _tac(record, keys.tac_mk) == record.tac
                if not verified[i]:
                    mask[i] |= bit(Reason.BAD_TAC)
        if hotlist is not None:
            listed = hotlist.listed_at(record.issuer, record.diversifier)
            if listed is not None and listed <= record.when:
                mask[i] |= bit(Reason.HOTLISTED)
        if record.card_expiry is not None and record.when.date() > record.card_expiry:
            mask[i] |= bit(Reason.EXPIRED)
        if not record.is_load:
            mask[i] |= _reprice(inputs, record, ruleset, rebate, deferred, i)
    return BatchAnalysis(source, batch, mask, verified, ruleset, rebate, deferred, split.emv,
                         split.purse_indexes)


def _tac(record: OfflineRecord, tac_master: bytes) -> bytes:
    from unioncard.crypto.purse import diversify

    return record.computed_tac(diversify(tac_master, record.diversifier))


def _reprice(inputs: RunInputs, record: OfflineRecord, ruleset: np.ndarray,
             rebate: np.ndarray, deferred: np.ndarray, i: int) -> int:
    from unioncard.tariffs import quote

    if record.ruleset_version == bytes(32):
        return 0 if record.charged_amount == record.list_amount else bit(Reason.AMOUNT_MISMATCH)
    rules = inputs.ruleset(record.ruleset_version)
    context = record_context(record) if rules is not None else None
    if rules is None or context is None:
        return bit(Reason.UNKNOWN_RULES)
    ruleset[i] = inputs.rulesets.index(rules)
    quoted = quote(context, rules)
    rebate[i] = quoted.rebate
    deferred[i] = bool(quoted.deferred)
    if quoted.charged_amount != record.charged_amount:
        return bit(Reason.AMOUNT_MISMATCH)
    return 0


def record_context(record: OfflineRecord, member_id: str | None = None) -> QuoteContext | None:
    """The tariff context a terminal quoted a purchase record with (None: a mode or member
    status no rule set can price)."""
    from unioncard.tariffs import MemberStatus, Mode, QuoteContext

    if not 1 <= record.mode <= _MAX_MODE or record.member_status > _MAX_STATUS:
        return None
    return QuoteContext(
        mode=Mode(record.mode), amount=record.list_amount, card_type=record.card_type,
        at=record.when, member_categories=record.category_flags,
        member_status=MemberStatus(record.member_status or 1),
        merchant_id=record.merchant or None, merchant_category=record.mcc or None,
        route=record.route or None, vehicle_class=record.vehicle_class or None,
        member_id=member_id, organization=record.organization or None)
