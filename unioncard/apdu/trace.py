"""APDU trace records, and choosing a reader or writer by format.

A trace is the sequence of APDUs exchanged with a card and a PSAM.  One traced
APDU is a `TraceRecord`: the device it went to or came from, its direction, the
raw bytes (a response includes SW1 SW2) and, when the source has one, a
timestamp.  Three formats carry records (see docs/traces.md):

- text (`unioncard.apdu.trace_text`): one line per APDU, ``> `` / ``< `` then hex;
- binary (`unioncard.apdu.trace_binary`): the magic ``UCT1`` then frames of
  kind(1) length(2) bytes, for bulk logs; frames carry no timestamps;
- pcsc-spy logs (`unioncard.apdu.pcsc_spy`), read only.

>>> r = TraceRecord.command(bytes.fromhex("00A40400"), Device.PSAM)
>>> r.kind, r.is_command
(<FrameKind.PSAM_COMMAND: 17>, True)
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

__all__ = [
    "MAX_FRAME",
    "Device",
    "Direction",
    "FrameKind",
    "StreamTraceWriter",
    "TraceFormat",
    "TraceRecord",
    "TraceWriter",
    "detect_format",
    "open_writer",
    "read_records",
]

MAX_FRAME = 0xFFFF
"""Largest APDU a trace record holds: the binary frame's 2-byte length."""


class Device(StrEnum):
    """Which card an APDU was exchanged with: the customer's card or the PSAM."""

    CARD = "card"
    PSAM = "psam"


class Direction(StrEnum):
    """``>`` a command to the device, ``<`` a response from it."""

    COMMAND = ">"
    RESPONSE = "<"


class FrameKind(IntEnum):
    """The kind byte of a binary trace frame."""

    CARD_COMMAND = 0x01
    CARD_RESPONSE = 0x02
    PSAM_COMMAND = 0x11
    PSAM_RESPONSE = 0x12

    @property
    def device(self) -> Device:
        return Device.PSAM if self & 0x10 else Device.CARD

    @property
    def direction(self) -> Direction:
        return Direction.RESPONSE if self & 0x02 else Direction.COMMAND

    @classmethod
    def of(cls, device: Device, direction: Direction) -> FrameKind:
        return cls((0x10 if device is Device.PSAM else 0x00)
                   | (0x02 if direction is Direction.RESPONSE else 0x01))


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One traced APDU: device, direction, raw bytes and an optional timestamp.

    ``data`` is the whole APDU as it crossed the interface: a command from CLA
    on, a response with its status word last.  The record does not check that
    the bytes form a valid APDU: a trace keeps what was seen, and the indexer
    reports malformed APDUs by frame index.
    """

    device: Device
    direction: Direction
    data: bytes
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "device", Device(self.device))
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError as exc:
            raise ValueError(f"trace record: {exc}") from None
        if not isinstance(self.data, bytes):
            if not isinstance(self.data, bytearray | memoryview):
                raise TypeError(f"trace record data must be bytes, not {type(self.data).__name__}")
            object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > MAX_FRAME:
            raise ValueError(f"trace record of {len(self.data)} bytes exceeds {MAX_FRAME}")
        if self.timestamp is not None and not isinstance(self.timestamp, datetime):
            raise TypeError("trace record timestamp must be a datetime or None")

    @classmethod
    def command(cls, data: bytes, device: Device = Device.CARD,
                timestamp: datetime | None = None) -> TraceRecord:
        return cls(device, Direction.COMMAND, data, timestamp)

    @classmethod
    def response(cls, data: bytes, device: Device = Device.CARD,
                 timestamp: datetime | None = None) -> TraceRecord:
        return cls(device, Direction.RESPONSE, data, timestamp)

    @property
    def kind(self) -> FrameKind:
        return FrameKind.of(self.device, self.direction)

    @property
    def is_command(self) -> bool:
        return self.direction is Direction.COMMAND

    def without_timestamp(self) -> TraceRecord:
        return TraceRecord(self.device, self.direction, self.data)


class TraceWriter(Protocol):
    """What both writers offer: write records as they happen, flush, close."""

    records: int

    def write(self, record: TraceRecord) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> TraceWriter: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class StreamTraceWriter:
    """What the text and binary writers share: a binary stream, a record count,
    flush, close and the context manager.

    The writer only closes the stream if it opened it (`open`).
    """

    def __init__(self, stream: IO[bytes], *, owns: bool = False) -> None:
        self._stream = stream
        self._owns = owns
        self.records = 0

    @classmethod
    def open(cls, path: str | Path) -> Self:
        """A writer that owns a new file at ``path``."""
        return cls(open(path, "wb"), owns=True)  # closed by close()

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()
        if self._owns:
            self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class TraceFormat(StrEnum):
    TEXT = "text"
    BINARY = "binary"
    SPY = "pcsc-spy"


BINARY_SUFFIXES = frozenset({".uct", ".bin"})
TEXT_SUFFIXES = frozenset({".txt", ".trace", ".apdu"})
_SPY_RAW = re.compile(rb"^[0-9A-Fa-f]+@[<>]\|")
_SPY_SHOWN = re.compile(
    rb"^(?:\x1b\[[0-9;]*m)?\s*(?:\(t\d+\)\s*)?SCard[A-Za-z0-9]+(?:\x1b\[0m)?\s*$")


def detect_format(head: bytes, name: str | None = None) -> TraceFormat:
    """The format of a trace from its first bytes, else from its file name.

    Content wins: ``UCT1`` is binary, a pcsc-spy raw or displayed log is
    ``pcsc-spy``; otherwise a ``.uct``/``.bin`` name means binary (so a damaged
    binary file gets the binary reader's error) and anything else is text.
    """
    from unioncard.apdu.trace_binary import MAGIC

    if head.startswith(MAGIC):
        return TraceFormat.BINARY
    if name is not None and Path(name).suffix.lower() in BINARY_SUFFIXES:
        return TraceFormat.BINARY
    first = next((line for line in head.splitlines() if line.strip()), b"")
    if _SPY_RAW.match(first) or _SPY_SHOWN.match(first):
        return TraceFormat.SPY
    return TraceFormat.TEXT


def _sniff(stream: IO[bytes]) -> bytes:
    if isinstance(stream, io.BufferedReader):
        return stream.peek(4096)[:4096]
    if stream.seekable():
        position = stream.tell()
        head = stream.read(4096)
        stream.seek(position)
        return head
    raise ValueError("cannot detect the format of a non-seekable stream; name the format")


def read_records(stream: IO[bytes], fmt: TraceFormat | None = None, name: str | None = None,
                 **options: Any) -> Iterator[TraceRecord]:
    """Records from a binary file object in any format (detected when ``fmt`` is None).

    ``options`` go to the format's reader (``psam_readers`` for pcsc-spy logs).
    """
    from unioncard.apdu import pcsc_spy, trace_binary, trace_text

    if fmt is None:
        fmt = detect_format(_sniff(stream), name)
    if fmt is TraceFormat.BINARY:
        return trace_binary.read_binary(stream)
    if fmt is TraceFormat.SPY:
        return pcsc_spy.read_spy(stream, **options)
    return trace_text.read_text(stream)


def open_writer(path: str | Path, fmt: TraceFormat) -> TraceWriter:
    """A writer (text or binary) that owns a new file at ``path``."""
    from unioncard.apdu import trace_binary, trace_text

    if fmt is TraceFormat.BINARY:
        return trace_binary.BinaryTraceWriter.open(path)
    if fmt is TraceFormat.TEXT:
        return trace_text.TextTraceWriter.open(path)
    raise ValueError(f"no writer for {fmt} traces")
