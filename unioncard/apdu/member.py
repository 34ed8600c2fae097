"""The member identity application's data (docs/protocol.md §4, **profile**).

AID ``F0554E494F4E43415244`` (``F0`` then "UNIONCARD").  One transparent EF, SFI
``01`` (read with ``00 B0 81 00 00``), holding a BER-TLV template ``70``:
``DF41`` member number (ASCII digits), ``DF42`` name (UTF-8), ``DF43`` union
organization (UTF-8), ``DF44`` category flags (1 byte), ``DF45`` status (1 byte),
``DF46`` valid from and ``DF47`` valid until (BCD ``YYYYMMDD``).  The simulated
card writes it and the terminal reads it with the codec below.

>>> rec = MemberRecord("20260001", "张三", "市总工会", 0x02, MemberStatus.ACTIVE,
...                    dt.date(2026, 1, 1), dt.date(2030, 12, 31))
>>> decode_member_template(encode_member_template(rec)) == rec
True
>>> encode_member_template(rec)[:13].hex(" ").upper()
'70 39 DF 41 08 32 30 32 36 30 30 30 31'
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from unioncard.apdu import tlv
from unioncard.apdu.records import MemberStatus, bcd_date, parse_bcd_date
from unioncard.errors import DecodeError

__all__ = [
    "MEMBER_AID",
    "MEMBER_SFI",
    "MemberRecord",
    "MemberStatus",
    "decode_member_template",
    "encode_member_template",
]

MEMBER_AID = bytes.fromhex("F0554E494F4E43415244")
MEMBER_SFI = 0x01


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """The contents of the member template."""

    member_no: str
    name: str
    organization: str
    category_flags: int
    status: MemberStatus
    valid_from: dt.date
    valid_until: dt.date

    def __post_init__(self) -> None:
        if not (self.member_no.isascii() and self.member_no.isdigit()) \
                or not 1 <= len(self.member_no) <= 16:
            raise ValueError(f"member number {self.member_no!r} must be 1 to 16 digits")
        if not 0 <= self.category_flags <= 0xFF:
            raise ValueError("category flags are one byte")
        object.__setattr__(self, "status", MemberStatus(self.status))
        if self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")


def encode_member_template(record: MemberRecord) -> bytes:
    """Template 70 with DF41..DF47."""
    items = [
        tlv.Tlv.primitive(0xDF41, record.member_no.encode("ascii")),
        tlv.Tlv.primitive(0xDF42, record.name.encode("utf-8")),
        tlv.Tlv.primitive(0xDF43, record.organization.encode("utf-8")),
        tlv.Tlv.primitive(0xDF44, bytes([record.category_flags])),
        tlv.Tlv.primitive(0xDF45, bytes([record.status])),
        tlv.Tlv.primitive(0xDF46, bcd_date(record.valid_from)),
        tlv.Tlv.primitive(0xDF47, bcd_date(record.valid_until)),
    ]
    return tlv.encode(tlv.Tlv.template(0x70, items))


def decode_member_template(raw: bytes) -> MemberRecord:
    """Read template 70 back (trailing zero padding is ignored); `DecodeError` if malformed."""
    nodes = tlv.decode(raw)
    if not nodes or nodes[0].tag != 0x70:
        raise DecodeError("the member EF does not start with template 70", 0, nodes)
    values: dict[int, bytes] = {}
    for child in nodes[0].children:
        values[child.tag] = child.value
    missing = [f"{t:X}" for t in range(0xDF41, 0xDF48) if t not in values]
    if missing:
        raise DecodeError(f"member template lacks {', '.join(missing)}", 0, nodes)
    try:
        return MemberRecord(
            values[0xDF41].decode("ascii"), values[0xDF42].decode("utf-8"),
            values[0xDF43].decode("utf-8"), values[0xDF44][0], MemberStatus(values[0xDF45][0]),
            parse_bcd_date(values[0xDF46]), parse_bcd_date(values[0xDF47]),
        )
    except (ValueError, IndexError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"bad member template: {exc}", 0, nodes) from None
