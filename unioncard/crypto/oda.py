"""Offline data authentication with RSA (EMV 4.3 Book 2 §5-§6; PBOC 2.0/3.0 part 5).

Both sides of the public-key chain CA → issuer → ICC:

- terminal side: `CaPublicKey` and `load_capk_file` (checksums verified), `recover`
  (the raw RSA public operation with the ``6A``…``BC`` frame checks),
  `recover_issuer_key` (format ``02``), `recover_icc_key` (format ``04``),
  `verify_ssad` (SDA, format ``03``), `verify_sdad` (DDA and fDDA, format ``05``),
  `verify_cda` (CDA: CID, AC and the transaction data hash in the signed dynamic data);
- card / personalization side: `PrivateKey` (keys from `cryptography`, the private
  operation on its private numbers), `issuer_certificate`, `icc_certificate`,
  `sign_ssad`, `sign_sdad`, `sign_cda`.

Every check that fails raises `OdaFailure` whose ``reason`` (an `OdaReason`) says which
check, so a kernel maps it to its TVR bit (SDA, DDA or CDA failed; ICC data missing).
Hashes are SHA-1 (hash algorithm indicator ``01``), keys RSA (algorithm indicator ``01``).

A chain made and verified:

>>> ca, issuer, icc = (PrivateKey.generate(bits) for bits in (1280, 1152, 1024))
>>> cert, rem = issuer_certificate(ca, issuer.public, "6230", "1230", 1)
>>> capk = CaPublicKey(bytes.fromhex("A000000333"), 0x80, ca.public.modulus,
...                    ca.public.exponent, "20301231")
>>> ipk = recover_issuer_key(capk, cert, rem, issuer.public.exponent, "6230123456789012",
...                          today=date(2026, 12, 2))
>>> ipk == issuer.public
True
>>> ssad = sign_ssad(issuer, b"\\xDA\\xC1", b"static data")
>>> verify_ssad(ipk, ssad, b"static data")
b'\\xda\\xc1'
>>> try:
...     verify_ssad(ipk, ssad, b"static dat4")
... except OdaFailure as failure:
...     print(failure, failure.reason.name)
signed static data: hash mismatch HASH
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unioncard.apdu.tlv import decode, read_length, read_tag
from unioncard.bounded_read import KEYSTORE_LIMIT, read_utf8
from unioncard.errors import CryptoError, DecodeError

if TYPE_CHECKING:  # imported where a private key is made or parsed: a tap needs none
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "CaPublicKey",
    "CdaResult",
    "OdaFailure",
    "OdaReason",
    "PrivateKey",
    "PublicKey",
    "cda_transaction_hash",
    "icc_certificate",
    "issuer_certificate",
    "load_capk_file",
    "parse_capk_json",
    "recover",
    "recover_icc_key",
    "recover_issuer_key",
    "response_without_sdad",
    "sign_cda",
    "sign_sdad",
    "sign_ssad",
    "static_data",
    "verify_cda",
    "verify_sdad",
    "verify_ssad",
]

HASH_SHA1 = 0x01
PK_RSA = 0x01
_HASH = 20


class OdaReason(enum.StrEnum):
    """Why offline data authentication failed; the kernel maps these to TVR bits."""

    CAPK_MISSING = "CA public key missing"
    CAPK_EXPIRED = "CA public key expired"
    DATA_MISSING = "data missing"
    LENGTH = "length mismatch"
    HEADER = "bad header or trailer"
    FORMAT = "wrong format"
    HASH = "hash mismatch"
    ALGORITHM = "unknown algorithm"
    EXPIRED = "certificate expired"
    ISSUER_ID = "issuer identifier does not match the PAN"
    PAN = "PAN does not match"
    STATIC_DATA = "static data not authenticable"
    CID = "CID does not match"
    TRANSACTION_HASH = "transaction data hash mismatch"


class OdaFailure(CryptoError):
    """An offline data authentication check failed: ``reason`` names the check, ``what``
    the object that failed it (issuer certificate, ICC certificate, ...)."""

    def __init__(self, what: str, reason: OdaReason) -> None:
        super().__init__(f"{what}: {reason.value}")
        self.what = what
        self.reason = reason


# --- keys ---------------------------------------------------------------------------

def _int(data: bytes) -> int:
    return int.from_bytes(data, "big")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An RSA public key as EMV carries it: modulus and exponent as big-endian bytes."""

    modulus: bytes
    exponent: bytes

    def __post_init__(self) -> None:
        if not self.modulus or self.modulus[0] == 0:
            raise CryptoError("an RSA modulus has no leading zero byte")
        if _int(self.exponent) not in (3, 65537):
            raise CryptoError("EMV RSA exponents are 3 or 65537")

    @property
    def size(self) -> int:
        """The modulus length in bytes (N_CA, N_I or N_IC)."""
        return len(self.modulus)

    def apply(self, data: bytes) -> bytes:
        """The raw RSA public operation on a block as long as the modulus."""
        if len(data) != self.size:
            raise CryptoError(f"an RSA block has {self.size} bytes here, got {len(data)}")
        value = _int(data)
        if value >= _int(self.modulus):
            raise CryptoError("RSA block not smaller than the modulus")
        return pow(value, _int(self.exponent), _int(self.modulus)).to_bytes(self.size, "big")


@dataclass(frozen=True)
class PrivateKey:
    """An RSA private key made by `cryptography`; the raw private operation (EMV signs
    with no padding of its own beyond the ``6A``…``BC`` frame) uses its private numbers
    with the CRT."""

    key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, bits: int, exponent: int = 3) -> PrivateKey:
        from cryptography.hazmat.primitives.asymmetric import rsa

        return cls(rsa.generate_private_key(public_exponent=exponent, key_size=bits))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> PrivateKey:
        """The key of an unencrypted PEM document (parsed and checked once per document)."""
        return _from_pem(pem.encode("ascii") if isinstance(pem, str) else bytes(pem))

    def to_pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()).decode("ascii")

    @property
    def public(self) -> PublicKey:
        numbers = self.key.public_key().public_numbers()
        size = (numbers.n.bit_length() + 7) // 8
        exp = numbers.e.to_bytes(1 if numbers.e < 256 else 3, "big")
        return PublicKey(numbers.n.to_bytes(size, "big"), exp)

    def sign_raw(self, block: bytes) -> bytes:
        """The raw private operation on a block as long as the modulus."""
        n = self.key.private_numbers()
        size = self.public.size
        if len(block) != size or _int(block) >= n.public_numbers.n:
            raise CryptoError(f"an RSA block to sign has {size} bytes below the modulus")
        m = _int(block)
        s1 = pow(m, n.dmp1, n.p)
        s2 = pow(m, n.dmq1, n.q)
        h = (n.iqmp * (s1 - s2)) % n.p
        return (s2 + h * n.q).to_bytes(size, "big")


@lru_cache(maxsize=64)
def _from_pem(data: bytes) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("not an RSA private key")
    return PrivateKey(key)


@dataclass(frozen=True, slots=True)
class CaPublicKey:
    """A certification authority public key as a terminal holds it (EMV Book 2 §11.2.2).

    ``expiry`` is ``YYYYMMDD``; the key is valid through that day."""

    rid: bytes
    index: int
    modulus: bytes
    exponent: bytes
    expiry: str

    def __post_init__(self) -> None:
        if len(self.rid) != 5:
            raise CryptoError(f"a RID has 5 bytes, got {len(self.rid)}")
        if not 0 <= self.index <= 0xFF:
            raise CryptoError(f"a CA public key index is 00..FF, got {self.index}")
        PublicKey(self.modulus, self.exponent)
        _yyyymmdd(self.expiry)

    @property
    def name(self) -> str:
        return f"{self.rid.hex().upper()} {self.index:02X}"

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.modulus, self.exponent)

    @property
    def checksum(self) -> bytes:
        """SHA-1(RID ‖ index ‖ modulus ‖ exponent)."""
        return hashlib.sha1(self.rid + bytes([self.index]) + self.modulus
                            + self.exponent).digest()

    def expired(self, today: date) -> bool:
        return _yyyymmdd(self.expiry) < today

    def to_json(self) -> dict[str, str]:
        return {"rid": self.rid.hex().upper(), "index": f"{self.index:02X}",
                "expiry": self.expiry, "exponent": self.exponent.hex().upper(),
                "modulus": self.modulus.hex().upper(),
                "checksum_sha1": self.checksum.hex().upper()}


def _yyyymmdd(text: str) -> date:
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except (ValueError, TypeError):
        raise CryptoError(f"a CA public key expiry is YYYYMMDD, got {text!r}") from None


def _hexfield(entry: Mapping[str, Any], name: str, where: str) -> bytes:
    value = entry.get(name)
    if not isinstance(value, str):
        raise CryptoError(f"{where}: {name} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise CryptoError(f"{where}: {name} is not hex") from None


def parse_capk_json(text: str) -> tuple[CaPublicKey, ...]:
    """CA public keys from a CAPK JSON document (``{"keys": [{rid, index, expiry, exponent,
    modulus, checksum_sha1}]}``, docs/pboc.md); every checksum is verified."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CryptoError(f"not a CAPK JSON file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise CryptoError('not a CAPK JSON file: expected {"keys": [...]}')
    keys: list[CaPublicKey] = []
    for i, entry in enumerate(doc["keys"], 1):
        where = f"key #{i}"
        if not isinstance(entry, dict):
            raise CryptoError(f"{where} is not an object")
        rid = _hexfield(entry, "rid", where)
        index = _hexfield(entry, "index", where)
        where = f"key {rid.hex().upper()} {index.hex().upper()}"
        if len(index) != 1:
            raise CryptoError(f"{where}: index is one byte")
        expiry = entry.get("expiry")
        if not isinstance(expiry, str):
            raise CryptoError(f"{where}: expiry must be a YYYYMMDD string")
        try:
            key = CaPublicKey(rid, index[0], _hexfield(entry, "modulus", where),
                              _hexfield(entry, "exponent", where), expiry)
        except CryptoError as exc:
            raise CryptoError(f"{where}: {exc}") from None
        if key.checksum != _hexfield(entry, "checksum_sha1", where):
            raise CryptoError(f"{where}: checksum mismatch (SHA-1 of RID, index, modulus and "
                              "exponent is " + key.checksum.hex().upper() + ")")
        if any(k.rid == key.rid and k.index == key.index for k in keys):
            raise CryptoError(f"{where}: listed twice")
        keys.append(key)
    return tuple(keys)


def load_capk_file(path: str | Path) -> tuple[CaPublicKey, ...]:
    """Read a CAPK JSON file (at most 1 MiB); `CryptoError` names the file and the key."""
    text = read_utf8(path, limit=KEYSTORE_LIMIT, what="CAPK file", error=CryptoError)
    try:
        return parse_capk_json(text)
    except CryptoError as exc:
        raise CryptoError(f"{path}: {exc}") from None


# --- recovery -----------------------------------------------------------------------

def _sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()


def recover(key: PublicKey, data: bytes, fmt: int, what: str) -> bytes:
    """The recovered block of ``data`` signed under ``key``: header ``6A``, format ``fmt``,
    trailer ``BC`` checked (`OdaFailure` otherwise)."""
    if len(data) != key.size:
        raise OdaFailure(what, OdaReason.LENGTH)
    try:
        block = key.apply(data)
    except CryptoError:
        raise OdaFailure(what, OdaReason.HEADER) from None
    if block[0] != 0x6A or block[-1] != 0xBC:
        raise OdaFailure(what, OdaReason.HEADER)
    if block[1] != fmt:
        raise OdaFailure(what, OdaReason.FORMAT)
    return block


def _check_hash(block: bytes, extra: bytes, what: str) -> None:
    body, digest = block[1:-1 - _HASH], block[-1 - _HASH:-1]
    if _sha1(body, extra) != digest:
        raise OdaFailure(what, OdaReason.HASH)


def _mmyy_valid(mmyy: bytes, today: date) -> bool:
    """A certificate is valid through the last day of its MMYY month (BCD)."""
    text = mmyy.hex()
    if not text.isdigit() or not 1 <= int(text[:2]) <= 12:
        return False
    return (2000 + int(text[2:]), int(text[:2])) >= (today.year, today.month)


def _digits(cn: bytes) -> str:
    """The digits of a compressed-numeric field (right-padded with F)."""
    return cn.hex().upper().rstrip("F")


def _key_from(block: bytes, offset: int, length: int, exp_len: int, available: int,
              remainder: bytes, exponent: bytes, what: str) -> PublicKey:
    if len(exponent) != exp_len:
        raise OdaFailure(what, OdaReason.LENGTH)
    part = block[offset:offset + available]
    if length <= available:  # any remainder is ignored (Book 2 §5.3 step 6)
        modulus = part[:length]
    else:
        if len(remainder) != length - available:
            raise OdaFailure(what, OdaReason.DATA_MISSING if not remainder
                             else OdaReason.LENGTH)
        modulus = part + remainder
    try:
        return PublicKey(modulus, exponent)
    except CryptoError:
        raise OdaFailure(what, OdaReason.ALGORITHM) from None


def recover_issuer_key(capk: CaPublicKey, certificate: bytes, remainder: bytes,
                       exponent: bytes, pan: str, *, today: date) -> PublicKey:
    """The issuer public key from its certificate (``90``), remainder (``92``) and exponent
    (``9F32``), EMV Book 2 §5.3 / §6.3: format ``02``, hash, issuer identifier against the
    PAN, expiry against ``today``."""
    what = "issuer certificate"
    block = recover(capk.public, certificate, 0x02, what)
    issuer_id = _digits(block[2:6])
    expiry, hash_alg, pk_alg = block[6:8], block[11], block[12]
    length, exp_len = block[13], block[14]
    if hash_alg != HASH_SHA1 or pk_alg != PK_RSA:
        raise OdaFailure(what, OdaReason.ALGORITHM)
    key = _key_from(block, 15, length, exp_len, capk.public.size - 36, remainder, exponent,
                    what)
    _check_hash(block, remainder + exponent, what)
    if not (3 <= len(issuer_id) <= 8 and issuer_id.isdigit() and pan.startswith(issuer_id)):
        raise OdaFailure(what, OdaReason.ISSUER_ID)
    if not _mmyy_valid(expiry, today):
        raise OdaFailure(what, OdaReason.EXPIRED)
    return key


def recover_icc_key(issuer_key: PublicKey, certificate: bytes, remainder: bytes,
                    exponent: bytes, pan: str, static: bytes, *, today: date) -> PublicKey:
    """The ICC public key from its certificate (``9F46``), remainder (``9F48``) and exponent
    (``9F47``), EMV Book 2 §6.4: format ``04``, hash over the static data to be
    authenticated too, PAN, expiry."""
    what = "ICC certificate"
    block = recover(issuer_key, certificate, 0x04, what)
    cert_pan = _digits(block[2:12])
    expiry, hash_alg, pk_alg = block[12:14], block[17], block[18]
    length, exp_len = block[19], block[20]
    if hash_alg != HASH_SHA1 or pk_alg != PK_RSA:
        raise OdaFailure(what, OdaReason.ALGORITHM)
    key = _key_from(block, 21, length, exp_len, issuer_key.size - 42, remainder, exponent,
                    what)
    _check_hash(block, remainder + exponent + static, what)
    if cert_pan != pan.upper().rstrip("F"):
        raise OdaFailure(what, OdaReason.PAN)
    if not _mmyy_valid(expiry, today):
        raise OdaFailure(what, OdaReason.EXPIRED)
    return key


def verify_ssad(issuer_key: PublicKey, ssad: bytes, static: bytes) -> bytes:
    """SDA (EMV Book 2 §5.4): verify the signed static application data (``93``) over the
    static data to be authenticated; returns the data authentication code (``9F45``)."""
    what = "signed static data"
    block = recover(issuer_key, ssad, 0x03, what)
    if block[2] != HASH_SHA1:
        raise OdaFailure(what, OdaReason.ALGORITHM)
    _check_hash(block, static, what)
    return block[3:5]


def _dynamic(icc_key: PublicKey, sdad: bytes, terminal_data: bytes, what: str) -> bytes:
    block = recover(icc_key, sdad, 0x05, what)
    if block[2] != HASH_SHA1:
        raise OdaFailure(what, OdaReason.ALGORITHM)
    length = block[3]
    if 4 + length > len(block) - 1 - _HASH:
        raise OdaFailure(what, OdaReason.LENGTH)
    _check_hash(block, terminal_data, what)
    return block[4:4 + length]


def verify_sdad(icc_key: PublicKey, sdad: bytes, terminal_data: bytes) -> bytes:
    """DDA / fDDA (EMV Book 2 §6.5): verify the signed dynamic application data (``9F4B``)
    over the terminal's dynamic data (the DDOL values for DDA; for qPBOC fDDA ``9F37 ‖
    9F02 ‖ 5F2A ‖ 9F69``); returns the ICC dynamic number (``9F4C``)."""
    what = "signed dynamic data"
    data = _dynamic(icc_key, sdad, terminal_data, what)
    if not data or data[0] + 1 > len(data) or not 2 <= data[0] <= 8:
        raise OdaFailure(what, OdaReason.LENGTH)
    return data[1:1 + data[0]]


@dataclass(frozen=True, slots=True)
class CdaResult:
    """What CDA recovers from the signed dynamic data."""

    dynamic_number: bytes
    cid: int
    cryptogram: bytes


def cda_transaction_hash(pdol_values: bytes, cdol1_values: bytes, response_tlvs: bytes,
                         cdol2_values: bytes = b"") -> bytes:
    """The transaction data hash code of CDA (EMV Book 2 §6.6.1): SHA-1 of the PDOL values
    of GPO, the CDOL1 values (and CDOL2 values for the second GENERATE AC), then the TLV
    objects of the GENERATE AC response other than ``9F4B``, in the order returned."""
    return _sha1(pdol_values, cdol1_values, cdol2_values, response_tlvs)


def verify_cda(icc_key: PublicKey, sdad: bytes, unpredictable: bytes, cid: int,
               transaction_hash: bytes) -> CdaResult:
    """CDA (EMV Book 2 §6.6.2): the signed dynamic data over the terminal's unpredictable
    number carries the ICC dynamic number, the CID (must equal the response's ``9F27``),
    the AC and the transaction data hash (must equal ``transaction_hash``)."""
    what = "CDA signature"
    data = _dynamic(icc_key, sdad, unpredictable, what)
    if not data or not 2 <= data[0] <= 8 or len(data) != 1 + data[0] + 1 + 8 + _HASH:
        raise OdaFailure(what, OdaReason.LENGTH)
    n = data[0]
    result = CdaResult(data[1:1 + n], data[1 + n], data[2 + n:10 + n])
    if result.cid != cid:
        raise OdaFailure(what, OdaReason.CID)
    if data[10 + n:] != transaction_hash:
        raise OdaFailure(what, OdaReason.TRANSACTION_HASH)
    return result


def static_data(records: Iterable[tuple[int, bytes]], tag_list: bytes = b"",
                values: Mapping[int, bytes] | None = None) -> bytes:
    """The static data to be authenticated (EMV Book 3 §10.3): for each record the AFL
    marks for ODA, given as (SFI, record), the template ``70``'s value when SFI ≤ 10,
    the whole record for SFI 11-30; then the values of the tags of the SDA tag list
    (``9F4A``; only ``82`` AIP is allowed)."""
    what = "static data"
    out = bytearray()
    for sfi, record in records:
        if sfi <= 10:
            try:
                tag, pos = read_tag(record, 0)
                length, pos = read_length(record, pos)
            except DecodeError:
                raise OdaFailure(what, OdaReason.STATIC_DATA) from None
            if tag != 0x70 or pos + length != len(record):
                raise OdaFailure(what, OdaReason.STATIC_DATA)
            out += record[pos:]
        else:
            out += record
    if tag_list:
        try:
            tags = list(_tag_list(tag_list))
        except DecodeError:
            raise OdaFailure(what, OdaReason.STATIC_DATA) from None
        for tag in tags:
            if tag != 0x82 or values is None or tag not in values:
                raise OdaFailure(what, OdaReason.STATIC_DATA)
            out += values[tag]
    return bytes(out)


def _tag_list(data: bytes) -> Iterator[int]:
    pos = 0
    while pos < len(data):
        tag, pos = read_tag(data, pos)
        yield tag


# --- signing (personalization and the card) -----------------------------------------

def _frame(fmt: int, body: bytes, extra: bytes, size: int) -> bytes:
    """``6A fmt body hash BC`` with the hash over ``fmt body extra``."""
    head = bytes([fmt]) + body
    if len(head) + _HASH + 2 != size:
        raise CryptoError(f"certificate body of {len(head)} bytes does not fit {size}")
    return b"\x6A" + head + _sha1(head, extra) + b"\xBC"


def _split_key(key: PublicKey, available: int) -> tuple[bytes, bytes]:
    if key.size <= available:
        return key.modulus + b"\xBB" * (available - key.size), b""
    return key.modulus[:available], key.modulus[available:]


def _cn(digits: str, size: int) -> bytes:
    if not digits.isdigit() or len(digits) > 2 * size:
        raise CryptoError(f"{digits!r} is not at most {2 * size} digits")
    return bytes.fromhex(digits.ljust(2 * size, "F"))


def _mmyy(text: str) -> bytes:
    if len(text) != 4 or not text.isdigit() or not 1 <= int(text[:2]) <= 12:
        raise CryptoError(f"a certificate expiry is MMYY, got {text!r}")
    return bytes.fromhex(text)


def issuer_certificate(ca: PrivateKey, issuer_key: PublicKey, issuer_id: str, expiry: str,
                       serial: int) -> tuple[bytes, bytes]:
    """The issuer public key certificate (``90``) and remainder (``92``): ``issuer_id`` the
    leftmost 3-8 PAN digits, ``expiry`` MMYY, ``serial`` a 3-byte number."""
    if not 3 <= len(issuer_id) <= 8:
        raise CryptoError("an issuer identifier is 3 to 8 PAN digits")
    size = ca.public.size
    part, remainder = _split_key(issuer_key, size - 36)
    body = (_cn(issuer_id, 4) + _mmyy(expiry) + serial.to_bytes(3, "big")
            + bytes([HASH_SHA1, PK_RSA, issuer_key.size, len(issuer_key.exponent)]) + part)
    block = _frame(0x02, body, remainder + issuer_key.exponent, size)
    return ca.sign_raw(block), remainder


def icc_certificate(issuer: PrivateKey, icc_key: PublicKey, pan: str, expiry: str,
                    serial: int, static: bytes) -> tuple[bytes, bytes]:
    """The ICC public key certificate (``9F46``) and remainder (``9F48``) binding the key to
    the PAN and to the static data to be authenticated."""
    size = issuer.public.size
    part, remainder = _split_key(icc_key, size - 42)
    body = (_cn(pan, 10) + _mmyy(expiry) + serial.to_bytes(3, "big")
            + bytes([HASH_SHA1, PK_RSA, icc_key.size, len(icc_key.exponent)]) + part)
    block = _frame(0x04, body, remainder + icc_key.exponent + static, size)
    return issuer.sign_raw(block), remainder


def sign_ssad(issuer: PrivateKey, data_auth_code: bytes, static: bytes) -> bytes:
    """Signed static application data (``93``) with the 2-byte data authentication code."""
    size = issuer.public.size
    if len(data_auth_code) != 2:
        raise CryptoError("a data authentication code has 2 bytes")
    body = bytes([HASH_SHA1]) + data_auth_code + b"\xBB" * (size - 26)
    return issuer.sign_raw(_frame(0x03, body, static, size))


def _sign_dynamic(icc: PrivateKey, dynamic: bytes, terminal_data: bytes) -> bytes:
    size = icc.public.size
    if len(dynamic) > size - 25:
        raise CryptoError("ICC dynamic data too long for the ICC key")
    body = bytes([HASH_SHA1, len(dynamic)]) + dynamic + b"\xBB" * (size - len(dynamic) - 25)
    return icc.sign_raw(_frame(0x05, body, terminal_data, size))


def _number(dynamic_number: bytes) -> bytes:
    if not 2 <= len(dynamic_number) <= 8:
        raise CryptoError("an ICC dynamic number has 2 to 8 bytes")
    return bytes([len(dynamic_number)]) + dynamic_number


def sign_sdad(icc: PrivateKey, dynamic_number: bytes, terminal_data: bytes) -> bytes:
    """Signed dynamic application data for DDA and fDDA (``9F4B``)."""
    return _sign_dynamic(icc, _number(dynamic_number), terminal_data)


def sign_cda(icc: PrivateKey, dynamic_number: bytes, cid: int, cryptogram: bytes,
             transaction_hash: bytes, unpredictable: bytes) -> bytes:
    """Signed dynamic application data of CDA (``9F4B`` in the GENERATE AC response)."""
    if len(cryptogram) != 8 or len(transaction_hash) != _HASH:
        raise CryptoError("CDA signs an 8-byte AC and a 20-byte transaction hash")
    dynamic = _number(dynamic_number) + bytes([cid]) + cryptogram + transaction_hash
    return _sign_dynamic(icc, dynamic, unpredictable)


def response_without_sdad(response: bytes) -> bytes:
    """The TLV objects of a format 2 GENERATE AC response (template ``77``) other than
    ``9F4B``, as the CDA transaction data hash takes them."""
    nodes = decode(response)
    if len(nodes) != 1 or nodes[0].tag != 0x77:
        raise OdaFailure("CDA response", OdaReason.DATA_MISSING)
    return b"".join(n.to_bytes() for n in nodes[0].children if n.tag != 0x9F4B)

