"""Electronic purse keys and cryptograms (JR/T 0025 ED/EP; docs/protocol.md §2).

Pure functions on bytes.  Card keys are diversified from master keys in one
level; purchase and load session keys come from the card key and the
transaction's random and counters; MAC1, MAC2 and TAC are `pboc_mac` values
over the fields of the transaction, in the order docs/protocol.md §2 gives.  A CAPP
(composite) purchase uses the purchase functions with transaction type ``09``.

Amounts and counters are ints (amount and balance in fen, 4 bytes); terminal
ids (6 bytes), dates (BCD ``YYYYMMDD``, 4 bytes) and times (BCD ``HHMMSS``,
3 bytes) are bytes.

The public purchase vector of docs/protocol.md §2:

>>> dpk = bytes.fromhex("11223344556677888877665544332211")
>>> sespk = purchase_session_key(dpk, bytes.fromhex("11223344"), 0, 1)
>>> sespk.hex().upper()
'003238ABC57659DD'
>>> purchase_mac1(sespk, 0x1000, TransactionType.EP_PURCHASE, bytes.fromhex("001122334455"),
...               bytes.fromhex("20120229"), bytes.fromhex("135100")).hex().upper()
'F15CAB75'
>>> purchase_mac2(sespk, 0x1000).hex().upper()
'56988A13'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unioncard.apdu.purse import TransactionType
from unioncard.crypto.des import tdes_encrypt, xor
from unioncard.crypto.mac import pboc_mac, retail_mac
from unioncard.errors import CryptoError

__all__ = [
    "CardKeys",
    "TransactionType",
    "diversify",
    "load_mac1",
    "load_mac2",
    "load_session_key",
    "load_tac",
    "maintenance_mac",
    "purchase_mac1",
    "purchase_mac2",
    "purchase_session_key",
    "purchase_tac",
    "tac_key",
]


@dataclass(frozen=True, slots=True)
class CardKeys:
    """One card application's keys, diversified from a `PurseKeys`: DPK, DLK, DTK, maintenance."""

    key_version: int
    purchase: bytes = field(repr=False)
    load: bytes = field(repr=False)
    tac: bytes = field(repr=False)
    maintenance: bytes = field(repr=False)


def _fixed(name: str, value: bytes, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise CryptoError(f"{name} must be {size} bytes, got {got}")
    return bytes(value)


def _uint(name: str, value: int, size: int) -> bytes:
    if not isinstance(value, int) or not 0 <= value < 1 << (8 * size):
        raise CryptoError(f"{name} must be an unsigned {8 * size}-bit integer, got {value!r}")
    return value.to_bytes(size, "big")


def diversify(master_key: bytes, diversifier: bytes) -> bytes:
    """One-level card key: ``3DES(MK, F) ‖ 3DES(MK, F xor FF..FF)`` (docs/protocol.md §2).

    ``diversifier`` F is the card's 8 bytes (the rightmost 8 bytes of the transit
    application serial, or the ETC card number).  No parity adjustment.
    """
    mk = _fixed("master key", master_key, 16)
    f = _fixed("diversifier", diversifier, 8)
    return tdes_encrypt(mk, f) + tdes_encrypt(mk, xor(f, b"\xff" * 8))


def purchase_session_key(dpk: bytes, random: bytes, offline_seq: int, terminal_seq: int) -> bytes:
    """SESPK = 3DES(DPK, random(4) ‖ offline seq(2) ‖ terminal seq[2:4])."""
    data = (
        _fixed("card random", random, 4)
        + _uint("offline seq", offline_seq, 2)
        + _uint("terminal seq", terminal_seq, 4)[2:]
    )
    return tdes_encrypt(_fixed("purchase key", dpk, 16), data)


def load_session_key(dlk: bytes, random: bytes, online_seq: int) -> bytes:
    """SESLK = 3DES(DLK, random(4) ‖ online seq(2) ‖ 80 00)."""
    data = _fixed("card random", random, 4) + _uint("online seq", online_seq, 2) + b"\x80\x00"
    return tdes_encrypt(_fixed("load key", dlk, 16), data)


def tac_key(dtk: bytes) -> bytes:
    """The 8-byte TAC key: DTK[0:8] xor DTK[8:16]."""
    key = _fixed("TAC key", dtk, 16)
    return xor(key[:8], key[8:])


def _when(date: bytes, time: bytes) -> bytes:
    return _fixed("date", date, 4) + _fixed("time", time, 3)


def _transaction_fields(amount: int, tx_type: int, terminal_id: bytes) -> bytes:
    """amount(4) ‖ type(1) ‖ terminal id(6): in every MAC1, the load MAC2 and both TACs."""
    return (
        _uint("amount", amount, 4)
        + _uint("transaction type", tx_type, 1)
        + _fixed("terminal id", terminal_id, 6)
    )


def _session_mac(
    session_key: bytes, amount: int, tx_type: int, terminal_id: bytes, date: bytes, time: bytes
) -> bytes:
    """amount type terminal-id date time under a session key: purchase MAC1 and load MAC2."""
    return pboc_mac(_fixed("session key", session_key, 8),
                    _transaction_fields(amount, tx_type, terminal_id) + _when(date, time))


def purchase_mac1(
    sespk: bytes, amount: int, tx_type: int, terminal_id: bytes, date: bytes, time: bytes
) -> bytes:
    """MAC1 of a purchase (PSAM → card): amount type terminal-id date time."""
    return _session_mac(sespk, amount, tx_type, terminal_id, date, time)


def purchase_mac2(sespk: bytes, amount: int) -> bytes:
    """MAC2 of a purchase (card → terminal): the amount."""
    return pboc_mac(_fixed("session key", sespk, 8), _uint("amount", amount, 4))


def purchase_tac(
    dtk: bytes,
    amount: int,
    tx_type: int,
    terminal_id: bytes,
    terminal_seq: int,
    date: bytes,
    time: bytes,
) -> bytes:
    """TAC of a purchase: amount type terminal-id terminal-seq date time, under the TAC key."""
    data = (
        _transaction_fields(amount, tx_type, terminal_id)
        + _uint("terminal seq", terminal_seq, 4)
        + _when(date, time)
    )
    return pboc_mac(tac_key(dtk), data)


def load_mac1(
    seslk: bytes, old_balance: int, amount: int, tx_type: int, terminal_id: bytes
) -> bytes:
    """MAC1 of a load (card → terminal): old balance, amount, type, terminal id."""
    data = _uint("balance", old_balance, 4) + _transaction_fields(amount, tx_type, terminal_id)
    return pboc_mac(_fixed("session key", seslk, 8), data)


def load_mac2(
    seslk: bytes, amount: int, tx_type: int, terminal_id: bytes, date: bytes, time: bytes
) -> bytes:
    """MAC2 of a load (host → card): amount type terminal-id date time, the fields of
    a purchase MAC1, under the load session key."""
    return _session_mac(seslk, amount, tx_type, terminal_id, date, time)


def load_tac(
    dtk: bytes,
    new_balance: int,
    online_seq: int,
    amount: int,
    tx_type: int,
    terminal_id: bytes,
    date: bytes,
    time: bytes,
) -> bytes:
    """TAC of a load: new balance, online seq (INITIALIZE's, before the increment), amount,
    type, terminal id, date, time, under the TAC key."""
    data = (
        _uint("balance", new_balance, 4)
        + _uint("online seq", online_seq, 2)
        + _transaction_fields(amount, tx_type, terminal_id)
        + _when(date, time)
    )
    return pboc_mac(tac_key(dtk), data)


def maintenance_mac(key: bytes, challenge: bytes, header: bytes) -> bytes:
    """MAC of APPLICATION BLOCK/UNBLOCK: retail MAC over CLA INS P1 P2 Lc,
    IV = the 4-byte GET CHALLENGE random ‖ 00000000 (docs/protocol.md §2).

    After an 8-byte GET CHALLENGE (Le ``08``) its first 4 bytes are the random.
    """
    if len(challenge) not in (4, 8):
        raise CryptoError(f"challenge must be 4 or 8 bytes, got {len(challenge)}")
    iv = bytes(challenge[:4]) + bytes(4)
    key = _fixed("maintenance key", key, 16)
    return retail_mac(key, _fixed("command header", header, 5), iv=iv)
