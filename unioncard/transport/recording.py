"""Recording a terminal's exchanges with its card and PSAM to a trace file (docs/traces.md).

A `TraceRecorder` hangs on the ``on_apdu`` hook of any transport
(`unioncard.transport.base.Observed`) and writes each exchange as it happens:
the command and its response, with the device and a timestamp, flushed at
once, so a terminal killed in the middle of a transaction leaves its trace up
to the last exchange.  The recorder sits below `Channel`, so the trace holds
what went over the wire, GET RESPONSE rounds included.

The format follows the file's suffix, as ``unioncard sim serve --trace`` does:
binary UCT1 for ``.uct``/``.bin`` (which keeps no timestamps), text otherwise.
A command the card never answered (pulled, lost power) is written alone; in
text it carries the comment ``no answer: ...``.

The file is created exclusively (``O_EXCL``, so a symbolic link planted at the
path is never followed) and readable by its owner only: a trace holds the card
number and the holder's identity unmasked.  An existing file is refused unless
``overwrite=True``, which truncates a regular file and still refuses a link.

>>> import tempfile, pathlib
>>> from unioncard.apdu.trace import Device
>>> from unioncard.transport.inprocess import InProcessTransport
>>> class Card:
...     atr = bytes.fromhex("3B00")
...     def power_on(self): return self.atr
...     def reset(self): return self.atr
...     def power_off(self): pass
...     def transmit(self, command): return b"\\x90\\x00"
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tap.txt"
>>> card = InProcessTransport(Card())
>>> with TraceRecorder.open(path) as recorder:
...     recorder.attach(card, Device.CARD)
...     _ = card.power_on(); _ = card.transmit(bytes.fromhex("00A4040000"))
>>> [line.split(" ", 2)[::2] for line in path.read_text().splitlines()]
[['card', '> 00 A4 04 00 00'], ['card', '< 90 00']]
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from unioncard.apdu.trace import (
    BINARY_SUFFIXES,
    Device,
    TraceFormat,
    TraceRecord,
    TraceWriter,
)
from unioncard.transport.base import ApduObserver, Observed

__all__ = ["NO_ANSWER", "TraceRecorder", "create_trace_file", "trace_format"]

log = logging.getLogger(__name__)

NO_ANSWER = {
    Device.CARD: "no answer: the card did not answer (pulled, or it lost power)",
    Device.PSAM: "no answer: the PSAM did not answer (pulled, or it lost power)",
}
"""The comment on an unanswered command in a text trace, by device."""


def _local_now() -> datetime:
    return datetime.now().astimezone()


def trace_format(path: str | Path) -> TraceFormat:
    """The format a trace written to ``path`` gets: binary for ``.uct``/``.bin``, else text."""
    suffix = Path(path).suffix.lower()
    return TraceFormat.BINARY if suffix in BINARY_SUFFIXES else TraceFormat.TEXT


def create_trace_file(path: str | Path, *, overwrite: bool = False) -> IO[bytes]:
    """A new file at ``path`` opened for writing, mode 0600, never through a symbolic link.

    Without ``overwrite`` the file must not exist (``O_EXCL``: `FileExistsError`
    otherwise, a link at the path included).  With it an existing regular file
    is truncated; a link or anything but a regular file is still refused.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_TRUNC if overwrite else os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "the trace file exists already (overwrite it explicitly)", str(path)
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "the trace path is a symbolic link; not following it",
                          str(path)) from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads (O_NONBLOCK): not a file either
            raise OSError(errno.ENXIO, "the trace path is not a regular file",
                          str(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "the trace path is not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


class TraceRecorder:
    """Writes every exchange of the attached transports to one trace.

    `attach` hooks a transport (the card's, the PSAM's) under its device; the
    observer it replaces, if any, is still called.  A write that fails (a full
    disk) does not fail the exchange that triggered it: the recorder stops,
    keeps the error in `error` and logs a warning, so a transaction never
    depends on its trace.  `close` detaches and closes the file.
    """

    def __init__(self, writer: TraceWriter, *, path: str | Path | None = None,
                 clock: Callable[[], datetime] = _local_now) -> None:
        self.writer = writer
        self.path = Path(path) if path is not None else None
        self.clock = clock
        self.exchanges = 0
        """Exchanges written so far."""
        self.unanswered = 0
        """Of those, commands that got no answer."""
        self.error: Exception | None = None
        """The write error that stopped the recording, if one did."""
        self._stream: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._attached: list[tuple[Observed, ApduObserver, ApduObserver | None]] = []
        self._closed = False

    @classmethod
    def open(cls, path: str | Path, *, overwrite: bool = False,
             fmt: TraceFormat | None = None,
             clock: Callable[[], datetime] = _local_now) -> TraceRecorder:
        """A recorder writing a new trace file at ``path`` (see `create_trace_file`).

        ``fmt`` defaults to the suffix's format (`trace_format`).
        """
        from unioncard.apdu.trace_binary import BinaryTraceWriter
        from unioncard.apdu.trace_text import TextTraceWriter

        fmt = fmt or trace_format(path)
        if fmt not in (TraceFormat.TEXT, TraceFormat.BINARY):
            raise ValueError(f"cannot record {fmt} traces")
        stream = create_trace_file(path, overwrite=overwrite)
        writer: TraceWriter = (BinaryTraceWriter(stream, owns=True) if fmt is TraceFormat.BINARY
                               else TextTraceWriter(stream, owns=True))
        try:
            writer.flush()  # the binary magic is on disk before the first exchange
        except BaseException:
            stream.close()
            raise
        recorder = cls(writer, path=path, clock=clock)
        recorder._stream = stream
        return recorder

    def attach(self, transport: Observed, device: Device | str) -> None:
        """Record ``transport``'s exchanges as ``device``'s (``card`` or ``psam``)."""
        if self._closed:
            raise ValueError("the recorder is closed")
        device = Device(device)
        previous = transport.on_apdu

        def observe(command: bytes, response: bytes | None) -> None:
            self.record(device, command, response)
            if previous is not None:
                previous(command, response)

        transport.on_apdu = observe
        self._attached.append((transport, observe, previous))

    def record(self, device: Device, command: bytes, response: bytes | None) -> None:
        """Write one exchange (``response`` None: the device did not answer) and flush."""
        with self._lock:
            if self._closed or self.error is not None:
                return
            now = self.clock()
            try:
                command_record = TraceRecord.command(bytes(command), device, now)
                if response is None:
                    self._write_unanswered(command_record)
                    self.unanswered += 1
                else:
                    self.writer.write(command_record)
                    self.writer.write(TraceRecord.response(bytes(response), device, now))
                self.writer.flush()
            except (OSError, ValueError) as exc:  # a full disk; an APDU too long for a frame
                self.error = exc
                log.warning("the APDU trace %s stopped after %d exchanges: %s",
                            self.path or "", self.exchanges, exc)
                return
            self.exchanges += 1

    def _write_unanswered(self, record: TraceRecord) -> None:
        from unioncard.apdu.trace_text import TextTraceWriter

        if isinstance(self.writer, TextTraceWriter):
            self.writer.write(record, NO_ANSWER[record.device])
        else:
            self.writer.write(record)

    def close(self) -> None:
        """Detach from every transport (their previous observers back) and close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            attached, self._attached = self._attached, []
        for transport, observe, previous in reversed(attached):
            if transport.on_apdu is observe:  # else another observer wraps ours: leave it
                transport.on_apdu = previous
        try:
            self.writer.close()
        except OSError as exc:
            if self._stream is not None:
                with contextlib.suppress(OSError):
                    self._stream.close()
            if self.error is None:
                raise
            log.debug("closing the APDU trace after its write error: %s", exc)

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.exchanges} exchanges"
        return f"TraceRecorder({str(self.path) if self.path else '<stream>'!r}, {state})"
