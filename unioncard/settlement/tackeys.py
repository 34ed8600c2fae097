"""Cards' TAC keys, derived once per process (docs/protocol.md §2.2-§2.3).

A card taps many times a day, at many terminals: its TAC key (the DTK diversified
from its issuer's TAC master key, halves folded) is needed in many batch files.
`TacKeyCache` keeps the keys it derived, by (master key, diversifier), so each batch
derives only the cards not seen before (`unioncard.crypto.tac_batch.tac_keys_distinct`)
and gathers the others.  A hit is confirmed field by field (a 64-bit hash is only
where to look); the cache stops growing at ``limit`` cards (a million by default: at
most about 80 MB with its index), after which new cards are derived every time.

>>> from unioncard.crypto.tac_batch import tac_keys
>>> masters = np.frombuffer(bytes(range(16)), np.uint8).reshape(1, 16)
>>> cards = np.frombuffer(bytes.fromhex("5500000000000001" + "5500000000000002" * 2),
...                       np.uint8).reshape(3, 8)
>>> cache = TacKeyCache()
>>> keys = cache.keys(masters, np.zeros(3, np.int64), cards)
>>> bool((keys == tac_keys(masters, 0, cards)).all()), len(cache)
(True, 2)
"""

from __future__ import annotations

import threading

import numpy as np

from unioncard.jit import jit
from unioncard.settlement.keyindex import KeyIndex, mix64

__all__ = ["TAC_KEYS", "TacKeyCache"]


@jit
def _gather(rows, master, card, held_master, held_card, held_keys, out, missing):  # type: ignore[no-untyped-def]
    """The held key of each record whose index row holds its master and card, into
    ``out``; the other records' indexes into ``missing``; returns how many those are."""
    count = 0
    for i in range(rows.shape[0]):
        row = rows[i]
        if row >= 0 and held_master[row] == master[i] and held_card[row] == card[i]:
            out[i] = held_keys[row]
        else:
            missing[count] = i
            count += 1
    return count


class TacKeyCache:
    """TAC keys by (master key, card diversifier); thread-safe."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._masters: dict[bytes, int] = {}
        self._index = KeyIndex()
        self._master = np.zeros(0, np.uint64)
        self._card = np.zeros(0, np.uint64)
        self._keys = np.zeros((0, 8), np.uint8)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        """Forget every key (as a new process would start)."""
        with self._lock:
            self.__init__(self.limit)  # type: ignore[misc]

    def keys(self, masters: np.ndarray, key_row: np.ndarray, diversifiers: np.ndarray
             ) -> np.ndarray:
        """The TAC key ``uint8[N, 8]`` of each record: master ``masters[key_row[i]]``
        (``uint8[M, 16]``), diversifier ``diversifiers[i]`` (``uint8[N, 8]``)."""
        from unioncard.crypto.tac_batch import tac_keys_distinct

        n = len(key_row)
        card = np.ascontiguousarray(diversifiers, np.uint8).view("<u8").reshape(n)
        with self._lock:
            ids = np.array([self._masters.setdefault(bytes(m), len(self._masters))
                            for m in masters], np.uint64)
            master = ids[key_row] if n else np.zeros(0, np.uint64)
            hashes = mix64(np.column_stack([master, card]))
            rows = self._index.find(hashes)
            out = np.empty((n, 8), np.uint8)
            missing = np.empty(n, np.int64)
            missing = missing[:_gather(rows, master, card, self._master, self._card,
                                       self._keys, out, missing)]
            if missing.size:
                out[missing] = tac_keys_distinct(masters, key_row[missing],
                                                 diversifiers[missing])
                self._remember(missing[rows[missing] < 0], hashes, master, card, out)
        return out

    def _remember(self, new: np.ndarray, hashes: np.ndarray, master: np.ndarray,
                  card: np.ndarray, keys: np.ndarray) -> None:
        """Keep the keys of rows ``new`` (their hash not in the index yet), while there is
        room."""
        room = self.limit - len(self)
        if not new.size or room <= 0:
            return
        _, first = np.unique(hashes[new], return_index=True)
        new = new[np.sort(first)][:room]
        base, end = self._count, self._count + new.size
        if end > len(self._card):  # room for twice as many
            size = max(1024, 2 * end)
            self._master = np.resize(self._master, size)
            self._card = np.resize(self._card, size)
            self._keys = np.resize(self._keys, (size, 8))
        self._master[base:end], self._card[base:end] = master[new], card[new]
        self._keys[base:end] = keys[new]
        self._count = end
        self._index.insert(hashes[new], np.arange(base, end, dtype=np.int64))


TAC_KEYS = TacKeyCache()
"""This process's cache (each Dask worker process has its own)."""
