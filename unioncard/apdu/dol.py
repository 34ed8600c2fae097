"""Data object lists: PDOL, CDOL1/2, DDOL, TDOL (EMV Book 3 §5.4).

A DOL is a concatenation of tag + length pairs, with no values.  The terminal
answers it with the concatenated values, each formatted to exactly the length
the card asked for:

- value missing, or the tag constructed: that many ``00`` bytes;
- too long: numeric (n) loses its leftmost bytes, every other format its
  rightmost bytes;
- too short: numeric (n) is padded with leading ``00``, compressed numeric
  (cn) with trailing ``FF``, every other format (an, ans, b) with trailing
  ``00``.

>>> entries = parse(bytes.fromhex("9F02069F3704"))
>>> [(hex(e.tag), e.length) for e in entries]
[('0x9f02', 6), ('0x9f37', 4)]
>>> build(entries, {0x9F02: bytes.fromhex("1000"), 0x9F37: bytes.fromhex("11223344")}).hex()
'00000000100011223344'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from unioncard.apdu import tags
from unioncard.apdu.tlv import is_constructed, read_length, read_tag, tag_bytes
from unioncard.errors import DecodeError

__all__ = ["DolEntry", "build", "encode", "format_value", "parse", "split"]


class DolEntry(NamedTuple):
    tag: int
    length: int


def parse(dol: bytes) -> list[DolEntry]:
    """Parse a DOL (e.g. the value of ``9F38`` PDOL or ``8C`` CDOL1)."""
    dol = bytes(dol)
    entries: list[DolEntry] = []
    pos = 0
    try:
        while pos < len(dol):
            tag, pos = read_tag(dol, pos)
            length, pos = read_length(dol, pos)
            entries.append(DolEntry(tag, length))
    except DecodeError as exc:
        exc.partial = entries
        raise
    return entries


def encode(entries: Sequence[DolEntry]) -> bytes:
    """The DOL bytes for a list of entries (only the one-byte length form is used)."""
    out = bytearray()
    for tag, length in entries:
        if not 0 <= length <= 0xFF:
            raise ValueError(f"DOL length {length} for tag {tag:X} must be 0..255")
        out += tag_bytes(tag) + bytes((length,))
    return bytes(out)


def format_value(value: bytes | None, length: int, fmt: str, *, constructed: bool = False) -> bytes:
    """Fit one value to ``length`` bytes by the EMV Book 3 §5.4 rules for ``fmt``."""
    if value is None or constructed:
        return bytes(length)
    if len(value) > length:
        return value[len(value) - length :] if fmt == "n" else value[:length]
    pad = bytes(length - len(value))
    if fmt == "n":
        return pad + value
    if fmt == "cn":
        return value + b"\xff" * len(pad)
    return value + pad


def build(
    entries: Sequence[DolEntry],
    values: Mapping[int, bytes],
    format_of: Callable[[int], str] = tags.format_of,
) -> bytes:
    """The DOL-related data: every entry's value, formatted, concatenated."""
    return b"".join(
        format_value(values.get(tag), length, format_of(tag), constructed=is_constructed(tag))
        for tag, length in entries
    )


def split(entries: Sequence[DolEntry], data: bytes) -> dict[int, bytes]:
    """Cut DOL-related data back into values by tag (the card's side of `build`)."""
    expected = sum(length for _, length in entries)
    if len(data) != expected:
        raise DecodeError(f"DOL data of {len(data)} bytes, the DOL asks for {expected}", 0)
    out: dict[int, bytes] = {}
    pos = 0
    for tag, length in entries:
        out[tag] = bytes(data[pos : pos + length])
        pos += length
    return out
