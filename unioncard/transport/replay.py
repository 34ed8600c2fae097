"""A recorded trace played back in place of the card and the PSAM (docs/traces.md).

`Replay.load` reads a trace in any format `read_records` reads (text, binary
UCT1, pcsc-spy logs) and gives one `Transport` per device, `Replay.card` and
`Replay.psam`.  Each answers the commands sent to it with the recorded
responses, in order, and checks that every command is, byte for byte, the next
one recorded for that device: a terminal replaying a recording must do exactly
what it did then.  A command that differs raises `ReplayMismatch`, which is not
a `TransportError` (a driver takes those for a pulled card) but stops the run,
naming the device, the exchange, both commands and where they differ.

Records pair into exchanges per device: a command and the next response of its
device.  A command followed by another command of its device, or by the end of
the trace, went unanswered (the card was pulled or lost power): replaying it
raises `TransportError` and leaves the transport unpowered, which is how a
torn transaction replays.

No trace format carries an ATR, so `power_on` returns `PLACEHOLDER_ATR`.
The replay sits below `Channel`, like the recorder: the GET RESPONSE rounds of
T=0 are recorded exchanges too.  After the run, `Replay.finish` raises
`ReplayMismatch` when recorded exchanges were never replayed (the session
stopped early), and `Replay.unused` lists them.

>>> import io
>>> trace = io.BytesIO(b"card > 00 A4 04 00 02 3F 00\\ncard < 90 00\\n")
>>> replay = Replay.from_records(read_records(trace))
>>> replay.card.power_on() == PLACEHOLDER_ATR
True
>>> replay.card.transmit(bytes.fromhex("00A40400023F00")).hex()
'9000'
>>> replay.finish()
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unioncard.apdu.apdu import CommandAPDU
from unioncard.apdu.instructions import command_name
from unioncard.apdu.trace import Device, TraceRecord, read_records
from unioncard.errors import DecodeError, TransportError, UnionCardError
from unioncard.transport.base import MIN_COMMAND_LENGTH, ApduObserver, Observed, short_command

__all__ = [
    "PLACEHOLDER_ATR",
    "RecordedExchange",
    "Replay",
    "ReplayError",
    "ReplayMismatch",
    "ReplayTransport",
]

PLACEHOLDER_ATR = bytes.fromhex("3B06") + b"REPLAY"
"""The ATR every replayed device answers: TS ``3B``, T0 ``06`` (six historical
bytes, no interface bytes, so T=0 implied and no TCK), then ``REPLAY``."""

_DEVICE_NAMES = {Device.CARD: "card", Device.PSAM: "PSAM"}

MAX_REPLAY_RECORDS = 200_000
"""A replay holds its recording in memory: one session is tens of records, a day of a
busy validator tens of thousands; anything longer is refused rather than read whole."""


class ReplayError(UnionCardError):
    """A trace that cannot be replayed (a response that answers no command)."""


class ReplayMismatch(ReplayError):
    """The session did not do what the recording did: another command, or fewer.

    ``device`` and ``exchange`` (numbered from 1 per device) say where;
    ``sent`` is the command the session sent (None: it sent none, having
    stopped early) and ``recorded`` the recorded one (None: the recording had
    no more exchanges for that device).
    """

    def __init__(self, message: str, *, device: Device, exchange: int,
                 sent: bytes | None, recorded: bytes | None) -> None:
        super().__init__(message)
        self.device = device
        self.exchange = exchange
        self.sent = sent
        self.recorded = recorded


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    """One recorded exchange: ``response`` None when the device did not answer."""

    device: Device
    number: int
    """Its number among its device's exchanges, from 1."""
    record: int
    """The number of its command among the trace's records, from 1."""
    command: bytes
    response: bytes | None
    timestamp: dt.datetime | None = None

    def describe(self) -> str:
        """``card exchange 5 (record 9): 80 50 … (INITIALIZE FOR PURCHASE)``."""
        return (f"{_DEVICE_NAMES[self.device]} exchange {self.number} (record {self.record}):"
                f" {_show(self.command)}")


def _show(command: bytes) -> str:
    return f"{command.hex(' ').upper()} ({command_name(command)})"


def _differences(sent: bytes, recorded: bytes) -> str:
    """How two commands differ: their lengths, or where (``bytes 6-9 and 12 differ``)."""
    if len(sent) != len(recorded):
        return f"{len(sent)} bytes sent, {len(recorded)} recorded"
    runs: list[list[int]] = []
    for i, (a, b) in enumerate(zip(sent, recorded, strict=True)):
        if a != b:
            if runs and runs[-1][1] == i - 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in runs]
    listed = ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else "")
    noun = "byte" if len(runs) == 1 and runs[0][0] == runs[0][1] else "bytes"
    return f"{noun} {listed} (from 0) differ"


class ReplayTransport(Observed):
    """One device of a `Replay`: answers each command with the recorded response.

    ``on_apdu`` sees every replayed exchange, so a replay can be recorded
    again (`unioncard.transport.recording`).
    """

    def __init__(self, device: Device, exchanges: Iterable[RecordedExchange], *,
                 source: str = "the recording", on_apdu: ApduObserver | None = None) -> None:
        self.device = device
        self.exchanges = tuple(exchanges)
        self.source = source
        self.on_apdu = on_apdu
        self.position = 0
        """How many exchanges were replayed."""
        self.powered = False
        self.atr: bytes | None = None

    @property
    def name(self) -> str:
        return _DEVICE_NAMES[self.device]

    def power_on(self) -> bytes:
        """Power up: the `PLACEHOLDER_ATR` (no trace format records an ATR)."""
        self.powered = True
        self.atr = PLACEHOLDER_ATR
        return self.atr

    def reset(self) -> bytes:
        return self.power_on()

    def power_off(self) -> None:
        self.powered = False

    def transmit(self, command: bytes) -> bytes:
        """The recorded response to ``command``, which must be the next recorded command.

        A command shorter than its 4-byte header raises `CommandError` (not a
        mismatch: no transport sends it), and the replay does not advance.
        """
        command = bytes(command)
        if len(command) < MIN_COMMAND_LENGTH:
            raise short_command(command)
        if not self.powered:
            raise TransportError(f"the replayed {self.name} is not powered on")
        number = self.position + 1
        if self.position >= len(self.exchanges):
            has = (f"only {len(self.exchanges)} {self.name} exchange"
                   f"{'s' if len(self.exchanges) != 1 else ''}" if self.exchanges
                   else f"no {self.name} exchange")
            raise ReplayMismatch(
                f"replay mismatch: the session sent {self.name} exchange {number}, "
                f"{_show(command)}, but {self.source} has {has}",
                device=self.device, exchange=number, sent=command, recorded=None)
        expected = self.exchanges[self.position]
        if command != expected.command:
            raise ReplayMismatch(
                f"replay mismatch at {self.name} exchange {number} (record "
                f"{expected.record} of {self.source}): the session sent {_show(command)}, "
                f"the recording has {_show(expected.command)}: "
                f"{_differences(command, expected.command)}",
                device=self.device, exchange=number, sent=command, recorded=expected.command)
        self.position += 1
        if expected.response is None:
            self.powered = False
            self._observe(command, None)
            raise TransportError(f"the {self.name} did not answer (removed, or it lost power;"
                                 f" recorded at exchange {number})")
        self._observe(command, expected.response)
        return expected.response

    def unused(self) -> tuple[RecordedExchange, ...]:
        """The recorded exchanges not replayed (yet)."""
        return self.exchanges[self.position:]

    def __repr__(self) -> str:
        return (f"ReplayTransport({self.name}, {self.position} of {len(self.exchanges)} "
                f"exchanges replayed)")


class Replay:
    """A recorded trace as a card and a PSAM: `card`, `psam`, then `finish`."""

    def __init__(self, exchanges: Iterable[RecordedExchange], *,
                 source: str = "the recording",
                 first_timestamp: dt.datetime | None = None) -> None:
        self.exchanges = tuple(exchanges)
        self.source = source
        self.first_timestamp = first_timestamp
        """The first timestamp of the trace (None: its format or its writer kept none)."""
        self.card = ReplayTransport(
            Device.CARD, (e for e in self.exchanges if e.device is Device.CARD), source=source)
        self.psam = ReplayTransport(
            Device.PSAM, (e for e in self.exchanges if e.device is Device.PSAM), source=source)

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> Replay:
        """Read a trace file of any format; ``options`` go to the reader (``psam_readers``
        for pcsc-spy logs).  A malformed file raises `DecodeError`; a response that
        answers no command, `ReplayError`; what is neither a regular file nor a pipe,
        `unioncard.bounded_read.InputFileError`.  A pipe is read once and never waited
        on when nobody writes to it."""
        from unioncard.bounded_read import open_stream

        with open_stream(path, what="recording") as source:
            return cls.from_records(
                read_records(source.stream, name=Path(path).name, **options), source=str(path))

    @classmethod
    def from_records(cls, records: Iterable[TraceRecord], *,
                     source: str = "the recording") -> Replay:
        """Pair records into exchanges (see the module's documentation)."""
        exchanges: list[RecordedExchange] = []
        waiting: dict[Device, tuple[int, TraceRecord]] = {}
        counts = {Device.CARD: 0, Device.PSAM: 0}
        first_timestamp: dt.datetime | None = None

        def close(device: Device, response: bytes | None) -> None:
            number, command = waiting.pop(device)
            counts[device] += 1
            exchanges.append(RecordedExchange(device, counts[device], number, command.data,
                                              response, command.timestamp))

        for index, record in enumerate(records, 1):
            if index > MAX_REPLAY_RECORDS:
                raise ReplayError(f"{source}: more than {MAX_REPLAY_RECORDS:,} records; a "
                                  "replay plays back one session (split the trace)")
            if first_timestamp is None:
                first_timestamp = record.timestamp
            device = record.device
            if record.is_command:
                if device in waiting:
                    close(device, None)
                waiting[device] = (index, record)
            elif device in waiting:
                close(device, record.data)
            else:
                raise ReplayError(f"{source}: record {index} is a {_DEVICE_NAMES[device]} "
                                  f"response that answers no command")
        for device in sorted(waiting, key=lambda d: waiting[d][0]):
            close(device, None)
        exchanges.sort(key=lambda e: e.record)
        return cls(exchanges, source=source, first_timestamp=first_timestamp)

    def __iter__(self) -> Iterator[RecordedExchange]:
        return iter(self.exchanges)

    def transport(self, device: Device) -> ReplayTransport:
        """`card` or `psam`."""
        return self.card if Device(device) is Device.CARD else self.psam

    @property
    def devices(self) -> frozenset[Device]:
        """The devices the recording has exchanges with."""
        return frozenset(e.device for e in self.exchanges)

    def unused(self) -> tuple[RecordedExchange, ...]:
        """Recorded exchanges never replayed, in the trace's order."""
        return tuple(sorted((*self.card.unused(), *self.psam.unused()), key=lambda e: e.record))

    def finish(self) -> None:
        """Raise `ReplayMismatch` if the session stopped before the recording's end."""
        left = self.unused()
        if not left:
            return
        counts = ", ".join(
            f"{n} {_DEVICE_NAMES[d]} exchange{'s' if n != 1 else ''}"
            for d in (Device.CARD, Device.PSAM)
            if (n := sum(1 for e in left if e.device is d)))
        first = left[0]
        raise ReplayMismatch(
            f"replay mismatch: the session stopped before the end of {self.source}; "
            f"{counts} not replayed, the first {first.describe()}",
            device=first.device, exchange=first.number, sent=None, recorded=first.command)

    def transaction_time(self) -> dt.datetime | None:
        """The local date and time of the recorded transaction, from its commands.

        The first PSAM INIT SAM FOR PURCHASE (``80 70``: date and time at data
        offsets 11 and 15, docs/protocol.md §3.2) or card CREDIT FOR LOAD
        (``80 52``: at offsets 0 and 4, §1.2), BCD ``YYYYMMDD`` and ``HHMMSS``,
        as a naive datetime: the ``now`` the terminal used.  None when the
        recording has neither (a card read) or their dates are not valid.
        """
        for exchange in self.exchanges:
            raw = exchange.command
            if exchange.device is Device.PSAM and raw[:2] == b"\x80\x70":
                offset = 11
            elif exchange.device is Device.CARD and raw[:2] == b"\x80\x52":
                offset = 0
            else:
                continue
            try:
                data = CommandAPDU.from_bytes(raw).data
            except DecodeError:
                continue
            when = _bcd_datetime(data[offset:offset + 4], data[offset + 4:offset + 7])
            if when is not None:
                return when
        return None

    def __repr__(self) -> str:
        return (f"Replay({self.source!r}, card {self.card.position}/{len(self.card.exchanges)},"
                f" PSAM {self.psam.position}/{len(self.psam.exchanges)})")


def _bcd_datetime(date: bytes, time: bytes) -> dt.datetime | None:
    text = date.hex() + time.hex()
    if len(date) != 4 or len(time) != 3 or not text.isdigit():
        return None
    try:
        return dt.datetime(int(text[:4]), int(text[4:6]), int(text[6:8]),
                           int(text[8:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return None
