"""Hash indexes in numba: what settlement looks records up in (docs/settlement.md).

`KeyedRows` numbers distinct keys of a few ``uint64`` fields (0, 1, ...): open
addressing with linear probing in power-of-two tables kept at most 70 % full, slots
found by a hash of the fields (SplitMix64's finalizer over them, as `mix64`), keys
compared whole (two keys with one hash are never confused); a batch of keys is looked
up or numbered in one numba call.

`SeqSet` says which seqs of a numbered counter were settled, and whether before this run
or in it: bits in words of 64 seqs, and a span per counter.  A counter's seqs follow one
another, so a day of records takes about a word per counter, not a slot per record, and
`SeqSet.compact` folds each counter's seqs into its span (first and end in its home
row, and bits for the seqs it misses) before a run: replays and duplicates are found in
memory that grows with the cards and terminals seen and the records missing, not with
the records settled (docs/settlement.md, "Spans").

>>> seqs = SeqSet()
>>> seqs.add(np.array([0, 0, 3]), np.array([7, 8, 7]), in_run=False)
>>> seqs.add(np.array([3]), np.array([70]), in_run=True)
>>> [flags.tolist() for flags in seqs.test(np.array([0, 3, 3, 3]), np.array([8, 7, 70, 71]))]
[[True, True, False, False], [False, False, True, False]]
>>> seqs.with_gaps(np.array([0, 3])).tolist()
[3]
>>> seqs.gaps(np.array([3, 0])).tolist()  # counter, first and last seq missing
[[3, 8, 69]]
>>> history = SeqSet()
>>> history.add(np.zeros(1000, np.int64), np.arange(1000), in_run=False)
>>> history.add(np.array([0]), np.array([1010]), in_run=False)  # 1000 to 1009 missing
>>> history.compact()
>>> home, blocks = history.settled_before()  # the span, and a word: the seqs it misses
>>> home[:, 2:].tolist(), len(blocks), history.gaps(np.array([0])).tolist()
([[0, 1011]], 0, [[0, 1000, 1009]])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unioncard.jit import jit, prefetch

__all__ = ["KeyedRows", "SeqSet", "group_rows", "grown", "mix64", "previous_equal"]

_EMPTY = np.uint64(0)


@jit
def _mix(x):  # type: ignore[no-untyped-def]
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@jit
def _row_hash(keys, i):  # type: ignore[no-untyped-def]
    """The hash of row ``i`` of ``keys``: SplitMix64's finalizer chained over its fields."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for k in range(keys.shape[1]):
        h = _mix(h ^ keys[i, k])
    return h


@jit
def _mix_columns(columns, out):  # type: ignore[no-untyped-def]
    for i in range(out.shape[0]):
        h = _row_hash(columns, i)
        out[i] = h if h != np.uint64(0) else np.uint64(1)


def mix64(columns: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of ``uint64[N, k]`` (never 0: 0 marks an empty slot)."""
    columns = np.ascontiguousarray(columns, dtype=np.uint64)
    out = np.empty(columns.shape[0], np.uint64)
    _mix_columns(columns, out)
    return out


@jit
def _previous_equal(keys, slots, last, out):  # type: ignore[no-untyped-def]
    mask = np.uint64(slots.shape[0] - 1)
    for i in range(keys.shape[0]):
        key = keys[i]
        at = _mix(key) & mask
        while slots[at] != np.uint64(0) and slots[at] != key:
            at = (at + np.uint64(1)) & mask
        out[i] = last[at] if slots[at] == key else -1
        slots[at] = key
        last[at] = i


def previous_equal(keys: np.ndarray) -> np.ndarray:
    """For each of the hashes ``keys``, the index of the last earlier equal one (-1: none).

    >>> previous_equal(np.array([5, 7, 5, 5, 9], np.uint64)).tolist()
    [-1, -1, 0, 2, -1]
    """
    keys = np.ascontiguousarray(keys, np.uint64)
    size = 1 << max(4, (2 * len(keys)).bit_length())
    out = np.empty(len(keys), np.int64)
    _previous_equal(keys, np.zeros(size, np.uint64), np.zeros(size, np.int64), out)
    return out


def group_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of an integer ``[N, k]`` array grouped by equal keys: the first row of each
    group and each row's group (groups in no particular order).  Rows are hashed to 64
    bits (`mix64`), and every row is confirmed equal to its group's first row (a collision
    falls back to comparing whole rows).

    >>> first, group = group_rows(np.array([[5, 1], [6, 1], [5, 1]]))
    >>> sorted(first.tolist()), bool(group[0] == group[2] != group[1])
    ([0, 1], True)
    """
    _, first, inverse = np.unique(mix64(keys), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if not (keys == keys[first[inverse]]).all():
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    return first, inverse


def grown(values: np.ndarray, count: int, fill: Any = 0) -> np.ndarray:
    """``values``, or a copy with room for ``count`` rows (at least twice as many as it
    had; the new rows ``fill``)."""
    if len(values) >= count:
        return values
    shape = (max(2 * len(values), count, 1024), *values.shape[1:])
    if fill == 0:  # the new rows' pages stay untouched (out of memory) until used
        out = np.zeros(shape, values.dtype)
    else:
        out = np.empty(shape, values.dtype)
        out[len(values):] = fill
    out[:len(values)] = values
    return out


def _size_for(count: int) -> int:
    """The fewest slots (a power of two) that hold ``count`` keys at most 70 % full: a
    table that grows is then 35 % to 70 % full."""
    return 1 << max(4, ((count * 10 + 6) // 7 - 1).bit_length())


_AHEAD = 8
"""How many keys ahead a lookup asks for its slot (`unioncard.jit.prefetch`)."""


@jit
def _slot_of(slots, keys, i, h):  # type: ignore[no-untyped-def]
    """The slot holding key ``i`` (``keys[i]``, hash ``h``), or the empty one where it
    goes.  A slot holds the key's fields, its payload, and its number + 1 (last word; 0:
    empty)."""
    mask = np.uint64(slots.shape[0] - 1)
    last = slots.shape[1] - 1
    at = h & mask
    while slots[at, last] != _EMPTY:
        same = True
        for k in range(keys.shape[1]):
            if slots[at, k] != keys[i, k]:
                same = False
                break
        if same:
            return at
        at = (at + np.uint64(1)) & mask
    return at


@jit
def _hashes(slots, keys):  # type: ignore[no-untyped-def]
    """Each key's hash, and the first ``_AHEAD`` keys' slots asked for."""
    hashes = np.empty(keys.shape[0], np.uint64)
    mask = np.uint64(slots.shape[0] - 1)
    for i in range(keys.shape[0]):
        hashes[i] = _row_hash(keys, i)
        if i < _AHEAD:
            prefetch(slots, np.int64(hashes[i] & mask))
    return hashes


@jit
def _rows_find(slots, keys, out, payload):  # type: ignore[no-untyped-def]
    """Each key's number (-1: absent) and, where ``payload`` has rows, its payload."""
    hashes = _hashes(slots, keys)
    mask = np.uint64(slots.shape[0] - 1)
    last, width = slots.shape[1] - 1, keys.shape[1]
    for i in range(keys.shape[0]):
        if i + _AHEAD < keys.shape[0]:
            prefetch(slots, np.int64(hashes[i + _AHEAD] & mask))
        at = _slot_of(slots, keys, i, hashes[i])
        out[i] = np.int64(slots[at, last]) - 1
        if out[i] >= 0 and payload.shape[0]:
            for k in range(payload.shape[1]):
                payload[i, k] = slots[at, width + k]


@jit
def _rows_add(slots, where, count, keys, out):  # type: ignore[no-untyped-def]
    """Number the keys not held (from ``count`` on, their slots in ``where``); the new
    count."""
    hashes = _hashes(slots, keys)
    mask = np.uint64(slots.shape[0] - 1)
    last = slots.shape[1] - 1
    for i in range(keys.shape[0]):
        if i + _AHEAD < keys.shape[0]:
            prefetch(slots, np.int64(hashes[i + _AHEAD] & mask))
        at = _slot_of(slots, keys, i, hashes[i])
        if slots[at, last] == _EMPTY:
            for k in range(keys.shape[1]):
                slots[at, k] = keys[i, k]
            where[count] = at
            count += 1
            slots[at, last] = np.uint64(count)
        out[i] = np.int64(slots[at, last]) - 1
    return count


@jit
def _rows_rehash(old, slots, where, width):  # type: ignore[no-untyped-def]
    """Move the keys of the table ``old`` to ``slots``, in the order they sit in it,
    asking for slots ahead (as `_rows_add`)."""
    last = slots.shape[1] - 1
    mask = np.uint64(slots.shape[0] - 1)
    keys = old[:, :width]
    hashes = np.empty(old.shape[0], np.uint64)
    for at in range(old.shape[0]):
        if old[at, last] != _EMPTY:  # a hash may be 0 too: the number says a slot is used
            hashes[at] = _row_hash(keys, at)
    for at in range(old.shape[0]):
        ahead = at + _AHEAD
        if ahead < old.shape[0] and old[ahead, last] != _EMPTY:
            prefetch(slots, np.int64(hashes[ahead] & mask))
        if old[at, last] != _EMPTY:
            to = _slot_of(slots, keys, at, hashes[at])
            slots[to] = old[at]
            where[np.int64(old[at, last]) - 1] = to


@jit
def _payload_of(slots, where, numbers, width, out):  # type: ignore[no-untyped-def]
    for i in range(numbers.shape[0]):
        if i + _AHEAD < numbers.shape[0]:
            prefetch(slots, where[numbers[i + _AHEAD]])
        for k in range(out.shape[1]):
            out[i, k] = slots[where[numbers[i]], width + k]


@jit
def _payload_set(slots, where, numbers, width, values, add):  # type: ignore[no-untyped-def]
    for i in range(numbers.shape[0]):
        at = where[numbers[i]]
        for k in range(values.shape[1]):
            slots[at, width + k] = (slots[at, width + k] if add else np.uint64(0)) + values[i, k]


def _aligned_slots(count: int, stride: int) -> np.ndarray:
    """``uint64[count, stride]`` of zeros whose rows start on 64-byte boundaries (a slot
    is then in one cache line)."""
    raw = np.zeros(count * stride + 8, np.uint64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip:skip + count * stride].reshape(count, stride)


class KeyedRows:
    """Distinct keys of ``width`` ``uint64`` fields, numbered 0, 1, ... in order of
    arrival; `find` and `add` take ``uint64[N, width]`` and give each key's number (-1:
    absent).  Keys are compared whole: a hash only says where to look.  Each key may
    carry ``payload`` more words, kept in its slot (`find` can read them on the way).

    A slot holds a key, its payload and its number (a power of two of words: in one cache
    line up to 8, as every table here has); a batch of lookups asks for the slots of the
    keys a few ahead, so the reads from memory of a table larger than the caches overlap.

    >>> counters = KeyedRows(2, payload=1)
    >>> numbers = counters.add(np.array([[7, 1], [8, 1], [7, 1]], np.uint64))
    >>> numbers.tolist()
    [0, 1, 0]
    >>> counters.set_payload(numbers[1:2], np.array([[99]], np.uint64))
    >>> found, payload = counters.find(np.array([[8, 1], [8, 2]], np.uint64), payload=True)
    >>> found.tolist(), payload[0].tolist()
    ([1, -1], [99])
    >>> counters.fields().tolist()
    [[7, 1], [8, 1]]
    """

    def __init__(self, width: int, *, payload: int = 0) -> None:
        self._width, self._payload = width, payload
        self._stride = 1 << (width + payload).bit_length()  # room for the number too
        self._slots = _aligned_slots(_size_for(1024), self._stride)
        self._where = np.zeros(1024, np.int64)
        """The slot of each number."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _numbers(self, numbers: Any) -> np.ndarray:
        """``numbers`` as an index, each one a key's (else `IndexError`)."""
        index: np.ndarray = np.ascontiguousarray(numbers, np.int64)
        if len(index) and (index.min() < 0 or index.max() >= self._count):
            raise IndexError(f"key numbers lie in 0..{self._count - 1}")
        return index

    def fields(self, numbers: np.ndarray | None = None) -> np.ndarray:
        """The keys held, in order of their numbers (or those of ``numbers``)."""
        where = (self._where[:self._count] if numbers is None
                 else self._where[self._numbers(numbers)])
        return self._slots[where, :self._width]

    def payload_of(self, numbers: np.ndarray) -> np.ndarray:
        """The payload words of the keys ``numbers`` (a copy)."""
        numbers = self._numbers(numbers)
        out = np.empty((len(numbers), self._payload), np.uint64)
        _payload_of(self._slots, self._where, numbers, self._width, out)
        return out

    def set_payload(self, numbers: np.ndarray, values: np.ndarray, *, add: bool = False
                    ) -> None:
        """Set (``add``: add to) the payload words of the keys ``numbers`` (each number once
        when setting; added in order, so a number may repeat): integers, a row of
        ``payload`` per number (a negative one kept as its two's complement)."""
        if not len(numbers):
            return
        values = np.asarray(values)
        values = np.ascontiguousarray(values, np.uint64 if values.dtype.kind == "u"
                                      else np.int64).view(np.uint64).reshape(len(numbers), -1)
        if values.shape[1] != self._payload:
            raise ValueError(f"{values.shape[1]} payload words given, the keys carry "
                             f"{self._payload}")
        _payload_set(self._slots, self._where, self._numbers(numbers), self._width, values,
                     add)

    def find(self, keys: np.ndarray, *, payload: bool = False) -> Any:
        """Each key's number (-1: absent); with ``payload``, also its payload words (rows
        of absent keys undefined)."""
        keys = np.ascontiguousarray(keys, np.uint64)
        out = np.empty(len(keys), np.int64)
        words = np.empty((len(keys) if payload else 0, self._payload), np.uint64)
        _rows_find(self._slots, keys, out, words)
        return (out, words) if payload else out

    def add(self, keys: np.ndarray) -> np.ndarray:
        """The number of each key, numbering the keys not held yet (payload 0)."""
        keys = np.ascontiguousarray(keys, np.uint64)
        needed = self._count + len(keys)
        self._where = grown(self._where, needed)
        if needed * 10 > len(self._slots) * 7:
            old = self._slots
            self._slots = _aligned_slots(_size_for(max(needed, 2 * self._count)), self._stride)
            _rows_rehash(old, self._slots, self._where, self._width)
        out = np.empty(len(keys), np.int64)
        self._count = int(_rows_add(self._slots, self._where, self._count, keys, out))
        return out


@jit
def _seq_slot(table, key):  # type: ignore[no-untyped-def]
    """The slot holding ``key``, or the empty one where it goes."""
    mask = np.uint64(table.shape[0] - 1)
    at = _mix(key) & mask
    while table[at, 0] != _EMPTY and table[at, 0] != key:
        at = (at + np.uint64(1)) & mask
    return at


@jit
def _seq_key(owner, block):  # type: ignore[no-untyped-def]
    return ((np.uint64(owner) + np.uint64(1)) << np.uint64(32)) | block


@jit
def _span_bits(block, first, end):  # type: ignore[no-untyped-def]
    """The bits of block ``block`` (seqs ``block * 64`` to ``block * 64 + 63``) whose seqs
    lie in the span ``first`` to ``end - 1``."""
    start = block * 64
    low, high = max(first, start) - start, min(end, start + 64) - start
    if high <= low:
        return np.uint64(0)
    if high - low == 64:
        return ~np.uint64(0)
    return ((np.uint64(1) << np.uint64(high - low)) - np.uint64(1)) << np.uint64(low)


_FAR = np.int64(1) << np.int64(40)
"""Beyond every seq (seqs are below 2³²): the first and end of no span."""


@jit
def _words_of(home, table, o, block):  # type: ignore[no-untyped-def]
    """Counter ``o``'s two words of block ``block`` (its home row's, or the table's; none:
    0, 0): the bits of the seqs settled before the run (inside its span: of the seqs the
    span misses) and in it."""
    if home[o, 0] == block + np.uint64(1):
        return home[o, 1], home[o, 2]
    if home[o, 0] != _EMPTY:  # a counter has blocks in the table only beside its home row's
        key = _seq_key(o, block)
        at = _seq_slot(table, key)
        if table[at, 0] == key:
            return table[at, 1], table[at, 2]
    return _EMPTY, _EMPTY


@jit
def _spanned(home, o, seq):  # type: ignore[no-untyped-def]
    return home[o, 3] <= seq and seq < home[o, 4]


@jit
def _seq_test(home, table, owner, seq, before, run):  # type: ignore[no-untyped-def]
    for i in range(owner.shape[0]):
        before[i] = run[i] = False
        o = owner[i]
        if o < 0 or o >= home.shape[0]:
            continue  # never numbered here: no seq of it settled
        s = np.uint64(seq[i])
        settled, in_run = _words_of(home, table, o, s >> np.uint64(6))
        bit = np.uint64(1) << (s & np.uint64(63))
        before[i] = _spanned(home, o, s) != ((settled & bit) != _EMPTY)
        run[i] = (in_run & bit) != _EMPTY


@jit
def _seq_add(home, table, owner, seq, column):  # type: ignore[no-untyped-def]
    """Mark the seqs (``column`` 1: settled before the run, 2: in it; a seq settled before
    the run inside its counter's span was one the span missed: its bit is cleared); how
    many slots of the table of other blocks were taken."""
    taken = 0
    for i in range(owner.shape[0]):
        o, s = owner[i], np.uint64(seq[i])
        block, bit = s >> np.uint64(6), np.uint64(1) << (s & np.uint64(63))
        if column == 1 and _spanned(home, o, s):
            _clear(home, table, o, block, bit)
        else:
            taken += _mark(home, table, o, block, bit, column, False)
    return taken


@jit
def _seq_flip(home, table, owner, block, word):  # type: ignore[no-untyped-def]
    """Flip the bits ``word`` of block ``block`` of each counter ``owner`` (settled before
    the run): the seqs a span takes in or gives back change meaning.  How many slots of
    the table of other blocks were taken."""
    taken = 0
    for i in range(owner.shape[0]):
        taken += _mark(home, table, owner[i], np.uint64(block[i]), word[i], 1, True)
    return taken


@jit
def _mark(home, table, o, block, bits, column, flip):  # type: ignore[no-untyped-def]
    """Set (``flip``: flip) ``bits`` of counter ``o``'s block ``block`` in ``column``: in its
    home row (taken when empty) or the table; 1 when a table slot was taken."""
    if home[o, 0] == _EMPTY:
        home[o, 0] = block + np.uint64(1)
    if home[o, 0] == block + np.uint64(1):
        home[o, column] = home[o, column] ^ bits if flip else home[o, column] | bits
        return 0
    key = _seq_key(o, block)
    at = _seq_slot(table, key)
    taken = 0
    if table[at, 0] == _EMPTY:
        table[at, 0] = key
        taken = 1
    table[at, column] = table[at, column] ^ bits if flip else table[at, column] | bits
    return taken


@jit
def _clear(home, table, o, block, bits):  # type: ignore[no-untyped-def]
    """Clear ``bits`` of counter ``o``'s block ``block`` (settled before the run), if held."""
    if home[o, 0] == block + np.uint64(1):
        home[o, 1] &= ~bits
    elif home[o, 0] != _EMPTY:
        key = _seq_key(o, block)
        at = _seq_slot(table, key)
        if table[at, 0] == key:
            table[at, 1] &= ~bits


@jit
def _seq_rehash(old, table):  # type: ignore[no-untyped-def]
    for i in range(old.shape[0]):
        if old[i, 0] != _EMPTY:
            at = _seq_slot(table, old[i, 0])
            table[at, 0], table[at, 1], table[at, 2] = old[i, 0], old[i, 1], old[i, 2]


_DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
_LOWEST_BIT = np.zeros(64, np.int64)
for _k in range(64):
    _LOWEST_BIT[((1 << _k) * 0x03F79D71B4CB0A89 & (2**64 - 1)) >> 58] = _k


@jit
def _lowest_bit(word, lowest):  # type: ignore[no-untyped-def]
    """The position of the lowest set bit of ``word`` (not 0): de Bruijn multiplication,
    ``lowest`` its table."""
    return lowest[((word & (~word + np.uint64(1))) * _DE_BRUIJN) >> np.uint64(58)]


@jit
def _highest_bit(word):  # type: ignore[no-untyped-def]
    """The position of the highest set bit of ``word`` (not 0)."""
    bit = np.int64(63)
    while (word >> np.uint64(bit)) == np.uint64(0):
        bit -= 1
    return bit


@jit
def _bit_count(w):  # type: ignore[no-untyped-def]
    """The set bits of a word (SWAR popcount)."""
    w = w - ((w >> np.uint64(1)) & np.uint64(0x5555555555555555))
    w = (w & np.uint64(0x3333333333333333)) + ((w >> np.uint64(2)) & np.uint64(0x3333333333333333))
    w = (w + (w >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((w * np.uint64(0x0101010101010101)) >> np.uint64(56))


@jit
def _next_block(home, c, blocks, settled, in_run, k, end, home_left):  # type: ignore[no-untyped-def]
    """Counter ``c``'s next block in order, its home row's or the table's (``blocks[k:end]``,
    sorted; ``home_left``: its home row's is still to come): block (-1: none left), its two
    words, and the new ``k`` and ``home_left``."""
    if home_left and (k == end or np.int64(home[c, 0]) - 1 < blocks[k]):
        return np.int64(home[c, 0]) - 1, home[c, 1], home[c, 2], k, False
    if k < end:
        return blocks[k], settled[k], in_run[k], k + 1, home_left
    return np.int64(-1), _EMPTY, _EMPTY, k, home_left


@jit
def _emit(c, low, high, previous, count, out):  # type: ignore[no-untyped-def]
    """Held seqs ``low`` to ``high`` after the held seq ``previous``: the seqs missing
    between them, if any, as row ``count`` of ``out``.  The new previous and count (-1:
    ``out`` was full)."""
    if previous >= 0 and low > previous + 1:
        if count == out.shape[0]:
            return previous, np.int64(-1)
        out[count, 0], out[count, 1], out[count, 2] = c, previous + 1, low - 1
        count += 1
    return high, count


@jit
def _seq_gaps(home, owners, blocks, settled, in_run, order, lowest, out):  # type: ignore[no-untyped-def]
    """The runs of seqs missing between two held seqs of each counter of ``order``, in
    that order: rows (counter, first missing, last missing) of ``out`` (as many as it
    holds); how many.  ``owners``, ``blocks``, ``settled``, ``in_run``: the table's blocks
    sorted by counter and block.  A counter's held seqs, in order: its bits below its
    span, its span less the seqs it misses, its bits above it."""
    count = np.int64(0)
    for c in order:
        start = np.searchsorted(owners, c)
        end = np.searchsorted(owners, c, side="right")
        spanned = home[c, 4] != _EMPTY
        first = np.int64(home[c, 3]) if spanned else _FAR
        stop = np.int64(home[c, 4]) if spanned else _FAR
        previous = np.int64(-1)
        for part in range(3):
            if part == 1 and not spanned:
                continue
            k, home_left, cursor = start, home[c, 0] != _EMPTY, first
            while True:
                block, bits, run_bits, k, home_left = _next_block(home, c, blocks, settled,
                                                                  in_run, k, end, home_left)
                if block < 0:
                    break
                if part == 1:
                    word = bits & ~run_bits & _span_bits(block, first, stop)  # what it misses
                    while word != _EMPTY:
                        missing = block * 64 + _lowest_bit(word, lowest)
                        word &= word - np.uint64(1)
                        if missing > cursor:
                            previous, count = _emit(c, cursor, missing - 1, previous, count, out)
                            if count < 0:
                                return out.shape[0]
                        cursor = missing + 1
                else:
                    word = (bits | run_bits) & (_span_bits(block, np.int64(0), first) if part == 0
                                                else _span_bits(block, stop, _FAR))
                    while word != _EMPTY:
                        seq = block * 64 + _lowest_bit(word, lowest)
                        word &= word - np.uint64(1)
                        previous, count = _emit(c, seq, seq, previous, count, out)
                        if count < 0:
                            return out.shape[0]
            if part == 1 and cursor < stop:
                previous, count = _emit(c, cursor, stop - 1, previous, count, out)
                if count < 0:
                    return out.shape[0]
    return count


@jit
def _take_span(c, block, word, lowest, count, low, high):  # type: ignore[no-untyped-def]
    """Add the seqs of ``word`` (block ``block``) to counter ``c``'s count and span."""
    count[c] += _bit_count(word)
    low[c] = min(low[c], block * 64 + _lowest_bit(word, lowest))
    high[c] = max(high[c], block * 64 + _highest_bit(word))


@jit
def _take_block(c, block, bits, run_bits, home, lowest, count, low, high):  # type: ignore[no-untyped-def]
    """Add the held seqs of counter ``c``'s block ``block`` outside its span, and take off
    those its span misses."""
    span = _span_bits(block, np.int64(home[c, 3]), np.int64(home[c, 4]))
    outside = (bits | run_bits) & ~span
    if outside != _EMPTY:
        _take_span(c, block, outside, lowest, count, low, high)
    count[c] -= _bit_count(bits & ~run_bits & span)


@jit
def _seq_spans(home, table, wanted, lowest, count, low, high):  # type: ignore[no-untyped-def]
    """How many seqs each wanted counter holds, and its lowest and highest (a span's first
    and last seqs are held)."""
    for c in range(min(home.shape[0], wanted.shape[0])):
        if wanted[c] and home[c, 4] != _EMPTY:
            count[c] += np.int64(home[c, 4] - home[c, 3])
            low[c] = min(low[c], np.int64(home[c, 3]))
            high[c] = max(high[c], np.int64(home[c, 4]) - 1)
        if wanted[c] and home[c, 0] != _EMPTY:
            _take_block(c, np.int64(home[c, 0]) - 1, home[c, 1], home[c, 2], home, lowest,
                        count, low, high)
    for at in range(table.shape[0]):
        if table[at, 0] != _EMPTY:
            owner = np.int64(table[at, 0] >> np.uint64(32)) - 1
            if owner < wanted.shape[0] and wanted[owner]:
                _take_block(owner, np.int64(table[at, 0] & np.uint64(0xFFFFFFFF)),
                            table[at, 1], table[at, 2], home, lowest, count, low, high)


@jit
def _seq_plan(home, table, owners, blocks, settled, lowest, limit, first_out, stop_out):  # type: ignore[no-untyped-def]
    """Each counter's new span (before the run): from its lowest held seq to its highest,
    when the seqs it would take in that are not held (and so become seqs it misses) are
    at most ``limit``; else its span up to its highest seq, when that takes in no more
    (a seq far below it, or seqs below a jump it made earlier, stay as bits); else its
    last run of consecutive held seqs.  ``owners``, ``blocks``, ``settled``: the blocks
    of ``table`` sorted by counter and block."""
    k = 0
    for c in range(home.shape[0]):
        start = k
        while k < owners.shape[0] and owners[k] == c:
            k += 1
        end = k
        first_out[c], stop_out[c] = np.int64(home[c, 3]), np.int64(home[c, 4])
        if home[c, 0] == _EMPTY:
            continue  # no bits: nothing to take in
        spanned = home[c, 4] != _EMPTY
        first = np.int64(home[c, 3]) if spanned else _FAR
        stop = np.int64(home[c, 4]) if spanned else np.int64(0)
        low, high, outside, above = first, stop - 1, np.int64(0), np.int64(0)
        j, home_left = start, True
        while True:  # (``settled`` stands in for the run's words: none at a compaction)
            block, bits, _, j, home_left = _next_block(home, c, blocks, settled, settled, j,
                                                       end, home_left)
            if block < 0:
                break
            word = bits & ~_span_bits(block, first, stop)
            if word != _EMPTY:
                low = min(low, block * 64 + _lowest_bit(word, lowest))
                high = max(high, block * 64 + _highest_bit(word))
                outside += _bit_count(word)
                above += _bit_count(word & _span_bits(block, stop, _FAR))
        if high < 0:
            continue  # nothing held
        taken_in = high - low + 1  # the seqs outside the span the new one takes in
        if spanned:
            taken_in -= stop - first
        if taken_in - outside <= limit:
            first_out[c], stop_out[c] = low, high + 1
            continue
        if spanned and high + 1 - stop - above <= limit:  # (high < stop: nothing above)
            first_out[c], stop_out[c] = first, max(stop, high + 1)
            continue
        run_first = high  # the last run: down from the highest held seq
        while run_first > 0:
            block = (run_first - 1) >> 6
            bits, _ = _words_of(home, table, c, np.uint64(block))
            top = (bits ^ _span_bits(block, first, stop)) << np.uint64(
                63 - ((run_first - 1) & 63))  # the held seqs from run_first - 1 down
            ones = np.int64(64) if ~top == _EMPTY else 63 - _highest_bit(~top)
            run_first -= ones
            if ones == 0 or run_first & 63 != 0:
                break
        first_out[c], stop_out[c] = run_first, high + 1


@jit
def _seq_tidy(home, owners, blocks, settled):  # type: ignore[no-untyped-def]
    """Let go of the blocks with no bit left (``settled`` of the table's blocks sorted by
    counter and block, set to 0 where one moves home): a home row without bits takes the
    counter's highest block left, or is emptied."""
    k = 0
    for c in range(home.shape[0]):
        start = k
        while k < owners.shape[0] and owners[k] == c:
            k += 1
        if home[c, 0] != _EMPTY and home[c, 1] == _EMPTY and home[c, 2] == _EMPTY:
            home[c, 0] = _EMPTY
        j = k - 1
        while home[c, 0] == _EMPTY and j >= start:
            if settled[j] != _EMPTY:
                home[c, 0], home[c, 1], settled[j] = blocks[j] + 1, settled[j], _EMPTY
            j -= 1


def _interval_words(owner: np.ndarray, low: np.ndarray, high: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seqs ``low`` to ``high - 1`` of each counter ``owner`` as words: (counter,
    block, bits) rows, a row per block they reach."""
    low, high = low.astype(np.int64), high.astype(np.int64)
    count = np.where(high > low, ((high - 1) >> 6) - (low >> 6) + 1, 0)
    total = int(count.sum())
    rows = np.repeat(np.arange(len(owner)), count)
    block = np.arange(total) - np.repeat(np.cumsum(count) - count, count) + (low >> 6)[rows]
    start = block * 64
    below = np.maximum(low[rows], start) - start
    width = np.minimum(high[rows], start + 64) - start - below
    ones = np.where(width == 64, ~np.uint64(0),
                    (np.uint64(1) << (width % 64).astype(np.uint64)) - np.uint64(1))
    return owner[rows], block, ones << below.astype(np.uint64)


def _by_counter(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Table rows (key, bits...) sorted by counter, then block; with each one's counter
    and block."""
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    return (rows, (rows[:, 0] >> np.uint64(32)).astype(np.int64) - 1,
            (rows[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.int64))


SPAN_MISSES = 1 << 16
"""At most this many seqs missing are taken into a span at once (`SeqSet.compact`)."""
_FLIPS = 1 << 16
"""Counters whose spans change, taken at a time (`SeqSet.compact`)."""


class SeqSet:
    """Settled seqs (up to 2³² - 1) of numbered counters (0 to 2³² - 2), each marked as
    settled before this run or in it.  Each counter has a home row (found by its
    number) holding a span of seqs settled before the run (`compact` folds them into it)
    and one block of 64 seqs as bits; its other blocks are in a hash table.  A bit of a
    seq settled before the run means held outside the span and missing inside it (a bit
    of the run's own seqs means held).  A counter's seqs follow one another, so once
    compacted a history of any length takes its home row, and blocks only for the seqs
    its span misses (records rejected, or not arrived) and for the seqs since."""

    def __init__(self) -> None:
        self._home = np.zeros((1024, 5), np.uint64)
        """Per counter: block + 1 (0: none), its bits settled before the run, its bits
        settled in it, the span's first seq, the span's end (its last seq + 1; 0: no span)."""
        self._table = np.zeros((_size_for(1024), 3), np.uint64)
        self._count = 0

    def test(self, owner: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each (counter, seq) was settled before this run, and in it (counter
        -1: never seen, neither)."""
        n = len(owner)
        before, run = np.empty(n, np.bool_), np.empty(n, np.bool_)
        _seq_test(self._home, self._table, np.ascontiguousarray(owner, np.int64),
                  np.ascontiguousarray(seq, np.int64), before, run)
        return before, run

    def add(self, owner: np.ndarray, seq: np.ndarray, *, in_run: bool) -> None:
        owner = self._room_for(owner)
        self._count += int(_seq_add(self._home, self._table, owner,
                                    np.ascontiguousarray(seq, np.int64), 2 if in_run else 1))

    def _room_for(self, owner: np.ndarray) -> np.ndarray:
        """Home rows for the counters ``owner`` and table room for as many blocks more."""
        owner = np.ascontiguousarray(owner, np.int64)
        if len(owner):
            self._home = grown(self._home, int(owner.max()) + 1)
        if (self._count + len(owner)) * 10 > len(self._table) * 7:
            old = self._table
            self._table = np.zeros((_size_for(self._count + len(owner)), 3), np.uint64)
            _seq_rehash(old, self._table)
        return owner

    def _before_only(self) -> np.ndarray:
        """The table's used rows; `ValueError` when a seq is marked as settled in the run."""
        used: np.ndarray = self._table[self._table[:, 0] != _EMPTY]
        if self._home[:, 2].any() or used[:, 2].any():
            raise ValueError("seqs of this run are marked: not a state before the run")
        return used

    def compact(self, limit: int = SPAN_MISSES) -> None:
        """Fold each counter's seqs settled before the run into its span, from its lowest
        to its highest: the blocks of bits go, and the seqs the span misses are kept as
        bits instead (a seq settled later fills its place).  When more than ``limit`` seqs
        would be missed (a jump in a counter's seqs), the span is its last run of
        consecutive seqs, and the seqs below it stay as bits.  Only before the run (no seq
        marked as settled in it: `ValueError`)."""
        used, owners, blocks = _by_counter(self._before_only())
        count = len(self._home)
        first, stop = np.empty(count, np.int64), np.empty(count, np.int64)
        _seq_plan(self._home, self._table, owners, blocks, np.ascontiguousarray(used[:, 1]),
                  _LOWEST_BIT, limit, first, stop)
        was_first, was_stop = self._home[:, 3].astype(np.int64), self._home[:, 4].astype(np.int64)
        changed = np.flatnonzero((first != was_first) | (stop != was_stop))
        for at in range(0, len(changed), _FLIPS):  # a few counters at a time: few words held
            some = changed[at:at + _FLIPS]
            ends = np.sort(np.column_stack([was_first[some], was_stop[some], first[some],
                                            stop[some]]), axis=1)
            # the seqs in one span and not the other change meaning: [p1, p2) and [p3, p4)
            owner, block, words = _interval_words(np.concatenate([some, some]),
                                                  np.concatenate([ends[:, 0], ends[:, 2]]),
                                                  np.concatenate([ends[:, 1], ends[:, 3]]))
            owner = self._room_for(owner)
            self._count += int(_seq_flip(self._home, self._table, owner, block, words))
            self._home[some, 3], self._home[some, 4] = first[some], stop[some]
        used, owners, blocks = _by_counter(self._table[self._table[:, 0] != _EMPTY])
        settled = np.ascontiguousarray(used[:, 1])
        _seq_tidy(self._home, owners, blocks, settled)
        kept = settled != _EMPTY
        self._set_table(np.column_stack([used[kept, 0], settled[kept]]))

    def _set_table(self, blocks: np.ndarray) -> None:
        """The table of other blocks holding ``blocks`` (rows: key, bits before the run)."""
        rows = np.zeros((len(blocks), 3), np.uint64)
        rows[:, :2] = blocks
        self._table = np.zeros((_size_for(max(len(blocks), 1024)), 3), np.uint64)
        _seq_rehash(rows, self._table)
        self._count = len(blocks)

    def settled_before(self) -> tuple[np.ndarray, np.ndarray]:
        """The seqs settled before this run, for `restored`: ``uint64[C, 4]`` home rows
        (block + 1, or 0 for none; its bits; the span's first seq and end, 0 for none)
        and ``uint64[B, 2]`` other blocks (key, bits).  Only when no seq is marked as
        settled in this run (`ValueError`)."""
        used = self._before_only()
        last = np.flatnonzero((self._home[:, 0] != _EMPTY) | (self._home[:, 4] != _EMPTY))
        home = self._home[:last[-1] + 1 if len(last) else 0][:, [0, 1, 3, 4]]
        return home, used[:, :2].copy()

    @classmethod
    def restored(cls, home: np.ndarray, blocks: np.ndarray) -> SeqSet:
        """The set `settled_before` gave (every seq marked as settled before the run)."""
        seqs = cls()
        seqs._home = np.zeros((max(len(home), 1024), 5), np.uint64)
        seqs._home[:len(home)][:, [0, 1, 3, 4]] = home
        seqs._set_table(blocks)
        return seqs

    def gaps(self, order: np.ndarray, limit: int = 10_000) -> np.ndarray:
        """The seqs missing between two held ones (before this run or in it) of the
        counters ``order``, in that order and by seq: ``int64[G, 3]`` rows (counter, first
        missing seq, last missing seq), at most ``limit``."""
        order = np.ascontiguousarray(order, np.int64)
        order = order[(order >= 0) & (order < len(self._home))]
        chosen = np.zeros(len(self._home), bool)
        chosen[order] = True
        taken = self._table[:, 0] != _EMPTY
        owner = (self._table[taken, 0] >> np.uint64(32)).astype(np.int64) - 1
        taken[taken] = chosen[owner]
        used, owners, blocks = _by_counter(self._table[taken])
        # each gap is followed by a held seq: no more gaps than the chosen blocks hold seqs
        out = np.empty((min(limit, 64 * (len(used) + len(order))), 3), np.int64)
        count = _seq_gaps(self._home, owners, blocks, np.ascontiguousarray(used[:, 1]),
                          np.ascontiguousarray(used[:, 2]), order, _LOWEST_BIT, out)
        return out[:count]

    def with_gaps(self, counters: np.ndarray) -> np.ndarray:
        """Those of ``counters`` with a seq missing between two held ones (without listing
        them: a counter holds a gap when it holds fewer seqs than its span)."""
        counters = np.ascontiguousarray(counters, np.int64)
        counters = counters[(counters >= 0) & (counters < len(self._home))]
        wanted = np.zeros(int(counters.max()) + 1 if len(counters) else 0, bool)
        wanted[counters] = True
        count = np.zeros(len(wanted), np.int64)
        low = np.full(len(wanted), np.iinfo(np.int64).max)
        high = np.full(len(wanted), -1, np.int64)
        _seq_spans(self._home, self._table, wanted, _LOWEST_BIT, count, low, high)
        return np.flatnonzero(wanted & (count > 0) & (count < high - low + 1))
