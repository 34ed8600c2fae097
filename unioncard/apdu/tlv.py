"""BER-TLV as EMV uses it (EMV Book 3 Annex B; ISO/IEC 8825-1 subset).

- Tags of one to four bytes: when the low five bits of the first byte are all
  set, subsequent bytes follow while their top bit is set; bits 7–1 of the first
  subsequent byte may not all be zero, so it is neither ``00`` nor ``80``
  (ISO/IEC 8825-1 §8.1.2.4.2).  The tag is kept as an int of its bytes,
  so ``9F02`` is ``0x9F02``.
- Lengths: one byte ``00``–``7F``, or ``81``–``84`` followed by one to four
  length bytes.  The indefinite form ``80`` and longer forms are refused.
- Bit 6 of the first tag byte marks a constructed object, whose value is itself
  a sequence of TLV objects.
- ``00`` and ``FF`` bytes between objects are padding and skipped (Annex B).

Decoding is strict: a truncated or over-long object, a bad tag or a nesting
deeper than `MAX_DEPTH` raises `DecodeError` carrying the offset and the
top-level nodes decoded so far.

>>> nodes = decode(bytes.fromhex("6F0E8407A0000006320101A503500155"))
>>> hex(nodes[0].tag), [hex(c.tag) for c in nodes[0].children]
('0x6f', ['0x84', '0xa5'])
>>> find_path(nodes, "6F/A5/50").value
b'U'
>>> encode(nodes).hex().upper()
'6F0E8407A0000006320101A503500155'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from unioncard.errors import DecodeError

__all__ = [
    "MAX_DEPTH",
    "Tlv",
    "decode",
    "encode",
    "encode_length",
    "find",
    "find_all",
    "find_path",
    "is_constructed",
    "read_length",
    "read_tag",
    "tag_bytes",
    "walk",
]

MAX_DEPTH = 32
"""Deepest nesting accepted; EMV templates nest three or four levels."""

PADDING = (0x00, 0xFF)


class Tlv(NamedTuple):
    """One BER-TLV object: ``children`` is empty for a primitive object.

    For a constructed object ``value`` holds the encoded children exactly as
    they were on the wire (padding included), so re-encoding is faithful.
    """

    tag: int
    value: bytes
    children: list[Tlv]

    @classmethod
    def primitive(cls, tag: int, value: bytes) -> Tlv:
        if is_constructed(tag):
            raise ValueError(f"tag {tag:X} is constructed; use Tlv.template")
        return cls(tag, bytes(value), [])

    @classmethod
    def template(cls, tag: int, children: Iterable[Tlv]) -> Tlv:
        if not is_constructed(tag):
            raise ValueError(f"tag {tag:X} is primitive; use Tlv.primitive")
        kids = list(children)
        return cls(tag, encode(kids), kids)

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    @property
    def tag_hex(self) -> str:
        return tag_bytes(self.tag).hex().upper()

    def to_bytes(self) -> bytes:
        return tag_bytes(self.tag) + encode_length(len(self.value)) + self.value


def tag_bytes(tag: int) -> bytes:
    """The encoded bytes of a tag number as this module stores it."""
    if tag < 0:
        raise ValueError(f"negative tag {tag}")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def is_constructed(tag: int) -> bool:
    """Bit 6 of the first tag byte (EMV Book 3 Annex B1)."""
    return bool(tag_bytes(tag)[0] & 0x20)


def encode_length(length: int) -> bytes:
    """Definite-form length in the fewest bytes (EMV Book 3 Annex B2)."""
    if length < 0x80:
        return bytes((length,))
    if length > 0xFFFFFFFF:
        raise ValueError(f"length {length} does not fit four bytes")
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def read_tag(data: bytes, offset: int, end: int | None = None) -> tuple[int, int]:
    """Read one tag at ``offset``; return ``(tag, offset after it)``."""
    end = len(data) if end is None else end
    if offset >= end:
        raise DecodeError("tag expected, data ends", offset)
    tag = data[offset]
    pos = offset + 1
    if tag & 0x1F == 0x1F:
        while True:
            if pos >= end:
                raise DecodeError("multi-byte tag truncated", offset)
            b = data[pos]
            if pos == offset + 1 and b & 0x7F == 0:
                raise DecodeError(f"tag's first subsequent byte is {b:02X}", offset)
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
            if pos - offset >= 4:
                raise DecodeError("tag longer than four bytes", offset)
    return tag, pos


def read_length(data: bytes, offset: int, end: int | None = None) -> tuple[int, int]:
    """Read one definite length at ``offset``; return ``(length, offset after it)``."""
    end = len(data) if end is None else end
    if offset >= end:
        raise DecodeError("length expected, data ends", offset)
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if count == 0:
        raise DecodeError("indefinite length (80) is not allowed", offset)
    if count > 4:
        raise DecodeError(f"length field of {count} bytes is not supported", offset)
    if offset + 1 + count > end:
        raise DecodeError("length field truncated", offset)
    return int.from_bytes(data[offset + 1 : offset + 1 + count], "big"), offset + 1 + count


_new_node = tuple.__new__


def _decode_range(data: bytes, pos: int, end: int, depth: int, out: list[Tlv]) -> None:
    # The hot loop of every TLV decode: kept flat, with the one- and two-byte tag and
    # one-byte length cases inline and the rare forms delegated to read_tag/read_length.
    append = out.append
    while pos < end:
        first = data[pos]
        if first == 0x00 or first == 0xFF:
            pos += 1
            continue
        start = pos
        if first & 0x1F != 0x1F:
            tag = first
            pos += 1
        elif pos + 2 < end and 0x00 < data[pos + 1] < 0x80:
            tag = (first << 8) | data[pos + 1]
            pos += 2
        else:
            tag, pos = read_tag(data, pos, end)
        if pos >= end:
            raise DecodeError(f"tag {tag:X}: length expected, data ends", pos)
        length = data[pos]
        if length < 0x80:
            pos += 1
        else:
            length, pos = read_length(data, pos, end)
        stop = pos + length
        if stop > end:
            raise DecodeError(
                f"tag {tag:X}: value of {length} bytes overruns the {end - pos} available",
                start,
            )
        children: list[Tlv] = []
        if first & 0x20:
            if depth >= MAX_DEPTH:
                raise DecodeError(f"tag {tag:X}: nesting deeper than {MAX_DEPTH}", start)
            _decode_range(data, pos, stop, depth + 1, children)
        append(_new_node(Tlv, (tag, data[pos:stop], children)))
        pos = stop


def decode(data: bytes) -> list[Tlv]:
    """Decode a buffer of BER-TLV objects into its top-level nodes."""
    data = bytes(data)
    nodes: list[Tlv] = []
    try:
        _decode_range(data, 0, len(data), 0, nodes)
    except DecodeError as exc:
        exc.partial = nodes
        raise
    return nodes


def encode(nodes: Tlv | Iterable[Tlv]) -> bytes:
    """Encode one node or a sequence of nodes (constructed values as stored)."""
    if isinstance(nodes, Tlv):
        return nodes.to_bytes()
    return b"".join(node.to_bytes() for node in nodes)


def walk(nodes: Iterable[Tlv], depth: int = 0) -> Iterator[tuple[int, Tlv]]:
    """Every node depth-first, with its nesting depth (0 for top level)."""
    for node in nodes:
        yield depth, node
        if node.children:
            yield from walk(node.children, depth + 1)


def find_all(nodes: Iterable[Tlv], tag: int) -> list[Tlv]:
    """Every node with ``tag``, at any depth, in document order."""
    return [node for _, node in walk(nodes) if node.tag == tag]


def find(nodes: Iterable[Tlv], tag: int) -> Tlv | None:
    """The first node with ``tag`` at any depth, or None."""
    return next((node for _, node in walk(nodes) if node.tag == tag), None)


def _parse_path(path: str | Sequence[int]) -> list[int]:
    if isinstance(path, str):
        parts = [p for p in path.replace(".", "/").split("/") if p]
        try:
            return [int(p, 16) for p in parts]
        except ValueError:
            raise ValueError(f"bad tag path {path!r}: use hex tags like '70/5F20'") from None
    return list(path)


def find_path(nodes: Iterable[Tlv], path: str | Sequence[int]) -> Tlv | None:
    """The node at a path of tags from the top level, e.g. ``"6F/A5/50"``."""
    tags = _parse_path(path)
    if not tags:
        raise ValueError("empty tag path")
    current: Iterable[Tlv] = nodes
    found: Tlv | None = None
    for tag in tags:
        found = next((node for node in current if node.tag == tag), None)
        if found is None:
            return None
        current = found.children
    return found
