"""The text trace format: one APDU per line, for people and for diffs.

Grammar (ABNF, RFC 5234; docs/traces.md has examples)::

    trace     = *line
    line      = [blank] [entry [blank]] [comment] EOL
    entry     = [device blank] [timestamp [blank]] arrow [blank] hexdata
    device    = "card" / "psam"              ; case-insensitive; default card
    timestamp = 1*(VCHAR except "<" ">" "#") ; ISO 8601, as datetime.fromisoformat
    arrow     = ">" / "<"                    ; command to / response from the device
    hexdata   = *(HEXDIG / blank)            ; an even number of digits, any case
    comment   = "#" *OCTET                   ; to the end of the line, any encoding
    blank     = 1*(SP / HTAB)
    EOL       = LF / CRLF / end of file

A response line carries SW1 SW2 as its last two bytes.  Device and timestamp
are optional and, when both are given, come in that order.  Everything outside
comments must be ASCII; comments may hold any bytes (UTF-8, GBK, ...).  An
empty ``hexdata`` is allowed, so that every binary frame has a text form.

Reading is streaming (one line at a time, lines of at most `MAX_LINE` bytes);
a malformed line raises `DecodeError` naming the line, with the byte offset
of the fault in the file.

>>> import io
>>> line = b"psam 2024-05-01T08:30:00 > 00 84 00 00 04 # x\\n"
>>> [r.data.hex() for r in read_text(io.BytesIO(line))]
['0084000004']
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from datetime import datetime
from typing import IO

from unioncard.apdu.trace import Device, Direction, StreamTraceWriter, TraceRecord
from unioncard.errors import DecodeError

__all__ = ["MAX_LINE", "TextTraceWriter", "format_record", "parse_line", "read_text"]

MAX_LINE = 1 << 20
"""Longest accepted line in bytes (the longest APDU takes about 196 KiB as spaced hex)."""

_HEX = frozenset("0123456789abcdefABCDEF")
_DEVICES = {"card": Device.CARD, "psam": Device.PSAM}


def parse_line(line: bytes, number: int = 1, offset: int = 0) -> TraceRecord | None:
    """One line to a record, or None for a blank or comment-only line.

    ``number`` and ``offset`` (the line's number and byte offset in the file)
    only serve error messages.
    """
    start = 0
    if number == 1 and line.startswith(codecs.BOM_UTF8):
        start = len(codecs.BOM_UTF8)
    cut = line.find(b"#", start)
    body_bytes = line[start:cut] if cut >= 0 else line[start:]
    try:
        body = body_bytes.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"line {number}: non-ASCII byte outside a comment",
                          offset + start + exc.start) from None
    body = body.rstrip("\r\n")
    if not body.strip(" \t"):
        return None

    def fail(message: str, column: int) -> DecodeError:
        return DecodeError(f"line {number}: {message}", offset + start + column)

    arrow_at = min((i for i in (body.find(">"), body.find("<")) if i >= 0), default=-1)
    if arrow_at < 0:
        raise fail("no '>' (command) or '<' (response) arrow", len(body) - len(body.lstrip()))
    direction = Direction.COMMAND if body[arrow_at] == ">" else Direction.RESPONSE

    device = Device.CARD
    timestamp: datetime | None = None
    tokens = _tokens(body, 0, arrow_at)
    if len(tokens) > 2:
        raise fail("more than a device and a timestamp before the arrow", tokens[2][0])
    if tokens:
        column, word = tokens[0]
        found = _DEVICES.get(word.lower())
        if found is not None:
            device = found
            tokens = tokens[1:]
        elif len(tokens) == 2:
            raise fail(f"unknown device {word!r} (expected card or psam)", column)
    if tokens:
        column, word = tokens[0]
        try:
            timestamp = datetime.fromisoformat(word)
        except ValueError:
            raise fail(f"{word!r} is neither a device nor an ISO 8601 timestamp", column) from None

    digits: list[str] = []
    for column in range(arrow_at + 1, len(body)):
        char = body[column]
        if char in _HEX:
            digits.append(char)
        elif char not in " \t":
            raise fail(f"{char!r} is not a hex digit", column)
    if len(digits) % 2:
        raise fail(f"odd number of hex digits ({len(digits)})", arrow_at + 1)
    try:
        return TraceRecord(device, direction, bytes.fromhex("".join(digits)), timestamp)
    except ValueError as exc:
        raise fail(str(exc), arrow_at + 1) from None


def _tokens(text: str, begin: int, end: int) -> list[tuple[int, str]]:
    """Whitespace-separated words of ``text[begin:end]`` with their columns."""
    out: list[tuple[int, str]] = []
    i = begin
    while i < end:
        if text[i] in " \t":
            i += 1
            continue
        j = i
        while j < end and text[j] not in " \t":
            j += 1
        out.append((i, text[i:j]))
        i = j
    return out


def read_text(stream: IO[bytes]) -> Iterator[TraceRecord]:
    """Records of a text trace, read line by line from a binary file object."""
    number = 0
    offset = 0
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE:
            raise DecodeError(f"line {number}: longer than {MAX_LINE} bytes", offset)
        record = parse_line(line, number, offset)
        offset += len(line)
        if record is not None:
            yield record


def format_record(record: TraceRecord, comment: str | None = None) -> str:
    """The text line of one record (without the newline).

    >>> format_record(TraceRecord.response(bytes.fromhex("9000")), "ok")
    'card < 90 00 # ok'
    """
    parts = [record.device.value]
    if record.timestamp is not None:
        parts.append(record.timestamp.isoformat())
    parts.append(record.direction.value)
    if record.data:
        parts.append(record.data.hex(" ").upper())
    line = " ".join(parts)
    if comment is not None:
        _check_comment(comment)
        line += f" # {comment}" if comment else " #"
    return line


def _check_comment(text: str) -> None:
    if "\n" in text or "\r" in text:
        raise ValueError("a trace comment must fit on one line")


class TextTraceWriter(StreamTraceWriter):
    """Writes a text trace incrementally: open, `write` each record, flush, close.

    The writer only closes the stream if it opened it (`TextTraceWriter.open`).
    """

    def write(self, record: TraceRecord, comment: str | None = None) -> None:
        self._stream.write(format_record(record, comment).encode("utf-8") + b"\n")
        self.records += 1

    def comment(self, text: str) -> None:
        """A comment line (``# text``; ``#`` alone for an empty text)."""
        _check_comment(text)
        self._stream.write(f"# {text}\n".encode() if text else b"#\n")
