"""Instruction bytes and command names (ISO 7816-4, EMV Book 3 §6.5, JR/T 0025).

The same INS byte means different commands in different classes: ``50`` under
CLA ``80`` is INITIALIZE FOR LOAD/PURCHASE, chosen by P1.  `command_name`
resolves a whole command to the name an engineer would use in a trace.

>>> command_name(bytes.fromhex("805001020B"))
'INITIALIZE FOR PURCHASE'
>>> command_name(bytes.fromhex("00B2010C00"))
'READ RECORD'
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["INS", "command_name"]


class INS(IntEnum):
    """Instruction bytes used by the cards, PSAMs and terminals of this project."""

    VERIFY = 0x20
    CHANGE_PIN = 0x24
    EXTERNAL_AUTHENTICATE = 0x82
    GET_CHALLENGE = 0x84
    INTERNAL_AUTHENTICATE = 0x88
    SELECT = 0xA4
    READ_BINARY = 0xB0
    READ_RECORD = 0xB2
    GET_RESPONSE = 0xC0
    GET_DATA = 0xCA
    UPDATE_BINARY = 0xD6
    UPDATE_RECORD = 0xDC
    PUT_DATA = 0xDA
    APPEND_RECORD = 0xE2
    # EMV / PBOC debit-credit (CLA 80/84)
    GET_PROCESSING_OPTIONS = 0xA8
    GENERATE_AC = 0xAE
    # JR/T 0025 electronic purse (CLA 80)
    INITIALIZE = 0x50
    CREDIT_FOR_LOAD = 0x52
    DEBIT_FOR_PURCHASE = 0x54
    GET_TRANSACTION_PROVE = 0x5A
    GET_BALANCE = 0x5C
    # application maintenance (CLA 84)
    APPLICATION_UNBLOCK = 0x18
    APPLICATION_BLOCK = 0x1E
    CARD_BLOCK = 0x16
    PIN_UNBLOCK = 0x2C
    # PSAM (CLA 80)
    INIT_SAM_FOR_PURCHASE = 0x70
    CREDIT_SAM_FOR_PURCHASE = 0x72


# Commands named by (CLA & 0xF0 class group, INS): ISO inter-industry (00/0C), and
# proprietary (80/84).  P1-dependent commands are resolved in `command_name`.
_ISO_NAMES: dict[int, str] = {
    0x20: "VERIFY",
    0x24: "CHANGE REFERENCE DATA",
    0x2C: "RESET RETRY COUNTER",
    0x70: "MANAGE CHANNEL",
    0x82: "EXTERNAL AUTHENTICATE",
    0x84: "GET CHALLENGE",
    0x88: "INTERNAL AUTHENTICATE",
    0xA4: "SELECT",
    0xB0: "READ BINARY",
    0xB2: "READ RECORD",
    0xC0: "GET RESPONSE",
    0xCA: "GET DATA",
    0xD6: "UPDATE BINARY",
    0xDA: "PUT DATA",
    0xDC: "UPDATE RECORD",
    0xE2: "APPEND RECORD",
}

_PROPRIETARY_NAMES: dict[int, str] = {
    0x16: "CARD BLOCK",
    0x18: "APPLICATION UNBLOCK",
    0x1E: "APPLICATION BLOCK",
    0x24: "PIN CHANGE/UNBLOCK",
    0x52: "CREDIT FOR LOAD",
    0x54: "DEBIT FOR PURCHASE",
    0x5A: "GET TRANSACTION PROVE",
    0x5C: "GET BALANCE",
    0x70: "INIT SAM FOR PURCHASE",
    0x72: "CREDIT SAM FOR PURCHASE",
    0x82: "EXTERNAL AUTHENTICATE",
    0x84: "GET CHALLENGE",
    0xA8: "GET PROCESSING OPTIONS",
    0xAE: "GENERATE AC",
    0xCA: "GET DATA",
    0xDC: "UPDATE CAPP DATA CACHE",
}

_INITIALIZE_BY_P1: dict[int, str] = {
    0x00: "INITIALIZE FOR LOAD",
    0x01: "INITIALIZE FOR PURCHASE",
    0x02: "INITIALIZE FOR CASH WITHDRAW",
    0x03: "INITIALIZE FOR CAPP PURCHASE",
    0x04: "INITIALIZE FOR UPDATE",
    0x05: "INITIALIZE FOR UNLOAD",
}


def command_name(command: bytes) -> str:
    """The name of a command APDU from its header, e.g. ``'SELECT'``."""
    if len(command) < 4:
        return "MALFORMED"
    cla, ins, p1 = command[0], command[1], command[2]
    if cla == 0xFF:
        return f"PC/SC PSEUDO-APDU {ins:02X}"
    if cla & 0x80:
        if ins == INS.INITIALIZE:
            return _INITIALIZE_BY_P1.get(p1, "INITIALIZE")
        name = _PROPRIETARY_NAMES.get(ins) or _ISO_NAMES.get(ins)
    else:
        name = _ISO_NAMES.get(ins)
    return name or f"INS {ins:02X}"
