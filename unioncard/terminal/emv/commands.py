"""The EMV commands a kernel sends (EMV 4.3 Book 1 §11, Book 3 §6.5; PBOC 2.0/3.0).

Pure builders of `CommandAPDU`: no state, no I/O.

>>> select(b"2PAY.SYS.DDF01").to_bytes().hex().upper()
'00A404000E325041592E5359532E444446303100'
>>> get_processing_options(bytes.fromhex("01")).to_bytes().hex().upper()
'80A800000383010100'
>>> read_record(1, 1).to_bytes().hex().upper()
'00B2010C00'
>>> verify_plaintext_pin("1234").to_bytes().hex().upper()
'0020008008241234FFFFFFFFFF'
"""

from __future__ import annotations

from enum import IntEnum

from unioncard.apdu import CommandAPDU
from unioncard.apdu.tlv import Tlv

__all__ = [
    "CryptogramType",
    "external_authenticate",
    "generate_ac",
    "get_data",
    "get_processing_options",
    "internal_authenticate",
    "plaintext_pin_block",
    "read_record",
    "select",
    "verify_plaintext_pin",
]


class CryptogramType(IntEnum):
    """GENERATE AC reference control parameter (P1 b8-b7) and CID b8-b7 (Book 3 §6.5.5)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80

    @classmethod
    def of_cid(cls, cid: int) -> CryptogramType:
        """The cryptogram type a CID ``9F27`` names (its b8-b7; ``C0`` is RFU)."""
        try:
            return cls(cid & 0xC0)
        except ValueError:
            raise ValueError(f"CID {cid:02X}: cryptogram type 11 is reserved") from None


CDA_REQUESTED = 0x10
"""GENERATE AC P1 b5: combined DDA/AC generation requested."""


def select(name: bytes, *, next_occurrence: bool = False) -> CommandAPDU:
    """SELECT by DF name (P1 04), first or next occurrence (P2 00 / 02)."""
    return CommandAPDU(0x00, 0xA4, 0x04, 0x02 if next_occurrence else 0x00, name, 256)


def get_processing_options(pdol_data: bytes) -> CommandAPDU:
    """GET PROCESSING OPTIONS with the PDOL data in a command template ``83``."""
    return CommandAPDU(0x80, 0xA8, 0x00, 0x00, Tlv.primitive(0x83, pdol_data).to_bytes(), 256)


def read_record(sfi: int, number: int) -> CommandAPDU:
    """READ RECORD ``number`` of the file ``sfi`` (P2 = SFI << 3 | 4)."""
    if not 1 <= sfi <= 30 or not 1 <= number <= 0xFF:
        raise ValueError(f"no record {number} of SFI {sfi}")
    return CommandAPDU(0x00, 0xB2, number, (sfi << 3) | 0x04, b"", 256)


def get_data(tag: int) -> CommandAPDU:
    """GET DATA of a two-byte tag (``9F36`` ATC, ``9F13``, ``9F17``, ``9F79``, ...)."""
    return CommandAPDU(0x80, 0xCA, tag >> 8, tag & 0xFF, b"", 256)


def plaintext_pin_block(pin: str) -> bytes:
    """The offline plaintext PIN block (Book 3 §6.5.12): ``2L`` then the digits, ``F``-padded."""
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise ValueError("a PIN has 4 to 12 digits")
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))


def verify_plaintext_pin(pin: str) -> CommandAPDU:
    """VERIFY with an offline plaintext PIN (P2 ``80``)."""
    return CommandAPDU(0x00, 0x20, 0x00, 0x80, plaintext_pin_block(pin))


def internal_authenticate(ddol_data: bytes) -> CommandAPDU:
    """INTERNAL AUTHENTICATE with the DDOL data (DDA, Book 3 §6.5.9)."""
    return CommandAPDU(0x00, 0x88, 0x00, 0x00, ddol_data, 256)


def generate_ac(kind: CryptogramType, cdol_data: bytes, *, cda: bool = False) -> CommandAPDU:
    """GENERATE AC asking for ``kind``, CDA signature requested when ``cda``."""
    return CommandAPDU(0x80, 0xAE, int(kind) | (CDA_REQUESTED if cda else 0), 0x00, cdol_data,
                       256)


def external_authenticate(issuer_authentication_data: bytes) -> CommandAPDU:
    """EXTERNAL AUTHENTICATE with the issuer authentication data ``91`` (Book 3 §6.5.4)."""
    if not 8 <= len(issuer_authentication_data) <= 16:
        raise ValueError("issuer authentication data has 8 to 16 bytes")
    return CommandAPDU(0x00, 0x82, 0x00, 0x00, issuer_authentication_data)
