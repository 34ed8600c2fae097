"""APDUs per second: the simulator in process, and through pcscd + vpcd + pyscard.

Five round trips, each the same GET BALANCE command, and the transport alone, measured
in one run:

- ``inprocess_sim``: `InProcessTransport` straight into a `SimulatedCard`;
- ``pcsc_sim``: `PcscTransport` -> pcscd -> vpcd -> ``unioncard sim serve`` (the
  bridge and the simulator, in a process of their own, write-through on);
- ``pcsc_bridge_echo``: the same path with the bridge serving an echo card, to
  separate the bridge from the simulator;
- ``pcsc_raw_echo``, the reference: bare pyscard (``SCardTransmit``) -> pcscd ->
  vpcd -> an echo card written on a raw socket, with no unioncard code on either
  side: the floor of this path on this machine;
- ``pcsc_transport_echo``: `PcscTransport.transmit` against that same raw-socket
  echo card, so ``pcsc_transport_echo / pcsc_raw_echo`` is the transport's own
  cost per APDU over bare pyscard (target: at most 1.2x);
- ``pcsc_transport_overhead``: the same `PcscTransport.transmit` with pyscard's
  ``SCardTransmit`` replaced by a stub that answers at once, so only the
  transport's own Python work is timed.  The round trips through pcscd move
  from run to run with where the scheduler puts three processes on the
  machine's cores (the raw echo alone took 28-102 us per APDU over a dozen
  runs, and two raw connections to one card timed in alternating blocks
  differed by up to 1.3x), so the ratio of two of them is noisy; this figure
  is what the transport adds.

The report at the end gives APDUs/s from the medians and the ratios between them.
Each card process runs alone in slot 0 of a private pcscd.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from bench_report import Report

from unioncard.transport import InProcessTransport
from unioncard.transport.pcsc import PcscTransport
from unioncard.transport.pcscd import PcscdDaemon, vpcd_reader_name

SELECT_TRANSIT = bytes.fromhex("00A4040008A000000632010105")
GET_BALANCE = bytes.fromhex("805C000204")

# An echo card on a raw socket, no unioncard code: the vpcd framing, TCP_NODELAY and
# TCP_QUICKACK before each read (docs/protocol.md §7), every command answered with itself
# followed by 9000.
RAW_ECHO = r"""
import socket, sys
ATR = bytes.fromhex("3B80800101")
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def read(n):
    data = b""
    while len(data) < n:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = s.recv(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
while True:
    msg = read(int.from_bytes(read(2), "big"))
    if len(msg) == 1:
        if msg[0] == 4:
            s.sendall(len(ATR).to_bytes(2, "big") + ATR)
        continue
    answer = msg + b"\x90\x00"
    s.sendall(len(answer).to_bytes(2, "big") + answer)
"""

# The same echo card behind unioncard's vpcd bridge.
BRIDGE_ECHO = r"""
import sys
from unioncard.transport.vpcd import VpcdBridge
class Echo:
    atr = bytes.fromhex("3B80800101")
    def power_on(self): return self.atr
    def reset(self): return self.atr
    def power_off(self): pass
    def transmit(self, command): return command + b"\x90\x00"
VpcdBridge({0: Echo()}, port=int(sys.argv[1])).serve_forever()
"""

CLI = "import sys; from unioncard.cli import main; sys.argv[0] = 'unioncard'; main()"

report = Report("APDU round trips: in process vs pcscd + vpcd (same run)")


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    m = report.medians
    for name, seconds in m.items():
        report.add(f"{name:23s} {seconds * 1e6:9.1f} us/APDU  {1 / seconds:>10,.0f} APDU/s")
    pairs = [("pcsc_transport_echo", "pcsc_raw_echo"),
             ("pcsc_sim", "pcsc_raw_echo"), ("pcsc_bridge_echo", "pcsc_raw_echo"),
             ("pcsc_sim", "pcsc_bridge_echo"), ("pcsc_sim", "inprocess_sim")]
    for slow, fast in pairs:
        if slow in m and fast in m:
            report.add(f"{slow} / {fast}: {m[slow] / m[fast]:.2f}x the time per APDU")
    if "pcsc_transport_overhead" in m and "pcsc_raw_echo" in m:
        share = m["pcsc_transport_overhead"] / m["pcsc_raw_echo"]
        report.add(f"PcscTransport.transmit's own work: {share:.1%} of a bare pyscard round trip")
    report.emit(request.config)


@pytest.fixture
def daemon(pcscd_daemon):
    if not isinstance(pcscd_daemon, PcscdDaemon):
        pytest.skip("needs a pcscd of this run")
    return pcscd_daemon


@contextlib.contextmanager
def card_process(argv: list[str]) -> Iterator[None]:
    """Run a card process on slot 0 until pcscd sees its card; take it out afterwards."""
    watcher = PcscTransport(vpcd_reader_name(0))
    watcher.wait_for_card(5, present=False)
    process = subprocess.Popen(argv)
    try:
        watcher.wait_for_card(15)
        yield
    finally:
        process.kill()
        process.wait()
        watcher.wait_for_card(5, present=False)
        watcher.close()


@pytest.fixture
def card_image(tmp_path, sim_card):
    path = tmp_path / "card.json"
    sim_card.save(path)
    return path


def test_inprocess_sim(benchmark, sim_card):
    benchmark.group = "APDU round trip"
    transport = InProcessTransport(sim_card)
    transport.power_on()
    assert transport.transmit(SELECT_TRANSIT)[-2:] == b"\x90\x00"
    assert benchmark(transport.transmit, GET_BALANCE) == bytes.fromhex("000027109000")
    report.median("inprocess_sim", benchmark)


def test_pcsc_sim(benchmark, daemon, card_image):
    benchmark.group = "APDU round trip"
    argv = [sys.executable, "-c", CLI, "sim", "serve", str(card_image),
            "--port", str(daemon.vpcd_port)]
    with card_process(argv), PcscTransport(vpcd_reader_name(0)) as transport:
        transport.power_on()
        assert transport.transmit(SELECT_TRANSIT)[-2:] == b"\x90\x00"
        assert benchmark(transport.transmit, GET_BALANCE) == bytes.fromhex("000027109000")
    report.median("pcsc_sim", benchmark)


def test_pcsc_bridge_echo(benchmark, daemon):
    benchmark.group = "APDU round trip"
    argv = [sys.executable, "-c", BRIDGE_ECHO, str(daemon.vpcd_port)]
    with card_process(argv), PcscTransport(vpcd_reader_name(0)) as transport:
        transport.power_on()
        assert benchmark(transport.transmit, GET_BALANCE) == GET_BALANCE + b"\x90\x00"
    report.median("pcsc_bridge_echo", benchmark)


def test_pcsc_raw_echo(benchmark, daemon):
    """The reference: bare pyscard against a raw-socket echo card."""
    from smartcard import scard

    benchmark.group = "APDU round trip"
    argv = [sys.executable, "-c", RAW_ECHO, str(daemon.vpcd_port)]
    with card_process(argv):
        result, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert result == scard.SCARD_S_SUCCESS
        result, card, _protocol = scard.SCardConnect(
            context, vpcd_reader_name(0), scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        assert result == scard.SCARD_S_SUCCESS
        command = list(GET_BALANCE)
        try:
            result, response = benchmark(scard.SCardTransmit, card, scard.SCARD_PCI_T1, command)
            assert result == scard.SCARD_S_SUCCESS and bytes(response) == GET_BALANCE + b"\x90\x00"
        finally:
            scard.SCardDisconnect(card, scard.SCARD_UNPOWER_CARD)
            scard.SCardReleaseContext(context)
    report.median("pcsc_raw_echo", benchmark)


def test_pcsc_transport_echo(benchmark, daemon):
    """`PcscTransport.transmit` against the raw-socket echo card of ``pcsc_raw_echo``."""
    benchmark.group = "APDU round trip"
    argv = [sys.executable, "-c", RAW_ECHO, str(daemon.vpcd_port)]
    with card_process(argv), PcscTransport(vpcd_reader_name(0)) as transport:
        transport.power_on()
        assert transport.active_protocol == "T=1"  # as the reference sends
        assert benchmark(transport.transmit, GET_BALANCE) == GET_BALANCE + b"\x90\x00"
    report.median("pcsc_transport_echo", benchmark)


def test_pcsc_transport_overhead(benchmark, daemon, monkeypatch):
    """`PcscTransport.transmit` on a live connection, ``SCardTransmit`` stubbed out."""
    from smartcard import scard

    benchmark.group = "PcscTransport.transmit alone"
    answer = list(GET_BALANCE + b"\x90\x00")
    argv = [sys.executable, "-c", RAW_ECHO, str(daemon.vpcd_port)]
    with card_process(argv), PcscTransport(vpcd_reader_name(0)) as transport:
        transport.power_on()
        monkeypatch.setattr(scard, "SCardTransmit", lambda card, pci, command: (0, answer))
        assert benchmark(transport.transmit, GET_BALANCE) == GET_BALANCE + b"\x90\x00"
        monkeypatch.undo()
    report.median("pcsc_transport_overhead", benchmark)
