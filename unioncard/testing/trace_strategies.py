"""Hypothesis strategies for APDU trace records, and for the raw commands, responses,
BER-TLV and binary traces a trace reader or the bulk indexer must survive: often
valid, sometimes damaged (truncated, padded, non-minimal lengths, unknown kinds).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from unioncard.apdu import tlv
from unioncard.apdu.trace import Device, Direction, TraceRecord
from unioncard.testing.strategies import command_apdus, tlv_trees

__all__ = [
    "COMMAND_HEADERS",
    "binary_traces",
    "commands",
    "nested",
    "records",
    "responses",
    "timestamps",
    "tlv_bytes",
]

offsets = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))
timestamps = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
                 timezones=offsets),
)


def records(timestamped: bool = True, max_size: int = 300) -> st.SearchStrategy[TraceRecord]:
    return st.builds(
        TraceRecord,
        st.sampled_from(Device),
        st.sampled_from(Direction),
        st.binary(max_size=max_size),
        timestamps if timestamped else st.none(),
    )


# Commands whose answers the indexer decodes (or not), with TLV-ish and raw answers.
COMMAND_HEADERS = [
    "00A40400", "00A4000C", "80A80000", "80AE8000", "00CA9F79", "80CA9F79", "00880000",
    "00B2010C", "00B20114", "00B2015C", "00B201C4", "00B2010B", "00B08100", "00B09500",
    "00C00000", "80500102", "80540100", "80700000", "80720000", "00840000", "FFCA0000",
    "805C0002", "00B20104",
]


@st.composite
def commands(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=12))  # often not a valid APDU
    if choice == 1:
        return draw(command_apdus(extended=False)).to_bytes()
    header = bytes.fromhex(draw(st.sampled_from(COMMAND_HEADERS)))
    data = draw(st.binary(max_size=20))
    body = header + (bytes((len(data),)) + data if data else b"")
    if draw(st.booleans()):
        body += b"\x00"
    return body


@st.composite
def tlv_bytes(draw: st.DrawFn) -> bytes:
    """BER-TLV, often with padding and non-minimal lengths, sometimes damaged."""
    nodes = draw(tlv_trees(max_nodes=4))
    raw = bytearray(_encode(draw, nodes))
    damage = draw(st.integers(0, 5))
    if raw and damage == 1:
        del raw[draw(st.integers(0, len(raw) - 1)):]
    elif raw and damage == 2:
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    elif damage == 3:
        raw.insert(draw(st.integers(0, len(raw))), draw(st.sampled_from([0x1F, 0x9F, 0x80,
                                                                          0x85, 0x84, 0x81])))
    return bytes(raw)


def _encode(draw: st.DrawFn, nodes: list[tlv.Tlv]) -> bytes:
    out = bytearray()
    for node in nodes:
        if draw(st.integers(0, 7)) == 0:
            out += bytes(draw(st.lists(st.sampled_from([0x00, 0xFF]), min_size=1, max_size=3)))
        value = _encode(draw, node.children) if node.children else node.value
        n = len(value)
        form = draw(st.integers(0, 9))
        if form == 0:
            length = b"\x81" + bytes((n,)) if n < 256 else tlv.encode_length(n)
        elif form == 1:
            length = b"\x82" + n.to_bytes(2, "big")
        elif form == 2:
            length = b"\x84" + n.to_bytes(4, "big")
        else:
            length = tlv.encode_length(n)
        out += tlv.tag_bytes(node.tag) + length + value
    return bytes(out)


def nested(depth: int) -> bytes:
    """``depth`` constructed E1 templates around one primitive object."""
    raw = bytes.fromhex("9F0200")
    for _ in range(depth):
        raw = b"\xE1" + tlv.encode_length(len(raw)) + raw
    return raw


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 6))
    sw = draw(st.sampled_from([b"\x90\x00", b"\x6A\x82", b"\x61\x10", b"\x62\x83"]))
    if kind == 0:
        return draw(st.binary(max_size=2))  # too short for a status word
    if kind == 1:
        return sw
    if kind == 2:
        return draw(st.binary(max_size=40)) + sw
    if kind == 3:
        return nested(draw(st.integers(30, 34))) + sw
    return draw(tlv_bytes()) + sw


@st.composite
def binary_traces(draw: st.DrawFn) -> bytes:
    """A UCT1 buffer: mostly command/response pairs per device, with damage mixed in."""
    out = bytearray(b"UCT1")
    for _ in range(draw(st.integers(0, 14))):
        what = draw(st.integers(0, 12))
        psam = 0x10 if draw(st.integers(0, 3)) == 0 else 0
        if what <= 9:
            if what != 9:  # sometimes an orphan response
                out += _frame(0x01 | psam, draw(commands()))
            if what != 8:  # sometimes an unanswered command
                out += _frame(0x02 | psam, draw(responses()))
        elif what == 10:
            out += _frame(draw(st.integers(0, 255)), draw(st.binary(max_size=8)))
        else:
            out += _frame(0x02 | psam, draw(responses()))
    if draw(st.integers(0, 3)) == 0:
        cut = draw(st.integers(0, 6))
        tail = _frame(draw(st.sampled_from([1, 2, 0x11, 0x12, 0x33])), draw(responses()))
        out += tail[: max(0, min(cut, len(tail) - 1))] if cut < 6 else tail[:-1]
    return bytes(out)


def _frame(kind: int, payload: bytes) -> bytes:
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload
