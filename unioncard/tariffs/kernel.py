"""The numba kernel of the batch tariff path: the reference combination policy
(``engine`` module docstring) over arrays, fen for fen, caps included (docs/tariffs.md,
"Batch path").

Rules arrive as records (`RULE`) with the range of their `CHECK` rows; a check tests one
reading of a context (a column the rules read, then its date, ISO weekday and second of
the day) the way its condition's kind compiled it (``conditions``).  The kernel allocates
nothing, so it is compiled without numba's reference counting (``_nrt=False``: an array
passed to a helper would otherwise cost atomic increments in the loop); every index comes
from the compiled tables or from a range check against an array's own shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np

from unioncard.jit import jit
from unioncard.tariffs.conditions import (
    DAY_SECONDS,
    HAS_ANY_FLAG,
    IN_BITSET,
    IN_RANGE,
    IN_SORTED_RUN,
)

__all__ = ["CHECK", "CLOCK_READINGS", "EFFECTS", "PERIOD_OFFSET", "RULE", "encode_text",
           "evaluate", "intern_text"]

RULE = np.dtype([(name, np.int64) for name in (
    "mode", "stackable", "rebate", "min_amount", "checks_from", "checks_to",
    "kind", "rate", "amount", "threshold", "repeat", "price", "max_benefit",
    "cap_slot", "daily_count", "daily_amount", "monthly_count", "monthly_amount")])
"""A compiled rule (its effect's and caps' fields by their model names); ``-1`` for no
``max_benefit``, cap slot or cap limit."""
CHECK = np.dtype([(name, np.int64) for name in ("kind", "reading", "lo", "hi")])
"""One condition of a rule: its kind (``conditions.IN_*``), the reading it tests and its bounds."""
CLOCK_READINGS = 3
"""Readings after the columns: the day number, the ISO weekday, the second of the day."""
PERCENT, FIXED, THRESHOLD, PRICE, REBATE = range(5)
EFFECTS = ("percent", "fixed", "threshold", "price", "rebate")
"""Effect kinds by code, as ``EffectKind`` values."""

Record = Any
"""A row of `RULE` or `CHECK` (a numba record: fields read as attributes)."""
F = TypeVar("F", bound=Callable[..., Any])
SCALE = 1_000_000
PERIOD_OFFSET = 1 << 22  # day numbers of years 1..9999 and month keys fit in 23 bits with it
EXHAUSTED = -2
UNLIMITED = -1


def _kernel(function: F) -> F:
    """A kernel function: compiled on its own, without reference counting."""
    return cast(F, jit(_nrt=False)(function))


def _inline(function: F) -> F:
    """A small kernel helper that numba compiles into each caller."""
    return cast(F, jit(inline="always", _nrt=False)(function))


@_inline
def _round_div(numerator: int, denominator: int, rounding: int) -> int:
    quotient = numerator // denominator
    remainder = numerator - quotient * denominator
    if rounding == 2 or remainder == 0:
        return quotient
    twice = 2 * remainder
    if twice > denominator:
        return quotient + 1
    if twice == denominator and (rounding == 0 or quotient % 2 == 1):
        return quotient + 1
    return quotient


@_inline
def effect_benefit(rule: Record, running: int, list_amount: int, rounding: int) -> int:
    """Fen ``rule``'s effect gives on ``running`` before caps (``Effect.benefit``)."""
    kind = rule.kind
    if kind == PERCENT:
        off = running - _round_div(running * (SCALE - rule.rate), SCALE, rounding)
    elif kind == FIXED:
        off = min(rule.amount, running)
    elif kind == THRESHOLD:
        times = list_amount // rule.threshold if rule.repeat else 1
        times = min(times, running // rule.amount + 1)  # enough to reach `running`
        off = min(times * rule.amount, running)
    elif kind == PRICE:
        off = max(0, running - rule.price)
    elif rule.rate > 0:
        off = _round_div(running * rule.rate, SCALE, rounding)
    else:
        off = min(rule.amount, running)
    if 0 <= rule.max_benefit < off:
        off = rule.max_benefit
    return int(off)


@_inline
def in_sorted_run(values: np.ndarray, lo: int, hi: int, value: int) -> bool:
    """Binary search in the sorted run ``values[lo:hi]``."""
    while lo < hi:
        mid = (lo + hi) // 2
        probe = values[mid]
        if probe == value:
            return True
        if probe < value:
            lo = mid + 1
        else:
            hi = mid
    return False


@_inline
def condition_holds(check: Record, value: int, pool: np.ndarray) -> bool:
    """Whether a reading meets one compiled condition."""
    kind, lo, hi = check.kind, check.lo, check.hi
    if kind == IN_BITSET:
        return bool(0 <= value < 256 and (pool[lo + (value >> 6)] >> (value & 63)) & 1)
    if kind == IN_SORTED_RUN:
        return bool(in_sorted_run(pool, lo, hi, value))
    if kind == HAS_ANY_FLAG:
        return bool(value > 0 and (value & lo) != 0)
    if kind == IN_RANGE:
        return bool(lo <= value <= hi)
    return bool(lo <= value < hi if lo < hi else (value >= lo or value < hi))  # a time window


@_inline
def conditions_hold(rule: Record, checks: np.ndarray, pool: np.ndarray,
                    values: np.ndarray) -> bool:
    """Whether every condition of ``rule`` holds for a context's readings ``values``."""
    for c in range(rule.checks_from, rule.checks_to):
        if not condition_holds(checks[c], values[checks[c].reading], pool):
            return False
    return True


@_inline
def _month_key(day: int) -> int:
    """``year × 12 + month − 1`` of a day number (days since 1970-01-01), proleptic
    Gregorian (H. Hinnant's civil_from_days)."""
    z = day + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year * 12 + month - 1


@jit
def encode_text(rows: np.ndarray, vocabulary: np.ndarray, out: np.ndarray) -> None:
    """Index of each row in the sorted ``vocabulary``, or ``-1``; rows and vocabulary
    are numpy ``str`` arrays viewed as ``uint32`` code points (NUL padded), compared
    in code point order as numpy and Python order strings.  ``""`` is never found."""
    n, width = rows.shape
    size, vocab_width = vocabulary.shape
    longest = max(width, vocab_width)
    for j in range(n):
        lo = 0
        hi = size
        found = -1
        while lo < hi:
            mid = (lo + hi) // 2
            order = 0
            for k in range(longest):
                a = rows[j, k] if k < width else 0
                b = vocabulary[mid, k] if k < vocab_width else 0
                if a != b:
                    order = -1 if a < b else 1
                    break
            if order == 0:
                found = mid
                break
            if order < 0:
                hi = mid
            else:
                lo = mid + 1
        out[j] = found


@jit
def intern_text(rows: np.ndarray, slots: np.ndarray, codes: np.ndarray,
                firsts: np.ndarray) -> int:
    """Number the distinct non-empty rows in order of first appearance: ``codes[j]``
    is the number of row ``j`` (``-1`` for ""), ``firsts[c]`` the first row numbered
    ``c``.  ``slots`` is an open-addressing table (power-of-two size > rows, all -1).
    Returns how many distinct rows there are."""
    n, width = rows.shape
    mask = slots.shape[0] - 1
    count = 0
    for j in range(n):
        length = width
        while length > 0 and rows[j, length - 1] == 0:
            length -= 1
        if length == 0:
            codes[j] = -1
            continue
        digest = np.int64(-3750763034362895579)  # FNV-1a offset basis, as int64
        for k in range(length):
            digest = (digest ^ np.int64(rows[j, k])) * np.int64(1099511628211)
        index = digest & mask
        code = -1
        while slots[index] >= 0:
            other = firsts[slots[index]]
            same = True
            for k in range(width):
                if rows[other, k] != rows[j, k]:
                    same = False
                    break
            if same:
                code = slots[index]
                break
            index = (index + 1) & mask
        if code < 0:
            code = count
            slots[index] = code
            firsts[code] = j
            count += 1
        codes[j] = code
    return count


@_inline
def cap_limits(rule: Record, window: int) -> tuple[int, int]:
    """Count and amount limits of the day (0) or month (1) window; ``-1``: none."""
    if window == 0:
        return rule.daily_count, rule.daily_amount
    return rule.monthly_count, rule.monthly_amount


@_kernel
def cap_room(rules: np.ndarray, i: int, member: int, day: int, history: np.ndarray,
             state: np.ndarray) -> int:
    """Fen the member's caps leave rule ``i`` (`UNLIMITED` without an amount cap), or
    `EXHAUSTED` when a count or amount cap is used up.  ``state[member, slot, window]``
    holds (period, count, amount) and starts from ``history`` (rows of key, count,
    amount, sorted by key) when its window moves to another period."""
    rule = rules[i]
    slot = rule.cap_slot
    room = UNLIMITED
    for window in range(2):
        max_count, max_amount = cap_limits(rule, window)
        if max_count < 0 and max_amount < 0:
            continue
        period = day if window == 0 else _month_key(day)
        if state[member, slot, window, 0] != period:
            key = (((member * state.shape[1] + slot) * 2 + window) * (2 * PERIOD_OFFSET)
                   + period + PERIOD_OFFSET)
            at = np.searchsorted(history[:, 0], key)
            found = at < history.shape[0] and history[at, 0] == key
            state[member, slot, window, 0] = period
            state[member, slot, window, 1] = history[at, 1] if found else 0
            state[member, slot, window, 2] = history[at, 2] if found else 0
        if 0 <= max_count <= state[member, slot, window, 1]:
            return EXHAUSTED
        if max_amount >= 0:
            rest = max_amount - state[member, slot, window, 2]
            if rest <= 0:
                return EXHAUSTED
            if room == UNLIMITED or rest < room:
                room = rest
    return room


@_kernel
def count_uses(rules: np.ndarray, applied: np.ndarray, given: np.ndarray, j: int, used: int,
               member: int, state: np.ndarray) -> None:
    """Add what the capped rules among ``applied[j, :used]`` gave to their (loaded)
    windows."""
    for t in range(used):
        rule = rules[applied[j, t]]
        if rule.cap_slot < 0:
            continue
        for window in range(2):
            max_count, max_amount = cap_limits(rule, window)
            if max_count >= 0 or max_amount >= 0:
                state[member, rule.cap_slot, window, 1] += 1
                state[member, rule.cap_slot, window, 2] += given[j, t]


@_inline
def weigh(rule: Record, room: int, amount: int, list_amount: int, rounding: int) -> int:
    """Fen ``rule`` gives on ``amount`` within what its caps leave (``room``)."""
    benefit = effect_benefit(rule, amount, list_amount, rounding)
    return benefit if room == UNLIMITED or benefit <= room else room


@_kernel
def combine(rules: np.ndarray, candidates: np.ndarray, rooms: np.ndarray, count: int,
            rebates: bool, amount: int, list_amount: int, rounding: int, best: int,
            total: int, applied: np.ndarray, given: np.ndarray, j: int,
            used: int) -> tuple[int, int]:
    """``engine.combine`` over the first ``count`` candidates (instant benefits, or the
    ``rebates``).  ``best`` and ``total``: the best non-stackable rule weighed already
    (``-1``, 0: none), which candidates must beat.  Appends to row ``j`` of
    ``applied``/``given`` from ``used``; returns the fen given and the new ``used``."""
    for c in range(count):
        rule = rules[candidates[c]]
        if rule.rebate == rebates and not rule.stackable:
            benefit = weigh(rule, rooms[c], amount, list_amount, rounding)
            if benefit > total:
                best, total = candidates[c], benefit
    if best >= 0 and used < applied.shape[1]:
        applied[j, used], given[j, used] = best, total
        used += 1
    for c in range(count):
        rule = rules[candidates[c]]
        if rule.rebate != rebates or not rule.stackable:
            continue
        on = amount if rebates else amount - total
        benefit = min(weigh(rule, rooms[c], on, list_amount, rounding), amount - total)
        if benefit > 0 and used < applied.shape[1]:
            applied[j, used], given[j, used] = candidates[c], benefit
            used += 1
            total += benefit
    return total, used


@_kernel
def evaluate(
    contexts: tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...]],
    tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rounding: int, rows: np.ndarray, member: np.ndarray, use_caps: bool,
    history: np.ndarray, state: np.ndarray, scratch: np.ndarray,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> int:
    """Quote every context, in the order given (time order when caps are used).

    ``contexts``: modes, list amounts, ``at`` in seconds and the columns the rules read;
    ``tables``: rules, checks, pool, and per mode the range (``mode_ptr``) of its rules in
    declared order (``mode_rules``); ``scratch``: three rows of at least as many entries
    as rules and readings.  With ``use_caps``, context ``j`` is row ``rows[j]``
    of ``out`` and member ``member[j]`` of ``state`` (``-1``: none).  Fills ``out``
    (charged, rebate, applied rule indices, their fen, deferred).  Returns ``-1``, or the
    first context whose mode has no rules range (which the Python side rules out).
    """
    mode, amount, seconds, readings = contexts
    rules, checks, pool, mode_ptr, mode_rules = tables
    charged, rebates, applied, given, deferred_out = out
    candidates, rooms, values = scratch[0], scratch[1], scratch[2]
    columns = len(readings)
    for j in range(mode.shape[0]):
        m = mode[j]
        if m < 0 or m + 1 >= mode_ptr.shape[0]:
            return j
        o = rows[j] if use_caps else j
        who = member[j] if use_caps else -1
        list_amount = amount[j]
        day = seconds[j] // DAY_SECONDS
        for r in range(columns):
            values[r] = readings[r][j]
        values[columns] = day
        values[columns + 1] = (day + 3) % 7 + 1
        values[columns + 2] = seconds[j] - day * DAY_SECONDS
        count = 0
        deferred = False
        best, best_benefit = -1, 0  # the best non-stackable instant benefit
        for k in range(mode_ptr[m], mode_ptr[m + 1]):
            i = mode_rules[k]
            rule = rules[i]
            if list_amount < rule.min_amount or not conditions_hold(rule, checks, pool, values):
                continue
            room = UNLIMITED
            if rule.cap_slot >= 0:
                if not use_caps or who < 0 or who >= state.shape[0]:
                    deferred = True
                    continue
                room = cap_room(rules, i, who, day, history, state)
                if room == EXHAUSTED:
                    continue
            if rule.stackable or rule.rebate:
                candidates[count], rooms[count] = i, room
                count += 1
            else:  # weighed here: most contexts need no second pass
                benefit = weigh(rule, room, list_amount, list_amount, rounding)
                if benefit > best_benefit:
                    best, best_benefit = i, benefit
        discount, rebate, used = best_benefit, 0, 0
        if count == 0 and best >= 0:  # the best single benefit is the whole quote
            applied[o, 0], given[o, 0] = best, best_benefit
            used = 1
        elif count:  # stackable benefits or rebates: the second pass
            discount, used = combine(rules, candidates, rooms, count, False, list_amount,
                                     list_amount, rounding, best, best_benefit, applied, given,
                                     o, 0)
            rebate, used = combine(rules, candidates, rooms, count, True,
                                   list_amount - discount, list_amount, rounding, -1, 0,
                                   applied, given, o, used)
        charged[o], rebates[o], deferred_out[o] = list_amount - discount, rebate, deferred
        for t in range(used, applied.shape[1]):
            applied[o, t], given[o, t] = -1, 0
        if use_caps and who >= 0:
            count_uses(rules, applied, given, o, used, who, state)
    return -1
