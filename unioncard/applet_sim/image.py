"""Card image files: the only place the simulator touches the file system.

A card image is a JSON document (docs/card-image.md).  `write_image` is atomic
(`unioncard.atomic_file`): a temporary file in the same directory, fsync'd,
renamed over the image, the directory fsync'd, so a crash (even ``kill -9``)
leaves the old image or the new one, never a mixture.  A new image is readable by its owner
only (it holds keys); a replaced image keeps its mode.  `FileSink` is the write-through
persistence sink of `SimulatedCard.load(path, write_through=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unioncard.atomic_file import write_atomically
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
    """Write ``doc`` to ``path`` atomically and durably (a new image readable by its owner
    only: it holds keys)."""
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    write_atomically(path, text.encode("utf-8"), new_file_mode=0o600)


class FileSink:
    """Persistence sink: saves the card's image to ``path`` after each NVM commit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saves = 0

    def __call__(self, card: SimulatedCard) -> None:
        write_image(self.path, card.to_image())
        self.saves += 1
