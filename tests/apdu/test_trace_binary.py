"""The binary UCT1 format: layout, errors with offsets, round trips, chunked streaming."""

import io
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.apdu.trace import Device, FrameKind, TraceRecord
from unioncard.apdu.trace_binary import MAGIC, BinaryTraceWriter, encode_frame, read_binary
from unioncard.errors import DecodeError
from unioncard.testing.trace_strategies import records

H = bytes.fromhex


def read(raw: bytes, chunk: int = 1 << 20) -> list[TraceRecord]:
    return list(read_binary(io.BytesIO(raw), chunk))


def write(items: list[TraceRecord]) -> bytes:
    out = io.BytesIO()
    with BinaryTraceWriter(out) as writer:
        for item in items:
            writer.write(item)
    return out.getvalue()


def test_layout_of_the_four_kinds():
    items = [
        TraceRecord.command(H("805001020B"), Device.CARD),
        TraceRecord.response(H("9000"), Device.CARD),
        TraceRecord.command(H("8070"), Device.PSAM),
        TraceRecord.response(b"", Device.PSAM),
    ]
    assert write(items) == (b"UCT1" + H("010005805001020B") + H("0200029000")
                            + H("1100028070") + H("120000"))
    assert read(write(items)) == items


def test_long_frame_length_is_big_endian():
    data = bytes(range(256)) * 3
    assert encode_frame(FrameKind.CARD_RESPONSE, data)[:3] == H("020300")
    with pytest.raises(ValueError):
        encode_frame(FrameKind.CARD_RESPONSE, bytes(65536))


def test_timestamps_are_dropped_and_counted():
    out = io.BytesIO()
    writer = BinaryTraceWriter(out)
    writer.write(TraceRecord.command(H("00B2010C00"), timestamp=datetime(2024, 5, 1)))
    writer.write(TraceRecord.response(H("9000")))
    writer.flush()
    assert (writer.records, writer.dropped_timestamps) == (2, 1)
    assert read(out.getvalue())[0].timestamp is None


@pytest.mark.parametrize(
    ("raw", "message", "offset"),
    [
        (b"", "the file is empty: a UCT1 binary trace starts with the magic", 0),
        (b"UCT", "not a UCT1 binary trace", 0),
        (b"UCT2" + H("0100019000"), "not a UCT1 binary trace", 0),
        (b"UCT1" + H("010001A4") + H("0700"), "frame 1: truncated header (2 of 3", 8),
        (b"UCT1" + H("010001A4") + H("0300019000"), "frame 1: unknown frame kind 03", 8),
        (b"UCT1" + H("0200059000"), "frame 0: truncated, 5 bytes announced but only 2", 4),
    ],
)
def test_damage_is_reported_with_its_offset(raw, message, offset):
    with pytest.raises(DecodeError) as caught:
        read(raw)
    assert caught.value.message.startswith(message)
    assert caught.value.offset == offset


def test_writer_open_and_raw_frames(tmp_path):
    path = tmp_path / "t.uct"
    with BinaryTraceWriter.open(path) as writer:
        writer.write_frame(0x33, b"\x01")
    assert path.read_bytes() == MAGIC + H("33000101")
    with pytest.raises(ValueError):
        writer.write_frame(256, b"")


@given(st.lists(records(timestamped=False, max_size=70000 // 64), max_size=30),
       st.integers(1, 64))
def test_read_of_write_is_identity_across_chunk_borders(items, chunk):
    assert read(write(items), chunk) == items


@given(st.lists(records(timestamped=False), max_size=20))
def test_write_of_read_is_identity(items):
    raw = write(items)
    assert write(read(raw)) == raw


def test_a_full_size_frame_streams_in_small_chunks():
    items = [TraceRecord.response(bytes(65535)), TraceRecord.command(H("00B2010C00"))]
    assert read(write(items), chunk=1000) == items


@given(st.binary(max_size=200), st.integers(1, 16))
def test_random_bytes_raise_only_decode_errors(raw, chunk):
    for candidate in (raw, MAGIC + raw):
        try:
            read(candidate, chunk)
        except DecodeError as exc:
            assert 0 <= exc.offset <= len(candidate)


def test_memory_stays_bounded_on_a_large_stream():
    """Reading does not slurp the file: the stream is consumed chunk by chunk."""
    frame = encode_frame(FrameKind.CARD_RESPONSE, bytes(1000))

    class Counting(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0
            self.largest = 0
            self.head = bytearray(MAGIC)

        def readable(self) -> bool:
            return True

        def readinto(self, target) -> int:  # an endless stream of frames
            self.largest = max(self.largest, len(target))
            while len(self.head) < len(target):
                self.head += frame
            n = len(target)
            target[:n] = self.head[:n]
            del self.head[:n]
            self.sent += n
            return n

    source = Counting()
    reader = read_binary(source, chunk=4096)
    for _ in range(5000):  # 5 MB of frames
        next(reader)
    assert source.sent < 5_100_000
    assert source.largest <= 4096
