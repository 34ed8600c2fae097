"""Bitsliced DES: CBC-MACs of 64 messages at once, each under its own key (FIPS 46-3).

The fast path of the per-record MACs settlement verifies by the million (a TAC is a
single-DES CBC-MAC under the card's own key, docs/protocol.md §2.1, §2.4).  Table DES
(`unioncard.crypto.des_batch`) pays a key schedule per record and a chain of dependent
lookups per block; here 64 messages go through DES together as 64 "slices", one 64-bit
word per bit position, bit j of every word belonging to message j:

- a 64 x 64 bit-matrix transpose turns 64 keys or 64 blocks into slices and back;
- IP, FP, E, P and the key schedule are fixed permutations of slices: they cost
  nothing but the choice of which word to read (tables built from `des_tables`);
- the S-boxes are gate circuits over whole words (`unioncard.crypto._sbox_gates`,
  derived by `unioncard.crypto.sbox_circuits`): 685 gates for the eight S-boxes of a
  round of 64 blocks (about 800 instructions: an and-not is two), no table lookups;
- CBC chaining and the passes of triple DES stay in the IP domain (IP is a bit
  permutation, FP then IP is the identity), so each further block costs one permuted
  xor; decryption is the rounds with the subkeys last first.

`unioncard.crypto.des` (on `cryptography`) is the reference it agrees with, bit for
bit.  Numba is imported here, so only settlement imports this module.

>>> import numpy as np
>>> keys = np.array([0x133457799BBCDFF1], np.uint64)
>>> data = np.array([[0x0123456789ABCDEF]], np.uint64)
>>> f"{int(cbc_macs(keys, data)[0]):016X}"  # one block: DES itself (the textbook example)
'85E813540F0AB405'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from unioncard.crypto._sbox_gates import s1, s2, s3, s4, s5, s6, s7, s8
from unioncard.crypto.des_tables import IP, PC1, PC2, ROTATIONS, E, P
from unioncard.errors import CryptoError
from unioncard.jit import inline, jit

__all__ = ["cbc_mac_slices", "cbc_macs", "tdes_slices", "transpose64"]

U64 = npt.NDArray[np.uint64]


def _key_slices() -> npt.NDArray[np.int64]:
    """KEY_SLICE[r, k]: the key slice that is bit k + 1 of round r + 1's subkey (PC1,
    the rotations of C and D, PC2).  Slice t holds bit 64 - t of the key."""
    table = np.zeros((16, 48), np.int64)
    shift = 0
    for r in range(16):
        shift += ROTATIONS[r]
        for k, source in enumerate(PC2):
            j = source - 1  # bit of C‖D after the rotations, 0..55
            at = (j + shift) % 28 if j < 28 else 28 + (j - 28 + shift) % 28
            table[r, k] = 64 - PC1[at]
    return table


_IP_SLICE = np.array([64 - bit for bit in IP], np.int64)
"""Position i of IP(block) is block slice _IP_SLICE[i] (slice t holds bit 64 - t)."""
_FP_SOURCE = np.array([{bit - 1: i for i, bit in enumerate(IP)}[63 - t] for t in range(64)],
                      np.int64)
"""Block slice t after FP is position _FP_SOURCE[t] of the pre-output R16‖L16."""
_E = np.array([bit - 1 for bit in E], np.int64)
_TO_F = np.array([P.index(bit + 1) for bit in range(32)], np.int64)
"""S-box output bit q (0 = S1's first) lands on bit _TO_F[q] of f (P)."""
_KEY = _key_slices()


@inline
def _keyed(lr: Any, rb: int, key: Any, r: int, box: int) -> Any:
    """The six input words of S-box ``box``: E of R (at ``lr[rb:rb + 32]``) xor the subkey."""
    e = 6 * box
    return (lr[rb + _E[e]] ^ key[_KEY[r, e]], lr[rb + _E[e + 1]] ^ key[_KEY[r, e + 1]],
            lr[rb + _E[e + 2]] ^ key[_KEY[r, e + 2]], lr[rb + _E[e + 3]] ^ key[_KEY[r, e + 3]],
            lr[rb + _E[e + 4]] ^ key[_KEY[r, e + 4]], lr[rb + _E[e + 5]] ^ key[_KEY[r, e + 5]])


@inline
def _mix(lr: Any, lb: int, box: int, out: Any) -> None:
    """L (at ``lr[lb:lb + 32]``) ^= P of S-box ``box``'s four output words."""
    o0, o1, o2, o3 = out
    q = 4 * box
    lr[lb + _TO_F[q]] ^= o0
    lr[lb + _TO_F[q + 1]] ^= o1
    lr[lb + _TO_F[q + 2]] ^= o2
    lr[lb + _TO_F[q + 3]] ^= o3


@jit
def _rounds(lr: Any, key: Any, backward: bool = False) -> None:
    """The 16 rounds on ``lr`` (L0 at 0..31, R0 at 32..63, in IP order), keys ``key``
    (64 slices; ``backward``: the subkeys last first, which decrypts); ends with L16 at
    0..31 and R16 at 32..63.  Each round reads one half and xors f into the other, so
    the halves trade places without moving."""
    for r in range(16):
        k = 15 - r if backward else r
        rb = 32 - 32 * (r & 1)
        lb = 32 - rb
        _mix(lr, lb, 0, s1(_keyed(lr, rb, key, k, 0)))
        _mix(lr, lb, 1, s2(_keyed(lr, rb, key, k, 1)))
        _mix(lr, lb, 2, s3(_keyed(lr, rb, key, k, 2)))
        _mix(lr, lb, 3, s4(_keyed(lr, rb, key, k, 3)))
        _mix(lr, lb, 4, s5(_keyed(lr, rb, key, k, 4)))
        _mix(lr, lb, 5, s6(_keyed(lr, rb, key, k, 5)))
        _mix(lr, lb, 6, s7(_keyed(lr, rb, key, k, 6)))
        _mix(lr, lb, 7, s8(_keyed(lr, rb, key, k, 7)))


@jit
def _swap_halves(lr: Any) -> None:
    """(L16, R16) of one DES operation to (L0, R0) of the next: FP then IP is nothing."""
    for i in range(32):
        lr[i], lr[i + 32] = lr[i + 32], lr[i]


@jit
def _final(lr: Any, out: Any) -> None:
    """``out`` = FP of the pre-output R16‖L16 of ``lr``, as block slices."""
    for t in range(64):
        p = _FP_SOURCE[t]
        out[t] = lr[p + 32] if p < 32 else lr[p - 32]


@jit
def tdes_slices(block: Any, k1: Any, k2: Any, lr: Any) -> None:
    """Two-key triple DES (EDE) of 64 blocks in slices (``block``, in place), keys ``k1``
    and ``k2`` in slices; ``lr`` is ``uint64[64]`` scratch."""
    for i in range(64):
        lr[i] = block[_IP_SLICE[i]]
    _rounds(lr, k1)
    _swap_halves(lr)
    _rounds(lr, k2, True)
    _swap_halves(lr)
    _rounds(lr, k1)
    _final(lr, block)


@jit
def transpose64(a: Any) -> None:
    """Transpose the 64 x 64 bit matrix ``a`` (``uint64[64]``, bit j of word i is element
    (i, j)) in place: six rounds of swapping blocks of bits (Hacker's Delight, 7-3)."""
    j = 32
    m = np.uint64(0x00000000FFFFFFFF)
    while j:
        shift = np.uint64(j)
        k = 0
        while k < 64:
            t = ((a[k] >> shift) ^ a[k + j]) & m
            a[k + j] ^= t
            a[k] ^= t << shift
            k = (k + j + 1) & ~j
        j >>= 1
        m ^= m << np.uint64(j)


@jit
def cbc_mac_slices(key: Any, data: Any, blocks: int, mac: Any, work: Any) -> None:
    """Single-DES CBC with a zero IV of 64 messages: ``data[j, b]`` is block b of message
    j (``uint64``, big-endian: the first byte is the top one), ``key`` the messages' keys
    as slices (``key[t]``: bit 64 - t of every message's key, `transpose64` of the keys);
    the last cipher blocks go to ``mac[j]``.  ``work`` is ``uint64[2, 64]`` scratch."""
    lr, slices = work[0], work[1]
    lr[:] = 0
    for b in range(blocks):
        for j in range(64):
            slices[j] = data[j, b]
        transpose64(slices)
        for i in range(32):  # IP(previous cipher block xor this block), halves swapped back
            low, high = lr[i], lr[i + 32]
            lr[i] = high ^ slices[_IP_SLICE[i]]
            lr[i + 32] = low ^ slices[_IP_SLICE[i + 32]]
        _rounds(lr, key)
    _final(lr, mac)
    transpose64(mac)


@jit
def _cbc_macs_kernel(keys: Any, data: Any, out: Any) -> None:
    n, blocks = data.shape
    key = np.empty(64, np.uint64)
    mac = np.empty(64, np.uint64)
    lanes = np.empty((64, blocks), np.uint64)
    work = np.empty((2, 64), np.uint64)
    for g in range(0, n, 64):
        for j in range(64):  # past the end, lanes repeat the last message
            i = min(g + j, n - 1)
            key[j] = keys[i]
            for b in range(blocks):
                lanes[j, b] = data[i, b]
        transpose64(key)
        cbc_mac_slices(key, lanes, blocks, mac, work)
        for j in range(min(64, n - g)):
            out[g + j] = mac[j]


def cbc_macs(keys: npt.ArrayLike, data: npt.ArrayLike) -> U64:
    """The last block of single-DES CBC with a zero IV of each row of ``data``
    (``uint64[N, m]``, m >= 1 blocks, already padded) under its key ``keys[i]``
    (``uint64[N]``); blocks and keys as big-endian integers."""
    key_words, blocks = np.asarray(keys), np.asarray(data)
    if key_words.dtype != np.uint64 or key_words.ndim != 1:
        raise CryptoError(f"keys must be uint64[N], got {key_words.dtype} {key_words.shape}")
    if blocks.dtype != np.uint64 or blocks.ndim != 2 or blocks.shape[1] == 0:
        raise CryptoError(f"CBC data must be uint64[N, m], m >= 1, got {blocks.dtype} "
                          f"{blocks.shape}")
    if blocks.shape[0] != key_words.shape[0]:
        raise CryptoError(f"{key_words.shape[0]} keys for {blocks.shape[0]} messages")
    out = np.empty(key_words.shape[0], np.uint64)
    if out.size:
        _cbc_macs_kernel(np.ascontiguousarray(key_words), np.ascontiguousarray(blocks), out)
    return out
