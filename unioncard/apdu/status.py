"""Status words with their ISO 7816-4, EMV and PBOC (JR/T 0025) meanings.

Status words are data: sessions branch on them.  `describe` also reads the
families that carry a value in SW2: ``61xx`` (bytes still available, fetch them
with GET RESPONSE), ``6Cxx`` (wrong Le, re-send with Le = xx) and ``63Cx``
(verification failed, x tries left).

>>> describe(0x9401)
'9401: insufficient balance'
>>> describe(0x6C0F)
'6C0F: wrong Le; re-send with Le = 15'
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["SW", "describe", "is_success", "is_warning"]


class SW(IntEnum):
    """Status words named in ISO 7816-4, EMV Book 1/3 and JR/T 0025."""

    OK = 0x9000
    # 62xx / 63xx: warnings, state of non-volatile memory unchanged / changed
    NO_INFORMATION = 0x6200
    DATA_CORRUPTED = 0x6281
    END_OF_FILE = 0x6282
    SELECTED_FILE_INVALIDATED = 0x6283
    BAD_FCI_FORMAT = 0x6284
    NVM_CHANGED = 0x6300
    FILE_FILLED_UP = 0x6381
    # 64xx / 65xx: execution errors
    EXECUTION_ERROR = 0x6400
    MEMORY_FAILURE = 0x6581
    # 67xx .. 6Fxx: checking errors
    WRONG_LENGTH = 0x6700
    FUNCTION_IN_CLA_NOT_SUPPORTED = 0x6800
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    COMMAND_NOT_ALLOWED = 0x6900
    COMMAND_INCOMPATIBLE_WITH_FILE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTHENTICATION_METHOD_BLOCKED = 0x6983
    REFERENCED_DATA_INVALIDATED = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED_NO_EF = 0x6986
    SM_DATA_OBJECTS_MISSING = 0x6987
    SM_DATA_OBJECTS_INCORRECT = 0x6988
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    LC_INCONSISTENT_WITH_TLV = 0x6A85
    WRONG_P1_P2 = 0x6A86
    LC_INCONSISTENT_WITH_P1_P2 = 0x6A87
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_PARAMETERS = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00
    # JR/T 0025 electronic purse
    MAC_ERROR = 0x9302
    APPLICATION_LOCKED = 0x9303
    INSUFFICIENT_BALANCE = 0x9401
    COUNTER_OVERFLOW = 0x9402
    KEY_INDEX_NOT_SUPPORTED = 0x9403
    MAC_NOT_AVAILABLE = 0x9406


_MEANINGS: dict[int, str] = {
    SW.OK: "ok",
    SW.NO_INFORMATION: "warning, no information given (non-volatile memory unchanged)",
    SW.DATA_CORRUPTED: "part of the returned data may be corrupted",
    SW.END_OF_FILE: "end of file or record reached before reading Le bytes",
    SW.SELECTED_FILE_INVALIDATED: "selected file or application is blocked (FCI returned)",
    SW.BAD_FCI_FORMAT: "FCI not formatted according to ISO 7816-4",
    SW.NVM_CHANGED: "warning, no information given (non-volatile memory changed)",
    SW.FILE_FILLED_UP: "file filled up by the last write",
    SW.EXECUTION_ERROR: "execution error, non-volatile memory unchanged",
    SW.MEMORY_FAILURE: "memory failure",
    SW.WRONG_LENGTH: "wrong length (Lc or Le)",
    SW.FUNCTION_IN_CLA_NOT_SUPPORTED: "functions in CLA not supported",
    SW.LOGICAL_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    SW.SECURE_MESSAGING_NOT_SUPPORTED: "secure messaging not supported",
    SW.COMMAND_NOT_ALLOWED: "command not allowed",
    SW.COMMAND_INCOMPATIBLE_WITH_FILE: "command incompatible with file structure",
    SW.SECURITY_STATUS_NOT_SATISFIED: "security status not satisfied",
    SW.AUTHENTICATION_METHOD_BLOCKED: "authentication method (PIN) blocked",
    SW.REFERENCED_DATA_INVALIDATED: "referenced data invalidated",
    SW.CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW.COMMAND_NOT_ALLOWED_NO_EF: "command not allowed (no current EF)",
    SW.SM_DATA_OBJECTS_MISSING: "expected secure messaging data objects missing",
    SW.SM_DATA_OBJECTS_INCORRECT: "secure messaging data objects incorrect",
    SW.WRONG_DATA: "incorrect parameters in the data field",
    SW.FUNCTION_NOT_SUPPORTED: "function not supported",
    SW.FILE_NOT_FOUND: "file or application not found",
    SW.RECORD_NOT_FOUND: "record not found",
    SW.NOT_ENOUGH_MEMORY: "not enough memory space in the file",
    SW.LC_INCONSISTENT_WITH_TLV: "Lc inconsistent with TLV structure",
    SW.WRONG_P1_P2: "incorrect parameters P1-P2",
    SW.LC_INCONSISTENT_WITH_P1_P2: "Lc inconsistent with P1-P2",
    SW.REFERENCED_DATA_NOT_FOUND: "referenced data not found",
    SW.WRONG_PARAMETERS: "wrong parameters P1-P2",
    SW.INS_NOT_SUPPORTED: "instruction not supported",
    SW.CLA_NOT_SUPPORTED: "class not supported",
    SW.NO_PRECISE_DIAGNOSIS: "no precise diagnosis",
    SW.MAC_ERROR: "MAC error",
    SW.APPLICATION_LOCKED: "application permanently locked",
    SW.INSUFFICIENT_BALANCE: "insufficient balance",
    SW.COUNTER_OVERFLOW: "transaction counter or balance would overflow",
    SW.KEY_INDEX_NOT_SUPPORTED: "key index not supported",
    SW.MAC_NOT_AVAILABLE: "the requested proof or MAC is not available",
}


def describe(sw: int) -> str:
    """``"XXXX: meaning"`` for any status word, reading the value-carrying families."""
    sw1, sw2 = sw >> 8, sw & 0xFF
    text = _MEANINGS.get(sw)
    if text is None:
        if sw1 == 0x61:
            text = f"{sw2 or 256} more bytes available; fetch with GET RESPONSE"
        elif sw1 == 0x6C:
            text = f"wrong Le; re-send with Le = {sw2 or 256}"
        elif sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
            text = f"verification failed, {sw2 & 0x0F} tries left"
        elif sw1 == 0x62:
            text = "warning, non-volatile memory unchanged"
        elif sw1 == 0x63:
            text = "warning, non-volatile memory changed"
        elif sw1 in (0x64, 0x65, 0x66):
            text = "execution error"
        elif sw1 == 0x9F:
            text = f"{sw2 or 256} more bytes available (GSM/SIM)"
        else:
            text = "unknown status word"
    return f"{sw:04X}: {text}"


def is_success(sw: int) -> bool:
    """9000, or 61xx (success with data still to fetch)."""
    return sw == 0x9000 or sw >> 8 == 0x61


def is_warning(sw: int) -> bool:
    """62xx and 63xx: processed with a warning."""
    return sw >> 8 in (0x62, 0x63)
