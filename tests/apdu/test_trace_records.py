"""The trace record, frame kinds, format detection and the generic reader/writer entry points."""

import io
from datetime import datetime

import pytest

from unioncard.apdu.trace import (
    Device,
    Direction,
    FrameKind,
    TraceFormat,
    TraceRecord,
    detect_format,
    open_writer,
    read_records,
)
from unioncard.apdu.trace_binary import BinaryTraceWriter
from unioncard.apdu.trace_text import TextTraceWriter
from unioncard.errors import DecodeError

H = bytes.fromhex


def test_record_coerces_and_validates():
    record = TraceRecord("psam", "<", bytearray(b"\x90\x00"))
    assert (record.device, record.direction, record.data) == (Device.PSAM, Direction.RESPONSE,
                                                              H("9000"))
    assert record.kind is FrameKind.PSAM_RESPONSE and not record.is_command
    with pytest.raises(ValueError, match="trace record"):
        TraceRecord("reader", ">", b"")
    with pytest.raises(TypeError):
        TraceRecord(Device.CARD, Direction.COMMAND, "00A4")
    with pytest.raises(ValueError, match="exceeds 65535"):
        TraceRecord.command(bytes(65536))
    with pytest.raises(TypeError):
        TraceRecord(Device.CARD, Direction.COMMAND, b"", "2024-01-01")
    with pytest.raises(AttributeError):
        record.data = b""  # frozen


def test_frame_kinds_map_devices_and_directions():
    for kind in FrameKind:
        assert FrameKind.of(kind.device, kind.direction) is kind
    assert [int(k) for k in FrameKind] == [0x01, 0x02, 0x11, 0x12]


def test_without_timestamp():
    stamped = TraceRecord.command(H("00"), timestamp=datetime(2025, 1, 1))
    assert stamped.without_timestamp() == TraceRecord.command(H("00"))


@pytest.mark.parametrize(("head", "name", "expected"), [
    (b"UCT1\x01\x00\x00", None, TraceFormat.BINARY),
    (b"UCT1", "trace.txt", TraceFormat.BINARY),          # content wins
    (b"> 00A4", "damaged.uct", TraceFormat.BINARY),      # then the name
    (b"7F5D4E48BB80@>|1|2|SCardEstablishContext\n", None, TraceFormat.SPY),
    (b"\nSCardEstablishContext\n i dwScope", "x.log", TraceFormat.SPY),
    (b"\x1b[34mSCardConnect\x1b[0m\n", None, TraceFormat.SPY),
    (b" (t0) SCardTransmit\n", None, TraceFormat.SPY),
    (b"# trace\n> 00A4040000\n", "t.log", TraceFormat.TEXT),
    (b"", None, TraceFormat.TEXT),
])
def test_detect_format(head, name, expected):
    assert detect_format(head, name) is expected


def test_read_records_detects_or_obeys():
    text = b"psam > 0084000004\n"
    assert [r.device for r in read_records(io.BytesIO(text))] == [Device.PSAM]
    with pytest.raises(DecodeError, match="not a UCT1"):
        list(read_records(io.BytesIO(text), TraceFormat.BINARY))

    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

    with pytest.raises(ValueError, match="non-seekable"):
        read_records(Pipe())


def test_open_writer(tmp_path):
    with open_writer(tmp_path / "a.txt", TraceFormat.TEXT) as writer:
        assert isinstance(writer, TextTraceWriter)
    with open_writer(tmp_path / "a.uct", TraceFormat.BINARY) as writer:
        assert isinstance(writer, BinaryTraceWriter)
    assert (tmp_path / "a.uct").read_bytes() == b"UCT1"
    with pytest.raises(ValueError, match="no writer"):
        open_writer(tmp_path / "a.log", TraceFormat.SPY)
