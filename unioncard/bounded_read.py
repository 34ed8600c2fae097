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
=====================  =======  ==================================================

Trace files are not read whole: their readers stream them, a line or a frame at a
time, each of them bounded (`unioncard.apdu.trace_text.MAX_LINE`, `unioncard.apdu.trace.MAX_FRAME`).
Every refusal is one line naming the file and the problem (`InputFileError`, or the
caller's error type).

>>> read_file("/dev/zero", limit=CARD_IMAGE_LIMIT, what="card image")
Traceback (most recent call last):
...
unioncard.bounded_read.InputFileError: /dev/zero: the card image is a character device, \
not a regular file
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import BinaryIO

from unioncard.errors import UnionCardError

__all__ = [
    "CARD_IMAGE_LIMIT",
    "HOTLIST_LIMIT",
    "KEYSTORE_LIMIT",
    "RULE_FILE_LIMIT",
    "SHEET_LIMIT",
    "TOLL_TABLE_LIMIT",
    "InputFileError",
    "open_file",
    "read_file",
    "read_utf8",
]

MiB = 1 << 20
CARD_IMAGE_LIMIT = 4 * MiB
KEYSTORE_LIMIT = 1 * MiB
RULE_FILE_LIMIT = 16 * MiB
TOLL_TABLE_LIMIT = 16 * MiB
SHEET_LIMIT = 64 * MiB
HOTLIST_LIMIT = 256 * MiB

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


def read_file(path: str | os.PathLike[str], *, limit: int, what: str,
              error: Callable[[str], Exception] | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    ``what`` names the kind of file in messages (``"card image"``).  Refusals raise
    `InputFileError`, or ``error(message)`` when given (the caller's own error type).
    """
    name = os.fspath(path)
    try:
        return _read(name, limit, what)
    except InputFileError as exc:
        if error is None:
            raise
        raise error(str(exc)) from None


def open_file(path: str | os.PathLike[str], *, limit: int, what: str) -> BinaryIO:
    """The regular file ``path`` opened for reading, once its size is checked (for a reader
    that needs the file object; it must still read at most ``limit`` bytes).
    `InputFileError` as `read_file`."""
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except OSError as exc:
        raise InputFileError(name, f"cannot read the {what}: {exc.strerror or exc}") from None
    file = os.fdopen(fd, "rb")
    info = os.fstat(fd)
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
        try:
            data = file.read(limit + 1)
        except OSError as exc:
            raise InputFileError(name, f"cannot read the {what}: {exc.strerror or exc}"
                                 ) from None
    if len(data) > limit:
        raise InputFileError(name, f"the {what} is larger than {_size(limit)}")
    return data


def read_utf8(path: str | os.PathLike[str], *, limit: int, what: str,
              error: Callable[[str], Exception] | None = None) -> str:
    """`read_file`, decoded as UTF-8; a file that is not UTF-8 is refused the same way,
    naming the first bad byte and its offset."""
    data = read_file(path, limit=limit, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        refusal = InputFileError(os.fspath(path), f"the {what} is not UTF-8 text (byte "
                                                  f"0x{data[exc.start]:02X} at offset {exc.start})")
        if error is None:
            raise refusal from None
        raise error(str(refusal)) from None
