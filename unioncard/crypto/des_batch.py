"""DES and two-key triple DES on many 8-byte blocks at once: numba kernels (FIPS 46-3).

The bulk counterpart of `unioncard.crypto.des` (docs/protocol.md §2.1), for settlement,
which verifies millions of TACs a day.  `unioncard.crypto.des` (on `cryptography`) is the
reference these kernels agree with, bit for bit.  Numba is imported here, so only
settlement imports this module: the terminal never does.

The classic fast software DES, built from the FIPS 46-3 tables at import:

- the key schedule is computed once per key: PC-1 by one table lookup per key byte,
  PC-2 by eight lookups of 7 bits of C or D per round, and each round's 48 bits are
  stored "cooked" as two 32-bit words, the 6-bit groups of S1 S3 S5 S7 and of
  S2 S4 S6 S8 in the low 6 bits of each byte;
- a block's halves go through IP and FP with the standard bit-swapping steps and are
  kept rotated left by one bit, so E is a rotation and eight combined S-box+P
  ("SP") table lookups make each round;
- four independent blocks go through the rounds side by side (`des_rounds4`);
- triple DES stays in the IP domain between DES operations (IP and FP are bit
  permutations, so FP then IP is the identity).

Those suit many blocks under few keys (ECB; the key derivation of
`unioncard.crypto.tac_batch.tac_keys`).  CBC-MACs with a key per row
(`des_cbc_mac_blocks`) go through bitsliced DES instead (`unioncard.crypto.des_bitslice`),
which pays no key schedule.

Schedules are ``uint32[K, 32]`` (DES) or ``uint32[K, 96]`` (3DES: K1 forward, K2
backward, K1 forward).  Blocks are ``uint8[N, 8]``.  Row ``i`` of the blocks uses
schedule row 0 when K is 1, row ``i`` when K is N, or row ``key_index[i]``.

>>> import numpy as np
>>> key = np.frombuffer(bytes.fromhex("133457799BBCDFF1"), np.uint8).reshape(1, 8)
>>> block = np.frombuffer(bytes.fromhex("0123456789ABCDEF"), np.uint8).reshape(1, 8)
>>> des_encrypt_blocks(des_key_schedule(key), block).tobytes().hex().upper()
'85E813540F0AB405'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from unioncard.crypto.des_bitslice import cbc_macs
from unioncard.crypto.des_tables import PC1 as _PC1
from unioncard.crypto.des_tables import PC2 as _PC2
from unioncard.crypto.des_tables import ROTATIONS as _ROTATIONS
from unioncard.crypto.des_tables import P as _P
from unioncard.crypto.des_tables import sbox
from unioncard.errors import CryptoError
from unioncard.jit import jit

__all__ = [
    "DES_WORDS",
    "TDES_WORDS",
    "byte_rows",
    "des_cbc_mac_blocks",
    "des_decrypt_blocks",
    "des_encrypt_blocks",
    "des_key_schedule",
    "des_rounds4",
    "final_permutation",
    "initial_permutation",
    "kernel_array",
    "key_schedule_into",
    "load_word",
    "store_word",
    "tdes_decrypt_blocks",
    "tdes_encrypt_blocks",
    "tdes_key_schedule",
]

DES_WORDS = 32
"""Words of one DES key schedule: 16 rounds of two cooked 32-bit words."""
TDES_WORDS = 96
"""Words of one two-key triple-DES schedule: K1 encrypting, K2 decrypting, K1 encrypting."""

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]

_M32 = 0xFFFFFFFF
_M28 = 0x0FFFFFFF


def _bit(value: int, position: int, width: int) -> int:
    """Bit ``position`` (1 = most significant) of a ``width``-bit value."""
    return (value >> (width - position)) & 1


def _rotl32(value: int, n: int) -> int:
    return ((value << n) | (value >> (32 - n))) & _M32


def _sp_table() -> npt.NDArray[np.int64]:
    """SP[64 * (k - 1) + v]: P applied to S-box k's output for the 6-bit input v, placed
    at S-box k's nibble, rotated left by one (the halves' representation)."""
    table = np.zeros(8 * 64, np.int64)
    for k in range(8):
        for v in range(64):
            s = sbox(k, v) << (28 - 4 * k)
            p = 0
            for i, src in enumerate(_P):
                p |= _bit(s, src, 32) << (31 - i)
            table[64 * k + v] = _rotl32(p, 1)
    return table


def _pc1_table() -> npt.NDArray[np.int64]:
    """PC1[256 * j + v]: key byte j equal to v, as its bits of C (bits 55..28) ‖ D (27..0)."""
    table = np.zeros(8 * 256, np.int64)
    for j in range(8):
        for v in range(256):
            cd = 0
            for i, src in enumerate(_PC1):
                if (src - 1) // 8 == j and _bit(v, (src - 1) % 8 + 1, 8):
                    cd |= 1 << (55 - i)
            table[256 * j + v] = cd
    return table


def _pc2_table() -> npt.NDArray[np.int64]:
    """PC2[128 * g + v]: 7-bit group g of C (g 0..3) or D (g 4..7) equal to v, as its
    bits of the round's cooked words (S1 S3 S5 S7 word << 32 | S2 S4 S6 S8 word)."""
    table = np.zeros(8 * 128, np.int64)
    for g in range(8):
        for v in range(128):
            words = 0
            for i, src in enumerate(_PC2):  # subkey bit i + 1 comes from C‖D bit src
                if (src - 1) // 7 == g and _bit(v, (src - 1) % 7 + 1, 7):
                    box, bit = divmod(i, 6)  # S-box box + 1, bit 0 = its input's MSB
                    byte = 3 - box // 2
                    shift = 8 * byte + 5 - bit + (32 if box % 2 == 0 else 0)
                    words |= 1 << shift
            table[128 * g + v] = words
    return table


SP = _sp_table()
PC1 = _pc1_table()
PC2 = _pc2_table()
ROTATIONS = np.array(_ROTATIONS, np.int64)


# ---- kernels ----
# int64 arithmetic throughout (values stay below 2**61; numba would turn a mix of unsigned
# and signed integers into floats).  Schedules are indexed as 2-D arrays by row: taking a
# row view per block would cost two reference-count updates in the inner loop.


@jit
def key_schedule_into(keys: Any, i: int, col: int, out: Any, row: int, base: int,
                      backward: bool) -> None:
    """Cook the DES key ``keys[i, col:col + 8]`` into ``out[row, base:base + 32]``; with
    ``backward`` the rounds are stored last first (a decryption schedule)."""
    cd = 0
    for j in range(8):
        cd |= PC1[256 * j + np.int64(keys[i, col + j])]
    c = cd >> 28
    d = cd & _M28
    for r in range(16):
        s = ROTATIONS[r]
        c = ((c << s) | (c >> (28 - s))) & _M28
        d = ((d << s) | (d >> (28 - s))) & _M28
        t = (PC2[c >> 21] | PC2[128 + ((c >> 14) & 127)] | PC2[256 + ((c >> 7) & 127)]
             | PC2[384 + (c & 127)] | PC2[512 + (d >> 21)] | PC2[640 + ((d >> 14) & 127)]
             | PC2[768 + ((d >> 7) & 127)] | PC2[896 + (d & 127)])
        p = base + 2 * (15 - r if backward else r)
        out[row, p] = t >> 32
        out[row, p + 1] = t & _M32


@jit
def initial_permutation(hi: int, lo: int) -> tuple[int, int]:
    """IP of the block ``hi‖lo``: the halves L0, R0, each rotated left by one bit."""
    w = ((hi >> 4) ^ lo) & 0x0F0F0F0F
    lo ^= w
    hi ^= w << 4
    w = ((hi >> 16) ^ lo) & 0x0000FFFF
    lo ^= w
    hi ^= w << 16
    w = ((lo >> 2) ^ hi) & 0x33333333
    hi ^= w
    lo ^= w << 2
    w = ((lo >> 8) ^ hi) & 0x00FF00FF
    hi ^= w
    lo ^= w << 8
    lo = ((lo << 1) | (lo >> 31)) & _M32
    w = (hi ^ lo) & 0xAAAAAAAA
    hi ^= w
    lo ^= w
    hi = ((hi << 1) | (hi >> 31)) & _M32
    return hi, lo


@jit
def final_permutation(left: int, right: int) -> tuple[int, int]:
    """FP of the pre-output R16‖L16, from the rounds' (L16, R16): the block as hi, lo."""
    right = ((right << 31) | (right >> 1)) & _M32
    w = (left ^ right) & 0xAAAAAAAA
    left ^= w
    right ^= w
    left = ((left << 31) | (left >> 1)) & _M32
    w = ((left >> 8) ^ right) & 0x00FF00FF
    right ^= w
    left ^= w << 8
    w = ((left >> 2) ^ right) & 0x33333333
    right ^= w
    left ^= w << 2
    w = ((right >> 16) ^ left) & 0x0000FFFF
    left ^= w
    right ^= w << 16
    w = ((right >> 4) ^ left) & 0x0F0F0F0F
    left ^= w
    right ^= w << 4
    return right, left


@jit
def _odd(w: int) -> int:
    """S1 S3 S5 S7 and P of E(R) xor K: ``w`` holds R rotated right by four, keyed."""
    return int(SP[(w >> 24) & 63] | SP[128 + ((w >> 16) & 63)]
               | SP[256 + ((w >> 8) & 63)] | SP[384 + (w & 63)])


@jit
def _even(w: int) -> int:
    """S2 S4 S6 S8 and P of E(R) xor K: ``w`` holds R, keyed."""
    return int(SP[64 + ((w >> 24) & 63)] | SP[192 + ((w >> 16) & 63)]
               | SP[320 + ((w >> 8) & 63)] | SP[448 + (w & 63)])


@jit
def _rot(x: int) -> int:
    """Rotate right by four (bits above 32 are never looked up)."""
    return (x << 28) | (x >> 4)


@jit
def des_rounds4(l0: int, r0: int, l1: int, r1: int, l2: int, r2: int, l3: int, r3: int,
                ks: Any, a0: int, a1: int, a2: int, a3: int, base: int,
                ) -> tuple[int, int, int, int, int, int, int, int]:
    """The 16 rounds of four independent blocks, block j (halves ``lj``, ``rj`` from
    `initial_permutation`) with the cooked schedule ``ks[aj, base:base + 32]``; returns
    each block's (L16, R16).  Feeding (R16, L16) back in runs the next DES operation
    without FP and IP between.

    One block's rounds are a chain of dependent table lookups; four chains side by side
    keep the processor's load units busy (about twice the rate of one chain).
    """
    for k in range(base, base + 32, 4):
        f0 = _odd(_rot(r0) ^ np.int64(ks[a0, k]))
        f1 = _odd(_rot(r1) ^ np.int64(ks[a1, k]))
        f2 = _odd(_rot(r2) ^ np.int64(ks[a2, k]))
        f3 = _odd(_rot(r3) ^ np.int64(ks[a3, k]))
        l0 ^= f0 | _even(r0 ^ np.int64(ks[a0, k + 1]))
        l1 ^= f1 | _even(r1 ^ np.int64(ks[a1, k + 1]))
        l2 ^= f2 | _even(r2 ^ np.int64(ks[a2, k + 1]))
        l3 ^= f3 | _even(r3 ^ np.int64(ks[a3, k + 1]))
        f0 = _odd(_rot(l0) ^ np.int64(ks[a0, k + 2]))
        f1 = _odd(_rot(l1) ^ np.int64(ks[a1, k + 2]))
        f2 = _odd(_rot(l2) ^ np.int64(ks[a2, k + 2]))
        f3 = _odd(_rot(l3) ^ np.int64(ks[a3, k + 2]))
        r0 ^= f0 | _even(l0 ^ np.int64(ks[a0, k + 3]))
        r1 ^= f1 | _even(l1 ^ np.int64(ks[a1, k + 3]))
        r2 ^= f2 | _even(l2 ^ np.int64(ks[a2, k + 3]))
        r3 ^= f3 | _even(l3 ^ np.int64(ks[a3, k + 3]))
    return l0, r0, l1, r1, l2, r2, l3, r3


@jit
def load_word(a: Any, i: int, j: int) -> int:
    """Big-endian 32-bit word of ``a[i, j:j + 4]``."""
    return int((np.int64(a[i, j]) << 24) | (np.int64(a[i, j + 1]) << 16)
               | (np.int64(a[i, j + 2]) << 8) | np.int64(a[i, j + 3]))


@jit
def store_word(out: Any, i: int, j: int, word: int) -> None:
    """``out[i, j:j + 4]`` = the 32-bit ``word``, big-endian."""
    out[i, j] = (word >> 24) & 255
    out[i, j + 1] = (word >> 16) & 255
    out[i, j + 2] = (word >> 8) & 255
    out[i, j + 3] = word & 255


@jit
def _store_block(out: Any, i: int, left: int, right: int) -> None:
    """``out[i, 0:8]`` = FP of the rounds' (L16, R16)."""
    hi, lo = final_permutation(left, right)
    store_word(out, i, 0, hi)
    store_word(out, i, 4, lo)


@jit
def _schedule_kernel(keys: Any, out: Any) -> None:
    for i in range(keys.shape[0]):
        key_schedule_into(keys, i, 0, out, i, 0, False)
        if keys.shape[1] == 16:  # two-key 3DES: K1, K2 backward, K1
            key_schedule_into(keys, i, 8, out, i, 32, True)
            for j in range(32):
                out[i, 64 + j] = out[i, j]


@jit
def _ecb_kernel(schedule: Any, mode: int, key_index: Any, blocks: Any, out: Any) -> None:
    """Four blocks at a time; past the end, lanes repeat the last block (same result)."""
    n = blocks.shape[0]
    passes = schedule.shape[1] // 32
    for i in range(0, n, 4):
        b0, b1, b2, b3 = i, min(i + 1, n - 1), min(i + 2, n - 1), min(i + 3, n - 1)
        if mode == 0:
            a0 = a1 = a2 = a3 = 0
        elif mode == 1:
            a0, a1, a2, a3 = b0, b1, b2, b3
        else:
            a0, a1, a2, a3 = key_index[b0], key_index[b1], key_index[b2], key_index[b3]
        l0, r0 = initial_permutation(load_word(blocks, b0, 0), load_word(blocks, b0, 4))
        l1, r1 = initial_permutation(load_word(blocks, b1, 0), load_word(blocks, b1, 4))
        l2, r2 = initial_permutation(load_word(blocks, b2, 0), load_word(blocks, b2, 4))
        l3, r3 = initial_permutation(load_word(blocks, b3, 0), load_word(blocks, b3, 4))
        l0, r0, l1, r1, l2, r2, l3, r3 = des_rounds4(l0, r0, l1, r1, l2, r2, l3, r3,
                                                     schedule, a0, a1, a2, a3, 0)
        for p in range(1, passes):  # the next DES operation starts from (R16, L16)
            l0, r0, l1, r1, l2, r2, l3, r3 = des_rounds4(r0, l0, r1, l1, r2, l2, r3, l3,
                                                         schedule, a0, a1, a2, a3, 32 * p)
        _store_block(out, b0, l0, r0)
        _store_block(out, b1, l1, r1)
        _store_block(out, b2, l2, r2)
        _store_block(out, b3, l3, r3)


# ---- array API ----


def kernel_array(values: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """``values`` as a C-contiguous, writable array of ``dtype`` (a copy only when needed).

    Every kernel argument goes through here: numba compiles one machine-code variant per
    combination of argument types, and read-only or strided inputs (a memory map, a field
    of a structured array, a broadcast row) would each add variants.
    """
    array = np.asarray(values)
    if array.dtype == dtype and array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, dtype=dtype, order="C")


def byte_rows(name: str, values: npt.ArrayLike, width: int) -> U8:
    """``values`` as a C-contiguous uint8 array of shape (N, ``width``) (keys, blocks);
    `CryptoError` naming ``name`` otherwise."""
    array = np.asarray(values)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != width:
        raise CryptoError(f"{name} must be a uint8 array of shape (N, {width}), "
                          f"got {array.dtype} {array.shape}")
    return kernel_array(array, np.uint8)


def _schedule(name: str, values: npt.ArrayLike, words: int) -> U32:
    array = np.asarray(values)
    if array.dtype != np.uint32 or array.ndim != 2 or array.shape[1] != words:
        raise CryptoError(f"{name} must be a uint32 schedule of shape (K, {words}), "
                          f"got {array.dtype} {array.shape}")
    if array.shape[0] == 0:
        raise CryptoError(f"{name} holds no key")
    return kernel_array(array, np.uint32)


def _selector(count: int, rows: int, key_index: npt.ArrayLike | None,
              ) -> tuple[int, npt.NDArray[np.int64]]:
    """(mode, key index) of `_ecb_kernel`: one key for all, one per row, or an index."""
    if key_index is None:
        if count == 1:
            return 0, np.zeros(0, np.int64)
        if count == rows:
            return 1, np.zeros(0, np.int64)
        raise CryptoError(f"{count} keys for {rows} blocks: give a key_index")
    index = np.asarray(key_index)
    if index.shape != (rows,) or index.dtype.kind not in "iu":
        raise CryptoError(f"key_index must be {rows} integers, got {index.dtype} {index.shape}")
    if rows and (int(index.min()) < 0 or int(index.max()) >= count):
        raise CryptoError(f"key_index must lie in 0..{count - 1}")
    return 2, kernel_array(index, np.int64)


def _backward(schedule: U32) -> U32:
    """The schedule that decrypts: its rounds (pairs of words) last first."""
    count, words = schedule.shape
    return kernel_array(schedule.reshape(count, words // 2, 2)[:, ::-1].reshape(count, words),
                        np.uint32)


def _ecb(schedule: U32, blocks: npt.ArrayLike, key_index: npt.ArrayLike | None) -> U8:
    data = byte_rows("blocks", blocks, 8)
    mode, index = _selector(schedule.shape[0], data.shape[0], key_index)
    out = np.empty_like(data)
    _ecb_kernel(schedule, mode, index, data, out)
    return out


def des_key_schedule(keys: npt.ArrayLike) -> U32:
    """Cooked DES schedules ``uint32[N, 32]`` of the keys ``uint8[N, 8]`` (parity ignored)."""
    data = byte_rows("DES keys", keys, 8)
    out = np.empty((data.shape[0], DES_WORDS), np.uint32)
    _schedule_kernel(data, out)
    return out


def tdes_key_schedule(keys: npt.ArrayLike) -> U32:
    """Two-key 3DES (EDE) schedules ``uint32[N, 96]`` of the keys ``uint8[N, 16]``."""
    data = byte_rows("3DES keys", keys, 16)
    out = np.empty((data.shape[0], TDES_WORDS), np.uint32)
    _schedule_kernel(data, out)
    return out


def des_encrypt_blocks(schedule: npt.ArrayLike, blocks: npt.ArrayLike,
                       key_index: npt.ArrayLike | None = None) -> U8:
    """Single-DES ECB encryption of ``uint8[N, 8]`` blocks with `des_key_schedule` rows."""
    return _ecb(_schedule("DES schedule", schedule, DES_WORDS), blocks, key_index)


def des_decrypt_blocks(schedule: npt.ArrayLike, blocks: npt.ArrayLike,
                       key_index: npt.ArrayLike | None = None) -> U8:
    """Single-DES ECB decryption of ``uint8[N, 8]`` blocks with `des_key_schedule` rows."""
    return _ecb(_backward(_schedule("DES schedule", schedule, DES_WORDS)), blocks, key_index)


def tdes_encrypt_blocks(schedule: npt.ArrayLike, blocks: npt.ArrayLike,
                        key_index: npt.ArrayLike | None = None) -> U8:
    """Two-key 3DES (EDE) ECB encryption with `tdes_key_schedule` rows (docs/protocol.md
    §2.1)."""
    return _ecb(_schedule("3DES schedule", schedule, TDES_WORDS), blocks, key_index)


def tdes_decrypt_blocks(schedule: npt.ArrayLike, blocks: npt.ArrayLike,
                        key_index: npt.ArrayLike | None = None) -> U8:
    """Two-key 3DES (EDE) ECB decryption with `tdes_key_schedule` rows."""
    return _ecb(_backward(_schedule("3DES schedule", schedule, TDES_WORDS)), blocks, key_index)


def des_cbc_mac_blocks(keys: npt.ArrayLike, data: npt.ArrayLike) -> U8:
    """The last block of single-DES CBC with a zero IV, one 8-byte key per row: ``keys``
    ``uint8[N, 8]``, ``data`` ``uint8[N, 8m]`` already padded (docs/protocol.md §2.1).
    Bitsliced: `unioncard.crypto.des_bitslice`, 64 rows at a time."""
    key_rows = byte_rows("DES keys", keys, 8)
    rows = np.asarray(data)
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] % 8 or rows.shape[1] == 0:
        raise CryptoError(f"CBC data must be a uint8 array of shape (N, 8m), m >= 1, "
                          f"got {rows.dtype} {rows.shape}")
    if rows.shape[0] != key_rows.shape[0]:
        raise CryptoError(f"{key_rows.shape[0]} keys for {rows.shape[0]} rows of data")
    words = np.ascontiguousarray(rows).view(">u8").astype(np.uint64)
    macs = cbc_macs(key_rows.view(">u8").reshape(-1).astype(np.uint64), words)
    return macs.astype(">u8").view(np.uint8).reshape(-1, 8)
