"""The binary trace format ``UCT1``, for bulk logs.

Layout: the 4-byte magic ``UCT1``, then frames, each::

    kind(1) length(2, big-endian) bytes(length)

with kind ``01`` command to the card, ``02`` response from the card, ``11``
command to the PSAM, ``12`` response from the PSAM (`FrameKind`).  A response's
bytes end with SW1 SW2.  Frames carry no timestamps: writing a record with one
drops it (`BinaryTraceWriter.dropped_timestamps` counts them).

The reader is a generator over a file object that reads fixed-size chunks, so
memory stays constant on files of any size.  A bad magic, an unknown kind or a
truncated final frame raises `DecodeError` with the byte offset of the frame.
For bulk statistics use `unioncard.apdu.indexer`, which reports such frames by
index instead.

>>> import io
>>> out = io.BytesIO()
>>> with BinaryTraceWriter(out) as w:
...     w.write(TraceRecord.command(bytes.fromhex("805C000204")))
>>> out.getvalue().hex()
'55435431010005805c000204'
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from unioncard.apdu.trace import MAX_FRAME, FrameKind, StreamTraceWriter, TraceRecord
from unioncard.errors import DecodeError

__all__ = ["CHUNK", "HEADER", "MAGIC", "BinaryTraceWriter", "encode_frame", "read_binary"]

MAGIC = b"UCT1"
HEADER = 3
"""Bytes of a frame header: kind(1) length(2)."""
CHUNK = 1 << 20
"""Bytes read from the file at a time."""

_KINDS = {int(kind): kind for kind in FrameKind}


def encode_frame(kind: FrameKind, payload: bytes) -> bytes:
    """One frame's bytes."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME}")
    return bytes((int(kind), len(payload) >> 8, len(payload) & 0xFF)) + payload


def read_binary(stream: IO[bytes], chunk: int = CHUNK) -> Iterator[TraceRecord]:
    """Records of a binary trace, reading ``chunk`` bytes at a time."""
    magic = stream.read(len(MAGIC))
    if not magic:
        raise DecodeError("the file is empty: a UCT1 binary trace starts with the magic "
                          "55435431 ('UCT1')", 0)
    if magic != MAGIC:
        raise DecodeError(f"not a UCT1 binary trace: the file starts with {magic[:4].hex()!r}"
                          f" instead of the magic 55435431 ('UCT1')", 0)
    buffer = b""
    pos = 0
    base = len(MAGIC)  # file offset of buffer[0]
    eof = False
    frames = 0
    while True:
        if len(buffer) - pos < HEADER + MAX_FRAME and not eof:
            more = stream.read(chunk)
            eof = not more
            buffer = buffer[pos:] + more
            base += pos
            pos = 0
        remaining = len(buffer) - pos
        if remaining == 0 and eof:
            return
        if remaining < HEADER:
            if eof:
                raise DecodeError(f"frame {frames}: truncated header ({remaining} of {HEADER}"
                                  f" bytes) at the end of the file", base + pos)
            continue
        kind = buffer[pos]
        length = (buffer[pos + 1] << 8) | buffer[pos + 2]
        known = _KINDS.get(kind)
        if known is None:
            raise DecodeError(f"frame {frames}: unknown frame kind {kind:02X}"
                              f" (expected 01, 02, 11 or 12)", base + pos)
        if remaining < HEADER + length:
            if eof:
                raise DecodeError(f"frame {frames}: truncated, {length} bytes announced but only"
                                  f" {remaining - HEADER} remain", base + pos)
            continue
        start = pos + HEADER
        pos = start + length
        frames += 1
        yield TraceRecord(known.device, known.direction, buffer[start:pos])


class BinaryTraceWriter(StreamTraceWriter):
    """Writes a binary trace incrementally: the magic at once, then one frame per record.

    Usable while a simulator runs: `write`, `flush` whenever the file must be
    readable, `close` at the end.  The writer only closes the stream if it
    opened it (`BinaryTraceWriter.open`).
    """

    def __init__(self, stream: IO[bytes], *, owns: bool = False) -> None:
        super().__init__(stream, owns=owns)
        self.dropped_timestamps = 0
        stream.write(MAGIC)

    def write(self, record: TraceRecord) -> None:
        if record.timestamp is not None:
            self.dropped_timestamps += 1
        self._stream.write(encode_frame(record.kind, record.data))
        self.records += 1

    def write_frame(self, kind: int, payload: bytes) -> None:
        """A raw frame, kind unchecked (for tests and tools that build damaged traces)."""
        if not 0 <= kind <= 0xFF or len(payload) > MAX_FRAME:
            raise ValueError("frame kind must be a byte and the payload at most 65535 bytes")
        self._stream.write(bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload)
        self.records += 1
