"""A growable hash index of 64-bit keys in numba: what settlement looks records up in.

Replays and duplicates are found by two identities of a record (docs/settlement.md):
the card's (issuer, diversifier, purse, counter, seq) and the terminal's (terminal id,
kind, terminal seq).  `identity_hashes` folds each into 64 bits (SplitMix64's
finalizer over the fields); `KeyIndex` maps such hashes to the row of the entry
that holds the full identity, so a lookup that finds a hash is confirmed field by
field by the caller (two identities with one hash are told apart, never confused).

Open addressing with linear probing in power-of-two tables kept at most half full;
a batch of keys is inserted or looked up in one numba call.

>>> index = KeyIndex()
>>> index.insert(np.array([11, 22, 33], np.uint64), np.array([0, 1, 2], np.int64))
>>> index.find(np.array([22, 44], np.uint64)).tolist()
[1, -1]
"""

from __future__ import annotations

import numpy as np

from unioncard.jit import jit

__all__ = ["KeyIndex", "identity_hashes", "mix64", "previous_equal"]

_EMPTY = np.uint64(0)


@jit
def _mix(x):  # type: ignore[no-untyped-def]
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@jit
def _mix_columns(columns, out):  # type: ignore[no-untyped-def]
    for i in range(out.shape[0]):
        h = np.uint64(0x9E3779B97F4A7C15)
        for c in range(columns.shape[1]):
            h = _mix(h ^ columns[i, c])
        out[i] = h if h != np.uint64(0) else np.uint64(1)


def mix64(columns: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of ``uint64[N, k]`` (never 0: 0 marks an empty slot)."""
    columns = np.ascontiguousarray(columns, dtype=np.uint64)
    out = np.empty(columns.shape[0], np.uint64)
    _mix_columns(columns, out)
    return out


def identity_hashes(issuer: np.ndarray, diversifier: np.ndarray, application: np.ndarray,
                    is_load: np.ndarray, card_seq: np.ndarray, terminal: np.ndarray,
                    terminal_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The card identity's and the terminal identity's hash of each record; also the
    card-and-counter hash (without the seq), for proofs.  Arguments are columns."""
    kind = np.asarray(is_load, np.uint64)
    card = np.column_stack([issuer, diversifier,
                            (np.asarray(application, np.uint64) << np.uint64(8)) | kind,
                            np.asarray(card_seq, np.uint64)]).astype(np.uint64)
    term = np.column_stack([terminal, kind, np.asarray(terminal_seq, np.uint64)]
                           ).astype(np.uint64)
    return mix64(card), mix64(term)


@jit
def _counter_rows(issuer, diversifier, application, is_load, out):  # type: ignore[no-untyped-def]
    for i in range(out.shape[0]):
        h = _mix(np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(issuer[i]))
        h = _mix(h ^ np.uint64(diversifier[i]))
        h = _mix(h ^ ((np.uint64(application[i]) << np.uint64(8)) | np.uint64(is_load[i])))
        out[i] = h if h != np.uint64(0) else np.uint64(1)


def counter_hashes(issuer: np.ndarray, diversifier: np.ndarray, application: np.ndarray,
                   is_load: np.ndarray) -> np.ndarray:
    """A hash of each record's card and counter (purse and kind), without the seq: `mix64`
    of the columns issuer, diversifier, ``application << 8 | is_load``, in one pass.

    >>> columns = [np.array([7], np.uint64), np.array([9], np.uint64), np.array([1]), [True]]
    >>> counter_hashes(*columns) == mix64(np.array([[7, 9, 0x101]], np.uint64))
    array([ True])
    """
    out = np.empty(len(issuer), np.uint64)
    _counter_rows(np.asarray(issuer, np.uint64), np.asarray(diversifier, np.uint64),
                  np.asarray(application, np.uint64), np.asarray(is_load, np.uint64), out)
    return out


@jit
def _insert(slots, rows, keys, values):  # type: ignore[no-untyped-def]
    mask = np.uint64(slots.shape[0] - 1)
    added = 0
    for i in range(keys.shape[0]):
        key = keys[i]
        at = _mix(key) & mask
        while slots[at] != np.uint64(0) and slots[at] != key:
            at = (at + np.uint64(1)) & mask
        if slots[at] == np.uint64(0):
            slots[at] = key
            added += 1
        rows[at] = np.uint32(values[i])
    return added


@jit
def _find(slots, rows, keys, out):  # type: ignore[no-untyped-def]
    mask = np.uint64(slots.shape[0] - 1)
    for i in range(keys.shape[0]):
        key = keys[i]
        at = _mix(key) & mask
        out[i] = -1
        while slots[at] != np.uint64(0):
            if slots[at] == key:
                out[i] = np.int64(rows[at])
                break
            at = (at + np.uint64(1)) & mask


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


class KeyIndex:
    """Hash → row (0 to 2³² - 1); a key inserted again takes the new row.  12 bytes a
    slot, at most 70 % of the slots used."""

    def __init__(self, capacity: int = 1024) -> None:
        self._slots = np.zeros(_size_for(capacity), np.uint64)
        self._rows = np.zeros(len(self._slots), np.uint32)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def insert(self, keys: np.ndarray, rows: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, np.uint64)
        if (self._count + len(keys)) * 10 > len(self._slots) * 7:
            self._grow(self._count + len(keys))
        self._count += int(_insert(self._slots, self._rows, keys,
                                   np.ascontiguousarray(rows, np.int64)))

    def reserve(self, count: int) -> None:
        """Make room for ``count`` keys in all (inserting them then never grows the
        table, which rehashes every key held)."""
        if count * 10 > len(self._slots) * 7:
            self._grow(count)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The row of each key, -1 where absent."""
        keys = np.ascontiguousarray(keys, np.uint64)
        out = np.empty(len(keys), np.int64)
        _find(self._slots, self._rows, keys, out)
        return out

    def keys(self) -> np.ndarray:
        """The distinct keys held, in no particular order."""
        held: np.ndarray = self._slots[self._slots != _EMPTY]
        return held

    def _grow(self, needed: int) -> None:
        used = self._slots != _EMPTY
        keys, rows = self._slots[used], self._rows[used].astype(np.int64)
        del used
        self._slots = np.zeros(_size_for(needed), np.uint64)
        self._rows = np.zeros(len(self._slots), np.uint32)
        self._count = int(_insert(self._slots, self._rows, keys, rows))


def _size_for(count: int) -> int:
    """The fewest slots (a power of two) that hold ``count`` keys at most 70 % full: a
    table that grows is then 35 % to 70 % full."""
    return 1 << max(4, ((count * 10 + 6) // 7 - 1).bit_length())
