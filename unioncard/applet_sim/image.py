"""Card image files: the only place the simulator touches the file system.

A card image is a JSON document (docs/card-image.md).  `write_image` is atomic:
it writes a temporary file in the same directory, fsyncs it, renames it over
the image and fsyncs the directory, so a crash (even ``kill -9``) leaves the old
image or the new one, never a mixture.  A new image is readable by its owner
only (it holds keys); a replaced image keeps its mode.  `FileSink` is the write-through
persistence sink of `SimulatedCard.load(path, write_through=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unioncard.errors import DecodeError

if TYPE_CHECKING:
    from unioncard.applet_sim.card import SimulatedCard

__all__ = ["FileSink", "read_image", "write_image"]


def read_image(path: str | Path) -> dict[str, Any]:
    """Read and parse a card image file (`DecodeError` for unreadable or non-JSON files)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DecodeError(f"cannot read card image {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"card image {path} is not JSON: {exc.msg}", exc.pos) from None
    if not isinstance(doc, dict):
        raise DecodeError(f"card image {path} is not a JSON object")
    return doc


def write_image(path: str | Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically and durably."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with contextlib.suppress(FileNotFoundError):  # keep the mode of the image replaced
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileSink:
    """Persistence sink: saves the card's image to ``path`` after each NVM commit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saves = 0

    def __call__(self, card: SimulatedCard) -> None:
        write_image(self.path, card.to_image())
        self.saves += 1
