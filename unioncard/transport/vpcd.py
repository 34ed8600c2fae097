"""The vpcd bridge: virtual cards in this process, seen by pcscd as cards in readers.

Debian's vsmartcard-vpcd driver makes pcscd listen on a TCP port per reader
slot (35963 for slot 0, 35964 for slot 1 by default, docs/protocol.md §7).  The
bridge connects to those ports as the card.  Each frame is a 2-byte big-endian
length and a payload; a 1-byte payload is a control code (``00`` power off,
``01`` power on, ``02`` reset, ``04`` send the ATR, the only one answered),
anything longer a command APDU, answered with the response APDU.

vpcd frames a program's 1-byte command APDU exactly as a control code and then
waits, without a time limit, for an answer.  The bridge answers a 1-byte
payload that is no control code (``03``, ``05``-``FF``) with `WRONG_LENGTH`
(``6700``), so the reader does not hang; ``00``-``02`` cannot be told from
vpcd's own, which expect no answer, and get none (docs/pcsc.md, "1-byte
commands").

Every slot is served from one thread by a selector.  ``TCP_NODELAY`` is set
once and ``TCP_QUICKACK`` before every read: pcscd writes a frame's length
and payload separately, and a card that delays its ACK makes each APDU wait
about 40 ms (48 ms against 0.18 ms per APDU, docs/protocol.md §7).

When pcscd goes away (stopped, restarted) the bridge reconnects with a
growing delay.  pcscd powers a card up as soon as it finds it; a card it keeps
polling for its ATR without ever powering is one pcscd mistakes for the card
before it (it missed that card's removal, which happens when a card vanishes
while a program is connected): after `INSERT_SECONDS` the bridge takes it out
and puts it back, so pcscd sees the removal and powers it.

When a card raises (a power cut from a fault injector, or any failure) the
bridge answers nothing and drops that slot's connection, as a card torn from
the reader; it comes back after `TEAR_SECONDS`, long enough for pcscd's
presence poll to see the card gone, so pcscd powers it up afresh.

`VpcdBridge.remove` and `VpcdBridge.insert` take a card out of its reader and
put it back on request, from another thread or a signal handler (``unioncard
sim serve`` maps SIGUSR1 and SIGUSR2 to them, docs/pcsc.md): the slot's
connection closes, so pcscd sees the card gone, and the card is powered off,
losing its volatile state as a card leaving the field does.  It stays out
until inserted, and at least `TEAR_SECONDS`, so pcscd sees the removal.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType

from unioncard.transport.base import VirtualCard
from unioncard.transport.pcscd import DEFAULT_VPCD_PORT

__all__ = [
    "INSERT_SECONDS",
    "TEAR_SECONDS",
    "WRONG_LENGTH",
    "CommandHook",
    "Control",
    "VpcdBridge",
]

log = logging.getLogger(__name__)

CommandHook = Callable[[int, bytes, bytes], None]
"""Called with (slot, command, response) after the card answered and before the
response goes to pcscd: a trace writer, or a hook that persists the card."""

INSERT_SECONDS = 1.5
"""How long a newly connected card may be polled by pcscd without being powered
up before the bridge re-inserts it (at most `MAX_REINSERTS` times in a row)."""
MAX_REINSERTS = 3

TEAR_SECONDS = 1.0
"""How long a card that lost power stays out of its reader: more than pcscd's
400 ms presence poll, so pcscd sees a removal and powers the card up again."""

WRONG_LENGTH = b"\x67\x00"
"""The answer to a 1-byte payload that is no control code: a program's 1-byte
command APDU (ISO 7816-4 ``6700``, wrong length)."""

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_MAX_FRAME = 0xFFFF


class Control(IntEnum):
    """vpcd control codes: 1-byte payloads from pcscd (any other: `WRONG_LENGTH`)."""

    POWER_OFF = 0x00
    POWER_ON = 0x01
    RESET = 0x02
    ATR = 0x04


class _CardLost(Exception):
    """The card raised: treat it as a card that lost power."""


@dataclass
class _Slot:
    number: int
    card: VirtualCard
    port: int
    sock: socket.socket | None = None
    buffer: bytearray = field(default_factory=bytearray)
    next_attempt: float = 0.0
    delay: float = 0.0
    connections: int = 0
    frames: int = 0
    commands: int = 0
    waiting: bool = False
    inserted_at: float = 0.0
    powered: bool = False  # pcscd powered the card on this connection
    reinserts: int = 0
    removed: bool = False  # taken out by remove(), until insert()
    removed_at: float = 0.0


class VpcdBridge:
    """Serve ``cards`` ({slot: card}) to the vpcd driver of the pcscd at ``host``:``port``.

    Slot n connects to ``port + n``.  `start` runs the bridge in a thread;
    `serve_forever` runs it in the calling thread until `stop`.  The card
    methods are called with `lock` held, so other threads can inspect a card
    safely by taking it too.  `remove` and `insert` take a slot's card out of
    its reader and put it back.
    """

    def __init__(
        self,
        cards: Mapping[int, VirtualCard],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_VPCD_PORT,
        on_command: CommandHook | None = None,
        min_delay: float = 0.02,
        max_delay: float = 0.5,
        tear_seconds: float = TEAR_SECONDS,
        insert_seconds: float = INSERT_SECONDS,
        io_timeout: float = 5.0,
    ) -> None:
        if not cards:
            raise ValueError("the bridge needs at least one card")
        for number in cards:
            if number < 0 or port + number > 0xFFFF:
                raise ValueError(f"slot {number} has no port above {port}")
        self.host = host
        self.port = port
        self.on_command = on_command
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.tear_seconds = tear_seconds
        self.insert_seconds = insert_seconds
        self.io_timeout = io_timeout
        self.lock = threading.RLock()
        self._slots = {n: _Slot(n, card, port + n) for n, card in sorted(cards.items())}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a full wake socket is awake enough: never block
        self._requests: deque[tuple[int, bool]] = deque()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()

    # -- public state ---------------------------------------------------------

    def connected(self, slot: int) -> bool:
        """Whether slot ``slot`` has a TCP connection to pcscd now."""
        return self._slots[slot].sock is not None

    def connections(self, slot: int) -> int:
        """How many times slot ``slot`` connected to pcscd so far."""
        return self._slots[slot].connections

    def commands(self, slot: int) -> int:
        """How many command APDUs slot ``slot`` answered so far."""
        return self._slots[slot].commands

    def removed(self, slot: int) -> bool:
        """Whether slot ``slot``'s card is out of its reader by `remove` (until `insert`)."""
        return self._slots[slot].removed

    # -- removal and insertion --------------------------------------------------

    def remove(self, slot: int) -> None:
        """Take slot ``slot``'s card out of its reader, as a passenger pulling the card.

        Safe from another thread or a signal handler: it only queues the request
        and wakes the serving loop, which then closes the slot's connection
        (pcscd sees the card gone; a program's next transmit fails as for a
        removed card), powers the card off and keeps it out until `insert`.
        Removing a card that is out does nothing.
        """
        self._request(slot, present=False)

    def insert(self, slot: int) -> None:
        """Put slot ``slot``'s card back into its reader (safe as `remove` is).

        The card connects again once it has been out for `tear_seconds`, so
        pcscd's presence poll has seen it leave; pcscd then powers it up afresh.
        Inserting a card that is in does nothing.
        """
        self._request(slot, present=True)

    def _request(self, slot: int, *, present: bool) -> None:
        if slot not in self._slots:
            raise ValueError(f"no slot {slot}; the bridge serves slots "
                             f"{', '.join(map(str, self._slots))}")
        self._requests.append((slot, present))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def wait_attached(self, timeout: float = 5.0, *, count: int = 1) -> bool:
        """Wait until pcscd talks to every slot's card, on its ``count``-th connection or later.

        pcscd accepts a card's connection at its next presence poll and asks
        for the ATR at once: the first frame is the sign the reader has the card.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(s.sock is not None and s.frames > 0 and s.connections >= count
                          for s in self._slots.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # -- running --------------------------------------------------------------

    def start(self) -> VpcdBridge:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, name=f"vpcd-bridge-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the serving loop to end (safe from a signal handler); see `stop`."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def stop(self, timeout: float = 5.0) -> None:
        """End serving: every slot's connection closes (pcscd sees the cards removed)."""
        self.request_stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve until `stop`: connect, answer frames, reconnect after failures."""
        try:
            while not self._stopping.is_set():
                self._apply_requests()
                self._connect_due()
                self._reinsert_unpowered()
                waits = [s.next_attempt for s in self._slots.values()
                         if s.sock is None and not s.removed]
                waits += [s.inserted_at + self.insert_seconds for s in self._slots.values()
                          if self._awaiting_power(s)]
                timeout = max(0.0, min(waits) - time.monotonic()) if waits else None
                for key, _events in self._selector.select(timeout):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._read(key.data)
        finally:
            for slot in self._slots.values():
                self._disconnect(slot, delay=0.0, reason="bridge stopped")
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> VpcdBridge:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connections ------------------------------------------------------------

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _connect_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots.values():
            if slot.sock is None and not slot.removed and now >= slot.next_attempt:
                self._connect(slot)

    def _apply_requests(self) -> None:
        """Carry out `remove` and `insert` requests, in the order they came."""
        while self._requests:
            number, present = self._requests.popleft()
            slot = self._slots[number]
            if present and slot.removed:
                slot.removed = False
                slot.delay = 0.0
                slot.next_attempt = max(time.monotonic(), slot.removed_at + self.tear_seconds)
                log.info("slot %d: card put back into the reader", number)
            elif not present and not slot.removed:
                slot.removed, slot.removed_at = True, time.monotonic()
                if slot.sock is None:
                    log.info("slot %d: card removed (it was not connected)", number)
                self._disconnect(slot, delay=0.0, reason="removed; out until put back")
                try:
                    with self.lock:
                        slot.card.power_off()  # volatile state lost, as out of the field
                except Exception as exc:
                    log.warning("slot %d: the removed card failed to power off: %s", number, exc)

    def _awaiting_power(self, slot: _Slot) -> bool:
        return (slot.sock is not None and slot.frames > 0 and not slot.powered
                and slot.reinserts < MAX_REINSERTS)

    def _reinsert_unpowered(self) -> None:
        now = time.monotonic()
        for slot in self._slots.values():
            if self._awaiting_power(slot) and now >= slot.inserted_at + self.insert_seconds:
                slot.reinserts += 1
                log.warning("slot %d: pcscd polls the card but does not power it (it missed "
                            "the removal of the card before): re-inserting it", slot.number)
                self._disconnect(slot, delay=self.tear_seconds, reason="re-inserting")

    def _connect(self, slot: _Slot) -> None:
        try:
            sock = socket.create_connection((self.host, slot.port), timeout=self.io_timeout)
        except OSError as exc:
            slot.delay = min(self.max_delay, max(self.min_delay, slot.delay * 2))
            slot.next_attempt = time.monotonic() + slot.delay
            level = logging.DEBUG if slot.waiting else logging.INFO
            slot.waiting = True
            log.log(level, "slot %d: no vpcd reader listening on %s:%d (%s); retrying",
                    slot.number, self.host, slot.port, exc.strerror or exc)
            return
        slot.waiting = False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slot.sock = sock
        slot.buffer.clear()
        slot.delay = 0.0
        slot.frames = 0
        slot.powered = False
        slot.inserted_at = time.monotonic()
        slot.connections += 1
        self._selector.register(sock, selectors.EVENT_READ, slot)
        log.info("slot %d: card inserted (connected to %s:%d)", slot.number, self.host, slot.port)
        self._notify_waiters()

    def _disconnect(self, slot: _Slot, *, delay: float, reason: str) -> None:
        sock, slot.sock = slot.sock, None
        if sock is None:
            return
        self._selector.unregister(sock)
        sock.close()
        slot.buffer.clear()
        slot.delay = delay
        slot.next_attempt = time.monotonic() + delay
        log.info("slot %d: card out of the reader (%s)", slot.number, reason)
        self._notify_waiters()

    def _notify_waiters(self) -> None:
        """Wake `wait_attached`: a slot connected, disconnected or saw its first frame."""
        with self._changed:
            self._changed.notify_all()

    def _read(self, slot: _Slot) -> None:
        sock = slot.sock
        if sock is None:
            return
        try:
            if _QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            data = sock.recv(_MAX_FRAME + 2)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._disconnect(slot, delay=self.min_delay, reason=f"pcscd connection failed: {exc}")
            return
        if not data:
            self._disconnect(slot, delay=self.min_delay, reason="pcscd closed the connection")
            return
        buffer = slot.buffer
        buffer += data
        while len(buffer) >= 2:
            length = int.from_bytes(buffer[:2], "big")
            if len(buffer) < 2 + length:
                break
            payload = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            slot.frames += 1
            if slot.frames == 1:
                self._notify_waiters()
            try:
                answer = self._frame(slot, payload)
            except _CardLost as exc:
                log.warning("slot %d: the card lost power (%s)", slot.number, exc.__cause__)
                self._disconnect(slot, delay=self.tear_seconds, reason="card lost power")
                return
            if answer is not None:
                try:
                    sock.sendall(len(answer).to_bytes(2, "big") + answer)
                except OSError as exc:
                    self._disconnect(slot, delay=self.min_delay,
                                     reason=f"pcscd connection failed: {exc}")
                    return

    # -- the card ---------------------------------------------------------------

    def _frame(self, slot: _Slot, payload: bytes) -> bytes | None:
        """Handle one frame from pcscd; return the payload to answer, or None."""
        card = slot.card
        if len(payload) != 1 or payload[0] != Control.ATR:
            slot.powered, slot.reinserts = True, 0  # pcscd uses the card: it knows it
        try:
            with self.lock:
                if len(payload) == 1:
                    return self._control(slot, payload[0])
                response = bytes(card.transmit(payload))
                if not 2 <= len(response) <= _MAX_FRAME:
                    raise ValueError(f"response of {len(response)} bytes")
                slot.commands += 1
                if self.on_command is not None:
                    self.on_command(slot.number, payload, response)
                return response
        except Exception as exc:
            raise _CardLost from exc

    def _control(self, slot: _Slot, code: int) -> bytes | None:
        card = slot.card
        if code == Control.ATR:
            return bytes(card.atr)
        if code == Control.POWER_ON:
            card.power_on()
        elif code == Control.RESET:
            card.reset()
        elif code == Control.POWER_OFF:
            card.power_off()
        else:
            # Not from vpcd: a program sent a 1-byte command APDU and vpcd waits for
            # its answer.  Unanswered, the reader would hang (docs/pcsc.md).
            log.warning("slot %d: 1-byte command APDU %02X answered 6700 (wrong length)",
                        slot.number, code)
            return WRONG_LENGTH
        log.debug("slot %d: %s", slot.number, Control(code).name.lower().replace("_", " "))
        return None
