"""The hotlist (挂失): lost and cancelled cards that terminals refuse (docs/hotlist.md).

The list is a CSV file, ``issuer,card,listed_at``: the 8-byte issuer id of the
card's EF 0015 and the card's 8-byte diversifier in hex, and the listing time
in ISO 8601 (without an offset: China Standard Time).  A delta file adds an
``action`` column, ``add`` or ``remove``.  A bad row refuses the whole file, with
the file and line in the error.

A bus validator opens the list at every tap, so `Hotlist.load` never parses
the CSV when it can help it: it maps a binary hash index of the list, kept in
``$XDG_CACHE_HOME/unioncard/hotlist/`` and rebuilt when the CSV changes, and a
lookup reads a few 28-byte slots, each checked by its CRC.  This module uses
only the standard library, so opening the list costs a tap no heavy import.

>>> import datetime as dt
>>> issuer, card = bytes.fromhex("3101000000000001"), bytes.fromhex("0000000000001234")
>>> hotlist = Hotlist.from_entries([(issuer, card, dt.datetime(2026, 5, 1, 9, 0))])
>>> hotlist.listed_at(issuer, card), (issuer, bytes(8)) in hotlist, len(hotlist)
(datetime.datetime(2026, 5, 1, 9, 0), False, 1)
>>> listed = parse_hotlist(b"issuer,card,listed_at\\n"
...                        b"3101000000000001,0000000000001234,2026-05-01T01:00:00Z\\n")
>>> listed[issuer, card]
datetime.datetime(2026, 5, 1, 9, 0)
"""

from __future__ import annotations

import datetime as dt
import enum
import mmap
import os
import stat
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from unioncard.bounded_read import HOTLIST_LIMIT, InputFileError, open_file, read_file
from unioncard.errors import UnionCardError

__all__ = [
    "CST",
    "DELTA_COLUMNS",
    "HEADER_SIZE",
    "INDEX_MAGIC",
    "INDEX_VERSION",
    "RACY_NS",
    "SLOT_SIZE",
    "DeltaResult",
    "DeltaRow",
    "Hotlist",
    "HotlistError",
    "HotlistWarning",
    "IndexState",
    "apply_delta",
    "cache_dir",
    "check_hotlist",
    "index_path",
    "parse_delta",
    "parse_hotlist",
    "read_delta",
    "read_hotlist",
    "replace_hotlist",
    "write_hotlist",
]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called now and then, in rows, while a large list is parsed."""

CST = dt.timezone(dt.timedelta(hours=8), "CST")
"""China Standard Time: the zone of a listing time written without an offset."""
COLUMNS = ("issuer", "card", "listed_at")
DELTA_COLUMNS = (*COLUMNS, "action")

INDEX_MAGIC = b"UCHL"
INDEX_VERSION = 1
HEADER_SIZE = 160
SLOT_SIZE = 28
_HEADER = struct.Struct("<4sHHQQQQqqQQqqq32s28x")
"""magic, version, slot size, entries, slots, rows, CSV size, mtime_ns, ctime_ns, inode,
device, checked_at_ns, oldest, newest, SHA-256 of the CSV; then the header's CRC-32."""
_SLOT = struct.Struct("<16sqI")
"""issuer + diversifier, listing time (µs since the Unix epoch), CRC-32 of the 24 bytes
before it started from the slot number."""
_CRC = struct.Struct("<I")
EMPTY = -(1 << 63)
"""The listing time of an empty slot."""
_EMPTY_BODY = bytes(16) + struct.pack("<q", EMPTY)
_MULTIPLIER = 0x9E3779B97F4A7C15F39CC0605CEDC835
"""An odd 128-bit multiplier (the golden ratio's bits): multiplicative hashing."""
_MASK_128 = (1 << 128) - 1
MIN_SLOTS = 16
RACY_NS = 3_000_000_000
"""A CSV changed less than this before its index was checked may have changed again
without its stat stamp showing it (timestamps are coarse): its content is hashed."""
MAX_PROBLEMS = 20
LOCK_WAIT = 30.0
"""Seconds `apply_delta` and `replace_hotlist` wait for another writer of the list to
finish before refusing (`FileInUseError`)."""

_LOCAL_EPOCH = dt.datetime(1970, 1, 1, 8, 0)
"""The Unix epoch as China Standard Time wall-clock time."""
_UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
MIN_MICROS = (dt.datetime.min - _LOCAL_EPOCH) // _MICROSECOND
MAX_MICROS = (dt.datetime.max - _LOCAL_EPOCH) // _MICROSECOND
"""Listing times are China time from year 1 to year 9999 (what a datetime holds)."""
_clock = time.time_ns
"""The wall clock read before a CSV is read (tests move it)."""


class HotlistError(UnionCardError):
    """A hotlist (or delta) file that cannot be used; nothing was read from it.

    ``problems`` lists the bad rows found (``file:line: reason``, at most 20).
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class HotlistWarning(UserWarning):
    """The index could not be used: the cache is not writable (the list is then held in
    memory) or a slot was damaged (the index was rebuilt)."""


class IndexState(enum.StrEnum):
    """What `Hotlist.load` found and did."""

    FRESH = "fresh"
    """The index was built from this very CSV: used as it is."""
    VERIFIED = "verified"
    """The CSV changed too shortly before the index was built to trust its stat stamp;
    the content's SHA-256 matched."""
    BUILT = "built"
    """There was no index: one was built."""
    REBUILT = "rebuilt"
    """The index was stale (the CSV changed) or damaged: it was rebuilt."""
    MEMORY = "memory"
    """No index: the entries are held in a dict (`from_entries`, or no writable cache)."""


# --- times and keys ------------------------------------------------------------------------


def _micros(text: str) -> int:
    """An ISO 8601 listing time as µs since the Unix epoch (no offset: China time)."""
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        return (when - _LOCAL_EPOCH) // _MICROSECOND
    return (when - _UTC_EPOCH) // _MICROSECOND


def _to_micros(when: dt.datetime) -> int:
    if when.tzinfo is None:
        return (when - _LOCAL_EPOCH) // _MICROSECOND
    micros = (when - _UTC_EPOCH) // _MICROSECOND
    if not MIN_MICROS <= micros <= MAX_MICROS:
        raise ValueError(f"listing time {when.isoformat()} is outside the years 1 to 9999 in "
                         "China time")
    return micros


def _in_range(micros: int) -> bool:
    return MIN_MICROS <= micros <= MAX_MICROS


def _from_micros(micros: int) -> dt.datetime:
    """µs since the Unix epoch as naive China Standard Time."""
    return _LOCAL_EPOCH + dt.timedelta(microseconds=micros)


def _iso(micros: int) -> str:
    return _from_micros(micros).isoformat() + "+08:00"


def _key(issuer: bytes, diversifier: bytes) -> bytes:
    if len(issuer) != 8 or len(diversifier) != 8:
        raise ValueError(f"an issuer id and a diversifier are 8 bytes each, not "
                         f"{len(issuer)} and {len(diversifier)}")
    return bytes(issuer) + bytes(diversifier)


def _split(key: bytes) -> tuple[bytes, bytes]:
    return key[:8], key[8:]


# --- reading the CSV -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeltaRow:
    """One row of a delta file: add (list) or remove (delist) a card."""

    line: int
    action: str
    issuer: bytes
    diversifier: bytes
    listed_at: dt.datetime | None
    """Naive China Standard Time; may be None for a removal only."""


class _Parsed:
    """What `_parse` read: ``entries`` of a full list (key -> earliest listing time, µs),
    ``delta`` rows (line, add, key, listing time µs or None), and the data rows."""

    __slots__ = ("delta", "entries", "rows")

    def __init__(self) -> None:
        self.entries: dict[bytes, int] = {}
        self.delta: list[tuple[int, bool, bytes, int | None]] = []
        self.rows = 0


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"{source}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise HotlistError(message, [message]) from None


def _check_row(row: list[str], delta: bool) -> tuple[bool, bytes, int | None] | str:
    """(add, key, listing time µs) of a row, or why it is refused."""
    if len(row) != 3 and not (delta and len(row) == 4):
        if delta:
            return f"{len(row)} fields; a delta row is issuer,card,listed_at[,action]"
        hint = " (is this a delta file?)" if len(row) == 4 else ""
        return f"{len(row)} fields; a hotlist row is issuer,card,listed_at{hint}"
    issuer, card, listed = row[0].strip(), row[1].strip(), row[2].strip()
    add = True
    if len(row) == 4:
        action = row[3].strip().lower()
        if action not in ("", "add", "remove"):
            return f"action {row[3]!r} is neither add nor remove"
        add = action != "remove"
    try:
        key = bytes.fromhex(issuer + card) if len(issuer) == len(card) == 16 else b""
    except ValueError:
        key = b""
    if len(key) != 16:
        for what, cell in (("issuer", issuer), ("card", card)):
            try:
                good = len(cell) == 16 and len(bytes.fromhex(cell)) == 8
            except ValueError:
                good = False
            if not good:
                return f"{what} {cell!r} is not 16 hex digits (8 bytes)"
    if not listed:
        if add:
            return "listing time is empty"
        return add, key, None
    try:
        micros = _micros(listed)
    except (ValueError, OverflowError):
        return f"listing time {listed!r} is not an ISO 8601 date and time"
    if not _in_range(micros):
        return (f"listing time {listed!r} is outside the years 1 to 9999 in China time "
                "(UTC+8)")
    return add, key, micros


def _header_row(row: list[str], delta: bool) -> bool:
    """Whether the first row is the header (and a valid one)."""
    names = [cell.strip().lower() for cell in row]
    if not names or names[0] != "issuer":
        return False
    if names == list(COLUMNS) or (delta and names == list(DELTA_COLUMNS)):
        return True
    expected = ",".join(COLUMNS) + ("[,action]" if delta else "")
    raise HotlistError(f"header {','.join(row)!r} is not {expected}")


def _parse(data: bytes, source: str, *, delta: bool,
           progress: Progress | None = None) -> _Parsed:
    """Every row checked; the first bad rows refuse the file (`HotlistError`)."""
    import csv
    import io

    text = _text(data, source)
    total = text.count("\n") + 1 if progress is not None else 0
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    parsed = _Parsed()
    entries, changes = parsed.entries, parsed.delta
    problems: list[str] = []
    bad = 0
    first = True
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{source}:{reader.line_num}: unreadable CSV: {exc}")
            continue
        line = reader.line_num
        if progress is not None and not line & 0xFFFF:
            progress(line, total)
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if first:
            first = False
            try:
                if _header_row(row, delta):
                    continue
            except HotlistError as exc:
                message = f"{source}:{line}: {exc}"
                raise HotlistError(message, [message]) from None
        checked = _check_row(row, delta)
        if isinstance(checked, str):
            bad += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{source}:{line}: {checked}")
            continue
        parsed.rows += 1
        add, key, micros = checked
        if delta:
            changes.append((line, add, key, micros))
        else:
            assert micros is not None
            known = entries.get(key)
            if known is None or micros < known:
                entries[key] = micros
    if bad:
        more = f" (and {bad - 1} more bad row{'s' if bad > 2 else ''})" if bad > 1 else ""
        raise HotlistError(f"{problems[0]}{more}; nothing was read", problems)
    if progress is not None:
        progress(total, total)
    return parsed


def _read_file(path: str | os.PathLike[str], what: str = "hotlist") -> bytes:
    """A regular file of at most `HOTLIST_LIMIT` bytes (`HotlistError` otherwise)."""
    return read_file(path, limit=HOTLIST_LIMIT, what=what, error=HotlistError)


def parse_hotlist(data: bytes | str, *, source: str = "<hotlist>"
                  ) -> dict[tuple[bytes, bytes], dt.datetime]:
    """A full list's cards and their listing times (naive China time); a card listed
    twice keeps its earliest time.  `HotlistError` names ``source`` and the line."""
    raw = data.encode() if isinstance(data, str) else data
    entries = _parse(raw, source, delta=False).entries
    return {_split(key): _from_micros(micros) for key, micros in entries.items()}


def check_hotlist(data: bytes, *, source: str = "<hotlist>",
                  progress: Progress | None = None) -> tuple[int, int]:
    """The cards and the data rows of a valid full list (without building either);
    `HotlistError` names ``source`` and the lines of the bad rows."""
    parsed = _parse(data, source, delta=False, progress=progress)
    return len(parsed.entries), parsed.rows


def read_hotlist(path: str | os.PathLike[str]) -> dict[tuple[bytes, bytes], dt.datetime]:
    """`parse_hotlist` of a file (no index: to load a list for lookups use `Hotlist.load`)."""
    return parse_hotlist(_read_file(path), source=os.fspath(path))


def parse_delta(data: bytes | str, *, source: str = "<delta>") -> list[DeltaRow]:
    """A delta file's rows, in file order."""
    raw = data.encode() if isinstance(data, str) else data
    return [DeltaRow(line, "add" if add else "remove", *_split(key),
                     None if micros is None else _from_micros(micros))
            for line, add, key, micros in _parse(raw, source, delta=True).delta]


def read_delta(path: str | os.PathLike[str]) -> list[DeltaRow]:
    """`parse_delta` of a file."""
    return parse_delta(_read_file(path, "delta"), source=os.fspath(path))


# --- writing the CSV and applying a delta --------------------------------------------------


def _csv_bytes(entries: Mapping[bytes, int]) -> bytes:
    lines = [",".join(COLUMNS)]
    lines += [f"{key[:8].hex().upper()},{key[8:].hex().upper()},{_iso(micros)}"
              for key, micros in sorted(entries.items())]
    return ("\n".join(lines) + "\n").encode()


def write_hotlist(path: str | os.PathLike[str],
                  entries: Iterable[tuple[bytes, bytes, dt.datetime]]
                  | Mapping[tuple[bytes, bytes], dt.datetime]) -> Path:
    """Write a full list atomically: header, one row per card in issuer and card order,
    times with their ``+08:00`` offset; a card given twice keeps its earliest time."""
    from unioncard.atomic_file import write_atomically

    items = ([(*key, when) for key, when in entries.items()] if isinstance(entries, Mapping)
             else entries)
    return write_atomically(path, _csv_bytes(_collect(items)))


def _collect(entries: Iterable[tuple[bytes, bytes, dt.datetime]]) -> dict[bytes, int]:
    collected: dict[bytes, int] = {}
    for issuer, diversifier, when in entries:
        key, micros = _key(issuer, diversifier), _to_micros(when)
        known = collected.get(key)
        if known is None or micros < known:
            collected[key] = micros
    return collected


@dataclass(frozen=True, slots=True)
class DeltaResult:
    """What `apply_delta` did: rows by outcome, and the cards listed afterwards."""

    added: int
    already_listed: int
    """Add rows for cards already listed: the earlier listing time is kept."""
    removed: int
    not_listed: int
    """Remove rows for cards that were not listed."""
    entries: int

    def to_dict(self) -> dict[str, int]:
        return {"added": self.added, "already_listed": self.already_listed,
                "removed": self.removed, "not_listed": self.not_listed,
                "entries": self.entries}


def apply_delta(path: str | os.PathLike[str], delta: str | os.PathLike[str], *,
                progress: Progress | None = None, wait: float = LOCK_WAIT) -> DeltaResult:
    """Apply the delta file ``delta`` to the full list ``path`` and rewrite it atomically.

    Rows apply in file order.  Applying the same delta twice leaves the same list (the
    second time, its additions are already listed and its removals not listed).  A bad
    row in either file changes nothing.  The list's lock (`unioncard.file_lock`) is held
    from reading to writing, so concurrent writers of one list never lose an update: a
    second one waits up to ``wait`` seconds, then `FileInUseError`.
    """
    from unioncard.atomic_file import write_atomically
    from unioncard.file_lock import FileLock

    changes = _parse(_read_file(delta, "delta"), os.fspath(delta), delta=True).delta
    with FileLock(path, "unioncard hotlist update").acquire(wait=wait):
        entries = _parse(_read_file(path), os.fspath(path), delta=False,
                         progress=progress).entries
        added = already = removed = absent = 0
        for _line, add, key, micros in changes:
            known = entries.get(key)
            if add:
                assert micros is not None
                if known is None:
                    added += 1
                    entries[key] = micros
                else:
                    already += 1
                    entries[key] = min(known, micros)
            elif known is None:
                absent += 1
            else:
                removed += 1
                del entries[key]
        write_atomically(path, _csv_bytes(entries))
    return DeltaResult(added, already, removed, absent, len(entries))


def replace_hotlist(path: str | os.PathLike[str], full: str | os.PathLike[str], *,
                    progress: Progress | None = None, wait: float = LOCK_WAIT
                    ) -> tuple[int, int]:
    """Replace the list ``path`` atomically with the bytes of the full list ``full``, once
    every row of it is checked; returns its cards and data rows.

    ``path`` must be missing, empty or a hotlist already: anything else (a card image, a
    journal, a delta, a file with a bad row) is refused and left as it is, and so is a
    list another command holds (the lock as for `apply_delta`).
    """
    from unioncard.atomic_file import write_atomically
    from unioncard.file_lock import FileLock, project_file_kind

    data = _read_file(full)
    entries, rows = check_hotlist(data, source=os.fspath(full), progress=progress)
    with FileLock(path, "unioncard hotlist replace").acquire(wait=wait):
        try:
            current = read_file(path, limit=HOTLIST_LIMIT, what="hotlist")
        except InputFileError as exc:
            if not os.path.lexists(path):
                current = b""
            elif exc.reason.startswith("the hotlist is larger"):
                raise HotlistError(f"{os.fspath(path)}: not replacing it: {exc.reason}"
                                   ) from None
            else:
                raise HotlistError(str(exc)) from None
        if current.strip():
            kind = project_file_kind(path)
            if kind is not None and kind != "a hotlist":
                raise HotlistError(f"{os.fspath(path)}: is {kind}, not a hotlist; not "
                                   "replacing it")
            try:
                check_hotlist(current, source=os.fspath(path))
            except HotlistError as exc:
                raise HotlistError(f"{os.fspath(path)}: is not a hotlist ({exc}); not "
                                   "replacing it") from None
        write_atomically(path, data)
    return entries, rows


# --- the index -----------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/unioncard/hotlist`` (``~/.cache/unioncard/hotlist`` by default; a
    relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unioncard" / "hotlist"


def index_path(csv_path: str | os.PathLike[str]) -> Path:
    """The index file of the list at ``csv_path``: named from its absolute path."""
    absolute = os.path.abspath(csv_path)
    raw = os.fsencode(absolute)
    stem = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_"
                   for ch in os.path.basename(absolute))[:48]
    return cache_dir() / f"{stem}-{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}.idx"


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What says a file is unchanged: size, mtime_ns, ctime_ns, inode, device."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _home(key: bytes, shift: int) -> int:
    """The key's home slot: the top bits of the key times an odd 128-bit constant, so
    that sequential card numbers spread over the whole table."""
    return ((int.from_bytes(key, "big") * _MULTIPLIER) & _MASK_128) >> shift


def _slots_for(count: int) -> int:
    """A power of two at least twice ``count``: the table is at most half full."""
    slots = MIN_SLOTS
    while slots < 2 * count:
        slots <<= 1
    return slots


class _Corrupt(Exception):
    """The index cannot be trusted (the message says why)."""


class _Header(NamedTuple):
    """The index header's fields (a named tuple: cheaper to define than a dataclass, and
    this module is imported at every tap)."""

    entries: int
    slots: int
    rows: int
    stamp: tuple[int, int, int, int, int]
    checked_at: int
    oldest: int
    newest: int
    digest: bytes

    def pack(self) -> bytes:
        body = _HEADER.pack(INDEX_MAGIC, INDEX_VERSION, SLOT_SIZE, self.entries, self.slots,
                            self.rows, *self.stamp, self.checked_at, self.oldest, self.newest,
                            self.digest)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def unpack(cls, buffer: Any, size: int) -> _Header:
        if size < HEADER_SIZE:
            raise _Corrupt(f"truncated: {size} bytes, the header alone is {HEADER_SIZE}")
        fields = _HEADER.unpack_from(buffer, 0)
        magic, version, slot_size = fields[:3]
        if magic != INDEX_MAGIC:
            raise _Corrupt(f"not a hotlist index (magic {magic!r})")
        if zlib.crc32(buffer[:HEADER_SIZE - 4]) != _CRC.unpack_from(buffer, HEADER_SIZE - 4)[0]:
            raise _Corrupt("header CRC-32 mismatch")
        if version != INDEX_VERSION or slot_size != SLOT_SIZE:
            raise _Corrupt(f"format version {version}, slot size {slot_size}")
        header = cls(fields[3], fields[4], fields[5], tuple(fields[6:11]), *fields[11:15])
        if header.slots < MIN_SLOTS or header.slots & (header.slots - 1) \
                or header.entries * 2 > header.slots:
            raise _Corrupt(f"{header.entries} entries in {header.slots} slots")
        if size != HEADER_SIZE + header.slots * SLOT_SIZE:
            raise _Corrupt(f"truncated or extended: {size} bytes, the header says "
                           f"{HEADER_SIZE + header.slots * SLOT_SIZE}")
        if header.entries and not (_in_range(header.oldest) and _in_range(header.newest)):
            raise _Corrupt("listing times outside the years 1 to 9999")
        return header


def _build_table(entries: Mapping[bytes, int], header: _Header) -> bytearray:
    """The index file's bytes: the header and every slot, linear probing."""
    slots = header.slots
    shift = 128 - (slots.bit_length() - 1)
    mask = slots - 1
    crc32, pack = zlib.crc32, _CRC.pack
    table = bytearray(header.pack())
    for start in range(0, slots, 1 << 16):
        table += b"".join([_EMPTY_BODY + pack(crc32(_EMPTY_BODY, i))
                           for i in range(start, min(slots, start + (1 << 16)))])
    used = bytearray(slots)
    time_bytes = struct.Struct("<q").pack
    for key, micros in entries.items():
        i = _home(key, shift)
        while used[i]:
            i = (i + 1) & mask
        used[i] = 1
        body = key + time_bytes(micros)
        offset = HEADER_SIZE + i * SLOT_SIZE
        table[offset:offset + SLOT_SIZE] = body + pack(crc32(body, i))
    return table


def _digest(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()


def _read_consistent(path: Path) -> tuple[bytes, os.stat_result, int]:
    """The CSV's bytes, its stat before reading and the clock before that; read again
    if it changed while being read."""
    for _ in range(5):
        checked_at = _clock()
        try:
            with open_file(path, limit=HOTLIST_LIMIT, what="hotlist") as file:
                before = os.fstat(file.fileno())
                data = file.read(HOTLIST_LIMIT + 1)  # grown past it: read again, refused
                after = os.fstat(file.fileno())
        except InputFileError as exc:
            raise HotlistError(str(exc)) from None
        except OSError as exc:
            raise HotlistError(f"cannot read the hotlist {path}: {exc.strerror or exc}"
                               ) from None
        if _stamp(before) == _stamp(after) and len(data) == before.st_size:
            return data, before, checked_at
    raise HotlistError(f"{path} kept changing while it was read")


def _open_index(path: Path) -> tuple[mmap.mmap, _Header] | None:
    """The mapped index and its header; None when there is none; `_Corrupt` when it is
    damaged."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # a FIFO: no wait
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Corrupt(f"cannot open it: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Corrupt("not a regular file")
        size = info.st_size
        if size < HEADER_SIZE:
            raise _Corrupt(f"truncated: {size} bytes, the header alone is {HEADER_SIZE}")
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise _Corrupt(f"cannot map it: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return mapped, _Header.unpack(mapped, size)
    except BaseException:
        mapped.close()
        raise


def _racy(header: _Header) -> bool:
    """Whether the CSV changed so shortly before it was read that a later change within
    the same clock tick would leave its stamp as it was."""
    _, mtime, ctime, _, _ = header.stamp
    return max(mtime, ctime) >= header.checked_at - RACY_NS


class Hotlist:
    """The listed cards: `load` a CSV file (through its index) or build one `from_entries`.

    ``listed_at`` answers in constant time; times are naive China Standard Time, as the
    terminal's clock.  ``index_state`` (an `IndexState`) and ``index_detail`` say what
    `load` found; ``index_path`` is the index used (None: entries in memory).
    """

    __slots__ = ("_closed", "_lookup", "_map", "_memory", "_newest", "_oldest", "_recovering",
                 "_rows", "index_detail", "index_path", "index_state", "path")

    def __init__(self) -> None:
        """Use `Hotlist.load` or `Hotlist.from_entries`."""
        self.path: Path | None = None
        self.index_path: Path | None = None
        self.index_state = IndexState.MEMORY
        self.index_detail = ""
        self._map: mmap.mmap | None = None
        self._rows = 0
        self._lookup: tuple[Any, int, int] | None = None
        """(table, slots, shift) of the index (None: the list is in memory), swapped
        whole: threads look cards up while one of them may be rebuilding a damaged
        index."""
        self._recovering = threading.Lock()
        self._memory: dict[bytes, int] = {}
        self._oldest: int | None = None
        self._newest: int | None = None
        self._closed = False

    # construction

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[bytes, bytes, dt.datetime]]) -> Hotlist:
        """A list held in a dict: ``(issuer, diversifier, listed_at)``, naive times being
        China time; a card given twice keeps its earliest time."""
        hotlist = cls()
        hotlist._adopt_memory(_collect(entries))
        hotlist.index_detail = "built in memory"
        return hotlist

    @classmethod
    def load(cls, path: str | os.PathLike[str], *,
             progress: Progress | None = None) -> Hotlist:
        """The list in the CSV file ``path``, through its index (built or rebuilt when
        missing, stale or damaged; `HotlistWarning` and a dict when the cache cannot be
        written).  `HotlistError` when the CSV cannot be read or has a bad row."""
        hotlist = cls()
        hotlist.path = Path(os.path.abspath(path))
        hotlist._open(progress)
        return hotlist

    def _open(self, progress: Progress | None) -> None:
        assert self.path is not None
        try:
            stamp = _stamp(os.stat(self.path))
        except OSError as exc:
            raise HotlistError(f"cannot read the hotlist {self.path}: "
                               f"{exc.strerror or exc}") from None
        index = index_path(self.path)
        try:
            opened = _open_index(index)
        except _Corrupt as exc:
            self._build(index, IndexState.REBUILT, f"the index was damaged ({exc})", progress)
            return
        if opened is None:
            self._build(index, IndexState.BUILT, "there was no index", progress)
            return
        mapped, header = opened
        if header.stamp != stamp:
            mapped.close()
            self._build(index, IndexState.REBUILT, "the CSV changed since the index was built",
                        progress)
            return
        if not _racy(header):
            self._adopt_table(mapped, header, index, IndexState.FRESH, "up to date")
            return
        data, st, checked_at = _read_consistent(self.path)
        if _stamp(st) != header.stamp or _digest(data) != header.digest:
            mapped.close()
            self._build(index, IndexState.REBUILT, "the CSV changed since the index was "
                        "built (same stat stamp, other content)", progress, (data, st, checked_at))
            return
        refreshed = header._replace(checked_at=checked_at)
        if not _racy(refreshed):
            self._refresh(mapped, refreshed, index)
            return
        self._adopt_table(mapped, header, index, IndexState.VERIFIED,
                          "the CSV changed just before the index was built; its SHA-256 "
                          "matched")

    def _refresh(self, mapped: mmap.mmap, header: _Header, index: Path) -> None:
        """The index of verified content, with the time it was verified: later opens need
        not hash the CSV again."""
        from unioncard.atomic_file import write_atomically

        table = bytearray(mapped)
        mapped.close()
        table[:HEADER_SIZE] = header.pack()
        detail = "its SHA-256 matched; the index now trusts the stat stamp"
        try:
            write_atomically(index, bytes(table))
        except OSError:
            self._adopt_table(table, header, index, IndexState.VERIFIED, detail)
            return
        self._adopt_file(index, table, header, IndexState.VERIFIED, detail)

    def _build(self, index: Path, state: IndexState, detail: str,
               progress: Progress | None,
               read: tuple[bytes, os.stat_result, int] | None = None) -> None:
        assert self.path is not None
        data, st, checked_at = read or _read_consistent(self.path)
        parsed = _parse(data, str(self.path), delta=False, progress=progress)
        entries = parsed.entries
        try:
            index.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._fallback(entries, f"cannot create {index.parent}: {exc.strerror or exc}")
            return
        times = entries.values()
        header = _Header(len(entries), _slots_for(len(entries)), parsed.rows, _stamp(st),
                         checked_at, min(times, default=0), max(times, default=0),
                         _digest(data))
        table = _build_table(entries, header)
        from unioncard.atomic_file import write_atomically

        try:
            write_atomically(index, bytes(table))
        except OSError as exc:
            self._fallback(entries, f"cannot write {index}: {exc.strerror or exc}")
            return
        self._adopt_file(index, table, header, state, detail)

    def _fallback(self, entries: dict[bytes, int], why: str) -> None:
        warnings.warn(HotlistWarning(f"hotlist {self.path}: no index ({why}); the list is "
                                     "held in memory"), stacklevel=5)
        self._adopt_memory(entries)
        self.index_detail = why

    def _adopt_memory(self, entries: dict[bytes, int]) -> None:
        self._map = self._lookup = None  # a table held before (damaged) is not read again
        self._memory = entries
        self._rows = len(entries)
        self._oldest = min(entries.values(), default=None)
        self._newest = max(entries.values(), default=None)
        self.index_state, self.index_path = IndexState.MEMORY, None

    def _adopt_file(self, index: Path, table: bytearray, header: _Header, state: IndexState,
                    detail: str) -> None:
        """The index just written, mapped (or the bytes in hand if it cannot be)."""
        try:
            opened = _open_index(index)
        except _Corrupt:
            opened = None
        if opened is not None and opened[1] == header:
            self._adopt_table(opened[0], header, index, state, detail)
            return
        if opened is not None:
            opened[0].close()
        self._adopt_table(table, header, index, state, detail)

    def _adopt_table(self, table: Any, header: _Header, index: Path, state: IndexState,
                     detail: str) -> None:
        self._map = table if isinstance(table, mmap.mmap) else None
        self._lookup = (table, header.slots, 128 - (header.slots.bit_length() - 1))
        self._rows = header.rows
        self._oldest = header.oldest if header.entries else None
        self._newest = header.newest if header.entries else None
        self._memory = {}
        self.index_path, self.index_state, self.index_detail = index, state, detail

    # lookups

    def _find(self, key: bytes, lookup: tuple[Any, int, int] | None) -> int | None:
        if lookup is None:
            return self._memory.get(key)
        table, slots, shift = lookup
        i = ((int.from_bytes(key, "big") * _MULTIPLIER) & _MASK_128) >> shift
        unpack, crc32 = _SLOT.unpack_from, zlib.crc32
        for _ in range(slots):
            offset = HEADER_SIZE + i * SLOT_SIZE
            slot_key, micros, check = unpack(table, offset)
            if crc32(table[offset:offset + 24], i) != check:
                raise _Corrupt(f"slot {i} fails its CRC-32")
            if micros == EMPTY:
                return None
            if slot_key == key:
                if not _in_range(micros):
                    raise _Corrupt(f"slot {i} holds a time outside the years 1 to 9999")
                return int(micros)
            i = (i + 1) & (slots - 1)
        raise _Corrupt("no empty slot")

    def listed_at(self, issuer: bytes, diversifier: bytes) -> dt.datetime | None:
        """When the card was listed (naive China Standard Time), or None: not listed."""
        if self._closed:
            raise ValueError("the hotlist is closed")
        key = _key(issuer, diversifier)
        lookup = self._lookup
        try:
            micros = self._find(key, lookup)
        except _Corrupt as exc:
            self._recover(str(exc), lookup)
            micros = self._find(key, self._lookup)
        return None if micros is None else _from_micros(micros)

    def _recover(self, why: str, damaged: tuple[Any, int, int] | None) -> None:
        """A damaged slot in the index ``damaged``: rebuild the index from the CSV (once,
        whichever thread finds the damage first), and keep the rebuilt table in memory
        whatever the disk does next.  The damaged map is not closed under the threads
        that may still read it: it goes when the last of them lets go."""
        assert self.path is not None and self.index_path is not None
        with self._recovering:
            if self._lookup is not damaged:  # rebuilt meanwhile
                return
            warnings.warn(HotlistWarning(f"hotlist {self.path}: the index is damaged ({why}); "
                                         "rebuilt from the CSV"), stacklevel=3)
            self._build(self.index_path, IndexState.REBUILT, f"the index was damaged ({why})",
                        None)
            if self._map is not None and self._lookup is not None:
                table, slots, shift = self._lookup
                self._map = None
                self._lookup = (bytearray(table), slots, shift)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return self.listed_at(*key) is not None

    def __len__(self) -> int:
        if self._lookup is not None:
            return int(_HEADER.unpack_from(self._lookup[0], 0)[3])
        return len(self._memory)

    @property
    def rows(self) -> int:
        """Data rows of the CSV (cards listed twice count twice); entries in memory."""
        return self._rows

    @property
    def slots(self) -> int:
        """Slots of the index table (0: in memory)."""
        return self._lookup[1] if self._lookup is not None else 0

    @property
    def oldest(self) -> dt.datetime | None:
        """The earliest listing time (None: the list is empty)."""
        return None if self._oldest is None else _from_micros(self._oldest)

    @property
    def newest(self) -> dt.datetime | None:
        """The latest listing time (None: the list is empty)."""
        return None if self._newest is None else _from_micros(self._newest)

    def entries(self) -> Iterator[tuple[bytes, bytes, dt.datetime]]:
        """Every card, in issuer and card order (reads the whole index)."""
        if self._lookup is None:
            found = self._memory
        else:
            found = {}
            table, slots, _ = self._lookup
            for i in range(slots):
                offset = HEADER_SIZE + i * SLOT_SIZE
                key, micros, check = _SLOT.unpack_from(table, offset)
                if zlib.crc32(table[offset:offset + 24], i) != check:
                    raise HotlistError(f"index {self.index_path}: slot {i} fails its CRC-32")
                if micros != EMPTY:
                    if not _in_range(micros):
                        raise HotlistError(f"index {self.index_path}: slot {i} holds a time "
                                           "outside the years 1 to 9999")
                    found[key] = micros
        for key, micros in sorted(found.items()):
            yield key[:8], key[8:], _from_micros(micros)

    # life

    def _release(self) -> None:
        if self._map is not None:
            self._map.close()
        self._map = self._lookup = None
        self._memory = {}

    def close(self) -> None:
        """Unmap the index; lookups then raise `ValueError`."""
        self._release()
        self._closed = True

    def __enter__(self) -> Hotlist:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"<Hotlist{where}: {len(self) if not self._closed else 'closed'}, " \
               f"{self.index_state.value}>"
