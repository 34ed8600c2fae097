"""Writing a file atomically and durably: the one way unioncard replaces a file.

Card images, batch files and converted traces are money or evidence: a crash
must leave either the old file or the new one, never half of either.  The data
goes to a temporary file created exclusively (``O_EXCL``, never following a
link) in the target's directory, is flushed and fsync'd, then renamed over the
target, and the directory is fsync'd so the rename survives a power cut.  The
new file keeps the permissions of the file it replaces (a new one gets those
``open()`` would give); the temporary file is removed on any failure.

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "card.json"
>>> write_atomically(target, b'{"balance": 5000}\\n') == target
True
>>> target.read_bytes()
b'{"balance": 5000}\\n'
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (read without changing the
    umask, which other threads may be relying on)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644


def _link_new(temporary: str, target: Path, data: bytes) -> None:
    """Give ``temporary`` the name ``target`` unless the name is taken by other bytes."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        if target.read_bytes() != data:
            raise FileExistsError(errno.EEXIST, "a different file already has this name",
                                  str(target)) from None
    os.unlink(temporary)


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
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = _new_file_mode() if new_file_mode is None else new_file_mode
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, target)
        else:
            _link_new(temporary, target, data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    return target
