"""TACs of many offline records at once: the settlement's fast path (docs/protocol.md §2).

The bulk counterpart of `unioncard.crypto.purse`, on the numba kernels of
`unioncard.crypto.des_batch` (keys computed apart: `diversify_keys`, `tac_keys`) and
`unioncard.crypto.des_bitslice` (TACs, and the keys `verify_card_tacs` derives in the
same pass), agreeing with it bit for bit:

- `diversify_keys`, `tac_keys`: card keys ``3DES(MK, F) ‖ 3DES(MK, F xor FF..FF)``
  (§2.2) and TAC keys ``DTK[0:8] xor DTK[8:16]`` (§2.3), from a few master keys
  ``uint8[M, 16]`` chosen per record by ``key_index``; `tac_keys_distinct` derives each
  distinct (key index, diversifier) once and scatters the keys back (a card taps many
  times a day);
- `purchase_tacs`, `load_tacs`: the PBOC MAC (§2.1) over the TAC input of §2.4, one TAC
  key per record; `verify_tacs` checks a batch of purchases and loads against the TACs
  the records carry (docs/records.md); `verify_card_tacs` does too, deriving each
  record's TAC key from its master and card in the same bitsliced pass.

Inputs are numpy columns, one row per record: integers as integer arrays (amount,
balance and terminal seq up to 32 bits, online seq 16 bits, type 8 bits; values out of
range raise `CryptoError`), byte fields as ``uint8[N, width]`` (terminal id 6, BCD date
4, BCD time 3; one row of shape ``(width,)`` stands for every record).  Numba is
imported here, so only settlement imports this module.

>>> import numpy as np
>>> rows = lambda *hexes: np.array([list(bytes.fromhex(h)) for h in hexes], np.uint8)
>>> keys = tac_keys(rows("606162636465666768696A6B6C6D6E6F"), [0], rows("5500000000000042"))
>>> keys.tobytes().hex().upper()
'B4A3FE0349C75A35'
>>> purchase_tacs(keys, [180], [0x06], rows("310100001234"), [0x00012345],
...               rows("20260315"), rows("083015")).tobytes().hex().upper()
'CC970111'
>>> verify_card_tacs(rows("CC970111"), rows("606162636465666768696A6B6C6D6E6F"), [0],
...                  rows("5500000000000042"), tx_type=[0x06], amount=[180],
...                  terminal_id=rows("310100001234"), terminal_seq=[0x00012345],
...                  date=rows("20260315"), time=rows("083015"), balance_after=[0],
...                  card_seq=[0]).tolist()
[True]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from unioncard.crypto.des_batch import (
    byte_rows,
    des_cbc_mac_blocks,
    des_rounds4,
    final_permutation,
    initial_permutation,
    kernel_array,
    load_word,
    store_word,
    tdes_key_schedule,
)
from unioncard.crypto.des_bitslice import cbc_mac_slices, tdes_slices, transpose64
from unioncard.errors import CryptoError
from unioncard.jit import jit

__all__ = [
    "EP_LOAD",
    "diversify_keys",
    "load_tacs",
    "pboc_macs",
    "purchase_tacs",
    "tac_keys",
    "tac_keys_distinct",
    "verify_card_tacs",
    "verify_tacs",
]

EP_LOAD = 0x02
"""The transaction type whose records carry a load TAC; every other type, a purchase TAC."""

U8 = npt.NDArray[np.uint8]
_M32 = 0xFFFFFFFF


# ---- kernels ----


@jit
def _diversify_kernel(schedule: Any, key_index: Any, diversifiers: Any, out: Any,
                      fold: bool) -> None:
    """3DES(MK, F) and 3DES(MK, ~F) of two records at a time (four DES chains); ``fold``
    writes their xor (the TAC key), otherwise both halves (the card key)."""
    n = diversifiers.shape[0]
    for i in range(0, n, 2):
        b0, b1 = i, min(i + 1, n - 1)
        a0, a1 = key_index[b0], key_index[b1]
        l0, r0 = initial_permutation(load_word(diversifiers, b0, 0),
                                     load_word(diversifiers, b0, 4))
        l2, r2 = initial_permutation(load_word(diversifiers, b1, 0),
                                     load_word(diversifiers, b1, 4))
        l1, r1, l3, r3 = l0 ^ _M32, r0 ^ _M32, l2 ^ _M32, r2 ^ _M32  # IP(~F) = ~IP(F)
        l0, r0, l1, r1, l2, r2, l3, r3 = des_rounds4(l0, r0, l1, r1, l2, r2, l3, r3,
                                                     schedule, a0, a0, a1, a1, 0)
        for p in (32, 64):
            l0, r0, l1, r1, l2, r2, l3, r3 = des_rounds4(r0, l0, r1, l1, r2, l2, r3, l3,
                                                         schedule, a0, a0, a1, a1, p)
        h0, g0 = final_permutation(l0, r0)
        h1, g1 = final_permutation(l1, r1)
        h2, g2 = final_permutation(l2, r2)
        h3, g3 = final_permutation(l3, r3)
        if fold:
            store_word(out, b0, 0, h0 ^ h1)
            store_word(out, b0, 4, g0 ^ g1)
            store_word(out, b1, 0, h2 ^ h3)
            store_word(out, b1, 4, g2 ^ g3)
        else:
            store_word(out, b0, 0, h0)
            store_word(out, b0, 4, g0)
            store_word(out, b0, 8, h1)
            store_word(out, b0, 12, g1)
            store_word(out, b1, 0, h2)
            store_word(out, b1, 4, g2)
            store_word(out, b1, 8, h3)
            store_word(out, b1, 12, g3)


@jit
def _purchase_words(msg: Any, j: int, r: int, amount: Any, tx_type: Any, terminal_id: Any,
                    terminal_seq: Any, date: Any, time: Any) -> None:
    """msg[j, 0:6]: amount(4) type(1) terminal id(6) terminal seq(4) date(4) time(3) 80 00."""
    seq = np.int64(terminal_seq[r])
    msg[j, 0] = np.int64(amount[r])
    msg[j, 1] = ((np.int64(tx_type[r]) << 24) | (np.int64(terminal_id[r, 0]) << 16)
                 | (np.int64(terminal_id[r, 1]) << 8) | np.int64(terminal_id[r, 2]))
    msg[j, 2] = ((np.int64(terminal_id[r, 3]) << 24) | (np.int64(terminal_id[r, 4]) << 16)
                 | (np.int64(terminal_id[r, 5]) << 8) | (seq >> 24))
    msg[j, 3] = ((seq & 0xFFFFFF) << 8) | np.int64(date[r, 0])
    msg[j, 4] = ((np.int64(date[r, 1]) << 24) | (np.int64(date[r, 2]) << 16)
                 | (np.int64(date[r, 3]) << 8) | np.int64(time[r, 0]))
    msg[j, 5] = (np.int64(time[r, 1]) << 24) | (np.int64(time[r, 2]) << 16) | 0x8000


@jit
def _load_words(msg: Any, j: int, r: int, new_balance: Any, online_seq: Any, amount: Any,
                tx_type: Any, terminal_id: Any, date: Any, time: Any) -> None:
    """msg[j, 0:8]: new balance(4) online seq(2) amount(4) type(1) terminal id(6) date(4)
    time(3), then the block 80 00 .. 00."""
    value = np.int64(amount[r])
    msg[j, 0] = np.int64(new_balance[r])
    msg[j, 1] = (np.int64(online_seq[r]) << 16) | (value >> 16)
    msg[j, 2] = (((value & 0xFFFF) << 16) | (np.int64(tx_type[r]) << 8)
                 | np.int64(terminal_id[r, 0]))
    msg[j, 3] = load_word(terminal_id, r, 1)
    msg[j, 4] = ((np.int64(terminal_id[r, 5]) << 24) | (np.int64(date[r, 0]) << 16)
                 | (np.int64(date[r, 1]) << 8) | np.int64(date[r, 2]))
    msg[j, 5] = ((np.int64(date[r, 3]) << 24) | (np.int64(time[r, 0]) << 16)
                 | (np.int64(time[r, 1]) << 8) | np.int64(time[r, 2]))
    msg[j, 6] = 0x80000000
    msg[j, 7] = 0


@jit
def _tac_kernel(keys: Any, masters: Any, key_index: Any, diversifiers: Any, rows: Any,
                load: bool, amount: Any, tx_type: Any, terminal_id: Any, terminal_seq: Any,
                date: Any, time: Any, new_balance: Any, online_seq: Any, out: Any) -> None:
    """The TACs of records ``rows`` (all purchases, or all loads), 64 records at a time
    through bitsliced DES (`des_bitslice`); past the end, lanes repeat the last record.
    Each record's TAC key is ``keys[r]``, or, when ``keys`` has no rows, derived in the
    same pass from its master ``masters[key_index[r]]`` and ``diversifiers[r]`` (§2.2,
    §2.3: two 3DES blocks, in slices, their xor the key's slices)."""
    n = rows.shape[0]
    derive = keys.shape[0] == 0
    msg = np.zeros((64, 8), np.int64)
    data = np.empty((64, 4), np.uint64)
    key = np.empty(64, np.uint64)
    k1 = np.empty(64, np.uint64)
    k2 = np.empty(64, np.uint64)
    right = np.empty(64, np.uint64)
    mac = np.empty(64, np.uint64)
    work = np.empty((2, 64), np.uint64)
    blocks = 4 if load else 3
    for g in range(0, n, 64):
        for j in range(64):
            r = rows[min(g + j, n - 1)]
            if derive:
                m = key_index[r]
                k1[j] = _word64(masters, m, 0)
                k2[j] = _word64(masters, m, 8)
                key[j] = _word64(diversifiers, r, 0)
            else:
                key[j] = _word64(keys, r, 0)
            if load:
                _load_words(msg, j, r, new_balance, online_seq, amount, tx_type, terminal_id,
                            date, time)
            else:
                _purchase_words(msg, j, r, amount, tx_type, terminal_id, terminal_seq, date,
                                time)
            for b in range(blocks):
                data[j, b] = (np.uint64(msg[j, 2 * b]) << np.uint64(32)) | np.uint64(
                    msg[j, 2 * b + 1])
        transpose64(key)
        if derive:  # key: the diversifiers' slices; DTK = 3DES(MK, F) ‖ 3DES(MK, ~F)
            transpose64(k1)
            transpose64(k2)
            for t in range(64):
                right[t] = ~key[t]
            tdes_slices(key, k1, k2, work[0])
            tdes_slices(right, k1, k2, work[0])
            for t in range(64):
                key[t] ^= right[t]  # the TAC key: DTK's halves xored
        cbc_mac_slices(key, data, blocks, mac, work)
        for j in range(min(64, n - g)):
            store_word(out, rows[g + j], 0, np.int64(mac[j] >> np.uint64(32)))


@jit
def _word64(a: Any, i: int, j: int) -> Any:
    """Big-endian 64-bit word of ``a[i, j:j + 8]``, as ``uint64``."""
    return (np.uint64(load_word(a, i, j)) << np.uint64(32)) | np.uint64(load_word(a, i, j + 4))


# ---- columns ----


def _bytes(name: str, values: npt.ArrayLike, rows: int, width: int) -> U8:
    """``uint8[rows, width]``; one row of shape ``(width,)`` is repeated."""
    array = np.asarray(values)
    if array.dtype != np.uint8:
        raise CryptoError(f"{name} must be uint8 bytes, got {array.dtype}")
    if array.shape == (width,):
        array = np.broadcast_to(array, (rows, width))
    if array.shape != (rows, width):
        raise CryptoError(f"{name} must have shape ({rows}, {width}), got {array.shape}")
    return kernel_array(array, np.uint8)


def _integers(name: str, values: npt.ArrayLike, rows: int, bits: int) -> npt.NDArray[Any]:
    """An unsigned column of ``bits`` bits (8, 16 or 32); a scalar is repeated."""
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.broadcast_to(array, (rows,))
    if array.shape != (rows,) or array.dtype.kind not in "iu":
        raise CryptoError(f"{name} must be {rows} integers, got {array.dtype} {array.shape}")
    dtype = np.dtype(f"uint{bits}")
    fits = array.dtype.kind == "u" and array.dtype.itemsize * 8 <= bits
    if not fits and rows and (int(array.min()) < 0 or int(array.max()) >= 1 << bits):
        raise CryptoError(f"{name} must lie in 0..{(1 << bits) - 1}")
    return kernel_array(array, dtype)


def _index(key_index: npt.ArrayLike, rows: int, count: int) -> npt.NDArray[np.int64]:
    """The master key of each row, 0..count - 1; one integer stands for every row."""
    index = np.asarray(key_index)
    if index.ndim == 0:
        index = np.broadcast_to(index, (rows,))
    if index.shape != (rows,) or index.dtype.kind not in "iu":
        raise CryptoError(f"key_index must be {rows} integers, got {index.dtype} {index.shape}")
    if rows and (int(index.min()) < 0 or int(index.max()) >= count):
        raise CryptoError(f"key_index must lie in 0..{count - 1}")
    return kernel_array(index, np.int64)


def _masters(master_keys: npt.ArrayLike) -> U8:
    masters = byte_rows("master keys", master_keys, 16)
    if masters.shape[0] == 0:
        raise CryptoError("no master key given")
    return masters


def _derive(masters: U8, index: npt.NDArray[np.int64], divs: U8, fold: bool) -> U8:
    out = np.empty((divs.shape[0], 8 if fold else 16), np.uint8)
    _diversify_kernel(tdes_key_schedule(masters), index, divs, out, fold)
    return out


# ---- API ----


def diversify_keys(master_keys: npt.ArrayLike, key_index: npt.ArrayLike,
                   diversifiers: npt.ArrayLike) -> U8:
    """Card keys ``uint8[N, 16]``: ``3DES(MK, F) ‖ 3DES(MK, F xor FF..FF)`` with
    ``MK = master_keys[key_index[i]]`` and F the row's diversifier (docs/protocol.md §2.2)."""
    masters, divs = _masters(master_keys), byte_rows("diversifiers", diversifiers, 8)
    return _derive(masters, _index(key_index, divs.shape[0], masters.shape[0]), divs, False)


def tac_keys(master_tac_keys: npt.ArrayLike, key_index: npt.ArrayLike,
             diversifiers: npt.ArrayLike) -> U8:
    """TAC keys ``uint8[N, 8]``: the DTK diversified from ``master_tac_keys[key_index[i]]``
    (``uint8[M, 16]``) and the diversifier, left half xor right half (docs/protocol.md
    §2.2, §2.3).  ``key_index`` may be one integer for every record."""
    masters, divs = _masters(master_tac_keys), byte_rows("diversifiers", diversifiers, 8)
    return _derive(masters, _index(key_index, divs.shape[0], masters.shape[0]), divs, True)


def tac_keys_distinct(master_tac_keys: npt.ArrayLike, key_index: npt.ArrayLike,
                      diversifiers: npt.ArrayLike) -> U8:
    """`tac_keys`, deriving each distinct (key index, diversifier) once: per key index,
    sort the diversifiers, derive the first record of each run, scatter the keys back.
    Pays when cards repeat (a card taps many times a day)."""
    masters, divs = _masters(master_tac_keys), byte_rows("diversifiers", diversifiers, 8)
    n = divs.shape[0]
    index = _index(key_index, n, masters.shape[0])
    card = divs.view(np.uint64).reshape(n)  # the diversifier as one sortable integer
    out = np.empty((n, 8), np.uint8)
    counts = np.bincount(index, minlength=masters.shape[0])
    for m in np.flatnonzero(counts):
        rows = np.arange(n) if counts[m] == n else np.flatnonzero(index == m)
        order = rows[np.argsort(card[rows])]
        ranked = card[order]
        first = np.empty(order.size, bool)
        first[0] = True
        np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
        leaders = order[first]
        distinct = _derive(masters, np.full(leaders.size, m, np.int64), divs[leaders], True)
        out[order] = distinct[np.cumsum(first) - 1]
    return out


def pboc_macs(keys: npt.ArrayLike, data: npt.ArrayLike, length: int = 4) -> U8:
    """The PBOC MAC (docs/protocol.md §2.1) of each row of ``data`` ``uint8[N, L]`` (all
    rows of one length) under its 8-byte key: ``80`` padding, single-DES CBC, zero IV,
    the leftmost ``length`` bytes."""
    if not 4 <= length <= 8:
        raise CryptoError(f"a DES MAC has 4 to 8 bytes, asked for {length}")
    rows = np.asarray(data)
    if rows.dtype != np.uint8 or rows.ndim != 2:
        raise CryptoError(f"MAC data must be a uint8 array of shape (N, L), got {rows.dtype} "
                          f"{rows.shape}")
    padded = np.zeros((rows.shape[0], (rows.shape[1] // 8 + 1) * 8), np.uint8)
    padded[:, :rows.shape[1]] = rows
    padded[:, rows.shape[1]] = 0x80
    return des_cbc_mac_blocks(keys, padded)[:, :length].copy()


class _Derived(NamedTuple):
    """Where each record's TAC key comes from when none is given: its master and card."""

    masters: U8
    key_index: npt.NDArray[np.int64]
    diversifiers: U8


_NO_KEYS = np.zeros((0, 8), np.uint8)
_NOT_DERIVED = _Derived(np.zeros((0, 16), np.uint8), np.zeros(0, np.int64), _NO_KEYS)
"""What `_tac_kernel` is given for the kind of key it does not use."""


def _tacs(keys: U8 | _Derived, rows: npt.NDArray[np.int64], load: bool,
          columns: dict[str, Any], out: U8) -> None:
    n = len(columns["amount"])
    unused32 = np.zeros(n, np.uint32)
    given, derived = (_NO_KEYS, keys) if isinstance(keys, _Derived) else (keys, _NOT_DERIVED)
    _tac_kernel(given, *derived, rows, load, columns["amount"], columns["tx_type"],
                columns["terminal_id"], columns.get("terminal_seq", unused32), columns["date"],
                columns["time"], columns.get("new_balance", unused32),
                columns.get("online_seq", np.zeros(n, np.uint16)), out)


def _common(n: int, amount: npt.ArrayLike, tx_type: npt.ArrayLike,
            terminal_id: npt.ArrayLike, date: npt.ArrayLike, time: npt.ArrayLike,
            ) -> dict[str, Any]:
    return {
        "amount": _integers("amount", amount, n, 32),
        "tx_type": _integers("transaction type", tx_type, n, 8),
        "terminal_id": _bytes("terminal id", terminal_id, n, 6),
        "date": _bytes("date", date, n, 4),
        "time": _bytes("time", time, n, 3),
    }


def purchase_tacs(tac_keys: npt.ArrayLike, amount: npt.ArrayLike, tx_type: npt.ArrayLike,
                  terminal_id: npt.ArrayLike, terminal_seq: npt.ArrayLike, date: npt.ArrayLike,
                  time: npt.ArrayLike) -> U8:
    """Purchase TACs ``uint8[N, 4]``: the PBOC MAC under each 8-byte TAC key of amount(4)
    type(1) terminal id(6) terminal seq(4) date(4) time(3) (docs/protocol.md §2.4)."""
    keys = byte_rows("TAC keys", tac_keys, 8)
    n = keys.shape[0]
    columns = _common(n, amount, tx_type, terminal_id, date, time)
    columns["terminal_seq"] = _integers("terminal seq", terminal_seq, n, 32)
    out = np.empty((n, 4), np.uint8)
    _tacs(keys, np.arange(n, dtype=np.int64), False, columns, out)
    return out


def load_tacs(tac_keys: npt.ArrayLike, new_balance: npt.ArrayLike, online_seq: npt.ArrayLike,
              amount: npt.ArrayLike, tx_type: npt.ArrayLike, terminal_id: npt.ArrayLike,
              date: npt.ArrayLike, time: npt.ArrayLike) -> U8:
    """Load TACs ``uint8[N, 4]``: the PBOC MAC under each 8-byte TAC key of new balance(4)
    online seq(2) amount(4) type(1) terminal id(6) date(4) time(3) (docs/protocol.md
    §2.4)."""
    keys = byte_rows("TAC keys", tac_keys, 8)
    n = keys.shape[0]
    columns = _common(n, amount, tx_type, terminal_id, date, time)
    columns["new_balance"] = _integers("new balance", new_balance, n, 32)
    columns["online_seq"] = _integers("online seq", online_seq, n, 16)
    out = np.empty((n, 4), np.uint8)
    _tacs(keys, np.arange(n, dtype=np.int64), True, columns, out)
    return out


def verify_tacs(recorded: npt.ArrayLike, tac_keys: npt.ArrayLike, *, tx_type: npt.ArrayLike,
                amount: npt.ArrayLike, terminal_id: npt.ArrayLike,
                terminal_seq: npt.ArrayLike, date: npt.ArrayLike, time: npt.ArrayLike,
                balance_after: npt.ArrayLike, card_seq: npt.ArrayLike,
                ) -> npt.NDArray[np.bool_]:
    """Which records carry the right TAC, from the columns of offline records
    (docs/records.md): type `EP_LOAD` rows are checked as loads (new balance
    ``balance_after``, online seq ``card_seq``), all others as purchases (``terminal_seq``);
    ``amount`` is the charged amount.  A record flagged NO_TAC fails: mask it first."""
    keys = byte_rows("TAC keys", tac_keys, 8)
    return _verify(recorded, keys, keys.shape[0], tx_type=tx_type, amount=amount,
                   terminal_id=terminal_id, terminal_seq=terminal_seq, date=date, time=time,
                   balance_after=balance_after, card_seq=card_seq)


def verify_card_tacs(recorded: npt.ArrayLike, master_tac_keys: npt.ArrayLike,
                     key_index: npt.ArrayLike, diversifiers: npt.ArrayLike, *,
                     tx_type: npt.ArrayLike, amount: npt.ArrayLike,
                     terminal_id: npt.ArrayLike, terminal_seq: npt.ArrayLike,
                     date: npt.ArrayLike, time: npt.ArrayLike, balance_after: npt.ArrayLike,
                     card_seq: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """`verify_tacs` with each record's TAC key derived in the same bitsliced pass from
    its master ``master_tac_keys[key_index[i]]`` (``uint8[M, 16]``) and its card's
    ``diversifiers[i]`` (`tac_keys`, docs/protocol.md §2.2, §2.3): no key is computed
    apart, none is kept."""
    masters, divs = _masters(master_tac_keys), byte_rows("diversifiers", diversifiers, 8)
    n = divs.shape[0]
    derived = _Derived(masters, _index(key_index, n, masters.shape[0]), divs)
    return _verify(recorded, derived, n, tx_type=tx_type, amount=amount,
                   terminal_id=terminal_id, terminal_seq=terminal_seq, date=date, time=time,
                   balance_after=balance_after, card_seq=card_seq)


def _verify(recorded: npt.ArrayLike, keys: U8 | _Derived, n: int, *, tx_type: npt.ArrayLike,
            amount: npt.ArrayLike, terminal_id: npt.ArrayLike, terminal_seq: npt.ArrayLike,
            date: npt.ArrayLike, time: npt.ArrayLike, balance_after: npt.ArrayLike,
            card_seq: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    columns = _common(n, amount, tx_type, terminal_id, date, time)
    expected = _bytes("recorded TACs", recorded, n, 4)
    columns["terminal_seq"] = _integers("terminal seq", terminal_seq, n, 32)
    columns["new_balance"] = _integers("balance after", balance_after, n, 32)
    columns["online_seq"] = _integers("card seq", card_seq, n, 16)
    is_load = columns["tx_type"] == EP_LOAD
    out = np.empty((n, 4), np.uint8)
    for load, rows in ((False, np.flatnonzero(~is_load)), (True, np.flatnonzero(is_load))):
        if rows.size:
            _tacs(keys, rows.astype(np.int64), load, columns, out)
    same: npt.NDArray[np.bool_] = out.view("<u4").reshape(n) == expected.view("<u4").reshape(n)
    return same  # all 4 bytes equal
