"""Purse and PSAM commands: payloads declared once, and APDU builders (docs/protocol.md §1, §3).

Every fixed-layout payload of the electronic purse (JR/T 0025 ED/EP), of the
composite (CAPP) purchase and of the PSAM's purchase application is a
`construct` struct here; the simulated card and PSAM parse commands and build
answers with them, the terminal engine builds commands and parses answers with
them, and trace decoding names their fields from them.  The builders give the
whole `CommandAPDU`, header and Le included.

Dates and times stay raw bytes (BCD ``YYYYMMDD`` and ``HHMMSS``, `bcd_datetime`):
the card keeps what the terminal sends, and the MACs cover those bytes.

>>> initialize_for_purchase(180, bytes.fromhex("310100001234")).to_bytes().hex().upper()
'805001020B01000000B43101000012340F'
>>> answer = parse(INIT_PURCHASE_RESPONSE, bytes.fromhex("000007D0000500000001005A3C9E71"))
>>> answer.balance, answer.offline_seq, answer.key_version, answer.random.hex().upper()
(2000, 5, 1, '5A3C9E71')
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum

import construct as c

from unioncard.apdu.apdu import CommandAPDU
from unioncard.apdu.records import build, parse, size_of

__all__ = [
    "BALANCE_RESPONSE",
    "CREDIT_FOR_LOAD_COMMAND",
    "CREDIT_FOR_LOAD_RESPONSE",
    "DEBIT_COMMAND",
    "DEBIT_RESPONSE",
    "INITIALIZE_COMMAND",
    "INIT_LOAD_RESPONSE",
    "INIT_PURCHASE_RESPONSE",
    "KEY_INDEX",
    "MAINTENANCE_COMMAND",
    "PROVE_COMMAND",
    "PROVE_RESPONSE",
    "SAM_CREDIT_COMMAND",
    "SAM_PURCHASE_COMMAND",
    "SAM_PURCHASE_RESPONSE",
    "TERMINAL_ID_RESPONSE",
    "InitKind",
    "PurseP2",
    "TransactionType",
    "application_block",
    "application_unblock",
    "bcd_datetime",
    "build",
    "credit_for_load",
    "debit_for_purchase",
    "get_balance",
    "get_challenge",
    "get_transaction_prove",
    "initialize_for_capp_purchase",
    "initialize_for_load",
    "initialize_for_purchase",
    "parse",
    "read_binary_sfi",
    "read_record",
    "sam_credit_for_purchase",
    "sam_init_for_purchase",
    "sam_read_terminal_id",
    "select_by_name",
    "select_file",
    "update_capp_data_cache",
]

KEY_INDEX = 0x01
"""The only key index of the profile (docs/protocol.md §2; others answer ``9403``)."""


class InitKind(IntEnum):
    """P1 of INITIALIZE: what the purse session is for."""

    LOAD = 0x00
    PURCHASE = 0x01
    CAPP_PURCHASE = 0x03


class TransactionType(IntEnum):
    """Transaction type byte of the purse (JR/T 0025; docs/protocol.md §1)."""

    ED_LOAD = 0x01
    EP_LOAD = 0x02
    UNLOAD = 0x03
    CASH_WITHDRAWAL = 0x04
    ED_PURCHASE = 0x05
    EP_PURCHASE = 0x06
    OVERDRAFT_UPDATE = 0x07
    CAPP_PURCHASE = 0x09


class PurseP2(IntEnum):
    """P2 of INITIALIZE and GET BALANCE: the passbook (ED) or the purse (EP)."""

    ED = 0x01
    EP = 0x02


_DATE, _TIME, _MAC = c.Bytes(4), c.Bytes(3), c.Bytes(4)

INITIALIZE_COMMAND = c.Struct(
    "key_index" / c.Int8ub, "amount" / c.Int32ub, "terminal_id" / c.Bytes(6))
"""INITIALIZE FOR LOAD / PURCHASE / CAPP PURCHASE, command data (11 bytes)."""

INIT_PURCHASE_RESPONSE = c.Struct(
    "balance" / c.Int32ub, "offline_seq" / c.Int16ub, "overdraft_limit" / c.Int24ub,
    "key_version" / c.Int8ub, "alg_id" / c.Int8ub, "random" / c.Bytes(4))
"""INITIALIZE FOR (CAPP) PURCHASE, response data (15 bytes)."""

INIT_LOAD_RESPONSE = c.Struct(
    "balance" / c.Int32ub, "online_seq" / c.Int16ub, "key_version" / c.Int8ub,
    "alg_id" / c.Int8ub, "random" / c.Bytes(4), "mac1" / _MAC)
"""INITIALIZE FOR LOAD, response data (16 bytes): MAC1 is the card's."""

DEBIT_COMMAND = c.Struct(
    "terminal_seq" / c.Int32ub, "date" / _DATE, "time" / _TIME, "mac1" / _MAC)
"""DEBIT FOR PURCHASE / CAPP PURCHASE, command data (15 bytes)."""

DEBIT_RESPONSE = c.Struct("tac" / _MAC, "mac2" / _MAC)
"""DEBIT, response data: TAC then MAC2 (the reverse of GET TRANSACTION PROVE)."""

CREDIT_FOR_LOAD_COMMAND = c.Struct("date" / _DATE, "time" / _TIME, "mac2" / _MAC)
"""CREDIT FOR LOAD, command data (11 bytes): MAC2 is the load host's."""

CREDIT_FOR_LOAD_RESPONSE = c.Struct("tac" / _MAC)

BALANCE_RESPONSE = c.Struct("balance" / c.Int32ub)

PROVE_COMMAND = c.Struct("card_seq" / c.Int16ub)
"""GET TRANSACTION PROVE: the offline seq INITIALIZE returned for that purchase, plus one."""

PROVE_RESPONSE = c.Struct("mac2" / _MAC, "tac" / _MAC)
"""GET TRANSACTION PROVE, response data: MAC2 then TAC."""

MAINTENANCE_COMMAND = c.Struct("mac" / _MAC)
"""APPLICATION BLOCK / UNBLOCK, command data: the maintenance MAC."""

SAM_PURCHASE_COMMAND = c.Struct(
    "random" / c.Bytes(4), "offline_seq" / c.Int16ub, "amount" / c.Int32ub,
    "tx_type" / c.Int8ub, "date" / _DATE, "time" / _TIME, "key_version" / c.Int8ub,
    "alg_id" / c.Int8ub, "diversifier" / c.Bytes(8))
"""PSAM INIT SAM FOR PURCHASE ``80 70``, command data (28 bytes, one diversification level)."""

SAM_PURCHASE_RESPONSE = c.Struct("terminal_seq" / c.Int32ub, "mac1" / _MAC)

SAM_CREDIT_COMMAND = c.Struct("mac2" / _MAC)
"""PSAM CREDIT SAM FOR PURCHASE ``80 72``, command data: the card's MAC2."""

TERMINAL_ID_RESPONSE = c.Struct("terminal_id" / c.Bytes(6))
"""The PSAM's EF 0016 as ``00 B0 96 00 06`` reads it."""


def bcd_datetime(when: dt.datetime) -> tuple[bytes, bytes]:
    """(date BCD ``YYYYMMDD``, time BCD ``HHMMSS``) as the purse commands carry them.

    >>> [b.hex() for b in bcd_datetime(dt.datetime(2012, 2, 29, 13, 51))]
    ['20120229', '135100']
    """
    return bytes.fromhex(when.strftime("%Y%m%d")), bytes.fromhex(when.strftime("%H%M%S"))


# --- ISO inter-industry commands the purse flows use -------------------------------------


def select_by_name(aid: bytes) -> CommandAPDU:
    """SELECT by DF name (AID), FCI wanted: ``00 A4 04 00 Lc AID 00``."""
    return CommandAPDU(0x00, 0xA4, 0x04, 0x00, aid, 256)


def select_file(fid: int) -> CommandAPDU:
    """SELECT by file identifier: ``00 A4 00 00 02 FID`` (the MF is ``3F00``)."""
    return CommandAPDU(0x00, 0xA4, 0x00, 0x00, fid.to_bytes(2, "big"))


def read_binary_sfi(sfi: int, le: int = 256, offset: int = 0) -> CommandAPDU:
    """READ BINARY of the EF with short identifier ``sfi``: ``00 B0 (80|sfi) offset Le``."""
    return CommandAPDU(0x00, 0xB0, 0x80 | sfi, offset, le=le)


def read_record(sfi: int, number: int, le: int = 256) -> CommandAPDU:
    """READ RECORD ``number`` of the EF with short identifier ``sfi``: ``00 B2 n (sfi<<3|4) Le``."""
    return CommandAPDU(0x00, 0xB2, number, sfi << 3 | 0x04, le=le)


def get_challenge(length: int = 4) -> CommandAPDU:
    return CommandAPDU(0x00, 0x84, 0x00, 0x00, le=length)


# --- purse commands ------------------------------------------------------------------------


def _initialize(kind: InitKind, amount: int, terminal_id: bytes, key_index: int) -> CommandAPDU:
    data = build(INITIALIZE_COMMAND, key_index=key_index, amount=amount, terminal_id=terminal_id)
    le = size_of(INIT_LOAD_RESPONSE) if kind is InitKind.LOAD else size_of(INIT_PURCHASE_RESPONSE)
    return CommandAPDU(0x80, 0x50, kind, PurseP2.EP, data, le)


def initialize_for_purchase(amount: int, terminal_id: bytes,
                            key_index: int = KEY_INDEX) -> CommandAPDU:
    """INITIALIZE FOR PURCHASE ``80 50 01 02 0B``, Le ``0F``."""
    return _initialize(InitKind.PURCHASE, amount, terminal_id, key_index)


def initialize_for_capp_purchase(amount: int, terminal_id: bytes,
                                 key_index: int = KEY_INDEX) -> CommandAPDU:
    """INITIALIZE FOR CAPP PURCHASE ``80 50 03 02 0B``, Le ``0F``."""
    return _initialize(InitKind.CAPP_PURCHASE, amount, terminal_id, key_index)


def initialize_for_load(amount: int, terminal_id: bytes,
                        key_index: int = KEY_INDEX) -> CommandAPDU:
    """INITIALIZE FOR LOAD ``80 50 00 02 0B``, Le ``10``."""
    return _initialize(InitKind.LOAD, amount, terminal_id, key_index)


def debit_for_purchase(terminal_seq: int, date: bytes, time: bytes, mac1: bytes) -> CommandAPDU:
    """DEBIT FOR PURCHASE / CAPP PURCHASE ``80 54 01 00 0F``, Le ``08``."""
    data = build(DEBIT_COMMAND, terminal_seq=terminal_seq, date=date, time=time, mac1=mac1)
    return CommandAPDU(0x80, 0x54, 0x01, 0x00, data, size_of(DEBIT_RESPONSE))


def credit_for_load(date: bytes, time: bytes, mac2: bytes) -> CommandAPDU:
    """CREDIT FOR LOAD ``80 52 00 00 0B``, Le ``04``."""
    data = build(CREDIT_FOR_LOAD_COMMAND, date=date, time=time, mac2=mac2)
    return CommandAPDU(0x80, 0x52, 0x00, 0x00, data, size_of(CREDIT_FOR_LOAD_RESPONSE))


def get_balance() -> CommandAPDU:
    """GET BALANCE of the purse ``80 5C 00 02 04``."""
    return CommandAPDU(0x80, 0x5C, 0x00, PurseP2.EP, le=size_of(BALANCE_RESPONSE))


def get_transaction_prove(tx_type: int, card_seq: int) -> CommandAPDU:
    """GET TRANSACTION PROVE ``80 5A 00 TT 02``, Le ``08``: ``card_seq`` is INITIALIZE's + 1."""
    return CommandAPDU(0x80, 0x5A, 0x00, tx_type, build(PROVE_COMMAND, card_seq=card_seq),
                       size_of(PROVE_RESPONSE))


def update_capp_data_cache(record: bytes, sfi: int) -> CommandAPDU:
    """UPDATE CAPP DATA CACHE ``80 DC id (sfi<<3) Lc record``: P1 is the record's first byte."""
    if not record:
        raise ValueError("a CAPP record has at least its identifier byte")
    return CommandAPDU(0x80, 0xDC, record[0], sfi << 3, record)


def application_block(mac: bytes, *, permanent: bool = False) -> CommandAPDU:
    """APPLICATION BLOCK ``84 1E 00 P2 04``: P2 ``00`` until unblocked, ``01`` for good."""
    return CommandAPDU(0x84, 0x1E, 0x00, 0x01 if permanent else 0x00,
                       build(MAINTENANCE_COMMAND, mac=mac))


def application_unblock(mac: bytes) -> CommandAPDU:
    """APPLICATION UNBLOCK ``84 18 00 00 04``."""
    return CommandAPDU(0x84, 0x18, 0x00, 0x00, build(MAINTENANCE_COMMAND, mac=mac))


# --- PSAM commands -----------------------------------------------------------------------------


def sam_read_terminal_id() -> CommandAPDU:
    """READ BINARY of the PSAM's EF 0016 (SFI 16): ``00 B0 96 00 06``."""
    return read_binary_sfi(0x16, size_of(TERMINAL_ID_RESPONSE))


def sam_init_for_purchase(
    *, random: bytes, offline_seq: int, amount: int, tx_type: int, date: bytes, time: bytes,
    key_version: int, alg_id: int, diversifier: bytes,
) -> CommandAPDU:
    """INIT SAM FOR PURCHASE ``80 70 00 00 1C``, Le ``08``: terminal seq and MAC1."""
    data = build(SAM_PURCHASE_COMMAND, random=random, offline_seq=offline_seq, amount=amount,
                 tx_type=tx_type, date=date, time=time, key_version=key_version,
                 alg_id=alg_id, diversifier=diversifier)
    return CommandAPDU(0x80, 0x70, 0x00, 0x00, data, size_of(SAM_PURCHASE_RESPONSE))


def sam_credit_for_purchase(mac2: bytes) -> CommandAPDU:
    """CREDIT SAM FOR PURCHASE ``80 72 00 00 04 MAC2``: ``9000`` or ``9302``."""
    return CommandAPDU(0x80, 0x72, 0x00, 0x00, build(SAM_CREDIT_COMMAND, mac2=mac2))
