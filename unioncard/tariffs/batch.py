"""The batch tariff path: contexts as numpy columns, priced by the kernel fen for fen as
``engine.quote`` (no history) and ``engine.quote_sequence`` (with one) price them
(docs/tariffs.md, "The batch path").

>>> import numpy as np
>>> from unioncard.tariffs.loader import default_rules
>>> batch = ContextBatch.from_columns(mode="bus", amount=[200, 150, 155], card_type=0x55,
...                                   at=np.datetime64("2026-05-01T08:30"))
>>> evaluate_batch(batch, default_rules()).charged.tolist()
[180, 135, 140]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass
from datetime import datetime
from typing import Any

import numpy as np

from unioncard.errors import TariffError
from unioncard.tariffs import kernel as K
from unioncard.tariffs.conditions import CLOCK, CONDITIONS, DATE, TIME_OF_DAY, WEEKDAY, OneOf
from unioncard.tariffs.context import FIELDS, OPTIONAL, QuoteContext
from unioncard.tariffs.engine import UsageColumns
from unioncard.tariffs.loader import default_rules
from unioncard.tariffs.model import CAP_LIMITS, Mode, Period, RuleSet
from unioncard.tariffs.money import ROUNDING_CODES, Rounding

__all__ = ["BatchResult", "CompiledRules", "ContextBatch", "compile_rules", "evaluate_batch",
           "record_batch", "window_keys"]

READINGS = tuple(dict.fromkeys(c.reads for c in CONDITIONS if c.reads not in CLOCK))
"""The context fields conditions read."""
_TEXT_READINGS = tuple(dict.fromkeys(c.reads for c in CONDITIONS
                                     if isinstance(c, OneOf) and c.text))


def _column(name: str, value: Any, n: int) -> np.ndarray:
    """Column ``name`` of length ``n`` from an array, a list (``None``: none) or a scalar."""
    spec = FIELDS[name]
    if spec.kind == "text":
        if value is None or isinstance(value, (str, bytes)):
            return np.full(n, "" if value is None else value)
        if isinstance(value, np.ndarray) and value.dtype.kind in "US":
            return value  # numpy str, or UTF-8 bytes as records hold them ('' for none)
        items = np.asarray(value, dtype=object).reshape(-1).tolist()
        if not all(v is None or isinstance(v, str) for v in items):
            raise TariffError(f"column {name} holds strings (or None for none)")
        return np.asarray(["" if v is None else v for v in items], dtype=str).reshape(-1)
    if spec.kind == "time":
        array = np.asarray(value).astype("datetime64[s]")
        return np.full(n, array) if array.ndim == 0 else array
    if value is None or isinstance(value, (list, tuple)):
        value = [-1 if v is None else v for v in value] if value is not None else -1
    array = np.asarray(value)
    if array.size == 0:
        array = array.astype(np.int64)
    return np.full(n, array, array.dtype) if array.ndim == 0 else array


class ContextBatch:
    """Quote contexts as columns of equal length, one per `QuoteContext` field.

    Integer columns are ``int64`` with ``-1`` for "none", text columns numpy ``str`` (or
    ``bytes``: UTF-8, ``00``-padded, as offline records hold them) with ``""`` for none,
    ``at`` local wall-clock times (``datetime64[s]``); ``batch.amount`` is a column.  Build
    one with :meth:`from_columns` (scalars broadcast) or :meth:`from_contexts`.
    """

    __slots__ = ("_columns",)
    _columns: dict[str, np.ndarray]

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        """Columns checked as each field's spec says (``context.FIELDS``)."""
        n = len(columns["amount"])
        out: dict[str, np.ndarray] = {}
        for name, spec in FIELDS.items():
            column = columns[name]
            if not isinstance(column, np.ndarray) or column.ndim != 1 or len(column) != n:
                raise TariffError(f"column {name} must be a 1-D array of length {n}")
            if spec.kind == "time":
                if column.dtype.kind != "M":
                    raise TariffError("column at must be datetime64 (local wall-clock time)")
                column = column.astype("datetime64[s]")
                if n and np.isnat(column).any():
                    raise TariffError("column at holds NaT")
            elif spec.kind == "text" and column.dtype.kind not in "US":
                raise TariffError(f"column {name} must be a numpy str array ('' for none)")
            elif spec.kind == "int":
                lo = -1 if name in OPTIONAL else spec.lo
                if column.dtype.kind not in "iu" or (n and (column.min() < lo
                                                            or column.max() > spec.hi)):
                    none = " (-1 for none)" if name in OPTIONAL else ""
                    raise TariffError(f"column {name} must hold {spec.ints()}{none}")
                column = column.astype(np.int64, copy=False)
            out[name] = column
        object.__setattr__(self, "_columns", out)

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name not in FIELDS:
            raise AttributeError(name)
        return self._columns[name]

    @classmethod
    def from_columns(cls, **columns: Any) -> ContextBatch:
        """A batch from arrays or scalars (broadcast to the length of the arrays given);
        ``mode`` may be a name or a :class:`Mode`; fields left out take their defaults."""
        unknown = set(columns) - set(FIELDS)
        if unknown:
            raise TariffError(f"no context field {sorted(unknown)[0]!r}")
        lengths = {len(v) for v in columns.values()
                   if not isinstance(v, (str, bytes)) and v is not None and np.ndim(v) > 0}
        if len(lengths) > 1:
            raise TariffError(f"columns of different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        if isinstance(columns.get("mode"), str):
            columns["mode"] = Mode.parse(columns["mode"])
        made = {}
        for name, field in QuoteContext.__dataclass_fields__.items():
            if name not in columns and field.default is MISSING:
                raise TariffError(f"column {name} is required")
            made[name] = _column(name, columns.get(name, field.default), n)
        return cls(made)

    @classmethod
    def from_contexts(cls, contexts: Sequence[QuoteContext]) -> ContextBatch:
        """A batch holding exactly these contexts."""
        return cls.from_columns(**{name: [getattr(c, name) for c in contexts] for name in FIELDS})

    def __len__(self) -> int:
        return len(self._columns["amount"])

    def context(self, j: int) -> QuoteContext:
        """Row ``j`` as a reference :class:`QuoteContext`."""
        values: dict[str, Any] = {}
        for name, spec in FIELDS.items():
            value = self._columns[name][j]
            if spec.kind == "time":
                values[name] = value.astype("datetime64[s]").astype(datetime)
            elif spec.kind == "text":
                text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
                values[name] = text or None
            else:
                values[name] = None if int(value) < 0 else int(value)
        return QuoteContext(**values)


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A rule set as the kernel's tables (see ``kernel``): rule records, their checks, the
    pool of set values and words, each mode's rules, and per text reading the sorted
    vocabulary of the values rules name (texts are compiled to their positions in it)."""

    ruleset: RuleSet
    rules: np.ndarray
    checks: np.ndarray
    pool: np.ndarray
    mode_ptr: np.ndarray
    mode_rules: np.ndarray
    vocabulary: dict[str, list[str]]
    readings: tuple[str, ...]
    capped: tuple[str, ...]
    width: int

    @staticmethod
    def encode(vocabulary: np.ndarray | Sequence[str], column: np.ndarray) -> np.ndarray:
        """Codes of ``column`` in the sorted ``vocabulary``; ``-1`` for unknown or "".
        A ``bytes`` column is compared as UTF-8 (whose order is that of the code points)."""
        out = np.full(len(column), -1, np.int64)
        if len(vocabulary) == 0 or len(column) == 0:
            return out
        if column.dtype.kind == "S":
            vocabulary = np.asarray([str(v).encode("utf-8") for v in vocabulary])
        K.encode_text(_code_points(column), _code_points(np.asarray(vocabulary)), out)
        return out


_CACHE: dict[str, CompiledRules] = {}
_CACHE_LOCK = threading.Lock()
"""The cache is shared by the threads of a run (settle --jobs): changed under the lock."""


def _code_points(column: np.ndarray) -> np.ndarray:
    """A numpy ``str`` (``bytes``) array as a ``(n, width)`` matrix of code points (bytes)."""
    column = np.ascontiguousarray(column)
    unit = np.uint8 if column.dtype.kind == "S" else np.uint32
    width = column.dtype.itemsize // np.dtype(unit).itemsize
    return column.view(unit).reshape(len(column), width)


def compile_rules(rules: RuleSet) -> CompiledRules:
    """Compile (and cache by version) the kernel tables of ``rules``."""
    cached = _CACHE.get(rules.version)
    if cached is not None:
        return cached
    vocabulary = {reads: sorted({v for r in rules.rules for c, value in r.when.items()
                                 if c.reads == reads for v in value})
                  for reads in _TEXT_READINGS}
    codes = {reads: {v: i for i, v in enumerate(words)} for reads, words in vocabulary.items()}
    capped = tuple(r.id for r in rules.rules if r.caps is not None)
    used = tuple(r for r in READINGS if any(c.reads == r for rule in rules.rules
                                            for c, _ in rule.when.items()))
    columns = max(len(used), 1)  # see _readings
    reading_codes = {**{reads: i for i, reads in enumerate(used)},
                     **{reads: columns + i for i, reads in enumerate((DATE, WEEKDAY, TIME_OF_DAY))}}
    table = np.zeros(len(rules.rules), K.RULE)
    checks: list[tuple[int, int, int, int]] = []
    pool: list[int] = []
    for i, rule in enumerate(rules.rules):
        effect, caps, row = rule.effect, rule.caps, table[i]
        row["mode"], row["stackable"], row["rebate"] = rule.mode, rule.stackable, effect.is_rebate
        row["min_amount"], row["kind"] = rule.min_amount, K.EFFECTS.index(effect.kind)
        row["cap_slot"] = -1 if caps is None else capped.index(rule.id)
        for name in ("rate", "amount", "threshold", "repeat", "price", "max_benefit"):
            value = getattr(effect, name)
            row[name] = -1 if value is None else value
        limits = {} if caps is None else caps.canonical()
        for name in CAP_LIMITS:
            row[name] = limits.get(name, -1)
        row["checks_from"] = len(checks)
        for condition, value in rule.when.items():
            kind, lo, hi = condition.compile(value, pool, codes.get(condition.reads, {}))
            checks.append((kind, reading_codes[condition.reads], lo, hi))
        row["checks_to"] = len(checks)
    mode_ptr = np.zeros(max(Mode) + 2, np.int64)
    mode_rules: list[int] = []
    width = 1
    for mode in Mode:
        own = rules.for_mode(mode)
        mode_ptr[int(mode)] = len(mode_rules)
        mode_rules.extend(rules.rules.index(r) for r in own)
        mode_ptr[int(mode) + 1] = len(mode_rules)
        groups = ([r for r in own if r.effect.is_rebate is rebates] for rebates in (False, True))
        width = max(width, sum(any(not r.stackable for r in group)
                               + sum(r.stackable for r in group) for group in groups))
    check_rows = np.asarray(checks, np.int64).reshape(-1, 4).view(K.CHECK).reshape(-1)
    compiled = CompiledRules(
        ruleset=rules, rules=table, checks=check_rows, pool=np.asarray(pool, np.int64),
        mode_ptr=mode_ptr, mode_rules=np.asarray(mode_rules, np.int64), vocabulary=vocabulary,
        readings=used, capped=capped, width=width)
    with _CACHE_LOCK:
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


def window_keys(at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The day and month keys (`engine.period_key`) of ``datetime64`` times, or of day
    numbers."""
    if at.dtype.kind != "M":
        at = at.astype("datetime64[D]")
    return (at.astype("datetime64[D]").astype(np.int64),
            at.astype("datetime64[M]").astype(np.int64) + 1970 * 12)


def _initial_history(history: UsageColumns, compiled: CompiledRules, members: np.ndarray,
                     member: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """The kernel's rows of key, count, amount, sorted: the usage ``history`` holds in
    every window the contexts (of ``member``, at ``seconds``) can touch, asked once for
    each member and day."""
    n_slots = len(compiled.capped)
    if not len(member) or not n_slots or not len(history):
        return np.zeros((0, 3), np.int64)
    days = seconds.astype("datetime64[s]").astype("datetime64[D]").astype(np.int64)
    pairs = np.unique(member.astype(np.int64) << 32 | (days + K.PERIOD_OFFSET))
    days, months = window_keys((pairs & 0xFFFFFFFF) - K.PERIOD_OFFSET)
    n = len(pairs) * n_slots
    owner = np.repeat(pairs >> 32, 2 * n_slots)
    slot = np.tile(np.repeat(np.arange(n_slots), 2), len(pairs))
    window = np.tile([0, 1], n)
    key = np.where(window == 0, np.repeat(days, 2 * n_slots), np.repeat(months, 2 * n_slots))
    code = (((owner * n_slots + slot) * 2 + window) * (2 * K.PERIOD_OFFSET) + key
            + K.PERIOD_OFFSET)
    code, first = np.unique(code, return_index=True)  # a month is asked once
    count, amount = history.usage_many(members[owner[first]],
                                       np.asarray(compiled.capped)[slot[first]],
                                       window[first], key[first])
    used = (count != 0) | (amount != 0)
    return np.column_stack([code[used], count[used], amount[used]]).astype(np.int64)


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


def _readings(compiled: CompiledRules, batch: ContextBatch) -> tuple[np.ndarray, ...]:
    """The kernel's readings: the columns the rules read (texts as vocabulary codes); at
    least one, never indexed when the rules read only the time."""
    out = []
    for reads in compiled.readings:
        column = getattr(batch, reads)
        if reads in compiled.vocabulary:
            column = compiled.encode(compiled.vocabulary[reads], column)
        out.append(np.ascontiguousarray(column, np.int64))
    return tuple(out) or (batch.amount,)  # numba types no empty tuple


def _run(compiled: CompiledRules, contexts: tuple[Any, ...], out: tuple[Any, ...],
         rows: np.ndarray | None = None, member: np.ndarray | None = None,
         history: UsageColumns | None = None, members: np.ndarray | None = None) -> None:
    """One kernel pass over ``contexts`` (modes, amounts, seconds, readings) into ``out``;
    with a ``history``, context ``j`` is row ``rows[j]`` of ``out`` and member
    ``member[j]`` of ``members``, and caps are consumed."""
    use_caps = history is not None and members is not None
    n_members = len(members) if members is not None and use_caps else 0
    state = np.zeros((n_members, max(len(compiled.capped), 1), 2, 3), np.int64)
    state[..., 0] = -1  # no period loaded
    start = (_initial_history(history, compiled, members, member, contexts[2])
             if history is not None and members is not None and member is not None
             else np.zeros((0, 3), np.int64))
    tables = (compiled.rules, compiled.checks, compiled.pool, compiled.mode_ptr,
              compiled.mode_rules)
    empty = np.empty(0, np.int64)
    scratch = np.empty((3, len(compiled.rules) + len(contexts[3]) + K.CLOCK_READINGS), np.int64)
    bad = K.evaluate(contexts, tables, ROUNDING_CODES[compiled.ruleset.rounding],
                     empty if rows is None else rows, empty if member is None else member,
                     use_caps, start, state, scratch, out)
    if bad >= 0:  # ContextBatch validation rules this out
        raise TariffError(f"context {bad} of a kernel pass has an unknown mode")


def evaluate_batch(
    batch: ContextBatch, rules: RuleSet | None = None, *, history: UsageColumns | None = None
) -> BatchResult:
    """Quote every context of ``batch``: the batch twin of ``engine.quote`` (no history)
    and of ``engine.quote_sequence`` (with one; ``history`` itself is not changed,
    see :func:`record_batch`)."""
    rules = default_rules() if rules is None else rules
    compiled = compile_rules(rules)
    seconds = batch.at.view(np.int64)
    contexts = (batch.mode, batch.amount, seconds, _readings(compiled, batch))
    n = len(batch)
    out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty((n, compiled.width), np.int32),
           np.empty((n, compiled.width), np.int64), np.empty(n, np.bool_))
    _run(compiled, contexts, out)  # the terminal's view of every context, in input order
    if history is not None and compiled.capped:
        # Settlement: re-price, in time order (ties: input order), the contexts that
        # can touch a cap: a mode with capped rules, and a member id.
        capped_modes = np.zeros(max(Mode) + 1, np.bool_)
        capped_modes[[rules.rule(r).mode for r in compiled.capped]] = True
        rows = np.flatnonzero(capped_modes[batch.mode])
        members, member = _intern(batch.member_id[rows])
        rows, member = rows[member >= 0], member[member >= 0]
        order = np.argsort(seconds[rows], kind="stable")
        rows, member = rows[order], member[order]
        part = (batch.mode[rows], batch.amount[rows], seconds[rows],
                tuple(column[rows] for column in contexts[3]))
        _run(compiled, part, out, rows, member, history, members)
    charged, rebate, applied, amounts, deferred = out
    return BatchResult(charged=charged, discount=batch.amount - charged, rebate=rebate,
                       rules=applied, amounts=amounts, deferred=deferred,
                       rule_ids=tuple(r.id for r in rules.rules), version=rules.version,
                       rounding=rules.rounding)


def record_batch(history: UsageColumns, batch: ContextBatch, result: BatchResult,
                 rules: RuleSet) -> None:
    """Add the capped-rule usage of a settled batch to ``history``: each window's uses
    summed first, then one `add_many` (one update per member, rule and window)."""
    capped = [rules.index(r.id) for r in rules.rules if r.caps]
    rows, cols = np.nonzero(np.isin(result.rules, np.asarray(capped, np.int32)))
    keep = batch.member_id[rows] != ""
    rows, cols = rows[keep], cols[keep]
    if not rows.size:
        return
    days, months = window_keys(batch.at[rows])
    index = result.rules[rows, cols].astype(np.int64)
    has = np.zeros((len(rules.rules), 2), bool)  # the windows each rule is capped in
    for i in capped:
        caps = rules.rules[i].caps
        assert caps is not None
        for period, _count, _amount in caps.windows():
            has[i, 0 if period is Period.DAY else 1] = True
    members, member = _intern(batch.member_id[rows])
    parts = []
    for kind, keys in ((0, days), (1, months)):
        mine = has[index, kind]  # a window: (member, rule, key) as one integer
        code = (member[mine] * len(rules.rules) + index[mine]) << 32 | (keys[mine] + (1 << 31))
        code, first, which = np.unique(code, return_index=True, return_inverse=True)
        which = which.ravel()
        amounts = result.amounts[rows[mine], cols[mine]].astype(np.float64)
        parts.append((member[mine][first], index[mine][first], np.full(len(code), kind),
                      keys[mine][first], np.bincount(which, minlength=len(code)),
                      np.bincount(which, weights=amounts, minlength=len(code))))
    ids = np.asarray([r.id for r in rules.rules])
    owner, rule, window, key, count, amount = (np.concatenate(c) for c in zip(*parts, strict=True))
    history.add_many(members[owner], ids[rule], window, key, count.astype(np.int64),
                     amount.astype(np.int64))
