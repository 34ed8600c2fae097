"""Cards' TAC keys, derived once per process (docs/protocol.md §2.2-§2.3).

A card taps many times a day, at many terminals: its TAC key (the DTK diversified
from its issuer's TAC master key, halves folded) is needed in many batch files.
`TacKeyCache` keeps the keys it derived, by (master key, diversifier), so each batch
derives only the cards not seen before (`unioncard.crypto.tac_batch.tac_keys_distinct`)
and gathers the others (`KeyedRows`: keys compared whole, each card's key in its slot);
the cache stops growing at ``limit`` cards (a million by default: about 80 MB with its
index, 110 MB for a moment while its table grows to hold them), after which new cards
are derived every time.

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

from unioncard.settlement.keyindex import KeyedRows

__all__ = ["TAC_KEYS", "TacKeyCache"]


class TacKeyCache:
    """TAC keys by (master key, card diversifier); thread-safe."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._masters: dict[bytes, int] = {}
        self._cards = KeyedRows(2, payload=1)
        """(master number, diversifier) → the card's TAC key, as one word."""

    def __len__(self) -> int:
        return len(self._cards)

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
        cards = np.empty((n, 2), np.uint64)
        cards[:, 1] = np.ascontiguousarray(diversifiers, np.uint8).view("<u8").reshape(n)
        out = np.empty((n, 8), np.uint8)
        words = out.view("<u8").reshape(n)
        with self._lock:
            ids = np.array([self._masters.setdefault(bytes(m), len(self._masters))
                            for m in masters], np.uint64)
            cards[:, 0] = ids[key_row] if n else 0
            found, held = self._cards.find(cards, payload=True)
            hit = found >= 0
            words[hit] = held[hit, 0]
            missing = np.flatnonzero(~hit)
            if missing.size:
                out[missing] = tac_keys_distinct(masters, key_row[missing],
                                                 diversifiers[missing])
                kept = missing[:max(0, self.limit - len(self._cards))]
                added = self._cards.add(cards[kept])
                self._cards.set_payload(added, words[kept])
        return out


TAC_KEYS = TacKeyCache()
"""This process's cache (each Dask worker process has its own)."""
