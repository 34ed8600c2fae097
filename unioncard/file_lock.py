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

Only a lock file is ever written or removed: a file at the lock's path that is
not one (a link, a file with other names, a file holding anything but a lock
note) is refused with `FileLockError` and left as it is.  An image with several
names (hard links) is refused too: each name would get a lock of its own, and
the first save would make the names two diverging cards.

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
import re
import stat
import time
from pathlib import Path
from types import TracebackType

from unioncard.bounded_read import reason
from unioncard.errors import UnionCardError

__all__ = ["CARD_IMAGE_MARK", "FileInUseError", "FileLock", "FileLockError",
           "check_replaceable", "is_card_image", "lock_path", "project_file_kind"]

CARD_IMAGE_MARK = b'"unioncard-card-image"'
"""The format name every card image carries near its beginning."""
MAX_NOTE = 4096
"""A lock note (``PID COMMAND``, one line) is shorter than this."""


class FileLockError(UnionCardError, OSError):
    """The file cannot be locked: its lock file is not one (a link, a file with other
    names or other contents), or the file has several names (hard links)."""


class FileInUseError(FileLockError):
    """Another process (or another part of this one) holds the file's lock."""

    holder_pid: int | None = None
    """The holder's pid, as its lock note says (None: unknown)."""


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` beside the file the path leads to."""
    resolved = Path(path).resolve()
    return resolved.with_name(f".{resolved.name}.lock")


def _head(path: str | os.PathLike[str]) -> bytes | None:
    """The first 4 KiB of the regular file ``path`` (None: not one, or unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO: no wait
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.pread(fd, 4096, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def is_card_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is (looks like) a card image: a JSON object naming the card image
    format in its first 4 KiB.  Files that cannot be read are not."""
    return project_file_kind(path) == "a card image"


_JSON_FORMATS = ((CARD_IMAGE_MARK, "a card image"),
                 (b'"unioncard-issued-cards"', "a card registry"))
_MAGICS = ((b"SQLite format 3\x00", "an SQLite database (a journal or a ledger)"),
           (b"UCOR", "a batch file"), (b"UCHL", "a hotlist index"))
_KEYSTORE = re.compile(rb"""^[ \t]*format[ \t]*=[ \t]*["']unioncard-keystore["']""", re.M)
_HOTLIST_HEADERS = {b"issuer,card,listed_at": "a hotlist",
                    b"issuer,card,listed_at,action": "a hotlist delta"}


def project_file_kind(path: str | os.PathLike[str]) -> str | None:
    """Which of unioncard's own files ``path`` is, from its first 4 KiB ("a card image", "a
    card registry", "a keystore", "an SQLite database (…)", "a batch file", "a hotlist
    index", "a hotlist", "a hotlist delta"), or None: what a command given ``--force``
    never replaces with something else."""
    head = _head(path)
    if not head:
        return None
    if head.lstrip().startswith(b"{"):
        return next((kind for mark, kind in _JSON_FORMATS if mark in head), None)
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    if _KEYSTORE.search(head):
        return "a keystore"
    first = head.removeprefix(b"\xef\xbb\xbf").lstrip().split(b"\n", 1)[0]
    return _HOTLIST_HEADERS.get(first.replace(b" ", b"").strip().lower())


def check_replaceable(path: str | os.PathLike[str], what: str, kind: str | None = None
                      ) -> None:
    """The ``--force`` rule: `FileLockError` when ``path`` is one of unioncard's own files
    (`project_file_kind`) of another kind than ``kind`` (None: none of them, a trace), which
    ``what`` (``"a trace"``) would replace.  A file in use is refused by its lock, which
    every writer holds while it writes."""
    found = project_file_kind(path)
    if found is not None and found != kind:
        raise FileLockError(f"{os.fspath(path)}: is {found}, not {what}; --force never "
                            "replaces one of unioncard's own files with a file of another "
                            "kind (nothing was written)")


def _open(path: Path) -> tuple[int, bool]:
    """The lock file opened for writing, never through a link, and whether it was created
    now; `FileLockError` when what is at the path cannot be a lock file."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _ in range(100):
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
        except FileExistsError:
            pass
        except OSError as exc:
            raise FileLockError(f"{path}: cannot create the lock file: "
                                f"{reason(exc)}") from None
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            continue  # removed by its holder meanwhile: create it
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileLockError(f"{path}: the lock file is a symbolic link; not following "
                                    "it (remove it if it is not needed)") from None
            raise FileLockError(f"{path}: cannot open the lock file: "
                                f"{reason(exc)}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileLockError(f"{path}: the lock file is not a regular file; not touching it")
        return fd, False
    raise FileLockError(  # pragma: no cover - 100 holders in a row within microseconds
        f"{path}: the lock file keeps appearing and disappearing")


def _is_note(data: bytes) -> bool:
    """Whether ``data`` is what a lock file holds: nothing, or one line ``PID COMMAND``."""
    if not data:
        return True
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    pid, _, command = text.rstrip("\n").partition(" ")
    return (len(data) <= MAX_NOTE and text.count("\n") <= 1 and pid.isascii() and pid.isdigit()
            and command.isprintable())


def _foreign(fd: int) -> str | None:
    """Why the file open at ``fd`` (taken over, not created) is not a lock file, or None."""
    info = os.fstat(fd)
    if info.st_nlink != 1:
        return f"has {info.st_nlink} names (hard links), so it is not a lock file"
    try:
        data = os.pread(fd, MAX_NOTE + 1, 0)
    except OSError as exc:
        return f"cannot be read ({reason(exc)})"
    if not _is_note(data):
        return "holds something other than a lock note"
    return None


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

    Use it as a context manager (``with lock.acquire(wait=5):`` too), or `acquire` and
    `release`.
    """

    def __init__(self, path: str | os.PathLike[str], holder: str) -> None:
        self.path = Path(path)
        self.lock_path = lock_path(path)
        self.holder = holder
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0) -> FileLock:
        """Take the lock; `FileInUseError` when someone holds it (another process: after
        waiting up to ``wait`` seconds for it to let go)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this lock is held already")
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._acquire()
            except FileInUseError as exc:
                if exc.holder_pid == os.getpid() or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def _acquire(self) -> FileLock:
        for _ in range(100):
            fd, created = _open(self.lock_path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, command = _holder(fd)
                os.close(fd)
                refusal = FileInUseError(self._refusal(pid, command))
                refusal.holder_pid = pid
                raise refusal from None
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
                break
            os.close(fd)
        else:  # pragma: no cover - would take 100 holders in a row within microseconds
            raise FileInUseError(f"{self.path}: in use (its lock {self.lock_path} keeps "
                                 "changing hands)")
        why = None if created else _foreign(fd)
        if why is not None:
            os.close(fd)  # neither written nor removed: it is not ours
            raise FileLockError(f"{self.path}: cannot be locked: {self.lock_path} {why}; "
                                "not touching it (move it away if it is not needed)")
        self._fd = fd
        names = self._names()
        if names > 1:
            self.release()
            raise FileLockError(
                f"{self.path}: the file has {names} names (hard links); each save replaces "
                "it under one name only, so the names would become two diverging files: "
                "keep one name")
        try:
            data = f"{os.getpid()} {self.holder}\n".encode()
            os.ftruncate(fd, 0)  # a lock note (checked above), or a file created now
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # the lock holds without its note
        return self

    def _names(self) -> int:
        """How many hard links the locked file has (0: there is none yet)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return 0
        return info.st_nlink if stat.S_ISREG(info.st_mode) else 1

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
        return self if self._fd is not None else self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<FileLock {str(self.path)!r} {'held' if self.locked else 'free'}>"
