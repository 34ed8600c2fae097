"""Whole-file reads with a size bound, for every input file read whole.

Card images, keystores, rule files, toll tables, member and disbursement sheets
and hotlists are read whole, then parsed.  `read_file` opens the file without
blocking, refuses anything but a regular file (a directory, a FIFO, a device such
as ``/dev/zero``) and a file larger than the limit of its kind, and never reads
more than the limit even if the file grows meanwhile.  The limits are far above
any real file, and keep a hostile one (``/dev/zero``, a runaway export) from
exhausting memory:

=====================  =======  ==================================================
kind                   limit    a real file
=====================  =======  ==================================================
card image             4 MiB    6 KB (a member card), 1.5 KB (a PSAM)
keystore               1 MiB    1.4 KB (the shipped test keys)
rule file              16 MiB   3 KB (the shipped rules)
toll table             16 MiB   about 40 bytes a station pair and vehicle class
member sheet           64 MiB   50 to 200 bytes a member
disbursement sheet     64 MiB   30 to 80 bytes a payment
hotlist (and delta)    256 MiB  54 bytes a card: a list of a million cards is 54 MB
card registry          256 MiB  110 bytes a member (``issued.json``)
=====================  =======  ==================================================

Trace files are not read whole: their readers stream them, a line or a frame at a
time, each of them bounded (`unioncard.apdu.trace_text.MAX_LINE`, `unioncard.apdu.trace.MAX_FRAME`).
`open_stream` opens one: a regular file or a pipe (``cat t | unioncard trace decode
/dev/stdin``, a FIFO, process substitution), read once from its first byte to its
last, its head kept for sniffing the format, so a pipe is never reread (and read as
empty).  Opening never waits: a FIFO nobody writes to reads as empty at once.
Every refusal is one line naming the file and the problem (`InputFileError`, or the
caller's error type), with the system's reason in words, never an ``[Errno N]``.

>>> read_file("/dev/zero", limit=CARD_IMAGE_LIMIT, what="card image")
Traceback (most recent call last):
...
unioncard.bounded_read.InputFileError: /dev/zero: the card image is a character device, \
not a regular file
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from typing import BinaryIO

from unioncard.errors import UnionCardError

__all__ = [
    "CARD_IMAGE_LIMIT",
    "HOTLIST_LIMIT",
    "KEYSTORE_LIMIT",
    "REGISTRY_LIMIT",
    "RULE_FILE_LIMIT",
    "SHEET_LIMIT",
    "TOLL_TABLE_LIMIT",
    "InputFileError",
    "StreamInput",
    "open_file",
    "open_stream",
    "read_file",
    "read_utf8",
    "reason",
]

MiB = 1 << 20
CARD_IMAGE_LIMIT = 4 * MiB
KEYSTORE_LIMIT = 1 * MiB
RULE_FILE_LIMIT = 16 * MiB
TOLL_TABLE_LIMIT = 16 * MiB
SHEET_LIMIT = 64 * MiB
HOTLIST_LIMIT = 256 * MiB
REGISTRY_LIMIT = 256 * MiB

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class InputFileError(UnionCardError, ValueError):
    """An input file that cannot be read: missing, not a regular file, too large, not text.

    ``path`` is the file, ``reason`` what is wrong; ``str()`` gives ``path: reason``.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"


def reason(exc: OSError) -> str:
    """What went wrong, in words: ``no such file or directory``, not ``[Errno 2] No such
    file or directory: 'x'`` (the caller names the file)."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def read_file(path: str | os.PathLike[str], *, limit: int, what: str,
              error: Callable[[str], Exception] | None = None, empty: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    ``what`` names the kind of file in messages (``"card image"``).  Refusals raise
    `InputFileError`, or ``error(message)`` when given (the caller's own error type).
    With ``empty=False`` an empty file is refused too (``the card image is empty``).
    """
    name = os.fspath(path)
    try:
        data = _read(name, limit, what)
        if not empty and not data.strip():
            raise InputFileError(name, f"the {what} is empty")
        return data
    except InputFileError as exc:
        if error is None:
            raise
        raise error(str(exc)) from None


def _open_fd(name: str, what: str) -> tuple[int, os.stat_result]:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except OSError as exc:
        raise InputFileError(name, f"cannot read the {what}: {reason(exc)}") from None
    return fd, os.fstat(fd)


class _Replayed(io.RawIOBase):
    """A file descriptor read once, its first bytes (already read to sniff) served again
    first; ``consumed`` counts the bytes taken from the descriptor (for progress bars)."""

    def __init__(self, fd: int, head: bytes) -> None:
        super().__init__()
        self._file = io.FileIO(fd, "rb", closefd=True)
        self._head = memoryview(head)
        self.consumed = len(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        count = self._file.readinto(buffer) or 0
        self.consumed += count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


class StreamInput:
    """A named input opened by `open_stream`: ``head`` (its first bytes, for sniffing),
    ``stream`` (all of it, ``head`` included, read once), ``size`` (None for a pipe) and
    ``consumed`` (bytes read from it so far)."""

    def __init__(self, name: str, fd: int, size: int | None, head_size: int) -> None:
        self.name = name
        self.size = size
        head = bytearray()
        try:
            while len(head) < head_size:
                chunk = os.read(fd, head_size - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:
            os.close(fd)
            raise
        self.head = bytes(head)
        self._raw = _Replayed(fd, self.head)
        self.stream: BinaryIO = io.BufferedReader(self._raw)

    @property
    def consumed(self) -> int:
        return self._raw.consumed

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> StreamInput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_stream(path: str | os.PathLike[str], *, what: str, head: int = 4096) -> StreamInput:
    """The named input ``path`` to stream: a regular file or a pipe (a FIFO, ``/dev/stdin``
    fed by a pipe); a directory, a device or a socket is refused (`InputFileError`).

    Opening never waits for a FIFO's writer; a FIFO nobody writes to reads as empty.  The
    first ``head`` bytes are read at once (`StreamInput.head`) and served again by the
    stream, so nothing is read twice from the source.
    """
    name = os.fspath(path)
    fd, info = _open_fd(name, what)
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        kind = next((kind for test, kind in _KINDS if test(info.st_mode)), "not a file")
        os.close(fd)
        raise InputFileError(name, f"the {what} is {kind}, not a regular file or a pipe")
    if stat.S_ISFIFO(info.st_mode):
        # read as a pipe: wait for data a writer sends, end when the writers are gone
        # (at once when there is none)
        os.set_blocking(fd, True)
    try:
        return StreamInput(name, fd, info.st_size if stat.S_ISREG(info.st_mode) else None,
                           head)
    except OSError as exc:
        raise InputFileError(name, f"cannot read the {what}: {reason(exc)}") from None


def open_file(path: str | os.PathLike[str], *, limit: int, what: str) -> BinaryIO:
    """The regular file ``path`` opened for reading, once its size is checked (for a reader
    that needs the file object; it must still read at most ``limit`` bytes).
    `InputFileError` as `read_file`."""
    name = os.fspath(path)
    fd, info = _open_fd(name, what)
    file = os.fdopen(fd, "rb")
    for test, kind in _KINDS:
        if test(info.st_mode):
            file.close()
            raise InputFileError(name, f"the {what} is {kind}, not a regular file")
    if info.st_size > limit:
        file.close()
        raise InputFileError(name, f"the {what} is larger than {_size(limit)} "
                                   f"({info.st_size} bytes)")
    return file


def _read(name: str, limit: int, what: str) -> bytes:
    with open_file(name, limit=limit, what=what) as file:
        try:  # the size it has now, in one read (and on, if it grew since)
            want = min(os.fstat(file.fileno()).st_size, limit) + 1
            data = file.read(want)
            if len(data) == want <= limit:
                data += file.read(limit + 1 - want)
        except OSError as exc:
            raise InputFileError(name, f"cannot read the {what}: {reason(exc)}") from None
    if len(data) > limit:
        raise InputFileError(name, f"the {what} is larger than {_size(limit)}")
    return data


def read_utf8(path: str | os.PathLike[str], *, limit: int, what: str,
              error: Callable[[str], Exception] | None = None, empty: bool = True) -> str:
    """`read_file`, decoded as UTF-8; a file that is not UTF-8 is refused the same way,
    naming the first bad byte and its offset."""
    data = read_file(path, limit=limit, what=what, error=error, empty=empty)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        refusal = InputFileError(os.fspath(path), f"the {what} is not UTF-8 text (byte "
                                                  f"0x{data[exc.start]:02X} at offset {exc.start})")
        if error is None:
            raise refusal from None
        raise error(str(refusal)) from None
