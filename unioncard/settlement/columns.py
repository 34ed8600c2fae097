"""Batch files as numpy columns: settlement's fast ingest (docs/records.md, docs/settlement.md).

`decode_batch` maps a batch file's records onto a numpy structured array
(`RECORD_DTYPE`, big-endian, one row per 256-byte record) without building a
Python object per record, and checks everything `unioncard.offline.read_batch`
checks, vectorized: the header, the size, each record's CRC, version and fields,
the trailer's count, sums and file CRC.  When any check fails, `read_batch`
itself names the failure, so both paths refuse the same files with the same
words (tests/settlement/test_columns.py proves the agreement on damaged files).

The derived columns settlement works on (amounts, dates as ``datetime64``,
64-bit card and terminal keys) come from `Columns`.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from unioncard.errors import DecodeError
from unioncard.jit import jit
from unioncard.offline.batch import (
    BATCH_FORMAT_VERSION,
    HEADER_MAGIC,
    HEADER_SIZE,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    read_batch,
)
from unioncard.offline.record import (
    CRC_OFFSET,
    RECORD_LAYOUT,
    RECORD_SIZE,
)
from unioncard.settlement.errors import BatchRefused
from unioncard.settlement.keyindex import _mix

__all__ = ["RECORD_DTYPE", "Columns", "DecodedBatch", "decode_batch", "line_groups",
           "unchecked_batch"]

_INTS = {1: ">u1", 2: ">u2", 4: ">u4"}
_BYTES = {"terminal_id", "issuer", "diversifier", "organization", "card_expiry", "route",
          "merchant", "date", "time", "tac", "ruleset_version", "reserved"}


def _dtype() -> np.dtype[Any]:
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    for name, offset, size in RECORD_LAYOUT:
        names.append(name)
        offsets.append(offset)
        if name == "rules":
            formats.append((">u2", (8,)))
        elif name in _BYTES:
            formats.append((np.uint8, (size,)))
        else:
            formats.append(_INTS[size])
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": RECORD_SIZE})


RECORD_DTYPE = _dtype()
"""The offline record (format version 1) as a numpy structured dtype."""

_LOAD, _PURCHASE, _CAPP = 0x02, 0x06, 0x09
_FLAGS = 0x07
_NO_TAC, _UNVERIFIED = 0x02, 0x04


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """One checked batch file: its header, its records, and the SHA-256 of its bytes."""

    terminal_id: bytes
    batch_id: int
    created: str
    records: np.ndarray
    digest: str
    list_total: int
    charged_total: int

    @property
    def count(self) -> int:
        return len(self.records)


def decode_batch(data: bytes, source: str = "batch") -> DecodedBatch:
    """Check and decode a whole batch file; `BatchRefused` names the first failure."""
    size = len(data)
    ok = size >= HEADER_SIZE + TRAILER_SIZE and data[:4] == HEADER_MAGIC
    n, extra = divmod(size - HEADER_SIZE - TRAILER_SIZE, RECORD_SIZE)
    ok = ok and not extra and n >= 0
    ok = ok and int.from_bytes(data[4:6], "big") == BATCH_FORMAT_VERSION
    ok = ok and int.from_bytes(data[6:8], "big") == RECORD_SIZE
    trailer = data[size - TRAILER_SIZE:]
    ok = ok and trailer[:4] == TRAILER_MAGIC
    if ok:
        records = np.frombuffer(data, RECORD_DTYPE, count=n, offset=HEADER_SIZE)
        raw = np.frombuffer(data, np.uint8, count=n * RECORD_SIZE,
                            offset=HEADER_SIZE).reshape(n, RECORD_SIZE)
        invalid, crcs, totals = _invalid(records, raw, np.frombuffer(data[8:14], np.uint8))
        ok = (_created_valid(data[18:25])
              and int.from_bytes(trailer[28:32], "big") == _file_crc(data, raw, crcs)
              and int.from_bytes(trailer[4:8], "big") == n
              and not bool(invalid.any())
              and int.from_bytes(trailer[8:16], "big") == int(totals[0])
              and int.from_bytes(trailer[16:24], "big") == int(totals[1])
              and totals[2] == 0)
    if not ok:
        _refuse(data, source)
    return DecodedBatch(bytes(data[8:14]), int.from_bytes(data[14:18], "big"),
                        data[18:25].hex(), records, hashlib.sha256(data).hexdigest(),
                        int.from_bytes(trailer[8:16], "big"),
                        int.from_bytes(trailer[16:24], "big"))


def unchecked_batch(data: bytes) -> DecodedBatch:
    """The columns of a batch file another reader already checked (`read_batch`)."""
    n = (len(data) - HEADER_SIZE - TRAILER_SIZE) // RECORD_SIZE
    trailer = data[len(data) - TRAILER_SIZE:]
    return DecodedBatch(bytes(data[8:14]), int.from_bytes(data[14:18], "big"),
                        data[18:25].hex(),
                        np.frombuffer(data, RECORD_DTYPE, count=n, offset=HEADER_SIZE),
                        hashlib.sha256(data).hexdigest(), int.from_bytes(trailer[8:16], "big"),
                        int.from_bytes(trailer[16:24], "big"))


def _refuse(data: bytes, source: str) -> None:
    """The reference reader names what is wrong; the file is refused whole."""
    try:
        read_batch(data)
    except DecodeError as exc:
        raise BatchRefused(f"{source}: {exc}", reason=exc.message) from None
    raise BatchRefused(f"{source}: refused by the fast checks but read by the reference "
                       "reader: report this file", reason="inconsistent checks")


def _created_valid(raw: bytes) -> bool:
    text = raw.hex()
    if not text.isdigit():
        return False
    import datetime as dt

    try:
        dt.datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


# --- the record checks, vectorized -------------------------------------------------------


def _crc_table() -> np.ndarray:
    table = np.zeros((8, 256), np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
        table[0, byte] = crc
    for k in range(1, 8):
        table[k] = (table[k - 1] >> 8) ^ table[0][table[k - 1] & 0xFF]
    return table


_CRC_TABLE = _crc_table()


@jit
def _crc_step(crc, raw, i, j, table):  # type: ignore[no-untyped-def]
    """The CRC-32 register ``crc`` after bytes ``j..j+7`` of row ``i`` (slicing by 8)."""
    lo = crc ^ (np.uint32(raw[i, j]) | (np.uint32(raw[i, j + 1]) << np.uint32(8))
                | (np.uint32(raw[i, j + 2]) << np.uint32(16))
                | (np.uint32(raw[i, j + 3]) << np.uint32(24)))
    return (table[7, lo & np.uint32(0xFF)] ^ table[6, (lo >> np.uint32(8)) & np.uint32(0xFF)]
            ^ table[5, (lo >> np.uint32(16)) & np.uint32(0xFF)]
            ^ table[4, lo >> np.uint32(24)]
            ^ table[3, raw[i, j + 4]] ^ table[2, raw[i, j + 5]]
            ^ table[1, raw[i, j + 6]] ^ table[0, raw[i, j + 7]])


@jit
def _crc_end(crc, raw, i, j, length, table):  # type: ignore[no-untyped-def]
    """The CRC-32 of row ``i`` from the register after its first ``j`` bytes."""
    while j < length:
        crc = table[0, (crc ^ np.uint32(raw[i, j])) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
        j += 1
    return crc ^ np.uint32(0xFFFFFFFF)


@jit
def _crc_rows(raw, length, table, out):  # type: ignore[no-untyped-def]
    """zlib's CRC-32 of the first ``length`` bytes of each row.  Four rows at a time: each
    row's register waits on its table lookups, so four independent ones keep the CPU busy
    (twice the speed of one row at a time)."""
    whole = length - length % 8
    i = 0
    while i < raw.shape[0]:
        four = i + 4 <= raw.shape[0]
        a = b = c = d = np.uint32(0xFFFFFFFF)
        for j in range(0, whole, 8):
            a = _crc_step(a, raw, i, j, table)
            if four:
                b = _crc_step(b, raw, i + 1, j, table)
                c = _crc_step(c, raw, i + 2, j, table)
                d = _crc_step(d, raw, i + 3, j, table)
        out[i] = _crc_end(a, raw, i, whole, length, table)
        if four:
            out[i + 1] = _crc_end(b, raw, i + 1, whole, length, table)
            out[i + 2] = _crc_end(c, raw, i + 2, whole, length, table)
            out[i + 3] = _crc_end(d, raw, i + 3, whole, length, table)
        i += 4 if four else 1


def record_crcs(raw: np.ndarray) -> np.ndarray:
    """The CRC-32 (`zlib.crc32`) of bytes 0..251 of each 256-byte record row."""
    out = np.empty(raw.shape[0], np.uint32)
    _crc_rows(np.ascontiguousarray(raw), CRC_OFFSET, _CRC_TABLE, out)
    return out


def _invalid(r: np.ndarray, raw: np.ndarray, terminal: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One flag per record: True where `OfflineRecord.from_bytes` would refuse it; and,
    computed on the way, the CRC-32 of each record's bytes 0..251 and the totals: list
    amounts, charged amounts, and how many records are not of ``terminal`` (the
    header's terminal id, when given)."""
    out = np.zeros(len(r), dtype=np.bool_)
    crcs = np.zeros(len(r), np.uint32)
    totals = np.zeros(3, np.uint64)
    if len(r):
        _check_rows(np.ascontiguousarray(raw), _CRC_TABLE, out, crcs,
                    np.zeros(0, np.uint8) if terminal is None else terminal, totals)
    return out, crcs, totals


def _shift_table(length: int) -> np.ndarray:
    """The linear map taking a CRC-32 to that of its data followed by ``length`` more
    bytes, as four byte tables: with it, ``crc32(a + b) == shift(crc32(a)) ^ crc32(b)``
    (zlib's ``crc32_combine``)."""
    zeros = bytes(length)
    base = zlib.crc32(zeros)
    return np.array([[zlib.crc32(zeros, byte << (8 * k)) ^ base for byte in range(256)]
                     for k in range(4)], np.uint32)


_ROW_SHIFT = _shift_table(RECORD_SIZE)


@jit
def _fold_rows(start, raw, crcs, table, shift):  # type: ignore[no-untyped-def]
    """The CRC-32 of the data whose CRC is ``start`` followed by the rows of ``raw``,
    from each row's CRC of bytes 0..251 (``crcs``) and its last 4 bytes."""
    crc = np.uint32(start)
    for i in range(raw.shape[0]):
        row = crcs[i] ^ np.uint32(0xFFFFFFFF)  # that row's CRC on over bytes 252..255
        for j in range(252, 256):
            row = table[0, (row ^ np.uint32(raw[i, j])) & np.uint32(0xFF)] ^ (row >> np.uint32(8))
        crc = (shift[0, crc & np.uint32(0xFF)] ^ shift[1, (crc >> np.uint32(8)) & np.uint32(0xFF)]
               ^ shift[2, (crc >> np.uint32(16)) & np.uint32(0xFF)]
               ^ shift[3, crc >> np.uint32(24)] ^ row ^ np.uint32(0xFFFFFFFF))
    return crc


def _file_crc(data: bytes, raw: np.ndarray, crcs: np.ndarray) -> int:
    """The batch file's CRC-32 (of every byte before it: docs/records.md) from the
    record CRCs the row checks computed, instead of a second pass over the records."""
    start = zlib.crc32(memoryview(data)[:HEADER_SIZE])
    if len(raw):
        start = int(_fold_rows(start, raw, crcs, _CRC_TABLE, _ROW_SHIFT))
    return zlib.crc32(memoryview(data)[len(data) - TRAILER_SIZE:len(data) - 4], start)


@jit
def _u16(row, at):  # type: ignore[no-untyped-def]
    return (np.int64(row[at]) << 8) | np.int64(row[at + 1])


@jit
def _u32(row, at):  # type: ignore[no-untyped-def]
    return ((np.int64(row[at]) << 24) | (np.int64(row[at + 1]) << 16)
            | (np.int64(row[at + 2]) << 8) | np.int64(row[at + 3]))


@jit
def _all_zero(row, start, end):  # type: ignore[no-untyped-def]
    for k in range(start, end):  # noqa: SIM110 - numba compiles loops, not all(generator)
        if row[k] != 0:
            return False
    return True


@jit
def _padded(row, start, end):  # type: ignore[no-untyped-def]
    """The field's text ends at its first 00; only 00 follows.  Returns the text's end, or
    -1 when a non-zero byte follows a 00."""
    stop = end
    for k in range(start, end):
        if row[k] == 0:
            stop = k
            break
    for k in range(stop, end):
        if row[k] != 0:
            return -1
    return stop


@jit
def _ascii_ok(row, start, end):  # type: ignore[no-untyped-def]
    stop = _padded(row, start, end)
    if stop < 0:
        return False
    for k in range(start, stop):  # noqa: SIM110
        if row[k] < 0x20 or row[k] > 0x7E:
            return False
    return True


@jit
def _utf8_ok(row, start, end):  # type: ignore[no-untyped-def]
    """Strict UTF-8 (as Python decodes it) without C0, DEL or C1 control characters."""
    stop = _padded(row, start, end)
    if stop < 0:
        return False
    k = start
    while k < stop:
        b = np.int64(row[k])
        if b < 0x80:
            if b < 0x20 or b == 0x7F:
                return False
            k += 1
            continue
        if 0xC2 <= b <= 0xDF:
            need, cp = 1, b & 0x1F
        elif 0xE0 <= b <= 0xEF:
            need, cp = 2, b & 0x0F
        elif 0xF0 <= b <= 0xF4:
            need, cp = 3, b & 0x07
        else:
            return False
        for m in range(1, need + 1):
            if k + m >= stop:
                return False
            c = np.int64(row[k + m])
            if c < 0x80 or c > 0xBF:
                return False
            cp = (cp << 6) | (c & 0x3F)
        if (need == 2 and cp < 0x800) or (need == 3 and cp < 0x10000) or cp > 0x10FFFF:
            return False
        if 0xD800 <= cp <= 0xDFFF or 0x80 <= cp < 0xA0:
            return False
        k += need + 1
    return True


@jit
def _nibbles_ok(row, start, end):  # type: ignore[no-untyped-def]
    for k in range(start, end):  # noqa: SIM110
        if (row[k] >> 4) > 9 or (row[k] & 0x0F) > 9:
            return False
    return True


@jit
def _bcd(byte):  # type: ignore[no-untyped-def]
    return np.int64(byte >> 4) * 10 + np.int64(byte & 0x0F)


@jit
def _date_ok(row, at, allow_zero):  # type: ignore[no-untyped-def]
    if allow_zero and _all_zero(row, at, at + 4):
        return True
    if not _nibbles_ok(row, at, at + 4):
        return False
    year = _bcd(row[at]) * 100 + _bcd(row[at + 1])
    month, day = _bcd(row[at + 2]), _bcd(row[at + 3])
    if year < 1000 or month < 1 or month > 12 or day < 1:
        return False
    days = 31
    if month == 4 or month == 6 or month == 9 or month == 11:
        days = 30
    elif month == 2:
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        days = 29 if leap else 28
    return day <= days


@jit
def _time_ok(row, at):  # type: ignore[no-untyped-def]
    return (_nibbles_ok(row, at, at + 3) and _bcd(row[at]) < 24 and _bcd(row[at + 1]) < 60
            and _bcd(row[at + 2]) < 60)


@jit
def _check_rows(raw, table, out, crcs, terminal, totals):  # type: ignore[no-untyped-def]
    """The checks of `OfflineRecord.from_bytes`, one record per row (docs/records.md);
    ``crcs`` receives each row's CRC-32 of bytes 0..251, ``totals`` the sums of the
    list and charged amounts and the count of rows whose terminal id (bytes 1..6) is
    not ``terminal`` (when it has 6 bytes)."""
    _crc_rows(raw, 252, table, crcs)
    for i in range(raw.shape[0]):
        row = raw[i]
        if terminal.shape[0] == 6:
            for k in range(6):
                if row[1 + k] != terminal[k]:
                    totals[2] += np.uint64(1)
                    break
        bad = np.int64(crcs[i]) != _u32(row, 252) or row[0] != 1
        bad = bad or not (row[27] == 1 or row[27] == 2)
        tx = row[31]
        bad = bad or not (tx == 2 or tx == 6 or tx == 9)
        flags = row[174]
        no_tac = (flags & 2) != 0
        bad = bad or (flags & 0xF8) != 0 or ((flags & 4) != 0 and not no_tac)
        bad = bad or _all_zero(row, 170, 174) != no_tac or row[207] > 2
        unused = False
        all_unused = True
        for slot in range(8):
            value = _u16(row, 100 + 2 * slot)
            if value == 0xFFFF:
                unused = True
            else:
                all_unused = False
                if unused:
                    bad = True
        listed, charged = _u32(row, 88), _u32(row, 92)
        totals[0] += np.uint64(listed)
        totals[1] += np.uint64(charged)
        if tx == 2:
            bad = bad or row[32] != 0 or charged != listed or not all_unused
            bad = bad or not _all_zero(row, 175, 207)
        else:
            bad = bad or row[32] == 0 or charged > listed
        bad = bad or not _ascii_ok(row, 116, 132) or not _ascii_ok(row, 136, 160)
        bad = bad or not _utf8_ok(row, 36, 84)
        bad = bad or not _date_ok(row, 163, False) or not _date_ok(row, 84, True)
        bad = bad or not _time_ok(row, 167)
        out[i] = bad


# --- derived columns -------------------------------------------------------------------------

_NAT = np.iinfo(np.int64).min  # numpy's NaT


@jit
def _days_from_civil(year, month, day):  # type: ignore[no-untyped-def]
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if month <= 2:
        year -= 1
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@jit
def _bcd_date(row, at):  # type: ignore[no-untyped-def]
    """Days since 1970 of the BCD date ``YYYYMMDD`` at ``row[at:at + 4]``."""
    year = _bcd(row[at]) * 100 + _bcd(row[at + 1])
    return _days_from_civil(year, _bcd(row[at + 2]), _bcd(row[at + 3]))


@jit
def _be64(row, at, width):  # type: ignore[no-untyped-def]
    value = np.uint64(0)
    for k in range(at, at + width):
        value = (value << np.uint64(8)) | np.uint64(row[k])
    return value


_LAYOUT: dict[str, tuple[np.dtype[Any], int]] = {
    name: (dtype, offset) for name, (dtype, offset, *_) in (RECORD_DTYPE.fields or {}).items()}
_SCALARS = tuple(name for name, (dtype, _) in _LAYOUT.items() if dtype.shape == ())
"""The record's integer fields (docs/records.md), each a native column of `Columns`."""
_SCALAR_AT = np.array([(_LAYOUT[name][1], _LAYOUT[name][0].itemsize) for name in _SCALARS],
                      np.int64)
_SCALAR_ROWS = {name: k for k, name in enumerate(_SCALARS)}
_BYTE_FIELDS = ("terminal_id", "diversifier", "date", "time", "tac")
"""The byte fields the TACs are computed over, copied side by side in the same pass."""
_BYTES_AT = np.array([(_LAYOUT[name][1], _LAYOUT[name][0].itemsize) for name in _BYTE_FIELDS],
                     np.int64)
_BYTE_COLUMNS = {name: (int(start), int(start + width)) for name, width, start in zip(
    _BYTE_FIELDS, _BYTES_AT[:, 1], np.cumsum(_BYTES_AT[:, 1]) - _BYTES_AT[:, 1], strict=True)}


@jit
def _derive_rows(raw, issuer, diversifier, terminal, when, expiry, version,  # type: ignore[no-untyped-def]
                 at, scalars, bytes_at, fields):
    """The derived columns of checked records, their integer fields (``at``: offset and
    size of each, big-endian) as rows of ``scalars``, and the byte fields ``bytes_at``
    side by side in ``fields``, in one pass (offsets: docs/records.md).  ``version``:
    each record's rule set version hashed (0: none), with the top bit clear where its
    bytes are those of the first record with that hash (a batch names a few versions:
    up to 8 are compared; past them, never clear)."""
    seen_hash = np.zeros(8, np.uint64)
    seen_row = np.zeros(8, np.int64)
    seen = 0
    for i in range(raw.shape[0]):
        row = raw[i]
        h = np.uint64(0)
        if not _all_zero(row, _VERSION_AT, _VERSION_AT + 32):
            for k in range(_VERSION_AT, _VERSION_AT + 32, 8):
                h = _mix(h ^ _be64(row, k, 8))
            h = (h & _HASH_BITS) | np.uint64(1)  # never 0, top bit clear
            first = -1
            for j in range(seen):
                if seen_hash[j] == h:
                    first = seen_row[j]
                    break
            if first < 0 and seen < 8:
                seen_hash[seen], seen_row[seen] = h, i
                seen += 1
            elif first < 0 or not _same_span(raw, i, first, _VERSION_AT, 32):
                h |= _NOT_FIRST
        version[i] = h
        for k in range(at.shape[0]):
            scalars[k, i] = np.int64(_be64(row, at[k, 0], at[k, 1]))
        column = 0
        for k in range(bytes_at.shape[0]):
            for b in range(bytes_at[k, 1]):
                fields[i, column] = row[bytes_at[k, 0] + b]
                column += 1
        terminal[i] = _be64(row, 1, 6)
        issuer[i] = _be64(row, 11, 8)
        diversifier[i] = _be64(row, 19, 8)
        when[i] = (_bcd_date(row, 163) * 86400 + _bcd(row[167]) * 3600 + _bcd(row[168]) * 60
                   + _bcd(row[169]))
        expiry[i] = _NAT if _all_zero(row, 84, 88) else _bcd_date(row, 84)


_VERSION_AT = _LAYOUT["ruleset_version"][1]
"""Where a record's rule set version is (32 bytes: docs/records.md)."""
_HASH_BITS = np.uint64(2**63 - 1)
_NOT_FIRST = np.uint64(2**63)


@jit
def _same_span(raw, a, b, at, width):  # type: ignore[no-untyped-def]
    for k in range(at, at + width):  # noqa: SIM110
        if raw[a, k] != raw[b, k]:
            return False
    return True


_LINE_WORDS = ((29, 33), (34, 40), (9, 21))
"""Where a line's texts are in a record, in 4-byte words: route (bytes 116-131),
merchant (136-159), organization (36-83) (docs/records.md)."""


@jit
def _same_texts(words, a, b):  # type: ignore[no-untyped-def]
    for start, end in _LINE_WORDS:  # noqa: SIM110 - numba compiles loops, not all(generator)
        if not _same_span(words, a, b, start, end - start):
            return False
    return True


@jit
def _group_lines(words, rows, head, keys, groups, first, inverse):  # type: ignore[no-untyped-def]
    """Group ``rows`` by ``head`` and the line texts, exactly (hashes only say where to
    look); returns the number of groups."""
    mask = np.uint64(keys.shape[0] - 1)
    count = 0
    for j in range(rows.shape[0]):
        i = rows[j]
        h = np.uint64(head[j]) * np.uint64(0x9E3779B97F4A7C15)
        for start, end in _LINE_WORDS:
            for k in range(start, end):
                h = (h ^ np.uint64(words[i, k])) * np.uint64(0x100000001B3)
        h = _mix(h)
        at = h & mask
        while True:
            g = groups[at]
            if g < 0:
                keys[at], groups[at] = h, count
                first[count] = j
                inverse[j] = count
                count += 1
                break
            f = first[g]
            if keys[at] == h and head[f] == head[j] and _same_texts(words, rows[f], i):
                inverse[j] = g
                break
            at = (at + np.uint64(1)) & mask
    return count


def line_groups(records: np.ndarray, rows: np.ndarray, head: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` of ``records`` grouped by ``head`` (an integer per row: kind, day, mode)
    and their route, merchant and organization: the first row (index into ``rows``) of
    each group, in order of appearance, and each row's group."""
    n = len(records)
    words = np.ascontiguousarray(records).view(np.uint32).reshape(n, RECORD_SIZE // 4)
    size = 1 << max(4, (2 * len(rows)).bit_length())
    first = np.empty(len(rows), np.int64)
    inverse = np.empty(len(rows), np.int64)
    count = _group_lines(words, np.ascontiguousarray(rows, np.int64),
                         np.ascontiguousarray(head, np.int64), np.zeros(size, np.uint64),
                         np.full(size, -1, np.int64), first, inverse)
    return first[:count], inverse


class Columns:
    """The columns settlement works on, derived once, in one numba pass, from the records
    of a checked batch (`decode_batch`, or a file `read_batch` read): the derived ones
    below, every integer field as a native ``int64`` column and the byte fields TACs
    are computed over side by side (`field`), read from each record once instead of
    field by field across its 256 bytes."""

    def __init__(self, records: np.ndarray) -> None:
        self.r = records
        n = len(records)
        raw = np.ascontiguousarray(records).view(np.uint8).reshape(n, RECORD_SIZE)
        self.issuer = np.empty(n, np.uint64)
        self.diversifier = np.empty(n, np.uint64)
        self.terminal = np.empty(n, np.uint64)
        version = np.empty(n, np.uint64)
        when, expiry = np.empty(n, np.int64), np.empty(n, np.int64)
        self._scalars = np.empty((len(_SCALARS), n), np.int64)
        self._bytes = np.empty((n, int(_BYTES_AT[:, 1].sum())), np.uint8)
        if n:
            _derive_rows(raw, self.issuer, self.diversifier, self.terminal, when, expiry,
                         version,
                         _SCALAR_AT, self._scalars, _BYTES_AT, self._bytes)
        self.when = when.view("datetime64[s]")
        """Transaction local time, ``datetime64[s]``."""
        self.expiry = expiry.view("datetime64[D]")
        """Card expiry, ``datetime64[D]`` (NaT when unknown)."""
        self.is_load = self.field("tx_type") == _LOAD
        self.version = version & _HASH_BITS
        """The rule set version (bytes 175..206) hashed to 63 bits; 0: all zeros (none)."""
        self.version_confirmed = (version & _NOT_FIRST) == 0
        """Whether the record's version bytes are those of the batch's first record with
        its hash: where one is not, two versions share a hash (or the batch names more
        than 8), and the hash alone does not tell them apart."""

    def __len__(self) -> int:
        return len(self.r)

    def __reduce__(self) -> tuple[type[Columns], tuple[np.ndarray]]:
        """Pickled as its records (a Dask worker's analysis sends no columns: the
        client derives them again, one pass)."""
        return Columns, (self.r,)

    def field(self, name: str) -> np.ndarray:
        """An integer field as a native ``int64`` column; a byte field ``uint8[N, width]``
        (those the TACs need from the pass, the others as the records')."""
        column: np.ndarray
        if name in _SCALAR_ROWS:
            column = self._scalars[_SCALAR_ROWS[name]]
        elif name in _BYTE_COLUMNS:
            start, end = _BYTE_COLUMNS[name]
            column = self._bytes[:, start:end]
        else:
            column = self.r[name]
        return column

