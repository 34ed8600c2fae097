"""Read the logs of pcsc-lite's spy (``libpcscspy.so`` and ``pcsc-spy``) as traces.

Two forms exist, and both are read:

- the **raw log** the spy library writes to ``$HOME/pcsc-spy`` (recorded with
  ``mkfifo ~/pcsc-spy; cat ~/pcsc-spy > logfile``).  Every line is
  ``THREAD@payload``: ``>|sec|usec|Function`` opens a call, one line per
  argument follows, ``<|sec|usec|Function|text|0xRV`` closes it.  An
  ``SCardTransmit`` call logs hCard, (since pcsc-lite 1.9) pioSendPci's protocol
  and length, bSendLength, the send buffer as ``"%02X "`` bytes, (since 1.9)
  pioRecvPci's protocol and length, bRecvLength and the receive buffer;
- the **display** ``pcsc-spy [-n] [-t] logfile`` prints from it: a function
  name line, `` i `` / `` o `` argument lines with 16-byte hex dumps, and a
  `` => text (NAME [0xRV])  [time]`` result line; colours are ignored.

Only ``SCardTransmit`` becomes records (calls of other functions are skipped;
``SCardConnect`` is read to know which reader a card handle belongs to).  A
successful call gives a command and a response record; a failed one (rv not
zero) gives the command alone, which statistics then report as unanswered.
Raw logs give timestamps (the spy's gettimeofday, as UTC); displays have only
relative times, so their records have none.  Every APDU is attributed to the
card unless its reader's name contains one of ``psam_readers``.

A damaged log (a line that fits neither form, an argument outside a call, a
buffer whose length disagrees with its announced length, a log ending inside
``SCardTransmit``) raises `DecodeError` naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO

from unioncard.apdu.trace import Device, Direction, TraceRecord
from unioncard.errors import DecodeError

__all__ = ["MAX_LINE", "read_spy"]

MAX_LINE = 1 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RAW_LINE = re.compile(r"([0-9A-Fa-f]+)@(.*)\Z", re.S)
_ENTER = re.compile(r">\|(\d+)\|(\d+)\|(\w+)\Z")
_QUIT = re.compile(r"<\|(\d+)\|(\d+)\|(\w+)\|(.*)\|0x([0-9A-Fa-f]+)\Z", re.S)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SHOWN_PREFIX = re.compile(r"((?: {4})*(?: \(t\d+\) )?)(.*)\Z", re.S)
_FUNCTION = re.compile(r"SCard\w+\Z|SCarControl\Z")  # pcsc-spy shows SCardControl so
_RESULT_RV = re.compile(r"\[0x([0-9A-Fa-f]{8})\]\)")
_HEX_BYTE = re.compile(r"[0-9A-Fa-f]{2}\Z")


@dataclass(slots=True)
class _Call:
    function: str
    line: int
    sec: int = 0
    usec: int = 0
    args: list[str] = field(default_factory=list)
    where: list[tuple[int, int]] = field(default_factory=list)  # (line, offset) of each argument


class _Lines:
    """Numbered, decoded lines of a log, one at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.number = 0
        self.offset = 0
        self.line_offset = 0

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self.stream.readline(MAX_LINE + 1)
            if not raw:
                return
            self.number += 1
            self.line_offset = self.offset
            self.offset += len(raw)
            if len(raw) > MAX_LINE:
                raise self.error("line longer than 1 MiB")
            yield raw.decode("utf-8", "replace").rstrip("\r\n")

    def error(self, message: str, where: tuple[int, int] | None = None) -> DecodeError:
        number, offset = where if where is not None else (self.number, self.line_offset)
        return DecodeError(f"pcsc-spy log line {number}: {message}", offset)


def read_spy(stream: IO[bytes], psam_readers: Collection[str] = ()) -> Iterator[TraceRecord]:
    """Records of the ``SCardTransmit`` calls in a raw or displayed pcsc-spy log."""
    lines = _Lines(stream)
    iterator = iter(lines)
    first = ""
    for first in iterator:
        if first.strip():
            break
    else:
        return
    if _RAW_LINE.match(first):
        yield from _read_raw(lines, first, iterator, tuple(psam_readers))
    else:
        yield from _read_shown(lines, first, iterator, tuple(psam_readers))


def _device(handle: str | None, readers: dict[str, str], psam: tuple[str, ...]) -> Device:
    name = readers.get(handle or "")
    if name is not None and any(part in name for part in psam):
        return Device.PSAM
    return Device.CARD


def _number(text: str, lines: _Lines, what: str, where: tuple[int, int] | None = None) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise lines.error(f"{what}: {text!r} is not a hex number", where) from None


def _buffer(text: str, lines: _Lines, what: str, where: tuple[int, int] | None = None
            ) -> bytes | None:
    text = text.strip()
    if text == "NULL":
        return None
    parts = text.split(" ") if text else []
    if not all(_HEX_BYTE.match(part) for part in parts):
        raise lines.error(f"{what}: not a buffer of hex bytes", where)
    return bytes(int(part, 16) for part in parts)


def _stamp(sec: int, usec: int) -> datetime:
    return _EPOCH + timedelta(seconds=sec, microseconds=usec)


def _feed(lines: _Lines, handle: Callable[[str], Iterator[TraceRecord]], first: str,
          rest: Iterator[str], open_calls: Mapping[str, _Call | _Shown]) -> Iterator[TraceRecord]:
    """Every line through ``handle``; then refuse a log that ends inside SCardTransmit."""
    yield from handle(first)
    for line in rest:
        yield from handle(line)
    for call in open_calls.values():
        if call.function == "SCardTransmit":
            raise lines.error(f"the log ends inside SCardTransmit begun at line {call.line}")


def _read_raw(lines: _Lines, first: str, rest: Iterator[str],
              psam: tuple[str, ...]) -> Iterator[TraceRecord]:
    calls: dict[str, _Call] = {}
    readers: dict[str, str] = {}

    def handle(line: str) -> Iterator[TraceRecord]:
        if not line.strip():
            return
        match = _RAW_LINE.match(line)
        if match is None:
            raise lines.error("not a pcsc-spy raw log line (THREAD@...)")
        thread, payload = match.groups()
        call = calls.get(thread)
        enter = _ENTER.match(payload)
        if enter is not None:
            if call is not None:
                raise lines.error(f"{enter.group(3)} begins before {call.function}"
                                  f" (line {call.line}) ended")
            calls[thread] = _Call(enter.group(3), lines.number, int(enter.group(1)),
                                  int(enter.group(2)))
            return
        if call is None:
            raise lines.error("argument line outside a call")
        quit_ = _QUIT.match(payload)
        if quit_ is None:
            call.args.append(payload)
            call.where.append((lines.number, lines.line_offset))
            return
        del calls[thread]
        if quit_.group(3) != call.function:
            raise lines.error(f"{quit_.group(3)} ends, but {call.function} began"
                              f" (line {call.line})")
        rv = int(quit_.group(5), 16)
        if call.function == "SCardConnect":
            if rv == 0 and len(call.args) == 8:
                readers[call.args[6]] = call.args[1]
            return
        if call.function != "SCardTransmit":
            return
        args, where = call.args, call.where
        if len(args) == 9:
            picks = (0, 3, 4, 7, 8)
        elif len(args) == 5:
            picks = (0, 1, 2, 3, 4)
        else:
            raise lines.error(f"SCardTransmit (line {call.line}) has {len(args)} argument"
                              f" lines, expected 5 or 9")
        handle_, send_len, send, recv_len, recv = (args[i] for i in picks)
        at_send_len, at_send, at_recv_len, at_recv = (where[i] for i in picks[1:])
        command = _buffer(send, lines, "bSendBuffer", at_send)
        if command is None:
            return
        if len(command) != _number(send_len, lines, "bSendLength", at_send_len):
            raise lines.error(f"bSendBuffer of {len(command)} bytes, bSendLength says"
                              f" {send_len}", at_send)
        device = _device(handle_, readers, psam)
        yield TraceRecord(device, Direction.COMMAND, command, _stamp(call.sec, call.usec))
        response = _buffer(recv, lines, "bRecvBuffer", at_recv)
        if rv != 0 or response is None:
            return
        if len(response) != _number(recv_len, lines, "bRecvLength", at_recv_len):
            raise lines.error(f"bRecvBuffer of {len(response)} bytes, bRecvLength says"
                              f" {recv_len}", at_recv)
        yield TraceRecord(device, Direction.RESPONSE, response,
                          _stamp(int(quit_.group(1)), int(quit_.group(2))))

    yield from _feed(lines, handle, first, rest, calls)


@dataclass(slots=True)
class _Shown:
    function: str
    line: int
    handle: str | None = None
    reader: str | None = None
    new_handle: str | None = None
    current: str = ""
    lengths: dict[str, int] = field(default_factory=dict)
    buffers: dict[str, bytearray | None] = field(default_factory=dict)


def _split_shown(text: str) -> tuple[str, str]:
    """(thread prefix, rest) of a display line, colours removed."""
    text = _ANSI.sub("", text)
    match = _SHOWN_PREFIX.match(text)
    return (match.group(1), match.group(2)) if match else ("", text)


def _read_shown(lines: _Lines, first: str, rest: Iterator[str],
                psam: tuple[str, ...]) -> Iterator[TraceRecord]:
    open_: dict[str, _Shown] = {}
    readers: dict[str, str] = {}
    if not _FUNCTION.match(_split_shown(first)[1]):
        raise lines.error("neither a pcsc-spy raw log nor a pcsc-spy display"
                          " (expected a line such as 'SCardEstablishContext')")

    def handle(text: str) -> Iterator[TraceRecord]:
        prefix, rest_ = _split_shown(text)
        call = open_.get(prefix)
        if rest_.startswith((" i ", " o ")):
            if call is None:
                return  # output of a block we do not follow (or the statistics)
            _shown_argument(call, rest_[1], rest_[3:], lines)
            return
        if rest_.startswith(" => "):
            if call is None:
                return
            del open_[prefix]
            found = _RESULT_RV.search(rest_)
            if found is None:
                raise lines.error("result line without a return value [0x........]")
            yield from _shown_done(call, int(found.group(1), 16), readers, psam, lines)
            return
        if _FUNCTION.match(rest_):
            if call is not None and call.function in ("SCardTransmit", "SCardConnect"):
                raise lines.error(f"{rest_} begins before {call.function}"
                                  f" (line {call.line}) ended")
            open_[prefix] = _Shown(rest_, lines.number)
            return
        if call is not None and call.function == "SCardTransmit":
            raise lines.error("unexpected line inside SCardTransmit")

    yield from _feed(lines, handle, first, rest, open_)


def _shown_argument(call: _Shown, way: str, text: str, lines: _Lines) -> None:
    if call.function not in ("SCardTransmit", "SCardConnect"):
        return
    if text.startswith(" ") and call.current:
        body = text[1:]
        buffer = call.buffers.get(call.current)
        if body == "NULL" and buffer is not None and not buffer:
            call.buffers[call.current] = None
            return
        if buffer is None or len(body) < 5:
            raise lines.error(f"unexpected hex dump line in {call.current}")
        offset = _number(body[:4], lines, "hex dump offset")
        parts = body[5:52].split()
        if offset != len(buffer) or not 0 < len(parts) <= 16 or not all(
                _HEX_BYTE.match(part) for part in parts):
            raise lines.error(f"malformed hex dump line in {call.current}")
        buffer.extend(int(part, 16) for part in parts)
        return
    call.current = ""
    name, _, value = text.partition(" ")
    name = name.rstrip(":")
    if name in ("hCard", "phCard"):
        if way == "o":
            call.new_handle = value.split(" ")[0]
        else:
            call.handle = value.split(" ")[0]
    elif name == "szReader":
        call.reader = value
    elif name in ("bSendLength", "bRecvLength"):
        call.lengths[name] = _number(value.split(" ")[0], lines, name)
    elif name in ("bSendBuffer", "bRecvBuffer"):
        call.current = name
        call.buffers[name] = bytearray()


def _shown_done(call: _Shown, rv: int, readers: dict[str, str], psam: tuple[str, ...],
                lines: _Lines) -> Iterator[TraceRecord]:
    if call.function == "SCardConnect":
        if rv == 0 and call.new_handle and call.reader is not None:
            readers[call.new_handle] = call.reader
        return
    if call.function != "SCardTransmit":
        return
    buffers = {}
    for name, length in (("bSendBuffer", "bSendLength"), ("bRecvBuffer", "bRecvLength")):
        if name not in call.buffers:
            raise lines.error(f"SCardTransmit (line {call.line}) shows no {name}")
        buffer = call.buffers[name]
        if buffer is not None and length in call.lengths and len(buffer) != call.lengths[length]:
            raise lines.error(f"{name} of {len(buffer)} bytes, {length} says"
                              f" {call.lengths[length]}")
        buffers[name] = buffer
    command = buffers["bSendBuffer"]
    if command is None:
        return
    device = _device(call.handle, readers, psam)
    yield TraceRecord(device, Direction.COMMAND, bytes(command))
    response = buffers["bRecvBuffer"]
    if rv == 0 and response is not None:
        yield TraceRecord(device, Direction.RESPONSE, bytes(response))
