"""Batch files of offline records: how terminals hand records to settlement (docs/records.md).

A batch file (format version 1) is a 32-byte header (`BATCH_HEADER`: magic
``UCOR``, format version, record size, terminal id, batch id, creation time),
``count`` records of 256 bytes (purse records, `unioncard.offline.record`, and EMV
card sales, `unioncard.offline.emv_record`, in any mix), and a 32-byte
trailer (`BATCH_TRAILER`: magic ``UCOE``, count, the sums of the list and
charged amounts, and the CRC-32 of every byte before that CRC).

`read_batch` checks all of it and refuses a damaged file whole (`DecodeError`
with the byte offset and the check that failed): settlement never applies half
a file.  `write_batch` replaces the target atomically (temporary file in the
same directory, fsync, rename, fsync of the directory), so a reader sees the
old file or the new one, never a mix.

>>> import datetime as dt
>>> raw = encode_batch(bytes.fromhex("310100001234"), 42, dt.datetime(2026, 5, 1, 23, 0), [])
>>> len(raw), raw[:4], raw[32:36]
(64, b'UCOR', b'UCOE')
>>> read_batch(raw).batch_id, batch_file_name(bytes.fromhex("310100001234"), 42)
(42, '310100001234-00000042.ucb')
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, overload

import construct as c

from unioncard.errors import DecodeError
from unioncard.offline.emv_record import EmvRecord
from unioncard.offline.record import RECORD_SIZE, OfflineRecord, decode_record

__all__ = [
    "BATCH_FORMAT_VERSION",
    "BATCH_HEADER",
    "BATCH_TRAILER",
    "HEADER_MAGIC",
    "HEADER_SIZE",
    "TRAILER_MAGIC",
    "TRAILER_SIZE",
    "AnyRecord",
    "Batch",
    "batch_file_name",
    "encode_batch",
    "read_batch",
    "write_batch",
]

BATCH_FORMAT_VERSION = 1
"""The batch format version written, and the only one read."""

HEADER_MAGIC = b"UCOR"
TRAILER_MAGIC = b"UCOE"
HEADER_SIZE = 32
TRAILER_SIZE = 32
_SUFFIX = ".ucb"
AnyRecord = OfflineRecord | EmvRecord
"""A record a batch carries: a purse record or an EMV card sale (docs/records.md)."""
R = TypeVar("R", OfflineRecord, AnyRecord)
_MAX_COUNT = 0xFFFF_FFFF


class _BcdDateTime(c.Adapter):  # type: ignore[misc]
    """BCD ``YYYYMMDDhhmmss`` (7 bytes) ⇄ naive `datetime.datetime`."""

    def _decode(self, obj: bytes, context: Any, path: str) -> dt.datetime:
        text = obj.hex()
        try:
            if not text.isdigit():
                raise ValueError
            return dt.datetime.strptime(text, "%Y%m%d%H%M%S")
        except ValueError:
            raise c.ValidationError(f"{text.upper()} is not a BCD date and time "
                                    "YYYYMMDDhhmmss", path=path) from None

    def _encode(self, obj: dt.datetime, context: Any, path: str) -> bytes:
        return bytes.fromhex(f"{obj.year:04d}{obj:%m%d%H%M%S}")


BATCH_HEADER = c.Struct(
    "magic" / c.Const(HEADER_MAGIC),
    "format_version" / c.Const(BATCH_FORMAT_VERSION, c.Int16ub),
    "record_size" / c.Const(RECORD_SIZE, c.Int16ub),
    "terminal_id" / c.Bytes(6),
    "batch_id" / c.Int32ub,
    "created" / _BcdDateTime(c.Bytes(7)),
    "reserved" / c.Padding(7),
)
"""The 32-byte header of a batch file (format version 1)."""

BATCH_TRAILER = c.Struct(
    "magic" / c.Const(TRAILER_MAGIC),
    "count" / c.Int32ub,
    "list_total" / c.Int64ub,
    "charged_total" / c.Int64ub,
    "reserved" / c.Padding(4),
    "crc" / c.Int32ub,  # CRC-32 of every byte of the file before this field
)
"""The 32-byte trailer; its ``crc`` covers the whole file up to it (header, records,
trailer bytes 0..27), so it is computed by `encode_batch`, not by this struct."""

_H_VERSION, _H_RECORD_SIZE, _H_CREATED = 4, 6, 18  # header offsets
_T_COUNT, _T_LIST, _T_CHARGED, _T_CRC = 4, 8, 16, 28  # trailer offsets


@dataclass(frozen=True, slots=True)
class Batch(Generic[R]):
    """One batch file's content: header fields, the records, and the trailer's sums.

    ``list_total`` and ``charged_total`` are computed from the records (a file
    whose trailer disagrees is refused by `read_batch`).
    """

    terminal_id: bytes
    batch_id: int
    created: dt.datetime
    records: tuple[R, ...]
    list_total: int = field(init=False)
    charged_total: int = field(init=False)

    def __post_init__(self) -> None:
        _check_header(self.terminal_id, self.batch_id, self.created)
        records = self.records
        if not isinstance(records, tuple):
            raise ValueError("records must be a tuple of OfflineRecord or EmvRecord")
        if len(records) > _MAX_COUNT:
            raise ValueError(f"{len(records)} records, a batch holds at most {_MAX_COUNT}")
        for index, record in enumerate(records):
            if not isinstance(record, OfflineRecord | EmvRecord):
                raise ValueError(f"record {index} is a {type(record).__name__}, "
                                 "not an OfflineRecord or an EmvRecord")
            if record.terminal_id != self.terminal_id:
                raise ValueError(f"record {index} is from terminal "
                                 f"{record.terminal_id.hex().upper()}, the batch from "
                                 f"{self.terminal_id.hex().upper()}")
        object.__setattr__(self, "list_total", sum(r.list_amount for r in records))
        object.__setattr__(self, "charged_total", sum(r.charged_amount for r in records))

    @property
    def count(self) -> int:
        """Number of records."""
        return len(self.records)

    @property
    def file_name(self) -> str:
        """The conventional file name, `batch_file_name` of this batch."""
        return batch_file_name(self.terminal_id, self.batch_id)


def _check_header(terminal_id: bytes, batch_id: int, created: dt.datetime) -> None:
    if not isinstance(terminal_id, bytes) or len(terminal_id) != 6:
        raise ValueError(f"terminal_id must be 6 bytes, got {terminal_id!r}")
    if isinstance(batch_id, bool) or not isinstance(batch_id, int) \
            or not 0 <= batch_id <= 0xFFFF_FFFF:
        raise ValueError(f"batch_id must be an unsigned 32-bit integer, got {batch_id!r}")
    if not isinstance(created, dt.datetime) or created.tzinfo is not None:
        raise ValueError(f"created must be a naive datetime, got {created!r}")
    if created.microsecond:
        raise ValueError("created keeps whole seconds; drop the microseconds")


def batch_file_name(terminal_id: bytes, batch_id: int) -> str:
    """The conventional name of a batch file: terminal id in hex, batch id in decimal
    (at least 8 digits), e.g. ``310100001234-00000042.ucb``."""
    _check_header(terminal_id, batch_id, dt.datetime(2000, 1, 1))
    return f"{terminal_id.hex().upper()}-{batch_id:08d}{_SUFFIX}"


def encode_batch(terminal_id: bytes, batch_id: int, created: dt.datetime,
                 records: Iterable[AnyRecord]) -> bytes:
    """The bytes of a batch file; `ValueError` for a record from another terminal, or a
    header field that does not fit."""
    batch = Batch(terminal_id, batch_id, created, tuple(records))
    out = bytearray(BATCH_HEADER.build(
        {"terminal_id": terminal_id, "batch_id": batch_id, "created": created}))
    for record in batch.records:
        out += record.to_bytes()
    out += BATCH_TRAILER.build({"count": batch.count, "list_total": batch.list_total,
                                "charged_total": batch.charged_total, "crc": 0})
    out[-4:] = zlib.crc32(memoryview(out)[:-4]).to_bytes(4, "big")
    return bytes(out)


Source = str | os.PathLike[str] | bytes | bytearray | memoryview


@overload
def read_batch(source: Source, *, emv: Literal[False] = False) -> Batch[OfflineRecord]: ...


@overload
def read_batch(source: Source, *, emv: Literal[True]) -> Batch[AnyRecord]: ...


def read_batch(source: Source, *, emv: bool = False) -> Batch[Any]:
    """Read and check a whole batch file (a path, or its bytes).

    Checks, in order: the size, the header's magic, format version and record
    size, that the size is header + n × 256 + trailer, the trailer's magic,
    each record (its CRC, version and fields), the file CRC, the count, the
    two sums and that every record is from the header's terminal.  Any failure
    raises `DecodeError` with the byte offset: the file is refused whole.

    A batch carries purse records and EMV card records; ``emv=True`` reads both
    (``records`` in file order), the default reads purse records only and refuses
    a file holding an EMV card record (a reader that settles or audits purse
    records must not skip a sale silently).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = Path(source).read_bytes()
    size = len(data)
    if size < HEADER_SIZE + TRAILER_SIZE:
        raise DecodeError(f"truncated: {size} bytes, a batch file has at least "
                          f"{HEADER_SIZE + TRAILER_SIZE} (header and trailer)", size)
    if data[:4] != HEADER_MAGIC:
        raise DecodeError(f"bad header magic {data[:4]!r}, expected {HEADER_MAGIC!r}: "
                          "not a batch file", 0)
    version = int.from_bytes(data[_H_VERSION:_H_VERSION + 2], "big")
    if version != BATCH_FORMAT_VERSION:
        raise DecodeError(f"unsupported batch format_version {version} (this reader "
                          f"knows {BATCH_FORMAT_VERSION})", _H_VERSION)
    record_size = int.from_bytes(data[_H_RECORD_SIZE:_H_RECORD_SIZE + 2], "big")
    if record_size != RECORD_SIZE:
        raise DecodeError(f"record_size {record_size} in the header, format version "
                          f"{BATCH_FORMAT_VERSION} has {RECORD_SIZE}", _H_RECORD_SIZE)
    n, extra = divmod(size - HEADER_SIZE - TRAILER_SIZE, RECORD_SIZE)
    if extra:
        raise DecodeError(f"size {size} is not header + n × {RECORD_SIZE} + trailer "
                          f"({extra} bytes too many, or the file is truncated)", size)
    trailer_at = size - TRAILER_SIZE
    if data[trailer_at:trailer_at + 4] != TRAILER_MAGIC:
        raise DecodeError(f"bad trailer magic {data[trailer_at:trailer_at + 4]!r}, expected "
                          f"{TRAILER_MAGIC!r}: truncated or extended file", trailer_at)
    try:
        header = BATCH_HEADER.parse(data[:HEADER_SIZE])
    except c.ConstructError as exc:
        raise DecodeError(f"bad header: {_last_line(exc)}", _H_CREATED) from None
    trailer = BATCH_TRAILER.parse(data[trailer_at:])

    records: list[AnyRecord] = []
    for index in range(n):
        at = HEADER_SIZE + index * RECORD_SIZE
        try:
            record = decode_record(data[at:at + RECORD_SIZE])
            if not emv and isinstance(record, EmvRecord):
                raise DecodeError("an EMV card record (E1): this reader takes purse records "
                                  "only (read_batch(..., emv=True) reads both kinds)", 0)
            records.append(record)
        except DecodeError as exc:
            raise DecodeError(f"record {index}: {exc.message}", at + exc.offset,
                              records) from None

    computed = zlib.crc32(memoryview(data)[:size - 4])
    if trailer.crc != computed:
        raise DecodeError(f"file CRC-32 mismatch: expected {computed:08X}, found "
                          f"{trailer.crc:08X}", trailer_at + _T_CRC, records)
    if trailer.count != n:
        raise DecodeError(f"trailer count {trailer.count}, the file holds {n} records",
                          trailer_at + _T_COUNT, records)
    list_total = sum(r.list_amount for r in records)
    if trailer.list_total != list_total:
        raise DecodeError(f"trailer list_amount sum {trailer.list_total}, the records add "
                          f"up to {list_total}", trailer_at + _T_LIST, records)
    charged_total = sum(r.charged_amount for r in records)
    if trailer.charged_total != charged_total:
        raise DecodeError(f"trailer charged_amount sum {trailer.charged_total}, the records "
                          f"add up to {charged_total}", trailer_at + _T_CHARGED, records)
    for index, record in enumerate(records):
        if record.terminal_id != header.terminal_id:
            raise DecodeError(f"record {index} is from terminal "
                              f"{record.terminal_id.hex().upper()}, the batch header names "
                              f"{header.terminal_id.hex().upper()}",
                              HEADER_SIZE + index * RECORD_SIZE + 1, records)
    return Batch(header.terminal_id, header.batch_id, header.created, tuple(records))


def write_batch(path: str | os.PathLike[str], terminal_id: bytes, batch_id: int,
                created: dt.datetime, records: Iterable[AnyRecord]) -> Path:
    """Write a batch file atomically and durably; returns its path.

    `unioncard.atomic_file.write_atomically`: a temporary file created
    exclusively in the target's directory, fsync'd, renamed over the target, the
    directory fsync'd; on any failure the target is untouched.  A batch file is
    never replaced: writing the same batch again is harmless (the same bytes are
    there), but a *different* file of that name (another journal that exported
    for the same terminal id and batch number) raises `FileExistsError`.
    """
    from unioncard.atomic_file import write_atomically

    return write_atomically(path, encode_batch(terminal_id, batch_id, created, records),
                            replace=False)


def _last_line(exc: c.ConstructError) -> str:
    return str(exc).strip().splitlines()[-1]
