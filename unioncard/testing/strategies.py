"""Hypothesis strategies: command APDUs of all four ISO 7816-4 cases in short and
extended form, response APDUs, BER-TLV tags and nested TLV trees.

Generated TLV trees are canonical (minimal lengths, no padding), so
``tlv.encode(tree)`` decodes back to ``tree`` and re-encodes to the same bytes.
"""

from __future__ import annotations

from hypothesis import strategies as st

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.apdu.tlv import Tlv

__all__ = [
    "command_apdus",
    "constructed_tags",
    "primitive_tags",
    "response_apdus",
    "tags",
    "tlv_nodes",
    "tlv_trees",
]

bytes_ = st.integers(0, 255)


@st.composite
def command_apdus(draw: st.DrawFn, extended: bool | None = None) -> CommandAPDU:
    """Any valid command APDU; ``extended`` forces the length form when given."""
    ext = draw(st.booleans()) if extended is None else extended
    case = draw(st.integers(1, 4))
    max_lc = 65535 if ext else 255
    max_le = 65536 if ext else 256
    data = b""
    if case in (3, 4):
        # Mostly short data so examples stay quick; sometimes the limit itself.
        n = draw(st.one_of(st.integers(1, min(max_lc, 300)), st.just(max_lc)))
        data = draw(st.binary(min_size=n, max_size=n))
    le = draw(st.one_of(st.integers(1, max_le), st.just(max_le))) if case in (2, 4) else None
    cla, ins, p1, p2 = (draw(bytes_) for _ in range(4))
    if case == 1:
        ext = False
    return CommandAPDU(cla, ins, p1, p2, data, le, extended=ext)


def response_apdus() -> st.SearchStrategy[ResponseAPDU]:
    return st.builds(ResponseAPDU, st.binary(max_size=300), st.integers(0, 0xFFFF))


def _tag(first: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    """One- to three-byte tags whose first byte is drawn from ``first``."""

    @st.composite
    def build(draw: st.DrawFn) -> int:
        b0 = draw(first)
        if b0 & 0x1F != 0x1F:
            return b0
        if draw(st.booleans()):
            b1 = draw(st.integers(0x01, 0x7F))
            return (b0 << 8) | b1
        b1 = draw(st.integers(0x81, 0xFF))
        b2 = draw(st.integers(0x00, 0x7F))
        return (b0 << 16) | (b1 << 8) | b2

    return build()


def _first_bytes(constructed: bool) -> st.SearchStrategy[int]:
    bit = 0x20 if constructed else 0x00
    return st.integers(0x01, 0xFE).filter(lambda b: (b & 0x20) == bit)


def primitive_tags() -> st.SearchStrategy[int]:
    return _tag(_first_bytes(False))


def constructed_tags() -> st.SearchStrategy[int]:
    return _tag(_first_bytes(True))


def tags() -> st.SearchStrategy[int]:
    return st.one_of(primitive_tags(), constructed_tags())


def tlv_nodes(max_leaves: int = 12, max_value: int = 300) -> st.SearchStrategy[Tlv]:
    """One canonical TLV node, nested up to a few levels."""
    primitive = st.builds(Tlv.primitive, primitive_tags(), st.binary(max_size=max_value))
    return st.recursive(
        primitive,
        lambda children: st.builds(Tlv.template, constructed_tags(),
                                   st.lists(children, max_size=4)),
        max_leaves=max_leaves,
    )


def tlv_trees(max_nodes: int = 6) -> st.SearchStrategy[list[Tlv]]:
    """A list of top-level canonical TLV nodes."""
    return st.lists(tlv_nodes(), max_size=max_nodes)
