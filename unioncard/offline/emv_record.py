"""The EMV card record: one approved PBOC debit / qPBOC sale in 256 bytes (docs/records.md).

A sale the card approved with a cryptogram (a TC, or for a qPBOC online sale the
ARQC the issuer approved) becomes one `EmvRecord`, beside the purse records in
the same batch files.  It carries what the issuer's key needs to recompute that
cryptogram (PBOC CVN 01, docs/protocol.md §5): the PAN and PSN (the card's key,
option A), the ATC (the session key), and every data element the AC covers,
``9F02 9F03 9F1A 95 5F2A 9A 9C 9F37 82 9F36`` and the CVR inside the IAD; and
what settlement needs to clear and re-price the sale, as a purse record does
(member data, list and charged amounts, the tariff rules and rule set, merchant).

The container is the purse record's: 256 bytes, byte 0 the record's kind and
version (``E1``), bytes 252..255 the CRC-32 of bytes 0..251.  Two covered values
are not stored twice: ``9F02`` is ``charged_amount`` as n12 and ``9A`` the
record's date as ``YYMMDD``.

>>> import datetime as dt
>>> record = EmvRecord(
...     terminal_id=bytes.fromhex("310100001234"), terminal_seq=7, pan="6225880112345678",
...     psn="01", aid=bytes.fromhex("A000000333010101"), cid=0x40,
...     ac=bytes.fromhex("1122334455667788"), tvr=bytes(5), unpredictable_number=bytes(4),
...     aip=bytes.fromhex("7C00"), atc=3, iad=bytes.fromhex("0701010390000001"),
...     path=EmvPath.EC_OFFLINE, card_type=0x01, list_amount=1000, charged_amount=1000,
...     when=dt.datetime(2026, 5, 1, 12, 0))
>>> raw = record.to_bytes()
>>> len(raw), raw[0], EmvRecord.from_bytes(raw) == record
(256, 225, True)
>>> record.ac_values()[0x9F02].hex(), record.ac_values()[0x9A].hex(), record.cvr.hex()
('000000001000', '260501', '03900000')
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

import construct as c

from unioncard.apdu.records import BcdDate
from unioncard.errors import DecodeError
from unioncard.offline.record import (
    CRC_OFFSET,
    MAX_RULES,
    _BcdTime,
    _Crc32,
    _fail,
    _is_int,
    _PaddedText,
    _RuleSlots,
    build_record,
    check_expiry,
    check_frame,
    check_rules,
    check_sized_fields,
    check_text,
    check_when,
    construct_record,
    layout_of,
    offsets_of,
    parse_fields,
)

__all__ = ["CID_ARQC", "CID_TC", "EMV_RECORD", "EMV_RECORD_LAYOUT", "EMV_RECORD_VERSION",
           "POS_MODE", "EmvPath", "EmvRecord"]

EMV_RECORD_VERSION = 0xE1
"""Byte 0 of an EMV card record, format version 1."""

POS_MODE = 7
"""The tariff mode an EMV sale is priced with (`tariffs.model.Mode.POS`)."""

CID_TC, CID_ARQC = 0x40, 0x80
"""Cryptogram types in bits 8-7 of the CID ``9F27`` (EMV Book 3 Table 15)."""
_CID_TYPE = 0xC0
_MAX_IAD = 32  # 9F10 is at most 32 bytes (EMV Book 3 Annex A)
_MIN_IAD = 7  # PBOC: length, DKI, CVN, CVR(4)
_ALL_ZERO_ARC = bytes(2)


class EmvPath(IntEnum):
    """How the card and the kernel approved the sale (the outcome's ``path``)."""

    OFFLINE = 1  # contact, TC offline (the issuer unreachable: ARC Y3)
    EC_OFFLINE = 2  # contact electronic cash, TC offline
    ONLINE = 3  # contact, the issuer approved, TC of the second GENERATE AC
    QPBOC_OFFLINE = 4  # contactless qPBOC, TC in the GPO answer (with fDDA)
    QPBOC_ONLINE = 5  # contactless qPBOC, the ARQC the issuer approved

    @property
    def label(self) -> str:
        """As the kernel's outcome spells it: ``ec offline``, ``qpboc online``, ..."""
        return self.name.lower().replace("_", " ")

    @classmethod
    def of_label(cls, label: str) -> EmvPath:
        """The path the kernel's outcome names; `ValueError` for another name."""
        try:
            return cls[label.upper().replace(" ", "_")]
        except KeyError:
            raise ValueError(f"no EMV approval path {label!r}") from None


class _Pan(c.Adapter):  # type: ignore[misc]
    """A PAN of 12 to 19 digits ⇄ 10 bytes of BCD, padded on the right with ``F``."""

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        text = obj.hex().upper().rstrip("F")
        if not (text.isdigit() and 12 <= len(text) <= 19):
            raise c.ValidationError(f"{obj.hex().upper()} is not a PAN (12 to 19 BCD digits, "
                                    "F-padded)", path=path)
        return text

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return bytes.fromhex(obj.ljust(20, "F"))


class _Digits2(c.Adapter):  # type: ignore[misc]
    """Two BCD digits (the PSN ``5F34``) ⇄ a str of 2 digits."""

    def _decode(self, obj: int, context: Any, path: str) -> str:
        text = f"{obj:02X}"
        if not text.isdigit():
            raise c.ValidationError(f"{text} is not a BCD PSN", path=path)
        return text

    def _encode(self, obj: str, context: Any, path: str) -> int:
        return int(obj, 16)


class _Prefixed(c.Adapter):  # type: ignore[misc]
    """A length byte then up to ``size`` bytes, ``00``-padded ⇄ the bytes."""

    def __init__(self, size: int, low: int) -> None:
        super().__init__(c.Bytes(1 + size))
        self.size, self.low = size, low

    def _decode(self, obj: bytes, context: Any, path: str) -> bytes:
        length = obj[0]
        if not self.low <= length <= self.size:
            raise c.ValidationError(f"length {length} is not {self.low}..{self.size}", path=path)
        if any(obj[1 + length:]):
            raise c.ValidationError("padding after the value is not zeros", path=path)
        return bytes(obj[1:1 + length])

    def _encode(self, obj: bytes, context: Any, path: str) -> bytes:
        return bytes((len(obj),)) + obj + bytes(self.size - len(obj))


EMV_RECORD = c.Struct(
    "record_version" / c.Const(EMV_RECORD_VERSION, c.Int8ub),
    "terminal_id" / c.Bytes(6),
    "terminal_seq" / c.Int32ub,  # the sale's number in the terminal's journal
    "pan" / _Pan(c.Bytes(10)),  # 5A
    "psn" / _Digits2(c.Int8ub),  # 5F34
    "aid" / _Prefixed(16, 5),  # 4F / 84 selected
    "cid" / c.Int8ub,  # 9F27
    "ac" / c.Bytes(8),  # 9F26: the TC (or the approved qPBOC ARQC)
    "amount_other" / c.Int32ub,  # 9F03 in fen
    "terminal_country" / c.Bytes(2),  # 9F1A
    "tvr" / c.Bytes(5),  # 95
    "currency" / c.Bytes(2),  # 5F2A
    "transaction_type" / c.Int8ub,  # 9C
    "unpredictable_number" / c.Bytes(4),  # 9F37
    "aip" / c.Bytes(2),  # 82
    "atc" / c.Int16ub,  # 9F36
    "iad" / _Prefixed(_MAX_IAD, _MIN_IAD),  # 9F10: 07 DKI CVN CVR(4) ...
    "arc" / c.Bytes(2),  # 8A, ASCII; 0000 none
    "path" / c.Int8ub,  # EmvPath
    "card_expiry" / BcdDate,  # 5F24; 00000000 unknown
    "card_type" / c.Int8ub,
    "category_flags" / c.Int8ub,
    "member_status" / c.Int8ub,
    "organization" / _PaddedText(48, "utf-8"),
    "list_amount" / c.Int32ub,
    "charged_amount" / c.Int32ub,  # 9F02 in fen
    "rules" / _RuleSlots(c.Array(MAX_RULES, c.Int16ub)),
    "merchant" / _PaddedText(24, "ascii"),
    "mcc" / c.Int16ub,
    "date" / BcdDate,  # 9A is its YYMMDD
    "time" / _BcdTime(c.Bytes(3)),
    "ruleset_version" / c.Bytes(32),
    "rounding" / c.Int8ub,
    "reserved" / c.Padding(1),
    "crc" / _Crc32(CRC_OFFSET),
)
"""Format version 1 of the EMV card record, 256 bytes (docs/records.md)."""

EMV_RECORD_LAYOUT = layout_of(EMV_RECORD, "EMV_RECORD")
"""(field, offset, size) of every field of `EMV_RECORD`, in order."""

_OFFSETS = offsets_of(EMV_RECORD_LAYOUT)
_BYTES_FIELDS = {"terminal_id": 6, "ac": 8, "terminal_country": 2, "tvr": 5, "currency": 2,
                 "unpredictable_number": 4, "aip": 2, "ruleset_version": 32}
_INT_FIELDS = {"terminal_seq": 4, "cid": 1, "amount_other": 4, "transaction_type": 1,
               "atc": 2, "card_type": 1, "category_flags": 1, "member_status": 1,
               "list_amount": 4, "charged_amount": 4, "mcc": 2, "rounding": 1}
_N12_MAX = 999_999_999_999


def _n12(fen: int) -> bytes:
    return bytes.fromhex(f"{fen:012d}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EmvRecord:
    """One approved EMV card sale, as settlement receives it (format version 1).

    ``pan`` and ``psn`` are digit strings, the AID, AC, IAD and the other card and
    terminal values bytes as the card got or gave them, amounts integer fen,
    ``when`` the naive local date and time of the sale (whole seconds).
    Construction validates every field and raises `ValueError` naming it.
    """

    terminal_id: bytes
    terminal_seq: int
    pan: str
    psn: str
    aid: bytes
    cid: int
    ac: bytes
    amount_other: int = 0
    terminal_country: bytes = bytes.fromhex("0156")
    tvr: bytes
    currency: bytes = bytes.fromhex("0156")
    transaction_type: int = 0x00
    unpredictable_number: bytes
    aip: bytes
    atc: int
    iad: bytes
    arc: bytes = b""
    path: EmvPath
    card_expiry: dt.date | None = None
    card_type: int
    category_flags: int = 0
    member_status: int = 0
    organization: str = ""
    list_amount: int
    charged_amount: int
    rules: tuple[int, ...] = ()
    merchant: str = ""
    mcc: int = 0
    when: dt.datetime
    ruleset_version: bytes = bytes(32)
    rounding: int = 0

    def __post_init__(self) -> None:
        check_sized_fields(self, _BYTES_FIELDS, _INT_FIELDS)
        self._check_card()
        self._check_cryptogram()
        check_text("organization", self.organization, 48, utf8=True)
        check_text("merchant", self.merchant, 24, utf8=False)
        check_when(self.when)
        check_expiry(self.card_expiry)
        object.__setattr__(self, "rules", check_rules(self.rules))
        if self.charged_amount > self.list_amount:
            _fail("charged_amount", f"{self.charged_amount} exceeds the list amount "
                                    f"{self.list_amount}")
        if self.charged_amount == 0:
            _fail("charged_amount", "a sale the card approved is more than 0 fen")
        if self.rounding not in range(3):
            _fail("rounding", f"{self.rounding} is not 0 (half-up), 1 (half-even) or 2 (down)")

    def _check_card(self) -> None:
        if not (isinstance(self.pan, str) and self.pan.isascii() and self.pan.isdigit()
                and 12 <= len(self.pan) <= 19):
            _fail("pan", "must be 12 to 19 digits")
        if not (isinstance(self.psn, str) and self.psn.isascii() and self.psn.isdigit()
                and len(self.psn) == 2):
            _fail("psn", "must be 2 digits")
        if not isinstance(self.aid, bytes) or not 5 <= len(self.aid) <= 16:
            _fail("aid", "must be 5 to 16 bytes")
        if not isinstance(self.iad, bytes) or not _MIN_IAD <= len(self.iad) <= _MAX_IAD:
            _fail("iad", f"must be {_MIN_IAD} to {_MAX_IAD} bytes (PBOC: length, DKI, CVN, "
                         "CVR)")
        if not isinstance(self.arc, bytes) or (
                self.arc and (len(self.arc) != 2 or not all(0x20 <= b <= 0x7E for b in self.arc))):
            _fail("arc", "must be empty or 2 printable ASCII characters")

    def _check_cryptogram(self) -> None:
        if not _is_int(self.path):
            _fail("path", f"must be an EmvPath, got {self.path!r}")
        try:
            object.__setattr__(self, "path", EmvPath(self.path))
        except ValueError:
            _fail("path", f"unknown path {self.path}")
        kind = self.cid & _CID_TYPE
        if kind == CID_ARQC and self.path is not EmvPath.QPBOC_ONLINE:
            _fail("cid", "an ARQC clears only a qPBOC sale the issuer approved online")
        if kind not in (CID_TC, CID_ARQC):
            _fail("cid", f"{self.cid:02X} is not a TC (or an approved qPBOC ARQC): only "
                         "approved sales are recorded")
        if self.amount_other > _N12_MAX or self.charged_amount > _N12_MAX:
            _fail("charged_amount", "does not fit n12")  # pragma: no cover - uint32 < n12

    # --- derived values -----------------------------------------------------------------

    @property
    def is_load(self) -> bool:
        """Always False: an EMV record is a sale."""
        return False

    @property
    def discount(self) -> int:
        """List amount minus charged amount, in fen."""
        return self.list_amount - self.charged_amount

    @property
    def mode(self) -> int:
        """The tariff mode the sale was priced with: 7 (pos)."""
        return POS_MODE

    @property
    def cvr(self) -> bytes:
        """The CVR in the PBOC IAD: bytes 4-7 (its length byte ``03`` and 3 bytes)."""
        return self.iad[3:7]

    @property
    def dki(self) -> int:
        """The derivation key index, IAD byte 2: which issuer master key derived the card's."""
        return self.iad[1]

    def ac_values(self) -> dict[int, bytes]:
        """The data elements the cryptogram covers, by tag, in the order PBOC CVN 01 MACs
        them (``unioncard.crypto.emv.AC_TAGS``); the CVR follows them (`cvr`)."""
        return {0x9F02: _n12(self.charged_amount), 0x9F03: _n12(self.amount_other),
                0x9F1A: self.terminal_country, 0x95: self.tvr, 0x5F2A: self.currency,
                0x9A: bytes.fromhex(self.when.strftime("%y%m%d")),
                0x9C: bytes((self.transaction_type,)), 0x9F37: self.unpredictable_number,
                0x82: self.aip, 0x9F36: self.atc.to_bytes(2, "big")}

    # --- bytes --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The 256 bytes of the record, CRC included."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["arc"] = values["arc"] or _ALL_ZERO_ARC
        return build_record(_compiled(), values)

    @classmethod
    def from_bytes(cls, raw: bytes) -> EmvRecord:
        """Decode 256 bytes; `DecodeError` (with the offset) for a wrong size, a CRC
        mismatch, another kind or version, or a field that is not valid."""
        raw = check_frame(raw, "a record")
        if raw[0] != EMV_RECORD_VERSION:
            raise DecodeError(f"record_version {raw[0]:02X} is not an EMV card record "
                              f"({EMV_RECORD_VERSION:02X})", 0)
        values = parse_fields(EMV_RECORD, _compiled(), _OFFSETS, raw,
                              [f.name for f in fields(cls)])
        values["arc"] = b"" if values["arc"] == _ALL_ZERO_ARC else values["arc"]
        return construct_record(cls, _OFFSETS, values)

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self, *, unmask: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: the PAN masked (all but the first 6 and last 4 digits) unless
        ``unmask``, bytes in upper-case hex, amounts in fen, dates in ISO 8601."""
        pan = self.pan if unmask else self.pan[:6] + "*" * (len(self.pan) - 10) + self.pan[-4:]
        return {
            "record_version": f"{EMV_RECORD_VERSION:02X}", "kind": "emv",
            "terminal_id": self.terminal_id.hex().upper(), "terminal_seq": self.terminal_seq,
            "pan": pan, "psn": self.psn, "aid": self.aid.hex().upper(),
            "cid": f"{self.cid:02X}", "ac": self.ac.hex().upper(), "atc": self.atc,
            "iad": self.iad.hex().upper(), "cvr": self.cvr.hex().upper(),
            "values": {f"{t:X}": v.hex().upper() for t, v in self.ac_values().items()},
            "arc": self.arc.decode("ascii"), "path": self.path.label,
            "card_expiry": None if self.card_expiry is None else self.card_expiry.isoformat(),
            "mode": POS_MODE, "card_type": f"{self.card_type:02X}",
            "category_flags": f"{self.category_flags:02X}",
            "member_status": f"{self.member_status:02X}", "organization": self.organization,
            "list_amount": self.list_amount, "charged_amount": self.charged_amount,
            "discount": self.discount, "rules": list(self.rules), "merchant": self.merchant,
            "mcc": self.mcc, "when": self.when.isoformat(),
            "ruleset_version": self.ruleset_version.hex(), "rounding": self.rounding,
        }


@functools.cache
def _compiled() -> Any:
    """`EMV_RECORD` compiled by construct, on first use."""
    return EMV_RECORD.compile()
