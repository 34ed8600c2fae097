"""The fault campaign's pieces: the cards, the flows, a card that leaves the field, the checks.

`test_fault_campaign.py` pulls cards out at every command of every flow and cuts their power
inside their NVM writes, in process (`InProcessBench`) and through pcscd + vpcd
(`PcscBench`); `campaign_worker.py`, the terminal process the SIGKILL campaign kills, taps
with the same flows.  `disagreements` compares a journal with what the cards really hold:
it is the one definition of "the journal and the card agree" both campaigns use.

The module needs no pytest; it is loaded by path (tests/terminal is not a package) and run
as part of the worker, so the independent card (`protocol_card`, on the test path only) is
imported when a test asks for it.
"""

from __future__ import annotations

import calendar
import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from unioncard.apdu import records
from unioncard.applet_sim import SimulatedCard
from unioncard.applet_sim.files import read_record, read_transparent
from unioncard.crypto import Keystore
from unioncard.errors import TransportError
from unioncard.offline import Application, RecordFlags
from unioncard.tariffs import Mode
from unioncard.terminal import (
    Decision,
    EtcEntry,
    EtcExit,
    KeystoreLoadHost,
    Load,
    Outcome,
    PosPurchase,
    TransactionJournal,
    TransitPurchase,
    parse_toll_table,
    run,
)
from unioncard.terminal.card import CHINA_STANDARD_TIME, PurseCard
from unioncard.terminal.etc import TollStatus
from unioncard.terminal.journal import JournalEntry
from unioncard.terminal.purchase import MAC_REFUSAL_MEMORY, PurseSession
from unioncard.terminal.session import Flow, Refused, Session
from unioncard.testing.purse_rig import expected_tac
from unioncard.transport import Channel, InProcessTransport

NOW = dt.datetime(2026, 5, 1, 8, 30)
KEYS = Keystore.test()
TOLLS = parse_toll_table('network = "1101"\n[[toll]]\nentry = "0203"\nexit = "0007"\n'
                         'fen = { 1 = 10000, 2 = 15000 }\n')
LOAD_TERMINAL = bytes.fromhex("0000000000AA")
TAP_INTERVAL = dt.timedelta(minutes=1)
"""Between two taps of a case: a re-tap comes well within the recovery window."""


# --- the flows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSpec:
    """One flow of the campaign: the session a tap makes (it takes ``now=``, ``pending=``
    and ``mac_refusals=``), the purse it works on, whether it loads, and the flows tapped
    cleanly before it (an ETC exit needs an entry)."""

    name: str
    purse: str
    session: Callable[..., Session]
    load: bool = False
    setup: tuple[str, ...] = ()

    @property
    def counter(self) -> str:
        """The card counter the flow's value command advances."""
        return "online_seq" if self.load else "offline_seq"


FLOWS: dict[str, FlowSpec] = {spec.name: spec for spec in (
    FlowSpec("bus", "transit", functools.partial(TransitPurchase, Mode.BUS, 200, route="42")),
    FlowSpec("metro", "transit",
             functools.partial(TransitPurchase, Mode.METRO, 400, station=0x0112)),
    FlowSpec("etc-entry", "etc",
             functools.partial(EtcEntry, network=0x1101, station=0x0203, lane=2)),
    FlowSpec("etc-exit", "etc", functools.partial(EtcExit, network=0x1101, station=0x0007,
                                                  lane=3, tolls=TOLLS), setup=("etc-entry",)),
    FlowSpec("load-transit", "transit", functools.partial(
        Load, Application.TRANSIT, 3000, terminal_id=LOAD_TERMINAL), load=True),
    FlowSpec("load-etc", "etc", functools.partial(
        Load, Application.ETC, 5000, terminal_id=LOAD_TERMINAL), load=True),
    FlowSpec("pos", "transit", functools.partial(
        PosPurchase, 3000, merchant="EXAMPLE-PARTNER-0001", mcc=5411)),
)}
"""Every flow the campaign runs; a new flow is one line here."""


def tap(spec: FlowSpec, *, card: Any, psam: Any, journal: TransactionJournal,
        when: dt.datetime) -> Outcome:
    """One tap of ``spec`` at ``when``, as a terminal does it: the journal's pending
    transactions and MAC refusals in, the outcome's resolutions journaled."""
    session = spec.session(now=when, pending=journal.pending(),
                           mac_refusals=journal.mac_refusals(when - MAC_REFUSAL_MEMORY))
    return run(session, card=card, psam=psam, journal=journal, host=KeystoreLoadHost(KEYS))


class RecoveryPass(PurseSession):
    """A presentation of a card that settles its pending transactions on one purse and
    sells nothing: the engine's own recovery (`PurseSession.recover`), then a decline."""

    flow_name = "recovery-pass"

    def __init__(self, application: Application, **options: Any) -> None:
        super().__init__(**options)
        self.application = Application(application)

    def transact(self, card: PurseCard, member: Any) -> Flow:
        raise Refused("recovery pass: nothing is sold")
        yield  # a flow is a generator


# --- the cards --------------------------------------------------------------------------------


def simulator_cards() -> tuple[Any, Any]:
    """The project's simulator: a T=1 member card (card number 7) and a T=0 PSAM."""
    from unioncard.applet_sim import MemberData, issue_member_card, issue_psam

    member = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                        dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x02)
    card = issue_member_card(member, KEYS, card_no=7, transit_balance=5000, etc_balance=20000,
                             plate="京A12345", issue_date=dt.date(2024, 1, 1), random_source=7)
    psam = issue_psam(KEYS, "000000000001", protocol="T=0", random_source=8)
    return card, psam


def protocol_cards() -> tuple[Any, Any]:
    """The card written from docs/protocol.md alone: a T=0 card and a T=1 PSAM."""
    import protocol_card

    card = protocol_card.ProtocolCard(transit_balance=5000, etc_balance=20000, protocol="T=0",
                                      seed=3, start_date="20240101")
    psam = protocol_card.ProtocolPsam(terminal_id="000000000002",
                                      purchase_keys=KEYS.purchase_master_keys())
    return card, psam


CARD_KINDS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "simulator": simulator_cards, "protocol-card": protocol_cards}


class CardPulled(TransportError):
    """The card left the field (raised by `FaultyCard` in place of the card's answer)."""


class FaultyCard:
    """A card object that leaves the field at its k-th command from now: ``"before"`` it
    executes it (no effect) or ``"after"`` (executed, the answer lost).  It counts the
    commands it is given (GET RESPONSE and re-sends after ``6Cxx`` included), so a clean
    tap tells how many places a card can be pulled at.  The card it wraps (``inner``) may be
    replaced between taps: a fresh card presented to the same reader."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.exchanges = 0
        self._armed: tuple[int, str] | None = None
        self.fired: str | None = None

    @property
    def protocol(self) -> str:
        return str(self.inner.protocol)

    @property
    def atr(self) -> bytes:
        return bytes(self.inner.atr)

    def power_on(self) -> bytes:
        return bytes(self.inner.power_on())

    def reset(self) -> bytes:
        return bytes(self.inner.reset())

    def power_off(self) -> None:
        self.inner.power_off()

    def arm(self, k: int, when: str) -> None:
        if when not in ("before", "after") or k < 1:
            raise ValueError(f"pull {when} command {k}?")
        self._armed = (self.exchanges + k, when)
        self.fired = None

    def disarm(self) -> None:
        self._armed = None

    def transmit(self, command: bytes) -> bytes:
        self.exchanges += 1
        armed = self._armed
        if armed == (self.exchanges, "before"):
            self._pull(command, "before")
        response = bytes(self.inner.transmit(command))
        if armed == (self.exchanges, "after"):
            self._pull(command, "after")
        return response

    def _pull(self, command: bytes, when: str) -> None:
        self._armed = None
        self.fired = f"{when} {command[:4].hex().upper()}"
        self.inner.power_off()
        raise CardPulled(f"the card left the field {when} command {command[:4].hex().upper()}")


# --- what a card really holds -----------------------------------------------------------------


@dataclass(frozen=True)
class PurseState:
    balance: int
    offline_seq: int
    online_seq: int
    diversifier: bytes


@dataclass(frozen=True)
class CardState:
    """A card's purses and its EF 0019 record 1, read from the card object itself."""

    purses: dict[str, PurseState]
    toll_record: bytes

    def counter(self, spec: FlowSpec) -> int:
        return int(getattr(self.purses[spec.purse], spec.counter))


def card_state(card: Any) -> CardState:
    """The state of a simulated card (its NVM) or of a `protocol_card.ProtocolCard`."""
    if isinstance(card, FaultyCard):
        card = card.inner
    if isinstance(card, SimulatedCard):
        purses = {}
        for app in ("transit", "etc"):
            purse = card.purse(app)
            info = card.fs.child_by_fid(purse.node.path, 0x0015)
            assert info is not None
            purses[app] = PurseState(purse.balance, purse.offline_seq, purse.online_seq,
                                     read_transparent(card.nvm, info)[12:20])
        capp = card.purse("etc").capp_file
        assert capp is not None
        return CardState(purses, read_record(card.nvm, capp, 1) or b"")
    return CardState({app: PurseState(card.balance(app), card.offline_seq(app),
                                      card.online_seq(app), card.diversifier(app))
                      for app in ("transit", "etc")}, card.capp_record() or b"")


def disagreements(journal: TransactionJournal, initial: CardState, final: CardState, *,
                  allow_pending: bool = False) -> list[str]:
    """Where the journal and the card disagree, in words (an empty list: they agree).

    For each purse, the card seqs of the journal's completed transactions are exactly the
    seqs the card used since ``initial`` (offline seqs for purchases, online seqs for
    loads), each once, and their amounts add up to the balance's change; every completed
    record carries a TAC that verifies with the issuer's keys, or is flagged as recovered
    without one; the card's EF 0019 record is the one the last ETC transaction wrote.
    ``allow_pending``: transactions may still be pending (a terminal killed mid-way): a seq
    the card used may then belong to a pending transaction instead, which counts as
    committed.
    """
    problems: list[str] = []
    entries = journal.entries(newest_first=False)
    pending = [e for e in entries if e.state == "pending"]
    if pending and not allow_pending:
        problems.append(f"{len(pending)} transaction(s) left pending: "
                        + ", ".join(f"#{e.id} {e.flow} seq {e.draft.card_seq}" for e in pending))
    committed_etc: list[JournalEntry] = []
    for app, before in initial.purses.items():
        after = final.purses[app]
        application = Application[app.upper()]
        mine = [e for e in entries if e.draft.application == application
                and e.draft.diversifier == before.diversifier]
        net = 0
        for is_load, counter in ((False, "offline_seq"), (True, "online_seq")):
            used = set(range(getattr(before, counter), getattr(after, counter)))
            done = Counter(e.draft.card_seq for e in mine
                           if e.state == "completed" and e.draft.is_load == is_load)
            open_ = {e.draft.card_seq: e for e in mine
                     if e.state == "pending" and e.draft.is_load == is_load}
            what = f"{app} {'load' if is_load else 'purchase'}"
            twice = sorted(s for s, n in done.items() if n > 1)
            if twice:
                problems.append(f"{what}: card seqs completed twice in the journal: {twice}")
            extra = sorted(set(done) - used)
            if extra:
                problems.append(f"{what}: completed in the journal, never committed by the "
                                f"card: seqs {extra} (the card used {sorted(used)})")
            missing = sorted(used - set(done) - set(open_))
            if missing:
                problems.append(f"{what}: committed by the card, not in the journal: seqs "
                                f"{missing}")
            for entry in mine:
                if entry.draft.is_load != is_load or entry.draft.card_seq not in used:
                    continue
                if entry.state == "completed" or (entry.state == "pending"
                                                  and entry.draft.card_seq not in done):
                    sign = 1 if is_load else -1
                    net += sign * entry.draft.charged_amount
                    if app == "etc" and not is_load:
                        committed_etc.append(entry)
        if before.balance + net != after.balance:
            problems.append(f"{app}: the balance went from {before.balance} to {after.balance} "
                            f"fen, the journal accounts for {net:+d}")
        for entry in mine:
            if entry.state == "completed":
                problems += _record_problems(entry)
    problems += _toll_record_problems(committed_etc, initial, final)
    return problems


def _record_problems(entry: JournalEntry) -> list[str]:
    record = entry.record
    if record is None:
        return [f"#{entry.id}: completed without a record"]
    flags = RecordFlags(record.flags)
    if flags & RecordFlags.NO_TAC:
        if not flags & RecordFlags.RECOVERED:
            return [f"#{entry.id} {entry.flow}: no TAC, and not flagged as recovered"]
        return []
    if record.tac != expected_tac(KEYS, record):
        return [f"#{entry.id} {entry.flow} seq {record.card_seq}: the TAC "
                f"{record.tac.hex().upper()} does not verify"]
    return []


def _toll_record_problems(committed: Sequence[JournalEntry], initial: CardState,
                          final: CardState) -> list[str]:
    tolls = [e for e in committed if e.flow in ("etc-entry", "etc-exit")]
    if not tolls:
        if final.toll_record != initial.toll_record:
            return ["EF 0019 changed, and the journal has no ETC entry or exit"]
        return []
    last = max(tolls, key=lambda e: e.draft.card_seq)
    draft = last.record or last.draft
    on_card = records.parse(records.CAPP_RECORD, final.toll_record)
    status = TollStatus.ETC_ENTRY if last.flow == "etc-entry" else TollStatus.ETC_EXIT
    unix = calendar.timegm(draft.when.replace(tzinfo=CHINA_STANDARD_TIME).utctimetuple())
    expected = (status, draft.station, unix)
    found = (on_card.status, int.from_bytes(on_card.station, "big"), on_card.unix_time)
    if found != expected:
        return [f"EF 0019 holds (status, station, time) {found}, the journal's last ETC "
                f"transaction #{last.id} ({last.flow}) says {expected}"]
    return []


# --- a bench: a card, a PSAM and a journal, in process or over PC/SC --------------------------


class Bench(Protocol):
    """Where a case runs: `fresh` presents a new card (a copy of the kind's card, so every
    case starts alike) with an empty journal; `tap`; `present_again` (the NVM writes of the
    card's power-up: its recovery); `present_cut`, a presentation whose power-up is cut
    (in process only); `state`."""

    kind: str
    card: FaultyCard
    journal: TransactionJournal

    def fresh(self) -> None: ...
    def tap(self, spec: FlowSpec) -> Outcome: ...
    def present_again(self) -> int: ...
    def present_cut(self, fault: Fault) -> bool: ...
    def state(self) -> CardState: ...
    def arm(self, fault: Fault) -> None: ...
    def disarm(self) -> bool: ...
    def trace_writes(self) -> None: ...
    def writes(self) -> int: ...


class _BenchBase:
    kind: str
    card: FaultyCard
    journal: TransactionJournal
    when: dt.datetime
    card_link: Channel
    psam_link: Channel

    def _locked(self) -> AbstractContextManager[Any]:
        """Held while the card object is looked at or armed (the bridge's lock over PC/SC)."""
        return contextlib.nullcontext()

    def tap(self, spec: FlowSpec) -> Outcome:
        self.when += TAP_INTERVAL
        return tap(spec, card=self.card_link, psam=self.psam_link, journal=self.journal,
                   when=self.when)

    def state(self) -> CardState:
        with self._locked():
            return card_state(self.card)

    def arm(self, fault: Fault) -> None:
        with self._locked():
            if fault.kind in ("before", "after"):
                self.card.arm(fault.k, fault.kind)
            else:
                faults = self.card.inner.faults
                faults.fired = None
                faults.cut_at_write(fault.k, after=fault.kind == "cut-after")

    def disarm(self) -> bool:
        """Forget an armed fault; whether it fired."""
        with self._locked():
            self.card.disarm()
            fired = self.card.fired is not None
            self.card.fired = None
            faults = getattr(self.card.inner, "faults", None)
            if faults is not None:
                faults.disarm()
                fired = fired or faults.fired is not None
                faults.fired = None
            return fired

    def trace_writes(self) -> None:
        faults = getattr(self.card.inner, "faults", None)
        if faults is not None:
            faults.start_trace()

    def writes(self) -> int:
        faults = getattr(self.card.inner, "faults", None)
        return 0 if faults is None else len(faults.trace)


class InProcessBench(_BenchBase):
    """The card and the PSAM in this process (`InProcessTransport`), a journal in memory."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.templates = CARD_KINDS[kind]()
        self.card = FaultyCard(None)
        self.journal = TransactionJournal(":memory:")

    def fresh(self) -> None:
        card, psam = (copy.deepcopy(t) for t in self.templates)
        self.card = FaultyCard(card)
        self.card_transport = InProcessTransport(self.card)
        psam_transport = InProcessTransport(psam)
        self.card_transport.power_on()
        psam_transport.power_on()
        self.card_link, self.psam_link = Channel(self.card_transport), Channel(psam_transport)
        self.journal.close()
        self.journal = TransactionJournal(":memory:")
        self.when = NOW

    def present_again(self) -> int:
        self.trace_writes()
        self.card_transport.power_on()
        return self.writes()

    def present_cut(self, fault: Fault) -> bool:
        """Present the card with its power cut at the k-th NVM write of its power-up (its
        recovery of a torn command): whether the cut came."""
        faults = self.card.inner.faults
        faults.cut_at_write(fault.k, after=fault.kind == "power-up-cut-after")
        with contextlib.suppress(TransportError):  # the cut: the card does not answer
            self.card_transport.power_on()
        faults.disarm()
        came = faults.fired is not None
        faults.fired = None
        return came


class PcscBench(_BenchBase):
    """The card and the PSAM served by the vpcd bridge to pcscd, reached with pyscard.

    ``serve`` is the ``pcsc_serve`` fixture.  The bridge serves one `FaultyCard` for the
    bench's life; `fresh` puts a new copy of the kind's card in it and resets it through
    pcscd.  A card that raises is torn out of the reader by the bridge: pcscd sees the
    removal, the card comes back after `unioncard.transport.vpcd.TEAR_SECONDS`.
    """

    def __init__(self, kind: str, serve: Callable[..., Any]) -> None:
        self.kind = kind
        self.template, psam = CARD_KINDS[kind]()
        self.card = FaultyCard(copy.deepcopy(self.template))
        self.reader = serve(self.card, psam)
        self.card_transport = self.reader.transport
        self.card_link = Channel(self.card_transport)
        self.psam_link = Channel(self.reader.psam_transport)
        self.journal = TransactionJournal(":memory:")

    def _locked(self) -> AbstractContextManager[Any]:
        return self.reader.bridge.lock  # type: ignore[no-any-return]

    def fresh(self) -> None:
        with self._locked():
            self.card.inner = copy.deepcopy(self.template)
            self.card.disarm()
        self.card_transport.reset()
        self.journal.close()
        self.journal = TransactionJournal(":memory:")
        self.when = NOW

    def present_again(self) -> int:
        with self._locked():
            self.trace_writes()
        self.card_transport.wait_for_card(10, present=False)  # torn out of the reader...
        self.card_transport.wait_for_card(10)  # ...and back
        self.card_transport.power_on()
        with self._locked():
            return self.writes()

    def present_cut(self, fault: Fault) -> bool:
        raise NotImplementedError("power-up cuts run in process")

    def close(self) -> None:
        self.reader.close()


# --- the faults and a case ----------------------------------------------------------------------

PULLS = ("before", "after")
"""The card leaves the field before its k-th command (no effect) or after it (the answer lost)."""
CUTS = ("cut-before", "cut-after")
"""The card's power is cut before or after its k-th physical NVM write (the simulator)."""
POWER_UP_CUTS = ("power-up-cut-before", "power-up-cut-after")
"""Presented again, the card's power is cut again at the k-th NVM write of its recovery."""


@dataclass(frozen=True)
class Fault:
    """A fault in one tap of ``flow``: one of `PULLS` at the tap's k-th card command or one
    of `CUTS` at its k-th NVM write; ``then`` is a fault in the next tap (the re-tap that
    recovers the first), after which a last tap comes clean, or one of `POWER_UP_CUTS` when
    the card is presented again before that re-tap."""

    flow: str
    kind: str
    k: int
    then: Fault | None = None

    @property
    def label(self) -> str:
        """The kind, for the figures: ``after``, ``cut-before``, ``after/re-tap before``,
        ``cut-after/power-up-cut-before``."""
        if self.then is None:
            return self.kind
        where = "" if self.then.kind in POWER_UP_CUTS else "re-tap "
        return f"{self.kind}/{where}{self.then.kind}"

    def __str__(self) -> str:
        text = f"{self.flow}: {self.kind} #{self.k}"
        return text if self.then is None else f"{text}, then {self.then.kind} #{self.then.k}"


@dataclass(frozen=True)
class Tap:
    outcome: Outcome
    exchanges: int
    """Commands the card was given during the tap."""
    writes: int
    """Physical NVM writes of the card during the tap (the simulator; 0 otherwise)."""
    fired: bool
    power_up_writes: int = 0
    """NVM writes of the card's power-up when presented again after the tap."""


@dataclass
class CaseResult:
    kind: str
    flow: str
    fault: Fault | None
    taps: list[Tap]
    committed: int
    """Transactions the card committed in the case (its counter's advance)."""
    voided: int
    problems: list[str] = field(default_factory=list)

    @property
    def first(self) -> Outcome:
        return self.taps[0].outcome

    @property
    def last(self) -> Outcome:
        return self.taps[-1].outcome


def run_case(bench: Bench, flow: str, fault: Fault | None, *,
             amount: int | None = None) -> CaseResult:
    """A fresh card; the flow's setup taps; a tap with ``fault``; the card presented again
    and tapped again (with ``fault.then``, and then once more) — then the checks: the card
    committed at most one transaction, exactly one when the last tap is approved, of
    ``amount`` fen (the clean tap's); the journal agrees with the card (`disagreements`)."""
    spec = FLOWS[flow]
    bench.fresh()
    initial = bench.state()
    problems: list[str] = []
    for name in spec.setup:
        done = bench.tap(FLOWS[name])
        if done.decision is not Decision.APPROVED:
            problems.append(f"setup {name}: {done.decision.value}: {done.reason}")
    before = bench.state()
    taps: list[Tap] = []
    current = fault
    while True:
        if current is not None:
            bench.arm(current)
        bench.trace_writes()
        start = bench.card.exchanges
        outcome = bench.tap(spec)
        tapped = Tap(outcome, bench.card.exchanges - start, bench.writes(),
                     current is not None and bench.disarm())
        if current is None:
            taps.append(tapped)
            break
        following = current.then
        if not tapped.fired:
            problems.append(f"the fault {current.kind} #{current.k} never came")
        else:
            if following is not None and following.kind in POWER_UP_CUTS:
                if not bench.present_cut(following):
                    problems.append(f"the fault {following.kind} #{following.k} never came")
                following = following.then
            tapped = dataclasses.replace(tapped, power_up_writes=bench.present_again())
        taps.append(tapped)
        current = following
    after = bench.state()
    committed = after.counter(spec) - before.counter(spec)
    last = taps[-1].outcome
    delta = after.purses[spec.purse].balance - before.purses[spec.purse].balance
    if committed not in (0, 1):
        problems.append(f"the card committed {committed} transactions; its balance moved "
                        f"{delta:+d} fen")
    if last.decision is not Decision.APPROVED:
        problems.append(f"the last tap was {last.decision.value}: {last.reason}")
    elif committed != 1:
        problems.append(f"the last tap was approved, the card committed {committed} "
                        "transactions")
    if amount is not None:
        sign = 1 if spec.load else -1
        if delta != sign * amount * committed:
            problems.append(f"the balance moved {delta:+d} fen for {committed} transaction(s) "
                            f"of {amount} fen")
        if last.decision is Decision.APPROVED and last.charged_amount != amount:
            problems.append(f"the last tap says {last.charged_amount} fen, not {amount}")
    problems += disagreements(bench.journal, initial, after)
    return CaseResult(bench.kind, flow, fault, taps, committed,
                      bench.journal.counts()["voided"], problems)


def first_faults(clean: CaseResult, *, cuts: bool = True) -> list[Fault]:
    """Every fault of the first tap: each pull at each of the clean tap's commands, and
    (``cuts``) each cut at each of its NVM writes."""
    tap0 = clean.taps[0]
    faults = [Fault(clean.flow, kind, k) for k in range(1, tap0.exchanges + 1) for kind in PULLS]
    if cuts:
        faults += [Fault(clean.flow, kind, k) for k in range(1, tap0.writes + 1) for kind in CUTS]
    return faults


def retap_faults(result: CaseResult, *, deep: bool = False) -> list[Fault]:
    """When a pull left the first tap's transaction pending, a pull at every command of the
    re-tap that settles it (GET TRANSACTION PROVE, INITIALIZE of 0, the log).  ``deep``:
    after a cut too, and also a cut at every NVM write of that re-tap and at every NVM
    write of the card's power-up (its recovery of the torn command) before it."""
    fault = result.fault
    if (fault is None or fault.then is not None or (fault.kind in CUTS and not deep)
            or result.first.decision is not Decision.INTERRUPTED):
        return []
    first, retap = result.taps[0], result.taps[1]
    kinds = [(kind, k) for k in range(1, retap.exchanges + 1) for kind in PULLS]
    if deep:
        kinds += [(kind, k) for k in range(1, retap.writes + 1) for kind in CUTS]
        kinds += [(kind, k) for k in range(1, first.power_up_writes + 1)
                  for kind in POWER_UP_CUTS]
    return [Fault(fault.flow, fault.kind, fault.k, then=Fault(fault.flow, kind, k))
            for kind, k in kinds]


def flow_campaign(bench: Bench, flow: str, *, retaps: bool = True,
                  deep: bool = False) -> list[CaseResult]:
    """The clean case of ``flow``, then every first fault, then (``retaps``) every fault of
    the re-taps that settle a pending transaction (``deep``: see `retap_faults`)."""
    clean = run_case(bench, flow, None)
    if clean.last.decision is not Decision.APPROVED or clean.problems:
        clean.problems.append(f"the clean tap: {clean.last.decision.value}: {clean.last.reason}")
        return [clean]
    amount = clean.last.charged_amount
    results = [clean]
    queue = first_faults(clean, cuts=isinstance(bench.card.inner, SimulatedCard))
    while queue:
        result = run_case(bench, flow, queue.pop(0), amount=amount)
        results.append(result)
        if retaps:
            queue += retap_faults(result, deep=deep)
    return results


def figures(results: Sequence[CaseResult]) -> str:
    """A table of the cases run: per card kind, flow and fault kind, how many, how the
    faulted tap ended, how many last taps were a recovered transaction, voided ones and
    problems."""
    rows: dict[tuple[str, str, str], Counter[str]] = {}
    for result in results:
        key = (result.kind, result.flow, "clean" if result.fault is None else result.fault.label)
        row = rows.setdefault(key, Counter())
        row["cases"] += 1
        row[result.first.decision.value] += 1
        row["recovered"] += result.last.recovered
        row["voided"] += result.voided
        row["problems"] += bool(result.problems)
    columns = ("cases", "interrupted", "error", "approved", "declined", "recovered", "voided",
               "problems")
    lines = [f"{'card':<14}{'flow':<13}{'fault':<22}" + "".join(f"{c:>12}" for c in columns)]
    for (kind, flow, label), row in sorted(rows.items()):
        lines.append(f"{kind:<14}{flow:<13}{label:<22}"
                     + "".join(f"{row[c]:>12}" for c in columns))
    return "\n".join(lines)


def problem_report(results: Sequence[CaseResult], limit: int = 40) -> str:
    bad = [r for r in results if r.problems]
    lines = [f"{r.kind} {r.fault or r.flow + ' (clean)'}: " + "; ".join(r.problems)
             for r in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"... and {len(bad) - limit} more")
    return "\n".join(lines)


# --- the SIGKILL campaign ---------------------------------------------------------------------

WORKER = Path(__file__).with_name("campaign_worker.py")
SIGKILL_CARDS = (101, 102, 103, 104)
"""The card numbers of the cards the killed terminal taps."""
SIGKILL_STEP = dt.timedelta(minutes=3)


def sigkill_time(n: int) -> dt.datetime:
    """When transaction n of the SIGKILL campaign happens: 3 minutes after the one before,
    so a card tapped again soon after a kill is within the recovery window."""
    return NOW + n * SIGKILL_STEP


@dataclass
class SigkillFigures:
    attempted: int = 0
    """Transactions the worker began (``begin`` printed)."""
    finished: int = 0
    kills: int = 0
    torn: int = 0
    """Kills after which the journal held a transaction begun and not completed."""
    decisions: Counter[str] = field(default_factory=Counter)
    recovered_completed: int = 0
    """Completed transactions flagged recovered (settled at a later presentation)."""
    voided: int = 0
    settled_by_final_pass: int = 0
    completed: int = 0
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        decisions = ", ".join(f"{k} {v}" for k, v in sorted(self.decisions.items()))
        return (f"{self.attempted} transactions attempted ({self.finished} saw their outcome: "
                f"{decisions}), {self.kills} SIGKILLs, {self.torn} of them between a "
                f"transaction's journal begin and its completion; {self.completed} completed "
                f"({self.recovered_completed} of them recovered after a kill), {self.voided} "
                f"voided, {self.settled_by_final_pass} settled by the final recovery pass")


def issue_sigkill_cards(directory: Path) -> dict[int, CardState]:
    """The card images, the PSAM image, and each card's state as issued."""
    from unioncard.applet_sim import MemberData, issue_member_card, issue_psam

    states = {}
    for card_no in SIGKILL_CARDS:
        member = MemberData("张三", f"2026{card_no:04d}", "市总工会", "11010519491231002X",
                            dt.date(2026, 1, 1), dt.date(2030, 12, 31),
                            category_flags=card_no % 3)
        card = issue_member_card(member, KEYS, card_no=card_no, transit_balance=5000,
                                 etc_balance=20000, plate="京A12345",
                                 issue_date=dt.date(2024, 1, 1))
        card.save(directory / f"card-{card_no}.json")
        states[card_no] = card_state(card)
    issue_psam(KEYS, "000000000003").save(directory / "psam.json")
    return states


def _cards_on_disk(directory: Path) -> dict[int, CardState]:
    return {n: card_state(SimulatedCard.load(directory / f"card-{n}.json"))
            for n in SIGKILL_CARDS}


def _run_worker(directory: Path, seed: str, first: int, delay: float) -> list[str]:
    """Start the worker, let it run ``delay`` s once it is ready, SIGKILL it; every line it
    printed whole."""
    child = subprocess.Popen([sys.executable, str(WORKER), str(directory), seed, str(first)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        ready = child.stdout.readline()
        if ready == "ready\n":
            time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        rest, errors = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if ready != "ready\n" or child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the worker ended by itself ({child.returncode}): {errors[-3000:]}")
    text = ready + rest
    return [line for line in text.splitlines(keepends=True)
                              if line.endswith("\n")]  # a line cut by the kill is no report


def sigkill_campaign(directory: Path, *, transactions: int, seed: str,
                     per_kill: float = 5) -> SigkillFigures:
    """Run the worker and SIGKILL it after a random time once it is ready (uniform, on
    average as long as ``per_kill`` transactions take on this machine, measured as it
    goes), again and again, until ``transactions`` were attempted; after each kill, check
    that the journal and every card agree (transactions may be pending); at the end present
    every card once more (`RecoveryPass` on each purse) and check that they agree exactly
    with nothing pending."""
    figures = SigkillFigures()
    initial = issue_sigkill_cards(directory)
    journal_path = directory / "journal.sqlite"
    chance = random.Random(seed)
    seen_pending: set[int] = set()
    running = 0.0
    while figures.attempted < transactions:
        per_transaction = running / figures.attempted if figures.attempted else 0.01
        delay = chance.uniform(0, 2 * per_kill * per_transaction)
        first = figures.attempted
        lines = _run_worker(directory, seed, first, delay)
        running += delay
        figures.kills += 1
        for line in lines:
            words = line.split()
            if words[0] == "begin":
                figures.attempted = int(words[1]) + 1
            elif words[0] == "end":
                figures.finished += 1
                figures.decisions[words[2]] += 1
        with TransactionJournal(journal_path) as journal:
            pending = {p.id for p in journal.pending() if p.id is not None}
            if pending - seen_pending:
                figures.torn += 1
            seen_pending |= pending
            for card_no, state in _cards_on_disk(directory).items():
                figures.problems += [f"after kill {figures.kills}, card {card_no}: {p}" for p in
                                     disagreements(journal, initial[card_no], state,
                                                   allow_pending=True)]
    when = sigkill_time(figures.attempted) + dt.timedelta(days=1)
    psam = InProcessTransport(SimulatedCard.load(directory / "psam.json", write_through=True))
    psam.power_on()
    with TransactionJournal(journal_path) as journal:
        before = len(journal.pending())
        for card_no in SIGKILL_CARDS:
            card = InProcessTransport(SimulatedCard.load(directory / f"card-{card_no}.json",
                                                         write_through=True))
            card.power_on()
            for app in (Application.TRANSIT, Application.ETC):
                run(RecoveryPass(app, now=when, pending=journal.pending()), card=Channel(card),
                    psam=Channel(psam), journal=journal)
        figures.settled_by_final_pass = before - len(journal.pending())
        for card_no, state in _cards_on_disk(directory).items():
            figures.problems += [f"at the end, card {card_no}: {p}"
                                 for p in disagreements(journal, initial[card_no], state)]
        entries = journal.entries()
        completed = [e for e in entries if e.state == "completed" and e.record is not None]
        figures.completed = len(completed)
        figures.recovered_completed = sum(1 for e in completed if e.record is not None
                                          and e.record.flags & RecordFlags.RECOVERED)
        figures.voided = sum(1 for e in entries if e.state == "voided")
    return figures
