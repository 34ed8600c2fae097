"""The per-process cache of cards' TAC keys gives the keys `tac_keys` derives, whatever it
holds: over batches that repeat cards, with cards of several master keys, when two
(master, card) keys share a 64-bit hash, and when it is full."""

from __future__ import annotations

import numpy as np
import pytest

from unioncard.crypto.tac_batch import tac_keys
from unioncard.settlement.tackeys import TacKeyCache


def batches(seed: int, count: int = 6, cards: int = 300, size: int = 500
            ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of records of ``cards`` cards under two or three of four master keys."""
    rng = np.random.default_rng(seed)
    everyone = rng.integers(0, 256, (cards, 8), dtype=np.uint8)
    masters = rng.integers(0, 256, (4, 16), dtype=np.uint8)
    out = []
    for _ in range(count):
        chosen = masters[rng.choice(4, int(rng.integers(2, 4)), replace=False)]
        out.append((chosen, rng.integers(0, len(chosen), size).astype(np.int64),
                    everyone[rng.integers(0, cards, size)]))
    return out


def expected(masters: np.ndarray, key_row: np.ndarray, cards: np.ndarray) -> np.ndarray:
    return np.asarray(tac_keys(masters, key_row, cards))


def test_the_cache_gives_the_derived_keys():
    cache = TacKeyCache()
    for masters, key_row, cards in batches(1):
        assert (cache.keys(masters, key_row, cards) == expected(masters, key_row, cards)).all()
    assert 300 < len(cache) <= 4 * 300  # each (master, card) kept once


def test_cards_whose_keys_share_a_hash_are_told_apart():
    """Cards of two master keys chosen so that (master, card) has one 64-bit hash: each
    gets its own key."""
    from unioncard.settlement.keyindex import _mix

    masters = np.random.default_rng(4).integers(0, 256, (2, 16), dtype=np.uint8)
    seed, inner = 0x9E3779B97F4A7C15, 0x0F1E_2D3C_4B5A_6978
    cards = np.array([int(_mix(np.uint64(seed ^ master))) ^ inner for master in (0, 1)],
                     "<u8").view(np.uint8).reshape(2, 8)
    key_row = np.array([0, 1, 1, 0], np.int64)
    cache = TacKeyCache()
    for _ in range(2):
        got = cache.keys(masters, key_row, cards[key_row])
        assert (got == expected(masters, key_row, cards[key_row])).all()
        assert (got[0] != got[1]).any() and len(cache) == 2


@pytest.mark.parametrize("limit", [0, 10])
def test_a_full_cache_still_gives_the_keys(limit):
    cache = TacKeyCache(limit=limit)
    for masters, key_row, cards in batches(3, count=3):
        assert (cache.keys(masters, key_row, cards) == expected(masters, key_row, cards)).all()
    assert len(cache) == limit


def test_no_records():
    masters = np.zeros((1, 16), np.uint8)
    keys = TacKeyCache().keys(masters, np.zeros(0, np.int64), np.zeros((0, 8), np.uint8))
    assert keys.shape == (0, 8)
