"""Byte layouts of the purse, ETC and transit files (docs/protocol.md §1, §4).

One declaration per file, shared by the card simulator (which writes them),
the terminal (which reads them) and the tools (which show them):

- `TRANSIT_INFO`: T-Union EF ``0015``, 30 bytes (card type ``55`` = union member);
- `ETC_INFO`: ETC EF ``0015``, 43 bytes (user type ``55`` = union member);
- `HOLDER`: EF ``0016``, 55 bytes, on both applications;
- `LOG_RECORD`: EF ``0018``, 23-byte cyclic log records (`STORED_LOG_RECORD`:
  the same with the date unparsed, as the card keeps it);
- `CAPP_RECORD`: EF ``0019``, the 43-byte composite (toll) record ``AA 29 …``;
- `TRANSIT_RECORD`: EF ``001E`` of T-Union cards, 48-byte cyclic transit records
  (optional on a card: a terminal copes with ``6A82``/``6A83``).

Dates are BCD ``YYYYMMDD`` and parse to `datetime.date`; names are GBK and ID
numbers ASCII, zero-padded.  `parse` wraps construct's errors in `DecodeError`.

The profile's byte values carried in these files and in the member application
are here too: `CardType` (EF 0015), `MemberCategory` (EF 0015, ``DF44``) and
`MemberStatus` (``DF45``).

>>> info = parse(TRANSIT_INFO, bytes.fromhex(
...     "10000000FFFFFFFF0202" "10005500000000000042" "20260101" "20301231" "5502"))
>>> info.card_type, info.category_flags, info.app_serial.hex(), info.expiry.isoformat()
(85, 2, '10005500000000000042', '2030-12-31')
"""

from __future__ import annotations

import datetime as dt
import functools
from enum import IntEnum, IntFlag
from typing import Any

import construct as c

from unioncard.errors import DecodeError

__all__ = [
    "CAPP_RECORD",
    "ETC_INFO",
    "HOLDER",
    "LOG_RECORD",
    "STORED_LOG_RECORD",
    "TRANSIT_INFO",
    "TRANSIT_RECORD",
    "BcdDate",
    "CardType",
    "MemberCategory",
    "MemberStatus",
    "TransitRecordType",
    "bcd_date",
    "build",
    "parse",
    "parse_bcd_date",
    "size_of",
]


class CardType(IntEnum):
    """Card type byte of the T-Union EF 0015, user type of the ETC EF 0015 (profile)."""

    ORDINARY = 0x01
    UNION_MEMBER = 0x55


class MemberCategory(IntFlag):
    """Member category flags: T-Union EF 0015's last byte and tag DF44 (profile)."""

    MODEL_WORKER = 0x01
    HARDSHIP = 0x02
    MUTUAL_AID = 0x04


class TransitRecordType(IntEnum):
    """Transaction type of an EF 001E transit record (docs/protocol.md §4)."""

    SINGLE_RIDE = 0x02
    ENTRY = 0x03
    EXIT = 0x04


class MemberStatus(IntEnum):
    """Member status, tag DF45 of the member identity application (profile)."""

    ACTIVE = 0x01
    REPORTED_LOST = 0x02
    CANCELLED = 0x03


def bcd_date(date: dt.date) -> bytes:
    """A date as BCD ``YYYYMMDD`` (4 bytes), the year in four digits whatever it is
    (``strftime("%Y")`` writes year 10 as ``10``).

    >>> bcd_date(dt.date(10, 1, 1)).hex(), bcd_date(dt.date(2026, 5, 1)).hex()
    ('00100101', '20260501')
    """
    return bytes.fromhex(f"{date.year:04d}{date.month:02d}{date.day:02d}")


def parse_bcd_date(raw: bytes) -> dt.date:
    """Inverse of `bcd_date`; raises `DecodeError` for a non-date."""
    text = raw.hex()
    try:
        if len(raw) != 4 or not text.isdigit():
            raise ValueError
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise DecodeError(f"{raw.hex().upper()} is not a BCD date YYYYMMDD") from None


class _BcdDate(c.Adapter):  # type: ignore[misc]
    """BCD ``YYYYMMDD`` ⇄ `datetime.date`; ``00000000`` ⇄ None (a date never set)."""

    def _decode(self, obj: bytes, context: Any, path: str) -> dt.date | None:
        if obj == bytes(4):
            return None
        try:
            return parse_bcd_date(obj)
        except DecodeError as exc:
            raise c.ValidationError(str(exc), path=path) from None

    def _encode(self, obj: dt.date | None, context: Any, path: str) -> bytes:
        return bytes(4) if obj is None else bcd_date(obj)


class _PaddedText(c.Adapter):  # type: ignore[misc]
    """Text in a fixed field, right-padded with ``00`` bytes."""

    def __init__(self, size: int, encoding: str) -> None:
        super().__init__(c.Bytes(size))
        self.size, self.encoding = size, encoding

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        try:
            return obj.rstrip(b"\x00").decode(self.encoding)
        except UnicodeDecodeError:
            raise c.ValidationError(f"field is not {self.encoding} text", path=path) from None

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        raw = obj.encode(self.encoding)
        if len(raw) > self.size:
            raise c.ValidationError(f"{obj!r} takes {len(raw)} bytes, the field holds "
                                    f"{self.size}", path=path)
        return raw + bytes(self.size - len(raw))


BcdDate = _BcdDate(c.Bytes(4))

TRANSIT_INFO = c.Struct(
    "issuer" / c.Bytes(8),
    "app_type" / c.Int8ub,
    "app_version" / c.Int8ub,
    "app_serial" / c.Bytes(10),
    "start" / BcdDate,
    "expiry" / BcdDate,
    "card_type" / c.Int8ub,  # profile: 55 union member, 01 ordinary
    "category_flags" / c.Int8ub,  # profile: 01 model worker, 02 hardship, 04 mutual aid
)

ETC_INFO = c.Struct(
    "issuer" / c.Bytes(8),
    "card_type" / c.Int8ub,
    "card_version" / c.Int8ub,
    "network" / c.Bytes(2),
    "card_no" / c.Bytes(8),  # profile: the ETC purse's diversifier
    "start" / BcdDate,
    "expiry" / BcdDate,
    "plate" / _PaddedText(12, "gbk"),
    "user_type" / c.Int8ub,  # profile: 55 union member
    "other" / c.Bytes(2),
)

HOLDER = c.Struct(
    "holder_type" / c.Int8ub,
    "staff_flag" / c.Int8ub,
    "name" / _PaddedText(20, "gbk"),
    "id_number" / _PaddedText(32, "ascii"),
    "id_type" / c.Int8ub,
)


def _log_record(date: c.Construct) -> c.Struct:
    return c.Struct(
        "seq" / c.Int16ub,
        "overdraft" / c.Int24ub,
        "amount" / c.Int32ub,
        "tx_type" / c.Int8ub,
        "terminal_id" / c.Bytes(6),
        "date" / date,
        "time" / c.Bytes(3),
    )


LOG_RECORD = _log_record(BcdDate)
STORED_LOG_RECORD = _log_record(c.Bytes(4))
"""`LOG_RECORD` with the date as its 4 raw bytes: the card stores the date a
terminal sends without checking that it is BCD."""

CAPP_RECORD = c.Struct(
    "record_id" / c.Const(b"\xaa"),
    "record_length" / c.Const(b"\x29"),
    "lock" / c.Int8ub,
    "network" / c.Bytes(2),
    "station" / c.Bytes(2),
    "lane" / c.Int8ub,
    "unix_time" / c.Int32ub,
    "vehicle_class" / c.Int8ub,
    "status" / c.Int8ub,  # 01 MTC entry, 02 MTC exit, 03 ETC entry, 04 ETC exit
    "marker_station" / c.Bytes(9),
    "staff_no" / c.Bytes(3),
    "shift" / c.Int8ub,
    "plate" / _PaddedText(12, "gbk"),
    "reserved" / c.Bytes(4),
)


TRANSIT_RECORD = c.Struct(
    "tx_type" / c.Int8ub,  # 02 single ride, 03 entry, 04 exit
    "terminal_id" / c.Bytes(8),
    "transit_type" / c.Int8ub,  # 01 metro
    "line_station" / c.Bytes(7),
    "amount" / c.Int32ub,
    "balance_after" / c.Int32ub,
    "when" / c.Bytes(7),  # BCD YYYYMMDDhhmmss
    "city_code" / c.Bytes(2),  # BCD
    "institution" / c.Bytes(8),
    "reserved" / c.Bytes(6),
)
"""EF 001E (SFI ``1E``), a T-Union transit record as open readers publish it (48 bytes)."""


@functools.cache
def size_of(layout: c.Construct) -> int:
    """``layout.sizeof()``, computed once per layout (construct takes microseconds each time)."""
    return int(layout.sizeof())


@functools.cache
def _compiled(layout: c.Construct) -> Any:
    """``layout`` compiled by construct (3 to 4 times faster), made on first use."""
    return layout.compile()


def parse(layout: c.Construct, data: bytes) -> Any:
    """Parse one file's bytes; the wrong size or a bad field raises `DecodeError`.

    The compiled layout parses; when it refuses, the declared one parses again to
    name the field that is wrong.
    """
    size = size_of(layout)
    if len(data) != size:
        raise DecodeError(f"expected {size} bytes, got {len(data)}", min(len(data), size))
    try:
        return _compiled(layout).parse(data)
    except Exception:  # compiled code raises construct's and the stdlib's errors alike
        pass
    try:
        return layout.parse(data)
    except c.ConstructError as exc:
        raise DecodeError(f"bad field: {exc}") from None


def build(layout: c.Construct, **fields: Any) -> bytes:
    """The bytes of one file from its fields (`ValueError` for a value that doesn't fit)."""
    try:
        return bytes(_compiled(layout).build(fields))
    except Exception:  # compiled code raises construct's and the stdlib's errors alike
        pass
    try:
        return bytes(layout.build(fields))
    except c.ConstructError as exc:
        raise ValueError(f"cannot build the record: {exc}") from None
