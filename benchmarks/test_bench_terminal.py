"""A bus tap through the terminal engine: its own CPU in process, and tap-to-decision over PC/SC.

Measured in one run (medians), each against a reference of the same run:

- ``engine_scripted``: the terminal side alone: the journal's pending and
  refused-card queries, a `TransitPurchase` session, the driver, the tariff
  quote, the offline record and the journal's two commits (SQLite on disk,
  without fsync) against a *scripted* card and PSAM that answer a recorded tap
  by dictionary lookup, so no card CPU is counted.  Target:
  at most 0.5 ms.  Reference ``apdu_floor``: the same APDUs sent and answered
  by the same scripted devices with no engine at all.
- ``engine_simulator``: the same tap against the simulator in process (the
  card's and the PSAM's CPU included), for scale.
- ``tap_pcsc``: tap to decision (connecting to the card included) through
  pcscd + vpcd with ``unioncard sim serve`` in a process of its own (card in
  slot 0, T=0 PSAM in slot 1; their images in memory, since a real card's
  writes are its own) and the journal on disk with durable commits.  Target:
  at most 30 ms, a tenth of the 300 ms transit budget (docs/protocol.md §8).
  Reference ``apdus_pcsc_raw``: the same number of round trips with bare
  pyscard against a raw-socket echo card on the same pcscd: the floor of that
  path on this machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_report import Report
from test_bench_pcsc import RAW_ECHO

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.crypto import Keystore
from unioncard.tariffs import Mode, default_rules
from unioncard.terminal import Decision, TransactionJournal, TransitPurchase, run
from unioncard.terminal.purchase import MAC_REFUSAL_MEMORY
from unioncard.transport import Channel, InProcessTransport
from unioncard.transport.pcsc import PcscTransport
from unioncard.transport.pcscd import PcscdDaemon, vpcd_reader_name

NOW = dt.datetime(2026, 5, 1, 8, 30)
KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x02)
CLI = "import sys; from unioncard.cli import main; sys.argv[0] = 'unioncard'; main()"
TARGET_INPROCESS = 0.5e-3
TARGET_PCSC = 30e-3

report = Report("Bus tap through the terminal engine (same run)")
measured: dict[str, int] = {}
"""Counts one benchmark hands the next: the APDU exchanges of a tap over PC/SC."""


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    m = report.medians
    for name, seconds in m.items():
        report.add(f"{name:18s} {seconds * 1e3:8.3f} ms per tap")
    if "engine_scripted" in m:
        report.add(f"engine_scripted: {m['engine_scripted'] * 1e3:.3f} ms, target "
                   f"{TARGET_INPROCESS * 1e3:.1f} ms: {m['engine_scripted'] / TARGET_INPROCESS:.2f}"
                   " of the budget")
    if "engine_scripted" in m and "apdu_floor" in m:
        report.add(f"engine_scripted / apdu_floor: {m['engine_scripted'] / m['apdu_floor']:.1f}x")
    if "tap_pcsc" in m:
        report.add(f"tap_pcsc: {m['tap_pcsc'] * 1e3:.2f} ms, target {TARGET_PCSC * 1e3:.0f} ms: "
                   f"{m['tap_pcsc'] / TARGET_PCSC:.2f} of the budget")
    if "tap_pcsc" in m and "apdus_pcsc_raw" in m:
        report.add(f"tap_pcsc / apdus_pcsc_raw: {m['tap_pcsc'] / m['apdus_pcsc_raw']:.2f}x")
    report.emit(request.config)


class Scripted:
    """A device answering recorded commands by lookup: a card that costs nothing."""

    def __init__(self) -> None:
        self.answers: dict[bytes, ResponseAPDU] = {}
        self.order: list[bytes] = []

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        return self.answers[command.to_bytes()]


class Recorder:
    """Wraps a link and remembers what it answered, to script a `Scripted` device."""

    def __init__(self, link: Channel, script: Scripted) -> None:
        self.link, self.script = link, script

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        response = self.link.transmit(command)
        self.script.answers[command.to_bytes()] = response
        self.script.order.append(command.to_bytes())
        return response


def _simulated() -> tuple[Channel, Channel]:
    card = issue_member_card(MEMBER, KEYS, card_no=1, transit_balance=100_000, random_source=1)
    psam = issue_psam(KEYS, "000000000001", protocol="T=0", random_source=2)
    links = []
    for device in (card, psam):
        transport = InProcessTransport(device)
        transport.power_on()
        links.append(Channel(transport))
    return links[0], links[1]


@pytest.fixture(scope="module")
def scripted() -> tuple[Scripted, Scripted]:
    card, psam = _simulated()
    card_script, psam_script = Scripted(), Scripted()
    with TransactionJournal(":memory:") as journal:
        outcome = run(TransitPurchase(Mode.BUS, 200, now=NOW), card=Recorder(card, card_script),
                      psam=Recorder(psam, psam_script), journal=journal)
    assert outcome.decision is Decision.APPROVED
    return card_script, psam_script


def test_engine_scripted(benchmark, scripted, tmp_path):
    benchmark.group = "bus tap, in process"
    card, psam = scripted
    rules = default_rules()
    journal = TransactionJournal(tmp_path / "journal.sqlite", durable=False)

    def forget() -> tuple[tuple[()], dict[str, object]]:
        """Untimed: the scripted card answers every tap with the same card seq, which a
        journal completes once, so each tap starts from an empty journal (on disk, as a
        terminal keeps it, its commits not waiting for the disk)."""
        with journal._transaction():
            journal._db.execute("DELETE FROM transactions")
        return (), {}

    def tap() -> Decision:
        session = TransitPurchase(Mode.BUS, 200, now=NOW, rules=rules, pending=journal.pending(),
                                  mac_refusals=journal.mac_refusals(NOW - MAC_REFUSAL_MEMORY))
        outcome = run(session, card=card, psam=psam, journal=journal)
        assert not outcome.warnings, outcome.warnings
        return outcome.decision

    assert benchmark.pedantic(tap, setup=forget, rounds=500,
                              warmup_rounds=5) is Decision.APPROVED
    report.median("engine_scripted", benchmark)
    journal.close()


def test_apdu_floor(benchmark, scripted):
    """The reference: the tap's APDUs, sent and answered with no engine."""
    benchmark.group = "bus tap, in process"
    card, psam = scripted
    commands = [(card, CommandAPDU.from_bytes(c)) for c in card.order]
    commands += [(psam, CommandAPDU.from_bytes(c)) for c in psam.order]

    def exchange() -> int:
        return sum(device.transmit(command).sw == 0x9000 for device, command in commands)

    assert benchmark(exchange) == len(commands)
    report.median("apdu_floor", benchmark)


def test_engine_simulator(benchmark):
    benchmark.group = "bus tap, in process"
    card, psam = _simulated()
    rules = default_rules()
    journal = TransactionJournal(":memory:", durable=False)

    def tap() -> Decision:
        return run(TransitPurchase(Mode.BUS, 200, now=NOW, rules=rules), card=card, psam=psam,
                   journal=journal).decision

    assert benchmark.pedantic(tap, rounds=300, warmup_rounds=5) is Decision.APPROVED
    report.median("engine_simulator", benchmark)
    journal.close()


# --- over pcscd + vpcd ---------------------------------------------------------------------


@pytest.fixture
def daemon(pcscd_daemon):
    if not isinstance(pcscd_daemon, PcscdDaemon):
        pytest.skip("needs a pcscd of this run")
    return pcscd_daemon


@contextlib.contextmanager
def served(argv: list[str], slots: int) -> Iterator[None]:
    """Run a card process until pcscd sees its cards; take them out afterwards."""
    watchers = [PcscTransport(vpcd_reader_name(s)) for s in range(slots)]
    for watcher in watchers:
        watcher.wait_for_card(5, present=False)
    process = subprocess.Popen(argv)
    try:
        for watcher in watchers:
            watcher.wait_for_card(15)
        yield
    finally:
        process.kill()
        process.wait()
        for watcher in watchers:
            watcher.wait_for_card(5, present=False)
            watcher.close()


def test_tap_pcsc(benchmark, daemon, tmp_path):
    benchmark.group = "bus tap, pcscd + vpcd"
    # The simulated cards save their image at every commit: a real card writes its own
    # EEPROM, not this machine's disk, so the images live in memory (tmpfs) when it can;
    # the journal stays on disk with durable commits, as a terminal's would.
    shm = Path("/dev/shm")
    images = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    card_path, psam_path = images / "card.json", images / "psam.json"
    issue_member_card(MEMBER, KEYS, card_no=1, transit_balance=100_000).save(card_path)
    issue_psam(KEYS, "000000000001", protocol="T=0").save(psam_path)
    argv = [sys.executable, "-c", CLI, "sim", "serve", str(card_path), "--psam",
            str(psam_path), "--port", str(daemon.vpcd_port)]
    with served(argv, 2), PcscTransport(vpcd_reader_name(0)) as card_t, \
            PcscTransport(vpcd_reader_name(1)) as psam_t, \
            TransactionJournal(tmp_path / "journal.sqlite") as journal:
        card_t.power_on()
        psam_t.power_on()
        card, psam = Channel(card_t), Channel(psam_t)
        rules = default_rules()
        counted: list[int] = []

        def tap() -> Decision:
            exchanges = [0]

            def count(command: bytes, response: bytes | None) -> None:
                exchanges[0] += 1

            card_t.on_apdu = psam_t.on_apdu = count
            card_t.power_on()  # the tap: the card connected and reset, its ATR read
            session = TransitPurchase(
                Mode.BUS, 200, now=NOW, rules=rules, pending=journal.pending(),
                mac_refusals=journal.mac_refusals(NOW - MAC_REFUSAL_MEMORY))
            outcome = run(session, card=card, psam=psam, journal=journal)
            counted.append(exchanges[0])
            return outcome.decision

        assert benchmark.pedantic(tap, rounds=40, warmup_rounds=2) is Decision.APPROVED
    if images != tmp_path:
        shutil.rmtree(images, ignore_errors=True)
    report.median("tap_pcsc", benchmark)
    report.add(f"tap_pcsc: {counted[-1]} APDU exchanges per tap (card and PSAM)")
    measured["exchanges_per_tap"] = counted[-1]


def test_apdus_pcsc_raw(benchmark, daemon):
    """The reference: as many bare pyscard round trips as a tap makes, to an echo card."""
    from smartcard import scard

    benchmark.group = "bus tap, pcscd + vpcd"
    exchanges = measured.get("exchanges_per_tap", 12)
    argv = [sys.executable, "-c", RAW_ECHO, str(daemon.vpcd_port)]
    command = list(bytes.fromhex("805C000204"))
    with served(argv, 1):
        result, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert result == scard.SCARD_S_SUCCESS
        result, card, _protocol = scard.SCardConnect(
            context, vpcd_reader_name(0), scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        assert result == scard.SCARD_S_SUCCESS

        def round_trips() -> int:
            for _ in range(exchanges):
                scard.SCardTransmit(card, scard.SCARD_PCI_T1, command)
            return exchanges

        try:
            assert benchmark.pedantic(round_trips, rounds=40, warmup_rounds=2) == exchanges
        finally:
            scard.SCardDisconnect(card, scard.SCARD_UNPOWER_CARD)
            scard.SCardReleaseContext(context)
    report.median("apdus_pcsc_raw", benchmark)
