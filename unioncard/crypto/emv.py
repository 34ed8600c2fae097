"""EMV/PBOC symmetric cryptography: card keys, session keys, AC, ARPC, script MAC.

Pure functions on bytes (docs/pboc.md; EMV Book 2 Annex A1; JR/T 0025 PBOC CVN 01):

- `derive_udk`: the card's master key (UDK) from an issuer master key, EMV option A:
  Y = rightmost 16 digits of PAN‖PSN, ``UDK = 3DES(IMK, Y) ‖ 3DES(IMK, Y xor FF..FF)``.
  No parity is applied (parity bits do not change a DES result).
- `session_key`: PBOC CVN 01 session key from the UDK and the ATC,
  ``3DES(UDK, 000000000000‖ATC) ‖ 3DES(UDK, 000000000000‖(ATC xor FFFF))``; the same
  derivation gives the secure-messaging session keys from the SMI and SMC card keys.
- `ac_data`: the data an AC covers: the values of `AC_TAGS` then the 4-byte CVR.
- `application_cryptogram`: ISO/IEC 9797-1 MAC algorithm 3, padding method 2, 8 bytes.
- `arpc`: ARPC method 1, ``3DES(SK, ARQC xor (ARC‖000000000000))``.
- `command_mac`: the issuer-script (secure messaging for integrity) MAC over
  ``CLA INS P1 P2 Lc ‖ ATC ‖ AC ‖ data``, ISO/IEC 9797-1 algorithm 3, 4 bytes.

The option A vector of pyemv's documentation (compare ignoring parity):

>>> udk = derive_udk(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), "12345678901234567", "01")
>>> same_key(udk, bytes.fromhex("73AD54688CEF2934B0979857E3C719F1"))
True
>>> sk = session_key(udk, 1)
>>> len(sk), sk != udk
(16, True)
"""

from __future__ import annotations

from collections.abc import Mapping

from unioncard.crypto.des import tdes_encrypt, xor
from unioncard.crypto.mac import retail_mac
from unioncard.crypto.purse import diversify
from unioncard.errors import CryptoError

__all__ = [
    "AC_LENGTH",
    "AC_TAGS",
    "AC_TAG_LENGTHS",
    "ac_data",
    "application_cryptogram",
    "arpc",
    "command_mac",
    "derive_udk",
    "pan_psn_block",
    "same_key",
    "session_key",
    "verify_arpc",
]

AC_LENGTH = 8
"""An application cryptogram (ARQC, TC, AAC) and an ARPC have 8 bytes."""

AC_TAG_LENGTHS: dict[int, int] = {
    0x9F02: 6,  # amount, authorised (n12)
    0x9F03: 6,  # amount, other (n12)
    0x9F1A: 2,  # terminal country code
    0x95: 5,    # TVR
    0x5F2A: 2,  # transaction currency code
    0x9A: 3,    # transaction date YYMMDD
    0x9C: 1,    # transaction type
    0x9F37: 4,  # unpredictable number
    0x82: 2,    # AIP
    0x9F36: 2,  # ATC
}
AC_TAGS: tuple[int, ...] = tuple(AC_TAG_LENGTHS)
"""The data elements a PBOC CVN 01 AC covers, in order (before the CVR)."""


def _bytes(name: str, value: bytes, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise CryptoError(f"{name} must be {size} bytes, got {got}")
    return bytes(value)


def same_key(a: bytes, b: bytes) -> bool:
    """Two DES keys are the same key when they differ at most in parity bits (the low bit
    of each byte).

    >>> same_key(bytes.fromhex("0101"), bytes.fromhex("0000"))
    True
    """
    return len(a) == len(b) and all((x ^ y) & 0xFE == 0 for x, y in zip(a, b, strict=True))


def pan_psn_block(pan: str, psn: str = "00") -> bytes:
    """Y of option A: the rightmost 16 digits of PAN‖PSN, zero-padded on the left.

    >>> pan_psn_block("12345678901234567", "01").hex()
    '4567890123456701'
    >>> pan_psn_block("1234567890", "00").hex()
    '0000123456789000'
    """
    if not isinstance(pan, str) or not pan.isdigit() or not 1 <= len(pan) <= 19:
        raise CryptoError(f"a PAN is 1 to 19 decimal digits, got {pan!r}")
    if not isinstance(psn, str) or not psn.isdigit() or len(psn) != 2:
        raise CryptoError(f"a PAN sequence number is 2 decimal digits, got {psn!r}")
    return bytes.fromhex((pan + psn)[-16:].zfill(16))


def derive_udk(imk: bytes, pan: str, psn: str = "00") -> bytes:
    """The card's 16-byte master key for the issuer master key ``imk`` (EMV option A)."""
    return diversify(_bytes("issuer master key", imk, 16), pan_psn_block(pan, psn))


def session_key(udk: bytes, atc: int) -> bytes:
    """PBOC CVN 01 session key for the 2-byte ATC."""
    key = _bytes("card master key", udk, 16)
    if not isinstance(atc, int) or not 0 <= atc <= 0xFFFF:
        raise CryptoError(f"the ATC is 0..65535, got {atc!r}")
    left = bytes(6) + atc.to_bytes(2, "big")
    right = bytes(6) + (atc ^ 0xFFFF).to_bytes(2, "big")
    return tdes_encrypt(key, left) + tdes_encrypt(key, right)


def ac_data(values: Mapping[int, bytes], cvr: bytes) -> bytes:
    """The AC input: `AC_TAGS` values (each exactly its length) then the 4-byte CVR."""
    out = bytearray()
    for tag, length in AC_TAG_LENGTHS.items():
        if tag not in values:
            raise CryptoError(f"AC data lacks tag {tag:02X}")
        out += _bytes(f"tag {tag:02X}", values[tag], length)
    return bytes(out) + _bytes("CVR", cvr, 4)


def application_cryptogram(session_key: bytes, data: bytes) -> bytes:
    """ARQC, TC or AAC: ISO/IEC 9797-1 MAC algorithm 3, ``80`` padding, 8 bytes."""
    return retail_mac(_bytes("AC session key", session_key, 16), bytes(data), length=AC_LENGTH)


def arpc(session_key: bytes, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1 over the ARQC and the 2-byte authorisation response code."""
    key = _bytes("AC session key", session_key, 16)
    block = xor(_bytes("ARQC", arqc, 8), _bytes("ARC", arc, 2) + bytes(6))
    return tdes_encrypt(key, block)


def verify_arpc(session_key: bytes, arqc: bytes, arc: bytes, candidate: bytes) -> bool:
    """True when ``candidate`` is the ARPC for this ARQC and response code."""
    return arpc(session_key, arqc, arc) == bytes(candidate)


def command_mac(session_key: bytes, header: bytes, atc: int, ac: bytes, data: bytes) -> bytes:
    """Issuer-script MAC (EMV Book 2 §9.2.3, format 2): ``header`` is CLA INS P1 P2 Lc with
    Lc counting the 4-byte MAC; ``atc`` and ``ac`` are the card's ATC and the AC of the
    current transaction's first GENERATE AC; ``data`` the plaintext command data."""
    if not isinstance(atc, int) or not 0 <= atc <= 0xFFFF:
        raise CryptoError(f"the ATC is 0..65535, got {atc!r}")
    message = (_bytes("command header", header, 5) + atc.to_bytes(2, "big")
               + _bytes("AC", ac, 8) + bytes(data))
    return retail_mac(_bytes("SMI session key", session_key, 16), message, length=4)
