"""Hash indexes in numba: what settlement looks records up in (docs/settlement.md).

`KeyedRows` numbers distinct keys of a few ``uint64`` fields (0, 1, ...): open
addressing with linear probing in power-of-two tables kept at most 70 % full, slots
found by a hash of the fields (SplitMix64's finalizer over them, as `mix64`), keys
compared whole (two keys with one hash are never confused); a batch of keys is looked
up or numbered in one numba call.

`SeqSet` says which seqs of a numbered counter were settled, and whether before this run
or in it: a bitmap word per counter and block of 64 seqs.  A counter's seqs follow one
another, so a day of records takes about a word per counter, not a slot per record:
replays and duplicates are found in memory that grows with the cards and terminals
seen, not with their records.

>>> seqs = SeqSet()
>>> seqs.add(np.array([0, 0, 3]), np.array([7, 8, 7]), in_run=False)
>>> seqs.add(np.array([3]), np.array([70]), in_run=True)
>>> [flags.tolist() for flags in seqs.test(np.array([0, 3, 3, 3]), np.array([8, 7, 70, 71]))]
[[True, True, False, False], [False, False, True, False]]
>>> seqs.gaps(np.array([3, 0])).tolist()  # counter, first and last seq missing
[[3, 8, 69]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unioncard.jit import jit

__all__ = ["KeyedRows", "SeqSet", "grown", "mix64", "previous_equal"]

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


def grown(values: np.ndarray, count: int, fill: Any = 0) -> np.ndarray:
    """``values``, or a copy with room for ``count`` rows (at least twice as many as it
    had; the new rows ``fill``)."""
    if len(values) >= count:
        return values
    out = np.empty((max(2 * len(values), count, 1024), *values.shape[1:]), values.dtype)
    out[:len(values)] = values
    out[len(values):] = fill
    return out


def _size_for(count: int) -> int:
    """The fewest slots (a power of two) that hold ``count`` keys at most 70 % full: a
    table that grows is then 35 % to 70 % full."""
    return 1 << max(4, ((count * 10 + 6) // 7 - 1).bit_length())


@jit
def _row_slot(slots, fields, keys, i, h):  # type: ignore[no-untyped-def]
    """The slot numbering key ``i`` (``keys[i]``, hash ``h``), or the empty one where it
    goes.  A slot holds the high half of its key's hash and the key's number + 1: the
    fields are read only where the halves agree, and compared whole."""
    mask = np.uint64(slots.shape[0] - 1)
    tag = h & np.uint64(0xFFFFFFFF00000000)
    at = h & mask
    while slots[at] != _EMPTY:
        if slots[at] & np.uint64(0xFFFFFFFF00000000) == tag:
            row = np.int64(slots[at] & np.uint64(0xFFFFFFFF)) - 1
            same = True
            for k in range(keys.shape[1]):
                if fields[row, k] != keys[i, k]:
                    same = False
                    break
            if same:
                return at
        at = (at + np.uint64(1)) & mask
    return at


@jit
def _rows_find(slots, fields, keys, out):  # type: ignore[no-untyped-def]
    for i in range(keys.shape[0]):
        at = _row_slot(slots, fields, keys, i, _row_hash(keys, i))
        out[i] = np.int64(slots[at] & np.uint64(0xFFFFFFFF)) - 1 if slots[at] != _EMPTY else -1


@jit
def _rows_add(slots, fields, count, keys, out):  # type: ignore[no-untyped-def]
    """Number the keys not held (fields appended from row ``count`` on); the new count."""
    for i in range(keys.shape[0]):
        h = _row_hash(keys, i)
        at = _row_slot(slots, fields, keys, i, h)
        if slots[at] == _EMPTY:
            for k in range(keys.shape[1]):
                fields[count, k] = keys[i, k]
            count += 1
            slots[at] = (h & np.uint64(0xFFFFFFFF00000000)) | np.uint64(count)
        out[i] = np.int64(slots[at] & np.uint64(0xFFFFFFFF)) - 1
    return count


@jit
def _rows_rehash(slots, fields, count):  # type: ignore[no-untyped-def]
    for row in range(count):
        h = _row_hash(fields, row)
        at = _row_slot(slots, fields, fields, row, h)
        slots[at] = (h & np.uint64(0xFFFFFFFF00000000)) | np.uint64(row + 1)


class KeyedRows:
    """Distinct keys of ``width`` ``uint64`` fields, numbered 0, 1, ... in order of
    arrival (at most 2³² - 1); `find` and `add` take ``uint64[N, width]`` and give each
    key's number (-1: absent).  Keys are compared whole: a hash only says where to look.
    Each key's row may carry ``payload`` more words (`payload`), read in the cache lines
    the lookup brought in.

    >>> counters = KeyedRows(2, payload=1)
    >>> numbers = counters.add(np.array([[7, 1], [8, 1], [7, 1]], np.uint64))
    >>> numbers.tolist()
    [0, 1, 0]
    >>> counters.payload()[numbers[1], 0] = 99
    >>> found = counters.find(np.array([[8, 1], [8, 2]], np.uint64))
    >>> found.tolist(), int(counters.payload()[found[0], 0])
    ([1, -1], 99)
    """

    def __init__(self, width: int, *, payload: int = 0) -> None:
        self._width = width
        self._fields = np.zeros((1024, width + payload), np.uint64)
        self._slots = np.zeros(_size_for(1024), np.uint64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def fields(self) -> np.ndarray:
        """The keys held, in order of their numbers."""
        return self._fields[:self._count, :self._width]

    def payload(self) -> np.ndarray:
        """The payload words of the keys held (a view: writing it keeps the words)."""
        return self._fields[:self._count, self._width:]

    def find(self, keys: np.ndarray) -> np.ndarray:
        keys = np.ascontiguousarray(keys, np.uint64)
        out = np.empty(len(keys), np.int64)
        _rows_find(self._slots, self._fields, keys, out)
        return out

    def add(self, keys: np.ndarray) -> np.ndarray:
        """The number of each key, numbering the keys not held yet (payload 0)."""
        keys = np.ascontiguousarray(keys, np.uint64)
        needed = self._count + len(keys)
        self._fields = grown(self._fields, needed)
        if needed * 10 > len(self._slots) * 7:
            self._slots = np.zeros(_size_for(max(needed, 2 * self._count)), np.uint64)
            _rows_rehash(self._slots, self._fields[:, :self._width], self._count)
        out = np.empty(len(keys), np.int64)
        self._count = int(_rows_add(self._slots, self._fields, self._count, keys, out))
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
def _seq_test(home, table, owner, seq, before, run):  # type: ignore[no-untyped-def]
    for i in range(owner.shape[0]):
        before[i] = run[i] = False
        o = owner[i]
        if o < 0 or o >= home.shape[0] or home[o, 0] == _EMPTY:
            continue
        block = np.uint64(seq[i]) >> np.uint64(6)
        bit = np.uint64(1) << (np.uint64(seq[i]) & np.uint64(63))
        if home[o, 0] == block + np.uint64(1):
            before[i] = (home[o, 1] & bit) != np.uint64(0)
            run[i] = (home[o, 2] & bit) != np.uint64(0)
        else:
            key = _seq_key(o, block)
            at = _seq_slot(table, key)
            if table[at, 0] == key:
                before[i] = (table[at, 1] & bit) != np.uint64(0)
                run[i] = (table[at, 2] & bit) != np.uint64(0)


@jit
def _seq_add(home, table, owner, seq, column):  # type: ignore[no-untyped-def]
    """Mark the seqs (``column`` 1: before the run, 2: in it); how many slots of the
    table of other blocks were taken."""
    taken = 0
    for i in range(owner.shape[0]):
        o = owner[i]
        block = np.uint64(seq[i]) >> np.uint64(6)
        bit = np.uint64(1) << (np.uint64(seq[i]) & np.uint64(63))
        if home[o, 0] == _EMPTY:
            home[o, 0] = block + np.uint64(1)
        if home[o, 0] == block + np.uint64(1):
            home[o, column] |= bit
            continue
        key = _seq_key(o, block)
        at = _seq_slot(table, key)
        if table[at, 0] == _EMPTY:
            table[at, 0] = key
            taken += 1
        table[at, column] |= bit
    return taken


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
def _seq_gaps(home, owners, blocks, words, order, lowest, out):  # type: ignore[no-untyped-def]
    """The runs of seqs missing between two held seqs of each counter of ``order``, in
    that order: rows (counter, first missing, last missing) of ``out`` (as many as it
    holds); how many.  ``owners``, ``blocks``, ``words``: the table's blocks sorted by
    counter and block."""
    count = 0
    for c in order:
        k = np.searchsorted(owners, c)
        end = np.searchsorted(owners, c, side="right")
        home_left = home[c, 0] != _EMPTY
        previous = np.int64(-1)
        while home_left or k < end:
            if home_left and (k == end or np.int64(home[c, 0]) - 1 < blocks[k]):
                block, word, home_left = np.int64(home[c, 0]) - 1, home[c, 1] | home[c, 2], False
            else:
                block, word = blocks[k], words[k]
                k += 1
            while word != _EMPTY:
                low = word & (~word + np.uint64(1))
                seq = block * 64 + lowest[(low * _DE_BRUIJN) >> np.uint64(58)]
                if previous >= 0 and seq > previous + 1:
                    if count == out.shape[0]:
                        return count
                    out[count, 0], out[count, 1], out[count, 2] = c, previous + 1, seq - 1
                    count += 1
                previous = seq
                word ^= low
    return count


class SeqSet:
    """Settled seqs (up to 2³² - 1) of numbered counters (0 to 2³² - 2), each marked as
    settled before this run or in it.  A counter's first block of 64 seqs is in its home
    row (found by its number); other blocks in a hash table."""

    def __init__(self) -> None:
        self._home = np.zeros((1024, 3), np.uint64)
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
        owner = np.ascontiguousarray(owner, np.int64)
        if len(owner):
            self._home = grown(self._home, int(owner.max()) + 1)
        if (self._count + len(owner)) * 10 > len(self._table) * 7:
            old = self._table
            self._table = np.zeros((_size_for(self._count + len(owner)), 3), np.uint64)
            _seq_rehash(old, self._table)
        self._count += int(_seq_add(self._home, self._table, owner,
                                    np.ascontiguousarray(seq, np.int64), 2 if in_run else 1))

    def gaps(self, order: np.ndarray, limit: int = 10_000) -> np.ndarray:
        """The seqs missing between two held ones (before this run or in it) of the
        counters ``order``, in that order and by seq: ``int64[G, 3]`` rows (counter, first
        missing seq, last missing seq), at most ``limit``."""
        used = self._table[self._table[:, 0] != _EMPTY]
        used = used[np.argsort(used[:, 0])]  # by counter, then block
        owners = (used[:, 0] >> np.uint64(32)).astype(np.int64) - 1
        blocks = (used[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        order = np.ascontiguousarray(order, np.int64)
        order = order[order < len(self._home)]
        out = np.empty((limit, 3), np.int64)
        count = _seq_gaps(self._home, owners, blocks, used[:, 1] | used[:, 2], order,
                          _LOWEST_BIT, out)
        return out[:count]
