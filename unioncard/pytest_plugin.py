"""pytest plugin of unioncard: fixtures for simulated cards, PSAMs and virtual readers.

Loaded through the ``pytest11`` entry point, so any project that installs
unioncard can use the fixtures (see docs/pcsc.md):

- ``pcscd_daemon`` (session): the pcscd the virtual readers live in.  By
  default (``--unioncard-pcscd=private``) every test process, each
  pytest-xdist worker included, starts its own pcscd with the vpcd driver on
  free ports, and stops it at the end; a system pcscd is left alone.  With
  ``--unioncard-pcscd=system`` the tests use the system pcscd and its vpcd
  slots (``--unioncard-vpcd-port``), one test at a time.
- ``pcsc_serve`` (function): a factory, ``pcsc_serve(card, psam=None)``, that
  serves any card object over vpcd and returns a `VirtualReader`.
- ``virtual_reader`` (function): ``virtual_card`` in slot 0 and
  ``virtual_psam`` in slot 1 of the virtual reader, each with a powered-on
  `PcscTransport`.  They default to ``sim_card`` and ``sim_psam``; override
  them in a conftest.py to serve your own cards (``virtual_psam`` None: none).
- ``sim_card``, ``sim_psam`` (function): a personalized member card and a PSAM
  from the simulator, issued with the test keys (``sim_keystore``), powered off;
  options through the ``sim_card(...)`` / ``sim_psam(...)`` markers.
- ``fault_injector`` (function): ``sim_card``'s power-cut injector.

Markers: tests using these fixtures get the ``pcsc`` marker automatically
(deselect them with ``-m "not pcsc"``); tests marked ``hardware`` are skipped
unless a physical reader is attached and reachable.

In private mode, once a collected test uses the fixtures, the whole test
process talks PC/SC to its private pcscd: libpcsclite reads
``PCSCLITE_CSOCK_NAME`` once per process, so it is set before any test runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unioncard.errors import TransportError
from unioncard.transport.base import Channel, VirtualCard
from unioncard.transport.pcsc import PcscTransport, is_virtual_reader, list_readers
from unioncard.transport.pcscd import (
    SOCKET_ENV,
    PcscdDaemon,
    missing_requirements,
    system_vpcd_port,
    vpcd_reader_name,
)

if TYPE_CHECKING:  # the simulator is imported when a fixture needs it
    from unioncard.applet_sim import FaultInjector, SimulatedCard
    from unioncard.crypto import Keystore
    from unioncard.transport.vpcd import CommandHook, VpcdBridge

__all__ = ["ExternalPcscd", "VirtualReader", "serve_virtual_reader"]

PCSC_FIXTURES = frozenset({"pcscd_daemon"})
CARD_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class ExternalPcscd:
    """A pcscd this plugin did not start (``--unioncard-pcscd=system``)."""

    vpcd_port: int
    socket_path: str | None

    def reader_name(self, slot: int) -> str:
        return vpcd_reader_name(slot)

    def client_env(self) -> dict[str, str]:
        return {SOCKET_ENV: self.socket_path} if self.socket_path else {}


@dataclass
class VirtualReader:
    """A card (and optionally a PSAM) served over vpcd, as a PC/SC program sees them."""

    name: str
    """PC/SC name of the card's reader, e.g. ``Virtual PCD 00 00``."""
    card: VirtualCard
    transport: PcscTransport
    """Connected (powered on) to the card through pcscd."""
    atr: bytes
    bridge: VpcdBridge
    psam_name: str | None = None
    psam: VirtualCard | None = None
    psam_transport: PcscTransport | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def channel(self) -> Channel:
        """APDU-level access to the card (61xx/6Cxx handled)."""
        return Channel(self.transport)

    @property
    def psam_channel(self) -> Channel:
        if self.psam_transport is None:
            raise TransportError("no PSAM is served in this virtual reader")
        return Channel(self.psam_transport)

    def close(self) -> None:
        """Disconnect, and take the cards out of their readers."""
        while self._closers:
            self._closers.pop()()


@dataclass
class _State:
    mode: str
    vpcd_port: int | None
    directory: Path | None = None
    saved_socket: str | None = None
    activated: bool = False
    physical: list[str] | None = None


_STATE = pytest.StashKey[_State]()


# -- options and configuration ---------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unioncard", "unioncard simulated cards and virtual readers")
    group.addoption(
        "--unioncard-pcscd",
        choices=("private", "system"),
        default=None,
        help="private (default): each test process starts its own pcscd with vpcd on free "
        "ports; system: use the running pcscd and its vpcd slots, one test at a time",
    )
    group.addoption(
        "--unioncard-vpcd-port",
        type=int,
        default=None,
        help="system mode: vpcd port of slot 0 in the system pcscd "
        "(default: CHANNELID from /etc/reader.conf.d, else 35963)",
    )
    parser.addini("unioncard_pcscd", "default of --unioncard-pcscd", default="private")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pcsc: needs pcscd with the vpcd driver (set on tests using the "
        "unioncard PC/SC fixtures)"
    )
    config.addinivalue_line(
        "markers", "hardware: needs a physical PC/SC reader; skipped when none is attached"
    )
    config.addinivalue_line(
        "markers", "sim_card(**options): options of the sim_card fixture (issue_member_card)"
    )
    config.addinivalue_line(
        "markers", "sim_psam(**options): options of the sim_psam fixture (issue_psam)"
    )
    mode = config.getoption("unioncard_pcscd") or config.getini("unioncard_pcscd")
    if mode not in ("private", "system"):
        raise pytest.UsageError(f"unioncard_pcscd must be private or system, not {mode!r}")
    config.stash[_STATE] = _State(mode, config.getoption("unioncard_vpcd_port"))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.activated:
        return
    if state.saved_socket is None:
        os.environ.pop(SOCKET_ENV, None)
    else:
        os.environ[SOCKET_ENV] = state.saved_socket
    if state.directory is not None:
        shutil.rmtree(state.directory, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use the PC/SC fixtures ``pcsc`` (before ``-m`` selects)."""
    for item in items:
        if PCSC_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pcsc)


def pytest_collection_finish(session: pytest.Session) -> None:
    """In private mode, point this process at its own pcscd before any test runs."""
    state = session.config.stash[_STATE]
    if state.mode == "private" and any(
        PCSC_FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items
    ):
        _activate_private(state)


def _activate_private(state: _State) -> None:
    if state.activated:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    state.directory = Path(tempfile.mkdtemp(prefix=f"unioncard-pcscd-{worker}-"))
    state.saved_socket = os.environ.get(SOCKET_ENV)
    os.environ[SOCKET_ENV] = str(state.directory / "pcscd.comm")
    state.activated = True


# -- hardware marker -----------------------------------------------------------------

_LIST_PHYSICAL = (
    "import json\n"
    "from unioncard.transport.pcsc import is_virtual_reader, list_readers\n"
    "try:\n"
    "    names = [r for r in list_readers() if not is_virtual_reader(r)]\n"
    "except Exception:\n"
    "    names = []\n"
    "print(json.dumps(names))\n"
)


def _physical_readers(state: _State) -> list[str]:
    """Physical readers known to the pcscd a PC/SC program would use outside this run."""
    if state.physical is None:
        if state.activated:
            env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
            if state.saved_socket is not None:
                env[SOCKET_ENV] = state.saved_socket
            try:
                out = subprocess.run(
                    [sys.executable, "-c", _LIST_PHYSICAL], env=env, capture_output=True,
                    text=True, timeout=30, check=True,
                ).stdout
                state.physical = list(json.loads(out))
            except (subprocess.SubprocessError, ValueError, OSError):
                state.physical = []
        else:
            try:
                state.physical = [r for r in list_readers() if not is_virtual_reader(r)]
            except TransportError:
                state.physical = []
    return state.physical


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("hardware") is None:
        return
    state = item.config.stash[_STATE]
    physical = _physical_readers(state)
    if not physical:
        pytest.skip("no physical PC/SC reader attached")
    if state.activated:
        pytest.skip(
            f"physical reader(s) {', '.join(physical)} attached, but this test process talks "
            "to a private pcscd; run hardware tests with `-m hardware --unioncard-pcscd=system "
            "-p no:xdist`"
        )


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pcscd_daemon(request: pytest.FixtureRequest) -> Iterator[PcscdDaemon | ExternalPcscd]:
    """The pcscd that serves the virtual readers (private per test process by default)."""
    state = request.config.stash[_STATE]
    if state.mode == "system":
        yield ExternalPcscd(state.vpcd_port or system_vpcd_port(), os.environ.get(SOCKET_ENV))
        return
    missing = missing_requirements()
    if missing:
        pytest.fail(
            "the PC/SC fixtures need pcscd and the vpcd driver; missing: " + ", ".join(missing)
            + " (Debian: apt-get install pcscd vsmartcard-vpcd; or deselect with -m 'not pcsc')",
            pytrace=False,
        )
    _activate_private(state)  # when requested dynamically, after collection
    daemon = PcscdDaemon(directory=state.directory)
    try:
        daemon.start()
    except TransportError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()  # its directory goes at the end of the run (pytest_unconfigure)


@contextlib.contextmanager
def _slot_lock(daemon: PcscdDaemon | ExternalPcscd) -> Iterator[None]:
    """System mode: one test process at a time uses the system pcscd's vpcd slots."""
    if not isinstance(daemon, ExternalPcscd):
        yield
        return
    import fcntl  # POSIX only, like pcscd itself

    path = Path(tempfile.gettempdir()) / f"unioncard-vpcd-{daemon.vpcd_port}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def serve_virtual_reader(
    daemon: PcscdDaemon | ExternalPcscd,
    card: VirtualCard,
    psam: VirtualCard | None = None,
    *,
    protocol: str | None = None,
    on_command: CommandHook | None = None,
) -> VirtualReader:
    """Serve ``card`` in slot 0 (and ``psam`` in slot 1) and connect to them through pcscd.

    ``protocol`` (``"T0"``, ``"T1"``, ``"any"``) defaults to each card's own
    ``protocol`` attribute when it has one, else ``"any"``.
    """
    from unioncard.transport.vpcd import VpcdBridge

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(_slot_lock(daemon))
        cards = {0: card} if psam is None else {0: card, 1: psam}
        bridge = VpcdBridge(cards, port=daemon.vpcd_port, on_command=on_command)
        names = {slot: daemon.reader_name(slot) for slot in cards}

        # A card that vanished during a command (its process killed, say) is
        # ejected by vpcd outside pcscd's presence poll: if the new card came in
        # before that poll, pcscd would never see a removal and would keep the old
        # card's ATR and power state.  So the slots must be seen empty first.
        for name in names.values():
            with PcscTransport(name) as watcher:
                watcher.wait_for_card(CARD_WAIT_SECONDS, present=False)
        bridge.start()
        stack.callback(bridge.stop)  # the cards leave their readers
        if not bridge.wait_attached(CARD_WAIT_SECONDS):
            raise TransportError(
                f"pcscd did not take the card on vpcd port {daemon.vpcd_port} within "
                f"{CARD_WAIT_SECONDS:g} s (another program serving a card there?)"
            )
        transports = {}
        for slot, name in names.items():
            wanted = protocol or getattr(cards[slot], "protocol", None) or "any"
            transport = stack.enter_context(PcscTransport(name, protocol=wanted))
            transport.wait_for_card(CARD_WAIT_SECONDS)
            transport.power_on()
            transports[slot] = transport
        reader = VirtualReader(
            name=names[0], card=card, transport=transports[0],
            atr=transports[0].atr or b"", bridge=bridge,
            psam_name=names.get(1), psam=psam, psam_transport=transports.get(1),
        )
        reader._closers.append(stack.pop_all().close)
        return reader
    except BaseException:
        stack.close()
        raise


@pytest.fixture
def pcsc_serve(
    pcscd_daemon: PcscdDaemon | ExternalPcscd,
) -> Iterator[Callable[..., VirtualReader]]:
    """Factory: ``pcsc_serve(card, psam=None, protocol="any", on_command=None)``.

    Serves any card object (see `unioncard.transport.base.VirtualCard`)
    in the virtual reader and returns a `VirtualReader`; everything it served
    is taken out of the reader at the end of the test.
    """
    served: list[VirtualReader] = []

    def serve(card: VirtualCard, psam: VirtualCard | None = None, **options: Any) -> VirtualReader:
        reader = serve_virtual_reader(pcscd_daemon, card, psam, **options)
        served.append(reader)
        return reader

    try:
        yield serve
    finally:
        for reader in reversed(served):
            reader.close()


# -- simulated cards -------------------------------------------------------------------

SIM_TERMINAL_ID = "001122334455"


def _seed(request: pytest.FixtureRequest, salt: str) -> int:
    """A random-number seed per test: the same test gets the same card randomness."""
    return zlib.crc32(f"{request.node.nodeid}/{salt}".encode())


def _marker_options(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    marker = request.node.get_closest_marker(name)
    return dict(marker.kwargs) if marker is not None else {}


@pytest.fixture(scope="session")
def sim_keystore() -> Keystore:
    """The project's test keystore (docs/protocol.md §6), which the simulated cards use."""
    from unioncard.crypto import Keystore

    return Keystore.test()


@pytest.fixture
def sim_card(request: pytest.FixtureRequest, sim_keystore: Keystore) -> SimulatedCard:
    """A personalized member card (transit and ETC purses, member identity), powered off.

    Defaults: card number 1, 100.00 yuan on each purse, T=1, randomness seeded per
    test.  ``@pytest.mark.sim_card(**options)`` passes options to
    `unioncard.applet_sim.issue_member_card` (``protocol="T=0"``,
    ``transit_balance=...``, ``member=MemberData(...)``, ...).
    """
    import datetime as dt

    from unioncard.applet_sim import MemberData, issue_member_card

    options: dict[str, Any] = {
        "card_no": 1, "transit_balance": 10_000, "etc_balance": 10_000,
        "random_source": _seed(request, "card"),
    }
    options.update(_marker_options(request, "sim_card"))
    member = options.pop("member", None) or MemberData(
        "张三", "20260001", "市总工会", "11010519491231002X",
        dt.date(2026, 1, 1), dt.date(2030, 12, 31),
    )
    return issue_member_card(member, sim_keystore, **options)


@pytest.fixture
def sim_psam(request: pytest.FixtureRequest, sim_keystore: Keystore) -> SimulatedCard:
    """A PSAM with the test purchase keys and terminal id ``001122334455``, powered off.

    ``@pytest.mark.sim_psam(**options)`` passes options to
    `unioncard.applet_sim.issue_psam` (``terminal_id=...``, ``protocol="T=0"``, ...).
    """
    from unioncard.applet_sim import issue_psam

    options: dict[str, Any] = {"random_source": _seed(request, "psam")}
    options.update(_marker_options(request, "sim_psam"))
    return issue_psam(sim_keystore, options.pop("terminal_id", SIM_TERMINAL_ID), **options)


@pytest.fixture
def fault_injector(sim_card: SimulatedCard) -> FaultInjector:
    """The fault injector of `sim_card`: cut its power at chosen NVM writes.

    A cut makes the card raise `unioncard.applet_sim.PowerLoss` in process; in
    the virtual reader the card is torn out (the PC/SC transport reports that
    it did not answer) and comes back, and the next power on recovers its NVM.
    """
    return sim_card.faults


@pytest.fixture
def virtual_card(sim_card: SimulatedCard) -> VirtualCard:
    """The card `virtual_reader` serves in slot 0: `sim_card` unless overridden."""
    return sim_card


@pytest.fixture
def virtual_psam(sim_psam: SimulatedCard) -> VirtualCard | None:
    """The card `virtual_reader` serves in slot 1: `sim_psam`; override with None for none."""
    return sim_psam


@pytest.fixture
def virtual_reader(
    virtual_card: VirtualCard,
    virtual_psam: VirtualCard | None,
    pcsc_serve: Callable[..., VirtualReader],
) -> VirtualReader:
    """`virtual_card` (and `virtual_psam`) in pcscd's virtual reader, powered on."""
    return pcsc_serve(virtual_card, virtual_psam)
