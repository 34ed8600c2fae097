"""The vpcd bridge against a scripted vpcd end (no pcscd): framing, control codes,
hooks, tears, reconnection, TCP options."""

import socket
import statistics
import threading
import time

import pytest
from loopback_card import LoopbackCard

from unioncard.transport.vpcd import Control, VpcdBridge

SELECT = bytes.fromhex("00A4040002AABB")
SELECTED = bytes.fromhex("6F048402AABB9000")


class FakeVpcd:
    """The pcscd side of one vpcd slot: listens, and speaks the framing as the driver does
    (length and payload in separate writes)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.listen()

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(1)
        self.port = listener.getsockname()[1]
        self.listener = listener

    def accept(self, timeout: float = 5.0) -> socket.socket:
        assert self.listener is not None
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(timeout)
        return self.conn

    def send(self, payload: bytes, *, split: bool = True) -> None:
        assert self.conn is not None
        header = len(payload).to_bytes(2, "big")
        if split:
            self.conn.sendall(header)
            self.conn.sendall(payload)
        else:
            self.conn.sendall(header + payload)

    def recv_exact(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    def recv(self) -> bytes:
        return self.recv_exact(int.from_bytes(self.recv_exact(2), "big"))

    def exchange(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.recv()

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.drop()
        if self.listener is not None:
            self.listener.close()
            self.listener = None


@pytest.fixture
def vpcd():
    end = FakeVpcd()
    yield end
    end.close()


def serve(card, port, **options):
    return VpcdBridge({0: card}, port=port, **options).start()


def test_atr_power_and_apdus(vpcd):
    card = LoopbackCard()
    with serve(card, vpcd.port):
        vpcd.accept()
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
        vpcd.send(bytes([Control.POWER_ON]))
        vpcd.send(bytes([Control.RESET]))
        assert vpcd.exchange(SELECT) == SELECTED
        vpcd.send(bytes([Control.POWER_OFF]))
        # Control codes are not answered: the next frame back is the ATR.
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
    assert card.events == ["on", "reset", "off"]
    assert card.commands == [SELECT]


def test_frames_split_and_batched(vpcd):
    card = LoopbackCard()
    with serve(card, vpcd.port):
        conn = vpcd.accept()
        vpcd.send(bytes([Control.POWER_ON]))
        frame = len(SELECT).to_bytes(2, "big") + SELECT
        for byte in frame:  # one byte per write
            conn.sendall(bytes([byte]))
            time.sleep(0.001)
        assert vpcd.recv() == SELECTED
        echo = bytes.fromhex("80EE000003010203")
        conn.sendall(frame + len(echo).to_bytes(2, "big") + echo + b"\x00\x01\x04")
        assert [vpcd.recv() for _ in range(3)] == [SELECTED, b"\x01\x02\x03\x90\x00", card.atr]


def test_unknown_control_code_answers_6700(vpcd):
    """A 1-byte payload that is no control code is a program's 1-byte command APDU:
    vpcd waits for its answer (tests/transport/test_short_apdus.py has every code)."""
    card = LoopbackCard()
    with serve(card, vpcd.port):
        vpcd.accept()
        assert vpcd.exchange(b"\x03") == b"\x67\x00"
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
    assert card.events == []


def test_command_hook_runs_before_the_response_leaves(vpcd):
    card = LoopbackCard()
    seen = []
    with serve(card, vpcd.port, on_command=lambda *call: seen.append(call)) as bridge:
        vpcd.accept()
        vpcd.send(bytes([Control.POWER_ON]))
        assert vpcd.exchange(SELECT) == SELECTED
        assert seen == [(0, SELECT, SELECTED)]  # already there when the answer arrived
        vpcd.exchange(bytes([Control.ATR]))
        assert len(seen) == 1 and bridge.commands(0) == 1


def test_a_failing_hook_withholds_the_response(vpcd):
    def hook(slot, command, response):
        raise OSError("disk full")

    card = LoopbackCard()
    with serve(card, vpcd.port, on_command=hook, tear_seconds=0.05):
        vpcd.accept()
        vpcd.send(bytes([Control.POWER_ON]))
        with pytest.raises(EOFError):
            vpcd.exchange(SELECT)


def test_power_cut_tears_the_card_out_and_it_comes_back(vpcd):
    card = LoopbackCard()
    tear = 0.3
    with serve(card, vpcd.port, tear_seconds=tear) as bridge:
        vpcd.accept()
        vpcd.send(bytes([Control.POWER_ON]))
        card.cut_power_next = True
        with pytest.raises(EOFError):  # no answer: the connection just ends
            vpcd.exchange(SELECT)
        torn = time.monotonic()
        vpcd.accept()
        assert time.monotonic() - torn >= tear * 0.9
        assert not bridge.wait_attached(0.05, count=2)  # connected, but no frame yet
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
        assert bridge.wait_attached(2.0, count=2)
        vpcd.send(bytes([Control.POWER_ON]))
        assert vpcd.exchange(SELECT) == SELECTED
    assert card.events == ["on", "on"]


def test_reconnects_when_pcscd_restarts(vpcd):
    card = LoopbackCard()
    with serve(card, vpcd.port, max_delay=0.05) as bridge:
        vpcd.accept()
        vpcd.close()  # pcscd stops: connection and listener gone
        time.sleep(0.2)  # the bridge retries against a closed port meanwhile
        vpcd.listen()
        vpcd.accept()
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
        assert bridge.wait_attached(2.0, count=2)


def test_two_slots_are_served_independently():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    slot0, slot1 = FakeVpcd(base), FakeVpcd(base + 1)
    card, psam = LoopbackCard(), LoopbackCard("T=0")
    try:
        with VpcdBridge({0: card, 1: psam}, port=base):
            slot0.accept()
            slot1.accept()
            assert slot1.exchange(bytes([Control.ATR])) == psam.atr
            assert slot0.exchange(bytes([Control.ATR])) == card.atr
            slot1.send(bytes([Control.POWER_ON]))
            assert slot1.exchange(SELECT) == b"\x61\x06"
    finally:
        slot0.close()
        slot1.close()
    assert card.events == [] and psam.events == ["on"]


def test_stop_takes_the_card_out(vpcd):
    bridge = serve(LoopbackCard(), vpcd.port)
    conn = vpcd.accept()
    bridge.stop()
    assert conn.recv(1) == b""
    assert not bridge.connected(0)


def test_card_lock_is_held_while_the_card_works(vpcd):
    card = LoopbackCard()
    with serve(card, vpcd.port) as bridge:
        vpcd.accept()
        vpcd.send(bytes([Control.POWER_ON]))
        with bridge.lock:
            vpcd.send(SELECT)
            time.sleep(0.1)
            assert card.commands == []  # the bridge waits for the lock
        assert vpcd.recv() == SELECTED


def test_quickack_keeps_round_trips_short(vpcd):
    """The driver's two writes per frame must not wait for a delayed ACK (~40 ms)."""
    with serve(LoopbackCard(), vpcd.port):
        vpcd.accept()
        vpcd.send(bytes([Control.POWER_ON]))
        times = []
        for _ in range(30):
            start = time.perf_counter()
            vpcd.exchange(SELECT)
            times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.010, times


def test_bad_slots_are_refused():
    with pytest.raises(ValueError, match="at least one card"):
        VpcdBridge({})
    with pytest.raises(ValueError, match="slot 1"):
        VpcdBridge({1: LoopbackCard()}, port=0xFFFF)


def test_serve_forever_in_the_calling_thread(vpcd):
    bridge = VpcdBridge({0: LoopbackCard()}, port=vpcd.port)
    thread = threading.Thread(target=bridge.serve_forever)
    thread.start()
    vpcd.accept()
    bridge.request_stop()
    thread.join(5)
    assert not thread.is_alive()


def test_a_card_polled_but_never_powered_is_reinserted(vpcd):
    """pcscd that missed a removal polls the new card's ATR and never powers it."""
    card = LoopbackCard()
    with serve(card, vpcd.port, insert_seconds=0.2, tear_seconds=0.1) as bridge:
        vpcd.accept()
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
        start = time.monotonic()
        assert vpcd.conn is not None and vpcd.conn.recv(1) == b""  # taken out...
        assert time.monotonic() - start >= 0.15
        vpcd.drop()
        vpcd.accept()  # ...and put back
        vpcd.send(bytes([Control.POWER_ON]))  # this time pcscd powers it: it stays
        assert vpcd.exchange(SELECT) == SELECTED
        assert bridge.connections(0) == 2
        time.sleep(0.4)
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
        assert bridge.connections(0) == 2


def test_reinserting_gives_up_after_a_few_tries(vpcd):
    card = LoopbackCard()
    with serve(card, vpcd.port, insert_seconds=0.05, tear_seconds=0.02) as bridge:
        for _ in range(3):
            vpcd.accept()
            assert vpcd.exchange(bytes([Control.ATR])) == card.atr
            assert vpcd.conn is not None and vpcd.conn.recv(1) == b""
            vpcd.drop()
        vpcd.accept()
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
        time.sleep(0.3)  # no fourth re-insertion
        assert vpcd.exchange(bytes([Control.ATR])) == card.atr
        assert bridge.connections(0) == 4
