"""The batch tariff path: a whole batch of contexts as numpy columns, one numba pass.

It covers every condition, effect, the combination policy and the caps:
without a history it is the terminal's stateless view (capped rules are flagged
``deferred``), with a :class:`UsageBook` it is settlement's view, consuming caps
in time order (ties: input order) exactly as ``engine.quote_sequence`` does.
Results agree with the reference ``quote`` fen for fen (tests/tariffs).

>>> import numpy as np
>>> from unioncard.tariffs.loader import default_rules
>>> batch = ContextBatch.from_columns(mode="bus", amount=[200, 150, 155], card_type=0x55,
...                                   at=np.datetime64("2026-05-01T08:30"))
>>> evaluate_batch(batch, default_rules()).charged.tolist()
[180, 135, 140]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from unioncard.errors import TariffError
from unioncard.tariffs import kernel as K
from unioncard.tariffs.context import QuoteContext
from unioncard.tariffs.engine import EPOCH_ORDINAL, UsageBook
from unioncard.tariffs.loader import default_rules
from unioncard.tariffs.model import EffectKind, MemberStatus, Mode, Period, RuleSet
from unioncard.tariffs.money import MAX_FEN, ROUNDING_CODES, Rounding

__all__ = ["BatchResult", "CompiledRules", "ContextBatch", "compile_rules", "evaluate_batch",
           "record_batch"]

_KIND_CODES = {
    EffectKind.PERCENT: K.K_PERCENT,
    EffectKind.FIXED: K.K_FIXED,
    EffectKind.THRESHOLD: K.K_THRESHOLD,
    EffectKind.PRICE: K.K_PRICE,
    EffectKind.REBATE: K.K_REBATE,
}


def _column(value: Any, n: int | None, dtype: Any, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 0 and n is not None:
        array = np.full(n, array)
    if array.ndim != 1:
        raise TariffError(f"column {name} must be one-dimensional")
    return array.astype(dtype, copy=False)


def _text_column(value: Any, n: int, name: str) -> np.ndarray:
    if value is None:
        return np.full(n, "", dtype="<U1")
    if isinstance(value, str):
        return np.full(n, value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.ndim == 1:
        return value  # already a str column ('' for none)
    items = np.asarray(value, dtype=object)
    if items.ndim != 1:
        raise TariffError(f"column {name} must be one-dimensional")
    if items.size and not all(v is None or isinstance(v, str) for v in items.tolist()):
        raise TariffError(f"column {name} holds strings (or None for none)")
    return np.asarray(["" if v is None else v for v in items.tolist()], dtype=str).reshape(-1)


def _int_or_none(value: Any, n: int, name: str) -> np.ndarray:
    if value is None:
        return np.full(n, -1, np.int16)
    if isinstance(value, (list, tuple)):
        value = [-1 if v is None else v for v in value]
    return _column(value, n, np.int16, name)


@dataclass(frozen=True, slots=True)
class ContextBatch:
    """Quote contexts as columns of equal length.

    ``mode`` holds :class:`Mode` values, ``at`` local wall-clock times
    (``datetime64[s]``); text columns use ``""`` and integer columns ``-1`` for "none".
    Build one with :meth:`from_columns` (scalars broadcast) or :meth:`from_contexts`.
    """

    mode: np.ndarray
    amount: np.ndarray
    card_type: np.ndarray
    at: np.ndarray
    member_categories: np.ndarray
    member_status: np.ndarray
    merchant_id: np.ndarray
    merchant_category: np.ndarray
    route: np.ndarray
    vehicle_class: np.ndarray
    member_id: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.amount)
        names = ("mode", "amount", "card_type", "at", "member_categories", "member_status",
                 "merchant_id", "merchant_category", "route", "vehicle_class", "member_id")
        for name in names:
            column = getattr(self, name)
            if not isinstance(column, np.ndarray) or column.ndim != 1 or len(column) != n:
                raise TariffError(f"column {name} must be a 1-D array of length {n}")
        checks = (
            ("mode", np.uint8, 1, max(Mode)),
            ("amount", np.int64, 0, MAX_FEN),
            ("card_type", np.uint8, 0, 0xFF),
            ("member_categories", np.uint8, 0, 0xFF),
            ("member_status", np.uint8, 1, 3),
            ("merchant_category", np.int16, -1, 9999),
            ("vehicle_class", np.int16, -1, 0xFF),
        )
        for name, dtype, lo, hi in checks:
            column = getattr(self, name)
            if column.dtype.kind not in "iu":
                raise TariffError(f"column {name} must hold integers")
            if n and (column.min() < lo or column.max() > hi):
                raise TariffError(f"column {name} has values outside {lo}..{hi}")
            object.__setattr__(self, name, column.astype(dtype, copy=False))
        if self.at.dtype.kind != "M":
            raise TariffError("column at must be datetime64 (local wall-clock time)")
        object.__setattr__(self, "at", self.at.astype("datetime64[s]"))
        if n and np.isnat(self.at).any():
            raise TariffError("column at holds NaT")
        for name in ("merchant_id", "route", "member_id"):
            if getattr(self, name).dtype.kind != "U":
                raise TariffError(f"column {name} must be a numpy str array ('' for none)")

    @classmethod
    def from_columns(
        cls,
        *,
        mode: Any,
        amount: Any,
        card_type: Any,
        at: Any,
        member_categories: Any = 0,
        member_status: Any = MemberStatus.ACTIVE,
        merchant_id: Any = None,
        merchant_category: Any = None,
        route: Any = None,
        vehicle_class: Any = None,
        member_id: Any = None,
    ) -> ContextBatch:
        """A batch from arrays or scalars (broadcast to the length of the arrays given);
        ``mode`` may be a name or a :class:`Mode`."""
        given = (mode, amount, card_type, at, member_categories, member_status, merchant_id,
                 merchant_category, route, vehicle_class, member_id)
        lengths = {len(v) for v in given
                   if not isinstance(v, str) and v is not None and np.ndim(v) > 0}
        if len(lengths) > 1:
            raise TariffError(f"columns of different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        amounts = np.asarray(amount)
        if amounts.dtype.kind not in "iu":
            raise TariffError("amount must be integer fen")
        if isinstance(mode, str):
            mode = Mode.parse(mode)
        return cls(
            mode=_column(mode, n, np.int64, "mode"),
            amount=_column(amounts, n, np.int64, "amount"),
            card_type=_column(card_type, n, np.int64, "card_type"),
            at=_column(at, n, "datetime64[s]", "at"),
            member_categories=_column(member_categories, n, np.int64, "member_categories"),
            member_status=_column(member_status, n, np.int64, "member_status"),
            merchant_id=_text_column(merchant_id, n, "merchant_id"),
            merchant_category=_int_or_none(merchant_category, n, "merchant_category"),
            route=_text_column(route, n, "route"),
            vehicle_class=_int_or_none(vehicle_class, n, "vehicle_class"),
            member_id=_text_column(member_id, n, "member_id"),
        )

    @classmethod
    def from_contexts(cls, contexts: Sequence[QuoteContext]) -> ContextBatch:
        """A batch holding exactly these contexts."""
        def col(name: str) -> list[Any]:
            return [getattr(c, name) for c in contexts]

        return cls.from_columns(
            mode=np.asarray([int(c.mode) for c in contexts], np.int64),
            amount=np.asarray(col("amount"), np.int64),
            card_type=np.asarray(col("card_type"), np.int64),
            at=np.asarray(col("at"), "datetime64[s]"),
            member_categories=np.asarray(col("member_categories"), np.int64),
            member_status=np.asarray([int(c.member_status) for c in contexts], np.int64),
            merchant_id=col("merchant_id"),
            merchant_category=col("merchant_category"),
            route=col("route"),
            vehicle_class=col("vehicle_class"),
            member_id=col("member_id"),
        )

    def __len__(self) -> int:
        return len(self.amount)

    def context(self, j: int) -> QuoteContext:
        """Row ``j`` as a reference :class:`QuoteContext`."""
        def text(column: np.ndarray) -> str | None:
            return str(column[j]) or None

        def number(column: np.ndarray) -> int | None:
            return None if int(column[j]) < 0 else int(column[j])

        at = self.at[j].astype("datetime64[s]").astype(datetime)
        return QuoteContext(
            mode=Mode(int(self.mode[j])),
            amount=int(self.amount[j]),
            card_type=int(self.card_type[j]),
            at=at,
            member_categories=int(self.member_categories[j]),
            member_status=MemberStatus(int(self.member_status[j])),
            merchant_id=text(self.merchant_id),
            merchant_category=number(self.merchant_category),
            route=text(self.route),
            vehicle_class=number(self.vehicle_class),
            member_id=text(self.member_id),
        )


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A rule set as the kernel's integer tables (see ``kernel``)."""

    ruleset: RuleSet
    table: np.ndarray
    cond_lo: np.ndarray
    cond_hi: np.ndarray
    cond_values: np.ndarray
    mode_ptr: np.ndarray
    mode_rules: np.ndarray
    merchants: np.ndarray
    routes: np.ndarray
    capped: tuple[str, ...]
    width: int

    @staticmethod
    def encode(vocabulary: np.ndarray, column: np.ndarray) -> np.ndarray:
        """Codes of ``column`` in the sorted ``vocabulary``; ``-1`` for unknown or ""."""
        out = np.full(len(column), -1, np.int64)
        if len(vocabulary) == 0 or len(column) == 0:
            return out
        K.encode_text(_code_points(column), _code_points(vocabulary), out)
        return out


_CACHE: dict[str, CompiledRules] = {}


def _code_points(column: np.ndarray) -> np.ndarray:
    """A numpy ``str`` array as a ``(n, width)`` matrix of ``uint32`` code points."""
    column = np.ascontiguousarray(column)
    width = column.dtype.itemsize // 4
    return column.view(np.uint32).reshape(len(column), width)


def compile_rules(rules: RuleSet) -> CompiledRules:
    """Compile (and cache by version) the kernel tables of ``rules``."""
    cached = _CACHE.get(rules.version)
    if cached is not None:
        return cached
    n = len(rules.rules)
    merchants = np.asarray(sorted({m for r in rules.rules for m in r.when.merchants or ()}),
                           dtype=str)
    routes = np.asarray(sorted({m for r in rules.rules for m in r.when.routes or ()}), dtype=str)
    merchant_code = {str(v): i for i, v in enumerate(merchants)}
    route_code = {str(v): i for i, v in enumerate(routes)}
    capped = tuple(r.id for r in rules.rules if r.caps is not None)
    slots = {rule_id: i for i, rule_id in enumerate(capped)}
    table = np.full((n, K.COLUMNS), -1, np.int64)
    table[:, K.C_NEEDS:] = 0
    cond_lo = np.zeros((n, K.DIMENSIONS), np.int64)
    cond_hi = np.zeros((n, K.DIMENSIONS), np.int64)
    values: list[int] = []
    for i, rule in enumerate(rules.rules):
        when, effect = rule.when, rule.effect
        row = table[i]
        row[K.C_MODE] = int(rule.mode)
        row[K.C_STACK] = int(rule.stackable)
        row[K.C_REBATE] = int(effect.is_rebate)
        row[K.C_CAT] = when.member_categories or 0
        row[K.C_FROM] = (when.valid_from.toordinal() - EPOCH_ORDINAL
                         if when.valid_from else K.NO_DATE_FROM)
        row[K.C_UNTIL] = (when.valid_until.toordinal() - EPOCH_ORDINAL
                          if when.valid_until else K.NO_DATE_UNTIL)
        row[K.C_TFROM] = -1 if when.time_from is None else when.time_from
        row[K.C_TUNTIL] = -1 if when.time_until is None else when.time_until
        row[K.C_MIN] = rule.min_amount
        row[K.C_KIND] = _KIND_CODES[effect.kind]
        row[K.C_RATE] = effect.rate
        row[K.C_AMOUNT] = effect.amount
        row[K.C_THRESHOLD] = effect.threshold
        row[K.C_REPEAT] = int(effect.repeat)
        row[K.C_PRICE] = effect.price
        row[K.C_MAXB] = -1 if effect.max_benefit is None else effect.max_benefit
        if rule.caps is not None:
            for column, value in ((K.C_DCOUNT, rule.caps.daily_count),
                                  (K.C_DAMOUNT, rule.caps.daily_amount),
                                  (K.C_MCOUNT, rule.caps.monthly_count),
                                  (K.C_MAMOUNT, rule.caps.monthly_amount)):
                row[column] = -1 if value is None else value
            row[K.C_SLOT] = slots[rule.id]
        needs = 0
        for flag, column, members in ((K.N_CARD, K.C_CARD, when.card_types),
                                      (K.N_VCLASS, K.C_VCLASS, when.vehicle_classes),
                                      (K.N_STATUS, K.C_STATUS, when.member_status),
                                      (K.N_WEEKDAY, K.C_WEEKDAY, when.days)):
            if members is None:
                continue
            needs |= flag
            words = [0, 0, 0, 0]
            for value in members:
                words[value >> 6] |= 1 << (value & 63)
            width_words = 4 if column in (K.C_CARD, K.C_VCLASS) else 1
            for w in range(width_words):
                row[column + w] = words[w] - (1 << 64) if words[w] >> 63 else words[w]
        if when.time_from is not None or when.time_until is not None:
            needs |= K.N_TIME
        runs: tuple[tuple[int, int, frozenset[Any] | None, dict[str, int] | None], ...] = (
            (K.D_MERCHANT, K.N_MERCHANT, when.merchants, merchant_code),
            (K.D_MCC, K.N_MCC, when.merchant_categories, None),
            (K.D_ROUTE, K.N_ROUTE, when.routes, route_code),
        )
        for d, flag, allowed, codes in runs:
            if allowed is None:
                continue
            needs |= flag
            run = sorted(codes[m] for m in allowed) if codes is not None else sorted(allowed)
            cond_lo[i, d] = len(values)
            values.extend(run)
            cond_hi[i, d] = len(values)
        row[K.C_NEEDS] = needs
    mode_ptr = np.zeros(max(Mode) + 2, np.int64)
    mode_rules: list[int] = []
    width = 1
    for mode in Mode:
        mode_ptr[int(mode)] = len(mode_rules)
        own = rules.for_mode(mode)
        mode_rules.extend(rules.rules.index(r) for r in own)
        instant = [r for r in own if not r.effect.is_rebate]
        rebates = [r for r in own if r.effect.is_rebate]
        need = sum(
            any(not r.stackable for r in group) + sum(r.stackable for r in group)
            for group in (instant, rebates)
        )
        width = max(width, need)
        mode_ptr[int(mode) + 1] = len(mode_rules)
    compiled = CompiledRules(
        ruleset=rules,
        table=table,
        cond_lo=cond_lo,
        cond_hi=cond_hi,
        cond_values=np.asarray(values, np.int64),
        mode_ptr=mode_ptr,
        mode_rules=np.asarray(mode_rules, np.int64),
        merchants=merchants,
        routes=routes,
        capped=capped,
        width=width,
    )
    if len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[rules.version] = compiled
    return compiled


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per-context outcome: amounts in fen; ``rules[j]`` holds rule indices (declared
    order of ``rule_ids``) padded with ``-1``, ``amounts[j]`` what each gave;
    ``deferred[j]`` marks a matching capped rule left to settlement."""

    charged: np.ndarray
    discount: np.ndarray
    rebate: np.ndarray
    rules: np.ndarray
    amounts: np.ndarray
    deferred: np.ndarray
    rule_ids: tuple[str, ...]
    version: str
    rounding: Rounding

    def applied(self, j: int) -> tuple[str, ...]:
        """Ids of the rules that applied to context ``j``, in application order."""
        return tuple(self.rule_ids[i] for i in self.rules[j] if i >= 0)

    def __len__(self) -> int:
        return len(self.charged)


def _initial_history(history: UsageBook, compiled: CompiledRules,
                     members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(history) == 0 or len(members) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    slots = {rule_id: i for i, rule_id in enumerate(compiled.capped)}
    member_code = {str(m): i for i, m in enumerate(members)}
    n_slots = max(len(slots), 1)
    rows = []
    for (member_id, rule_id, period, key), usage in history.entries():
        if member_id not in member_code or rule_id not in slots:
            continue
        window = 0 if period is Period.DAY else 1
        code = ((member_code[member_id] * n_slots + slots[rule_id]) * 2 + window)
        rows.append((code * 2 * K.PERIOD_OFFSET + key + K.PERIOD_OFFSET, usage.count,
                     usage.amount))
    rows.sort()
    keys = np.asarray([r[0] for r in rows], np.int64)
    return keys, np.asarray([r[1] for r in rows], np.int64), np.asarray([r[2] for r in rows],
                                                                          np.int64)


def _intern(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-empty strings of ``column`` (first-seen order) and each row's index
    among them (``-1`` for "")."""
    rows = _code_points(column)
    n = len(column)
    slots = np.full(1 << max(4, (2 * n).bit_length()), -1, np.int64)
    codes = np.empty(n, np.int64)
    firsts = np.empty(n, np.int64)
    count = K.intern_text(rows, slots, codes, firsts)
    return column[firsts[:count]], codes


def _run(
    compiled: CompiledRules,
    rules: RuleSet,
    columns: list[np.ndarray],
    caps: tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One kernel pass over ``columns``; ``caps`` = (member codes, member count,
    initial usage keys, counts, amounts) turns cap evaluation on."""
    n = len(columns[0])
    if caps is None:
        member, n_members = np.full(n, -1, np.int64), 0
        init_keys = init_count = init_amount = np.zeros(0, np.int64)
    else:
        member, n_members, init_keys, init_count, init_amount = caps
    charged = np.empty(n, np.int64)
    rebate = np.empty(n, np.int64)
    applied = np.empty((n, compiled.width), np.int32)
    amounts = np.empty((n, compiled.width), np.int64)
    deferred = np.empty(n, np.bool_)
    bad = K.evaluate(
        caps is not None, ROUNDING_CODES[rules.rounding], *columns, member,
        compiled.table, compiled.cond_lo, compiled.cond_hi, compiled.cond_values,
        compiled.mode_ptr, compiled.mode_rules, n_members, len(compiled.capped),
        init_keys, init_count, init_amount,
        charged, rebate, applied, amounts, deferred,
    )
    if bad >= 0:  # ContextBatch validation rules this out
        raise TariffError(f"context {bad} of a kernel pass has an unknown mode")
    return charged, rebate, applied, amounts, deferred


def evaluate_batch(
    batch: ContextBatch, rules: RuleSet | None = None, *, history: UsageBook | None = None
) -> BatchResult:
    """Quote every context of ``batch``: the batch twin of ``engine.quote`` (no history)
    and of ``engine.quote_sequence`` (with one; ``history`` itself is not changed,
    see :func:`record_batch`)."""
    rules = default_rules() if rules is None else rules
    compiled = compile_rules(rules)
    columns = [batch.mode, batch.amount, batch.card_type, batch.member_categories,
               batch.member_status, compiled.encode(compiled.merchants, batch.merchant_id),
               batch.merchant_category, compiled.encode(compiled.routes, batch.route),
               batch.vehicle_class, batch.at.view(np.int64)]
    # The terminal's view of every context, in input order.
    charged, rebate, applied, amounts, deferred = _run(compiled, rules, columns, None)
    if history is not None and compiled.capped:
        # Settlement: re-price, in time order (ties: input order), the contexts that
        # can touch a cap: a mode with capped rules, and a member id.
        capped_modes = np.asarray(sorted({int(rules.rule(r).mode) for r in compiled.capped}))
        rows = np.flatnonzero(np.isin(batch.mode, capped_modes))
        members, member = _intern(batch.member_id[rows])
        rows, member = rows[member >= 0], member[member >= 0]
        order = np.argsort(columns[-1][rows], kind="stable")
        rows, member = rows[order], member[order]
        state = (member, len(members), *_initial_history(history, compiled, members))
        results = _run(compiled, rules, [column[rows] for column in columns], state)
        for full, part in zip((charged, rebate, applied, amounts, deferred), results,
                              strict=True):
            full[rows] = part
    return BatchResult(
        charged=charged,
        discount=batch.amount - charged,
        rebate=rebate,
        rules=applied,
        amounts=amounts,
        deferred=deferred,
        rule_ids=tuple(r.id for r in rules.rules),
        version=rules.version,
        rounding=rules.rounding,
    )


def record_batch(history: UsageBook, batch: ContextBatch, result: BatchResult,
                 rules: RuleSet) -> None:
    """Add the capped-rule usage of a settled batch to ``history`` (each window's uses
    summed first, so a batch costs one update per member, rule and window)."""
    capped = sorted(rules.index(r.id) for r in rules.rules if r.caps)
    if not capped:
        return
    rows, cols = np.nonzero(np.isin(result.rules, np.asarray(capped, np.int32)))
    keep = batch.member_id[rows] != ""
    rows, cols = rows[keep], cols[keep]
    if not rows.size:
        return
    days = batch.at[rows].astype("datetime64[D]").astype(np.int64)
    months = batch.at[rows].astype("datetime64[M]").astype(np.int64) + 1970 * 12
    index = result.rules[rows, cols].astype(np.int64)
    amount = result.amounts[rows, cols].astype(np.int64)
    members = batch.member_id[rows]
    for rule_index in np.unique(index).tolist():
        rule = rules.rules[rule_index]
        if rule.caps is None:
            continue
        mine = index == rule_index
        for period, _count, _amount in rule.caps.windows():
            keys = days[mine] if period is Period.DAY else months[mine]
            table = np.empty(int(mine.sum()), dtype=[("member", members.dtype), ("key", "<i8")])
            table["member"], table["key"] = members[mine], keys
            windows, which = np.unique(table, return_inverse=True)
            which = which.ravel()
            counts = np.bincount(which, minlength=len(windows))
            sums = np.bincount(which, weights=amount[mine].astype(np.float64),
                               minlength=len(windows)).astype(np.int64)
            for (member_id, key), count, total in zip(windows.tolist(), counts.tolist(),
                                                      sums.tolist(), strict=True):
                history.add(str(member_id), rule.id, period, int(key), count=int(count),
                            amount=int(total))
