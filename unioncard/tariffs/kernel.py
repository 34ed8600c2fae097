"""The numba kernel of the batch tariff path: the reference combination policy
(``engine`` module docstring) over arrays, fen for fen, caps included.

Rules arrive compiled into one integer table (columns ``C_*``) plus, for the set
conditions, sorted value runs ``cond_values[cond_lo[i, d]:cond_hi[i, d]]``; an
empty run means "any".  Contexts arrive as columns with ``-1`` for "none".  Each
kernel reads only inside its arrays: every index comes from the compiled tables
or from a range check against an array's own shape.
"""

from __future__ import annotations

import numpy as np

from unioncard.jit import jit

__all__ = [
    "COLUMNS",
    "DIMENSIONS",
    "KINDS",
    "NEEDS",
    "NO_DATE_FROM",
    "NO_DATE_UNTIL",
    "PERIOD_OFFSET",
    "encode_text",
    "evaluate",
    "intern_text",
]

# Columns of the rule table.
(C_MODE, C_STACK, C_REBATE, C_CAT, C_FROM, C_UNTIL, C_TFROM, C_TUNTIL, C_MIN, C_KIND, C_RATE,
 C_AMOUNT, C_THRESHOLD, C_REPEAT, C_PRICE, C_MAXB, C_DCOUNT, C_DAMOUNT, C_MCOUNT, C_MAMOUNT,
 C_SLOT, C_NEEDS, C_STATUS, C_WEEKDAY) = range(24)
C_CARD = 24  # 4 words: a 256-bit set of card type bytes
C_VCLASS = 28  # 4 words: a 256-bit set of vehicle classes
COLUMNS = 32
# Which conditions a rule has (C_NEEDS bits); absent ones admit anything.
N_CARD, N_STATUS, N_WEEKDAY, N_VCLASS, N_TIME, N_MERCHANT, N_MCC, N_ROUTE = (
    1 << k for k in range(8)
)
# Set conditions over large domains: sorted value runs in cond_values.
D_MERCHANT, D_MCC, D_ROUTE = range(3)
DIMENSIONS = 3
# Effect kinds.
K_PERCENT, K_FIXED, K_THRESHOLD, K_PRICE, K_REBATE = range(5)
KINDS = 5
NEEDS = {"card": N_CARD, "status": N_STATUS, "weekday": N_WEEKDAY, "vclass": N_VCLASS,
         "time": N_TIME, "merchant": N_MERCHANT, "mcc": N_MCC, "route": N_ROUTE}

SCALE = 1_000_000
NO_DATE_FROM = -(2**62)
NO_DATE_UNTIL = 2**62
PERIOD_OFFSET = 1 << 22  # day numbers of years 1..9999 and month keys fit in 23 bits with it
EXHAUSTED = -2
UNLIMITED = -1


@jit
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


@jit
def _benefit(table: np.ndarray, i: int, running: int, list_amount: int, rounding: int) -> int:
    kind = table[i, C_KIND]
    if kind == K_PERCENT:
        off = running - _round_div(running * (SCALE - table[i, C_RATE]), SCALE, rounding)
    elif kind == K_FIXED:
        off = min(table[i, C_AMOUNT], running)
    elif kind == K_THRESHOLD:
        amount = table[i, C_AMOUNT]
        times = list_amount // table[i, C_THRESHOLD] if table[i, C_REPEAT] else 1
        limit = running // amount + 1  # enough to reach `running`; keeps the product small
        times = min(times, limit)
        off = min(times * amount, running)
    elif kind == K_PRICE:
        off = max(0, running - table[i, C_PRICE])
    elif table[i, C_RATE] > 0:
        off = _round_div(running * table[i, C_RATE], SCALE, rounding)
    else:
        off = min(table[i, C_AMOUNT], running)
    cap = table[i, C_MAXB]
    if cap >= 0 and off > cap:
        off = cap
    return int(off)


@jit
def _member_of(values: np.ndarray, lo: int, hi: int, value: int) -> bool:
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


@jit
def _has_bit(table: np.ndarray, i: int, column: int, value: int) -> bool:
    """Whether ``value`` (0..255) is in the bit set starting at ``table[i, column]``."""
    return bool((table[i, column + (value >> 6)] >> (value & 63)) & 1)


@jit
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
def _load(state_period: np.ndarray, state_count: np.ndarray, state_amount: np.ndarray,
          init_keys: np.ndarray, init_count: np.ndarray, init_amount: np.ndarray,
          member: int, slot: int, window: int, period: int) -> None:
    """Make the state of (member, slot, window) that of ``period``, starting from the
    initial history when the window changes."""
    if state_period[member, slot, window] == period:
        return
    n_slots = state_period.shape[1]
    key = ((member * n_slots + slot) * 2 + window) * (2 * PERIOD_OFFSET) + period + PERIOD_OFFSET
    lo = 0
    hi = init_keys.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if init_keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < init_keys.shape[0] and init_keys[lo] == key:
        state_count[member, slot, window] = init_count[lo]
        state_amount[member, slot, window] = init_amount[lo]
    else:
        state_count[member, slot, window] = 0
        state_amount[member, slot, window] = 0
    state_period[member, slot, window] = period


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


@jit
def _limit(benefit: int, remaining: int) -> int:
    if remaining == UNLIMITED or benefit <= remaining:
        return benefit
    return remaining


@jit
def evaluate(
    use_caps: bool, rounding: int,
    mode: np.ndarray, amount: np.ndarray, card: np.ndarray, categories: np.ndarray,
    status: np.ndarray, merchant: np.ndarray, mcc: np.ndarray, route: np.ndarray,
    vehicle: np.ndarray, seconds: np.ndarray, member: np.ndarray,
    table: np.ndarray, cond_lo: np.ndarray, cond_hi: np.ndarray, cond_values: np.ndarray,
    mode_ptr: np.ndarray, mode_rules: np.ndarray,
    n_members: int, n_slots: int,
    init_keys: np.ndarray, init_count: np.ndarray, init_amount: np.ndarray,
    charged_out: np.ndarray, rebate_out: np.ndarray, rules_out: np.ndarray,
    amounts_out: np.ndarray, deferred_out: np.ndarray,
) -> int:
    """Quote every context, in the order given (time order when caps are used).

    Returns ``-1``, or the index of the first context whose mode has no entry in
    ``mode_ptr`` (which the Python side has already ruled out).
    """
    n_rules = table.shape[0]
    width = rules_out.shape[1]
    candidates = np.empty(n_rules, np.int64)
    remaining = np.empty(n_rules, np.int64)
    state_period = np.full((n_members, n_slots, 2), -1, np.int64)
    state_count = np.zeros((n_members, n_slots, 2), np.int64)
    state_amount = np.zeros((n_members, n_slots, 2), np.int64)
    for j in range(mode.shape[0]):
        m = np.int64(mode[j])
        if m < 0 or m + 1 >= mode_ptr.shape[0]:
            return j
        list_amount = np.int64(amount[j])
        day = seconds[j] // 86400
        second = seconds[j] - day * 86400
        weekday = (day + 3) % 7 + 1
        month = -1
        card_type = np.int64(card[j])
        member_status = np.int64(status[j])
        member_categories = np.int64(categories[j])
        vehicle_class = np.int64(vehicle[j])
        count = 0
        deferred = False
        best = -1
        best_benefit = 0
        for k in range(mode_ptr[m], mode_ptr[m + 1]):
            i = mode_rules[k]
            if list_amount < table[i, C_MIN]:
                continue
            mask = table[i, C_CAT]
            if mask > 0 and (member_categories & mask) == 0:
                continue
            if day < table[i, C_FROM] or day > table[i, C_UNTIL]:
                continue
            needs = table[i, C_NEEDS]
            if needs:
                if needs & N_CARD and not _has_bit(table, i, C_CARD, card_type):
                    continue
                if needs & N_STATUS and not (table[i, C_STATUS] >> member_status) & 1:
                    continue
                if needs & N_WEEKDAY and not (table[i, C_WEEKDAY] >> weekday) & 1:
                    continue
                if needs & N_VCLASS and (
                    vehicle_class < 0 or not _has_bit(table, i, C_VCLASS, vehicle_class)
                ):
                    continue
                if needs & N_TIME:
                    start = table[i, C_TFROM]
                    end = table[i, C_TUNTIL]
                    lo = start if start >= 0 else 0
                    hi = end if end >= 0 else 86400
                    if lo < hi:
                        if second < lo or second >= hi:
                            continue
                    elif lo > second >= hi:
                        continue
                if needs & N_MERCHANT and not _member_of(
                    cond_values, cond_lo[i, D_MERCHANT], cond_hi[i, D_MERCHANT], merchant[j]
                ):
                    continue
                if needs & N_MCC and not _member_of(
                    cond_values, cond_lo[i, D_MCC], cond_hi[i, D_MCC], mcc[j]
                ):
                    continue
                if needs & N_ROUTE and not _member_of(
                    cond_values, cond_lo[i, D_ROUTE], cond_hi[i, D_ROUTE], route[j]
                ):
                    continue
            left = UNLIMITED
            slot = table[i, C_SLOT]
            if slot >= 0:
                who = member[j]
                if not use_caps or who < 0 or who >= n_members:
                    deferred = True
                    continue
                if month < 0:
                    month = _month_key(day)
                for window in range(2):
                    max_count = table[i, C_DCOUNT + 2 * window]
                    max_amount = table[i, C_DAMOUNT + 2 * window]
                    if max_count < 0 and max_amount < 0:
                        continue
                    period = day if window == 0 else month
                    _load(state_period, state_count, state_amount, init_keys, init_count,
                          init_amount, who, slot, window, period)
                    if max_count >= 0 and state_count[who, slot, window] >= max_count:
                        left = EXHAUSTED
                        break
                    if max_amount >= 0:
                        rest = max_amount - state_amount[who, slot, window]
                        if rest <= 0:
                            left = EXHAUSTED
                            break
                        if left == UNLIMITED or rest < left:
                            left = rest
                if left == EXHAUSTED:
                    continue
            if table[i, C_STACK] or table[i, C_REBATE]:
                candidates[count] = i
                remaining[count] = left
                count += 1
            else:  # 1. the best non-stackable instant benefit, on the list amount
                benefit = _limit(_benefit(table, i, list_amount, list_amount, rounding), left)
                if benefit > best_benefit:
                    best = i
                    best_benefit = benefit

        deferred_out[j] = deferred
        used = 0
        charged = list_amount
        if best >= 0:
            charged -= best_benefit
            rules_out[j, used] = best
            amounts_out[j, used] = best_benefit
            used += 1
        rebate = 0
        if count:
            # 2. stackable instant benefits in declared order, on the running amount
            for c in range(count):
                i = candidates[c]
                if table[i, C_REBATE]:
                    continue
                benefit = _limit(_benefit(table, i, charged, list_amount, rounding),
                                 remaining[c])
                if benefit > 0 and used < width:
                    charged -= benefit
                    rules_out[j, used] = i
                    amounts_out[j, used] = benefit
                    used += 1
            # 3. rebates on the charged amount: the best non-stackable, then stackable ones
            best = -1
            best_benefit = 0
            for c in range(count):
                i = candidates[c]
                if table[i, C_STACK] or not table[i, C_REBATE]:
                    continue
                benefit = _limit(_benefit(table, i, charged, list_amount, rounding),
                                 remaining[c])
                if benefit > best_benefit:
                    best = i
                    best_benefit = benefit
            if best >= 0 and used < width:
                rebate = best_benefit
                rules_out[j, used] = best
                amounts_out[j, used] = best_benefit
                used += 1
            for c in range(count):
                i = candidates[c]
                if not table[i, C_STACK] or not table[i, C_REBATE]:
                    continue
                benefit = _limit(_benefit(table, i, charged, list_amount, rounding),
                                 remaining[c])
                benefit = min(benefit, charged - rebate)
                if benefit > 0 and used < width:
                    rebate += benefit
                    rules_out[j, used] = i
                    amounts_out[j, used] = benefit
                    used += 1
        charged_out[j] = charged
        rebate_out[j] = rebate
        for t in range(used, width):
            rules_out[j, t] = -1
            amounts_out[j, t] = 0
        # 4. count what capped rules gave (their windows were loaded above)
        if use_caps:
            for t in range(used):
                i = rules_out[j, t]
                slot = table[i, C_SLOT]
                if slot < 0:
                    continue
                who = member[j]
                for window in range(2):
                    if table[i, C_DCOUNT + 2 * window] < 0 and table[i, C_DAMOUNT + 2 * window] < 0:
                        continue
                    state_count[who, slot, window] += 1
                    state_amount[who, slot, window] += amounts_out[j, t]
    return -1
