"""Writing a file atomically and durably: the one way unioncard replaces a file.

Card images, batch files and converted traces are money or evidence: a crash
must leave either the old file or the new one, never half of either.  The data
goes to a temporary file created exclusively (``O_EXCL``, never following a
link) in the target's directory, is flushed and fsync'd, then renamed over the
target, and the directory is fsync'd so the rename survives a power cut.  The
new file keeps the permissions of the file it replaces (a new one gets those
``open()`` would give); the temporary file is removed on any failure.

The target is never a symbolic link or anything but a regular file: a link
planted at the path is refused (`OSError` ``ELOOP``), not replaced, and so is a
FIFO or a device.  `open_atomically` does the same for data written piece by
piece (a converted trace of any size).

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "card.json"
>>> write_atomically(target, b'{"balance": 5000}\\n') == target
True
>>> target.read_bytes()
b'{"balance": 5000}\\n'
>>> with open_atomically(target.with_name("big.uct"), replace=False) as file:
...     _ = file.write(b"UCT1")
>>> target.with_name("big.uct").read_bytes()
b'UCT1'
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["check_target", "open_atomically", "write_atomically"]


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (read without changing the
    umask, which other threads may be relying on)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644


def check_target(path: str | os.PathLike[str]) -> os.stat_result | None:
    """The status of the file at ``path`` (None when there is none), refusing what may not
    be replaced: a symbolic link (``ELOOP``, even dangling) or anything but a regular file
    (``EINVAL``)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(status.st_mode):
        raise OSError(errno.ELOOP, "is a symbolic link; not replacing it", str(path))
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, "is not a regular file; not replacing it", str(path))
    return status


def _link_new(temporary: str, target: Path, data: bytes | None) -> None:
    """Give ``temporary`` the name ``target`` unless the name is taken (by other bytes than
    ``data``, when given)."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        if data is None or not target.is_file() or target.is_symlink() \
                or target.read_bytes() != data:
            raise FileExistsError(errno.EEXIST, "a different file already has this name",
                                  str(target)) from None
    os.unlink(temporary)


def _fsync_directory(directory: Path) -> None:
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


@contextlib.contextmanager
def _atomic(path: str | os.PathLike[str], new_file_mode: int | None, replace: bool,
            data: bytes | None) -> Iterator[IO[bytes]]:
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    existing = check_target(target)
    if existing is not None and not replace and data is None:
        raise FileExistsError(errno.EEXIST, "the file exists already", str(target))
    if existing is not None:
        mode = stat.S_IMODE(existing.st_mode)
    else:
        mode = _new_file_mode() if new_file_mode is None else new_file_mode
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            yield file
            file.flush()
            os.fsync(file.fileno())
        if replace:
            check_target(target)  # nothing planted meanwhile
            os.replace(temporary, target)
        else:
            _link_new(temporary, target, data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def open_atomically(path: str | os.PathLike[str], *, new_file_mode: int | None = None,
                    replace: bool = True) -> contextlib.AbstractContextManager[IO[bytes]]:
    """A binary file to write whose content replaces ``path`` atomically and durably when
    the ``with`` block ends without an exception; an exception leaves ``path`` as it was.

    Modes as for `write_atomically`.  With ``replace=False`` an existing file is refused
    (`FileExistsError`) before anything is written and again at the end (the new file
    appears by a hard link, which fails if the name was taken meanwhile).
    """
    return _atomic(path, new_file_mode, replace, None)


def write_atomically(path: str | os.PathLike[str], data: bytes, *,
                     new_file_mode: int | None = None, replace: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; returns the path.

    A replaced file keeps its permissions; a new one gets ``new_file_mode`` (say
    ``0o600`` for a file holding keys), by default what ``open()`` would give.
    With ``replace=False`` an existing file is never replaced: the same bytes
    already there are fine (writing twice is harmless), other bytes raise
    `FileExistsError` and leave it untouched (the new file appears by a hard
    link, which fails if the name exists, so two writers cannot both win).
    """
    with _atomic(path, new_file_mode, replace, data) as file:
        file.write(data)
    return Path(path)
