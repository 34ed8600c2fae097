"""docs/records.md as the record tests read it: a section, a code block, an annotated dump."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "records.md"


def section(heading: str) -> str:
    """The section under ``heading`` (a whole heading line when one matches), to the next."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(heading + "\n") if heading + "\n" in text else text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def code_block(first_line: str) -> str:
    """The one code block whose first line is ``first_line``."""
    blocks = re.findall(r"```\w*\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    matches = [block for block in blocks if block.startswith(first_line + "\n")]
    assert len(matches) == 1, f"one code block starting with {first_line!r}"
    return matches[0]


def documented_dump(heading: str) -> bytes:
    """The annotated dump under ``heading``: offset (3 digits), then up to 16 hex bytes in
    columns 5..51."""
    blocks = re.findall(r"```text\n(.*?)```", section(heading), re.S)
    assert len(blocks) == 1
    raw = bytearray()
    for line in blocks[0].splitlines():
        assert int(line[:3]) == len(raw), f"offset column of {line!r}"
        raw += bytes.fromhex(line[5:52])
    return bytes(raw)
