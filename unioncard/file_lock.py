"""Advisory locks on card images (and the card registry): one user at a time (docs/card-image.md).

A card image is the card, and a command that keeps a card open (``sim serve``,
a terminal command on ``--card IMAGE``) saves it after every change: two such
commands on one image would both debit the same balance and each overwrite the
other's saves.  `FileLock` is an exclusive ``flock`` on a lock file beside the
image, ``.NAME.lock`` in the image's directory (the image itself is replaced
by every atomic save, so a lock on its own inode would not last).  The lock
file is created without following a symbolic link, holds the holder's pid and
command, and is removed when the lock is released; a holder killed outright
leaves it behind, unlocked, and the next user takes it over.  A second user is
refused at once with `FileInUseError`, naming the image and the holder.

Locks are per open file, so one process that opens the same image twice (as
the card and as the PSAM) is refused as well.  Paths are resolved first, so a
symbolic link to an image locks the image.

>>> import tempfile, pathlib
>>> image = pathlib.Path(tempfile.mkdtemp()) / "card.json"
>>> with FileLock(image, "unioncard sim serve"):
...     FileLock(image, "unioncard tap").acquire()
Traceback (most recent call last):
...
unioncard.file_lock.FileInUseError: ...card.json: in use by this process (unioncard sim serve): ...
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from types import TracebackType

from unioncard.errors import UnionCardError

__all__ = ["CARD_IMAGE_MARK", "FileInUseError", "FileLock", "is_card_image", "lock_path"]

CARD_IMAGE_MARK = b'"unioncard-card-image"'
"""The format name every card image carries near its beginning."""


class FileInUseError(UnionCardError):
    """Another process (or another part of this one) holds the file's lock."""


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` beside the file the path leads to."""
    resolved = Path(path).resolve()
    return resolved.with_name(f".{resolved.name}.lock")


def is_card_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is (looks like) a card image: a JSON object naming the card image
    format in its first 4 KiB.  Files that cannot be read are not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO: no wait
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.pread(fd, 4096, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return head.lstrip().startswith(b"{") and CARD_IMAGE_MARK in head


def _open(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "the lock file is a symbolic link; not following it",
                          str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "the lock file is not a regular file", str(path))
    return fd


def _holder(fd: int) -> tuple[int | None, str]:
    """The pid and command written in a lock file (None, "": unknown)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = os.pread(fd, 4096, 0).decode("utf-8").strip()
        pid, _, command = text.partition(" ")
        if pid.isdigit():
            return int(pid), command.strip()
    return None, ""


class FileLock:
    """An exclusive lock on ``path`` for ``holder`` (a short description of the command,
    written in the lock file for whoever is refused), refused at once when taken.

    Use it as a context manager, or `acquire` and `release`.
    """

    def __init__(self, path: str | os.PathLike[str], holder: str) -> None:
        self.path = Path(path)
        self.lock_path = lock_path(path)
        self.holder = holder
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FileLock:
        """Take the lock; `FileInUseError` when someone holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this lock is held already")
        for _ in range(100):
            fd = _open(self.lock_path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, command = _holder(fd)
                os.close(fd)
                raise FileInUseError(self._refusal(pid, command)) from None
            except BaseException:
                os.close(fd)
                raise
            # The previous holder removes the file before unlocking it: a file we opened
            # before that is no longer the lock; open the new one.
            try:
                current = os.stat(self.lock_path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev,
                                                                            mine.st_ino):
                self._fd = fd
                break
            os.close(fd)
        else:  # pragma: no cover - would take 100 holders in a row within microseconds
            raise FileInUseError(f"{self.path}: in use (its lock {self.lock_path} keeps "
                                 "changing hands)")
        try:
            data = f"{os.getpid()} {self.holder}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # the lock holds without its note
        return self

    def _refusal(self, pid: int | None, command: str) -> str:
        if pid == os.getpid():
            who = f"this process ({command})" if command else "this process"
            return f"{self.path}: in use by {who}: the same file is given twice"
        who = "another process" if pid is None else f"{command or 'another process'} (pid {pid})"
        return (f"{self.path}: in use by {who}, and used by one command at a time: stop that "
                f"one first (lock file {self.lock_path})")

    def release(self) -> None:
        """Release the lock and remove its file (nothing when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                current = os.stat(self.lock_path, follow_symlinks=False)
                mine = os.fstat(fd)
                if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(self.lock_path)
        finally:
            os.close(fd)  # unlocks

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<FileLock {str(self.path)!r} {'held' if self.locked else 'free'}>"
