"""Commands shorter than their 4-byte header: every transport refuses them with
`CommandError`, and the vpcd bridge answers a 1-byte one that is no control code
with ``6700`` instead of leaving the reader waiting (docs/pcsc.md, "1-byte commands").

The PC/SC tests send 1-byte commands with bare pyscard, past our transports, to a
private pcscd.  Each call runs in a thread with a deadline: pyscard releases the GIL
while it waits, and taking the card out of its reader ends a call vpcd is stuck in,
so a regression fails the test instead of hanging the run.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from loopback_card import LoopbackCard

from unioncard.apdu.trace import Device
from unioncard.errors import (
    CardError,
    CommandError,
    DecodeError,
    TransportError,
    UnionCardError,
)
from unioncard.terminal.driver import LINK_FAILURES
from unioncard.transport import InProcessTransport
from unioncard.transport.base import MIN_COMMAND_LENGTH
from unioncard.transport.pcsc import PcscTransport
from unioncard.transport.replay import RecordedExchange, ReplayMismatch, ReplayTransport
from unioncard.transport.vpcd import WRONG_LENGTH, VpcdBridge

SELECT = bytes.fromhex("00A4040002AABB")
SELECTED = bytes.fromhex("6F048402AABB9000")
SHORT = [b"", b"\x03", b"\x00", b"\x00\xa4", b"\x00\xa4\x04"]
UNKNOWN_CODES = [0x03, *range(0x05, 0x100)]  # 1-byte payloads that are no vpcd control code
DEADLINE = 10.0


# -- the error ------------------------------------------------------------------------


def test_command_error_is_no_link_failure():
    assert issubclass(CommandError, ValueError) and issubclass(CommandError, UnionCardError)
    for link_error in (TransportError, CardError, DecodeError):
        assert not issubclass(CommandError, link_error)
    assert not issubclass(CommandError, LINK_FAILURES)  # the driver lets it out of run()


# -- each transport refuses -------------------------------------------------------------


@pytest.mark.parametrize("command", SHORT, ids=lambda c: c.hex() or "empty")
def test_in_process_transport_refuses_short_commands(command):
    card = LoopbackCard()
    seen: list[tuple[bytes, bytes | None]] = []
    transport = InProcessTransport(card, on_apdu=lambda c, r: seen.append((c, r)))
    transport.power_on()
    with pytest.raises(CommandError, match=f"of {len(command)} bytes? .*4-byte header"):
        transport.transmit(command)
    assert card.commands == [] and seen == []  # never reached the card nor the observer
    assert transport.powered  # the link is fine
    assert transport.transmit(SELECT) == SELECTED


def test_in_process_refusal_comes_before_the_power_check():
    with pytest.raises(CommandError):
        InProcessTransport(LoopbackCard()).transmit(b"\x02")


def test_the_error_shows_the_command():
    transport = InProcessTransport(LoopbackCard())
    transport.power_on()
    with pytest.raises(CommandError) as info:
        transport.transmit(bytearray(b"\x80\x5c\x00"))
    assert str(info.value) == ("command APDU of 3 bytes (80 5C 00) is shorter than its 4-byte "
                               "header CLA INS P1 P2 (ISO 7816-4 §5.1): not sent to the card")
    with pytest.raises(CommandError, match=r"of 1 byte \(04\) is"):
        transport.transmit(b"\x04")


@pytest.mark.parametrize("command", SHORT, ids=lambda c: c.hex() or "empty")
def test_replay_transport_refuses_short_commands(command):
    replay = ReplayTransport(Device.CARD, [RecordedExchange(Device.CARD, 1, 1, SELECT, SELECTED)])
    replay.power_on()
    with pytest.raises(CommandError) as info:
        replay.transmit(command)
    assert not isinstance(info.value, ReplayMismatch)
    assert replay.position == 0 and replay.powered  # the replay goes on from where it was
    assert replay.transmit(SELECT) == SELECTED


@pytest.mark.parametrize("command", SHORT, ids=lambda c: c.hex() or "empty")
def test_pcsc_transport_refuses_short_commands_unsent(command, monkeypatch):
    from smartcard import scard

    sent: list[Any] = []
    monkeypatch.setattr(scard, "SCardTransmit", lambda *args: sent.append(args) or (0, [0x90, 0]))
    transport = PcscTransport("Virtual PCD 00 00")
    with pytest.raises(CommandError):  # not powered on: the length is checked first
        transport.transmit(command)
    transport._card, transport._pci = object(), scard.SCARD_PCI_T1  # as if connected
    with pytest.raises(CommandError):
        transport.transmit(command)
    assert sent == []
    assert transport.transmit(SELECT) == b"\x90\x00"
    assert len(sent) == 1


def test_four_bytes_are_enough():
    assert MIN_COMMAND_LENGTH == 4
    transport = InProcessTransport(LoopbackCard())
    transport.power_on()
    assert transport.transmit(bytes.fromhex("80CA0000")) == b"\x90\x00"  # case 1


# -- the bridge, against a stand-in for vpcd ----------------------------------------------


class FakeVpcd:
    """The vpcd side of one slot on a local port: send frames, read answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(DEADLINE)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(DEADLINE)

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(len(payload).to_bytes(2, "big") + payload)

    def read(self, timeout: float = DEADLINE) -> bytes | None:
        """The next answer's payload; None when none comes within ``timeout``."""
        assert self.conn is not None
        self.conn.settimeout(timeout)
        try:
            header = self._exactly(2)
        except TimeoutError:
            return None
        self.conn.settimeout(DEADLINE)
        return self._exactly(int.from_bytes(header, "big"))

    def _exactly(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            assert chunk, "the bridge closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def fake_vpcd():
    vpcd = FakeVpcd()
    card = LoopbackCard()
    with VpcdBridge({0: card}, port=vpcd.port) as bridge:
        vpcd.accept()
        yield vpcd, card, bridge
    vpcd.close()


def test_bridge_answers_unknown_one_byte_frames_with_6700(fake_vpcd):
    vpcd, card, bridge = fake_vpcd
    vpcd.send(b"\x01")  # power on: no answer, as vpcd expects
    for code in UNKNOWN_CODES:
        vpcd.send(bytes([code]))
        assert vpcd.read() == WRONG_LENGTH == b"\x67\x00", f"{code:02X}"
    assert card.events == ["on"] and card.commands == []  # the card saw none of them
    assert bridge.commands(0) == 0
    vpcd.send(SELECT)
    assert vpcd.read() == SELECTED
    assert bridge.connected(0)


def test_bridge_control_codes_are_unchanged(fake_vpcd):
    vpcd, card, _bridge = fake_vpcd
    vpcd.send(b"\x04")
    assert vpcd.read() == card.atr
    for code, event in ((0x01, "on"), (0x02, "reset"), (0x00, "off")):
        vpcd.send(bytes([code]))
        assert vpcd.read(timeout=0.2) is None  # vpcd reads no answer to these
        assert card.events[-1] == event


# -- over pcscd, past our transports ---------------------------------------------------------


def within_deadline(call: Callable[[], Any], unstick: Callable[[], None],
                    what: str, seconds: float = DEADLINE) -> Any:
    """``call()`` in a thread; past ``seconds``, ``unstick()`` (pull the card, which ends
    the call vpcd is stuck in) and fail."""
    result: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # handed to the test thread
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="raw-pyscard", daemon=True).start()
    if not done.wait(seconds):
        unstick()
        done.wait(seconds)
        pytest.fail(f"{what}: no answer within {seconds:g} s (the reader hangs)")
    if "error" in result:
        raise result["error"]
    return result["value"]


class RawCard:
    """A bare pyscard connection to a reader (SCardConnect, SCardTransmit), no unioncard."""

    def __init__(self, reader: str) -> None:
        from smartcard import scard

        self.scard = scard
        hresult, self.context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
        hresult, self.card, protocol = scard.SCardConnect(
            self.context, reader, scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
        self.pci = scard.SCARD_PCI_T0 if protocol == scard.SCARD_PROTOCOL_T0 else scard.SCARD_PCI_T1

    def transmit(self, command: bytes) -> tuple[int, bytes]:
        hresult, response = self.scard.SCardTransmit(self.card, self.pci, list(command))
        return hresult & 0xFFFFFFFF, bytes(response)

    def close(self) -> None:
        self.scard.SCardDisconnect(self.card, self.scard.SCARD_LEAVE_CARD)
        self.scard.SCardReleaseContext(self.context)


@pytest.fixture
def raw_reader(pcsc_serve):
    card = LoopbackCard()
    reader = pcsc_serve(card)
    raw = within_deadline(lambda: RawCard(reader.name), lambda: reader.bridge.remove(0),
                          "connecting")
    yield reader, card, raw
    raw.close()


def test_pcscd_one_byte_commands_answer_6700_and_the_reader_goes_on(raw_reader):
    reader, card, raw = raw_reader

    def send_all() -> dict[int, tuple[int, bytes]]:
        return {code: raw.transmit(bytes([code])) for code in UNKNOWN_CODES}

    answers = within_deadline(send_all, lambda: reader.bridge.remove(0),
                              "1-byte commands 03, 05..FF")
    wrong = {f"{c:02X}": a for c, a in answers.items() if a != (0, WRONG_LENGTH)}
    assert not wrong, f"expected 6700 for each: {wrong}"
    assert card.commands == []  # the card saw none of them
    # The reader is not stuck: both our transport and bare pyscard carry on.
    assert reader.transport.transmit(SELECT) == SELECTED
    assert within_deadline(lambda: raw.transmit(SELECT), lambda: reader.bridge.remove(0),
                           "SELECT after them") == (0, SELECTED)


def test_pcscd_one_byte_04_answers_the_atr(raw_reader):
    """vpcd frames ``04`` as its ATR request: a program's command ``04`` gets the ATR."""
    reader, card, raw = raw_reader
    answer = within_deadline(lambda: raw.transmit(b"\x04"), lambda: reader.bridge.remove(0),
                             "command 04")
    assert answer == (0, card.atr)


@pytest.mark.parametrize(("code", "event"), [(0x00, "off"), (0x01, "on"), (0x02, "reset")])
def test_pcscd_one_byte_power_codes_hang_until_the_card_is_pulled(raw_reader, code, event):
    """What docs/pcsc.md says of ``00``, ``01``, ``02``: the card is powered off, on, or
    reset, the call waits, and pulling the card ends it with an empty answer."""
    reader, card, raw = raw_reader
    result: dict[str, tuple[int, bytes]] = {}
    caller = threading.Thread(target=lambda: result.setdefault("answer", raw.transmit(
        bytes([code]))), daemon=True)
    caller.start()
    caller.join(1.0)
    try:
        assert caller.is_alive(), f"{code:02X} was answered: {result}"
        assert card.events[-1] == event
    finally:
        reader.bridge.remove(0)  # ends the call vpcd is stuck in
        caller.join(DEADLINE)
    assert not caller.is_alive(), "pulling the card did not end the call"
    assert result["answer"] == (0, b"")  # "success", and no response at all
    # Until pcscd's poll of the reader sees the card gone (up to 0.4 s), a call fails
    # as not transacted; once it has, with "card removed".
    removed = raw.scard.SCARD_W_REMOVED_CARD & 0xFFFFFFFF
    assert raw.transmit(SELECT)[0] in (raw.scard.SCARD_E_NOT_TRANSACTED & 0xFFFFFFFF, removed)
    reader.transport.wait_for_card(DEADLINE, present=False)
    assert raw.transmit(SELECT)[0] == removed
    reader.bridge.insert(0)  # and the card comes back as usual
    reader.transport.wait_for_card(DEADLINE)
    reader.transport.power_on()
    assert reader.transport.transmit(SELECT) == SELECTED


def test_pcsc_transport_refuses_a_one_byte_command_and_the_card_never_sees_it(pcsc_serve):
    card = LoopbackCard()
    reader = pcsc_serve(card)
    for command in SHORT:
        with pytest.raises(CommandError):
            reader.transport.transmit(command)
    assert card.commands == [] and reader.bridge.commands(0) == 0
    assert reader.transport.transmit(SELECT) == SELECTED
