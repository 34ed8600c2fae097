"""Purse conformance checks over the terminal engine: for your own cards, and for the simulator.

Each check runs transactions through the engine's sessions, exactly as a
terminal would (`unioncard.terminal.TransitPurchase` on the transit purse; on
the ETC purse `EtcExit` with a given toll for a paying purchase and `EtcEntry`
for the composite record; `Load` with the keystore's load host), then verifies
the card twice:

- through the engine: a `CardRead` gives the balance and the newest EF 0018 log
  record, compared field by field with the outcome's offline record (and the
  raw 23 bytes of that record);
- through the keystore: the TAC is recomputed with `unioncard.crypto.purse`
  from the offline record and the card keys derived from the keystore, as
  settlement does (`expected_tac`).

Checks about a card refusing a bad command send that command on purpose with
the builders of `unioncard.apdu.purse` (DEBIT without INITIALIZE: ``6985``), or
tamper with one link of an engine session: a PSAM link that corrupts MAC1, a
load host that answers a wrong MAC2, a card link that loses the DEBIT answer
after the card executed it (recovered by the engine with GET TRANSACTION
PROVE).  A check that finds the card deviating from docs/protocol.md raises
`CheckFailure` (a `unioncard.errors.CardError`) naming the check, the step and
the last exchanges.

`PurseRig` holds what the checks drive: the card and PSAM links (any object
with ``transmit(CommandAPDU) -> ResponseAPDU``, e.g. a `unioncard.transport.Channel`
over a PC/SC reader), the keystore, a transaction journal and a clock.
Non-destructive checks leave the card usable (a MAC error is followed by a
good transaction, which clears the card's error counter; a blocked purse is
unblocked); ``three_mac_errors`` locks the purse for good: give it a card you
can lose.  Card tests that send single commands on purpose share the step
helpers here (`prepare_debit`, `prepare_credit`, `select_application`) rather
than a terminal of their own.  docs/simulator.md, "Conformance checks", lists
the checks and runs them against a card over PC/SC.

>>> import datetime as dt
>>> from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
>>> from unioncard.crypto import Keystore
>>> keys = Keystore.test()
>>> member = MemberData("李四", "20260002", "市总工会", "110105194912310037",
...                     dt.date(2026, 1, 1), dt.date(2030, 12, 31))
>>> card = issue_member_card(member, keys, card_no=2, plate="京A12345")
>>> rig = PurseRig.in_process(card, issue_psam(keys, "001122334455"), keys)
>>> result = run_check("purchase", rig, app="etc")   # loads what is missing first
>>> result.balance_before - result.balance_after
150
>>> [name for name, check in CHECKS.items() if check.destructive]
['three_mac_errors']
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Protocol

from unioncard.apdu import SW, CommandAPDU, ResponseAPDU, command_name, records
from unioncard.apdu import purse as cmd
from unioncard.apdu.purse import bcd_datetime
from unioncard.apdu.records import size_of
from unioncard.crypto import purse as pc
from unioncard.crypto.keystore import CardKeys, Keystore, derive_card_keys
from unioncard.crypto.purse import TransactionType
from unioncard.errors import CardError, CryptoError, DecodeError, TransportError
from unioncard.offline import Application, OfflineRecord, RecordFlags
from unioncard.tariffs import Mode, RuleSet
from unioncard.terminal import (
    DEFAULT_RECOVERY_WINDOW,
    CardRead,
    Decision,
    EtcEntry,
    EtcExit,
    KeystoreLoadHost,
    Load,
    LoadAuthorization,
    LoadHost,
    LoadRequest,
    Outcome,
    Session,
    TransactionJournal,
    TransitPurchase,
    run,
)
from unioncard.terminal.card import (
    CAPP_SFI,
    ETC_DF,
    LOG_SFI,
    MF,
    TRANSIT_AID,
    PurseCard,
    select_purse,
)
from unioncard.terminal.etc import CHINA_STANDARD_TIME, TollStatus
from unioncard.terminal.session import Refused
from unioncard.transport import Channel, InProcessTransport, VirtualCard

__all__ = [
    "APPS",
    "CHECKS",
    "Check",
    "CheckFailure",
    "CheckResult",
    "Exchange",
    "PreparedCredit",
    "PreparedDebit",
    "PurseRig",
    "expected_tac",
    "prepare_credit",
    "prepare_debit",
    "run_check",
    "select_application",
]

APPS = {"transit": Application.TRANSIT, "etc": Application.ETC}
"""The purses a check applies to, by the names the checks use."""

DEFAULT_START = dt.datetime(2026, 3, 15, 8, 30)
DEFAULT_STEP = dt.timedelta(minutes=1)
MAX_BALANCE = 100_000
"""The purse maximum of the profile (docs/protocol.md §1.6): 1000.00 yuan."""
NO_BENEFITS = RuleSet((), name="no member benefits",
                      description="the checks charge the list amount")
TOLL_NETWORK, ENTRY_STATION, EXIT_STATION, TOLL_LANE = 0x1101, 0x0203, 0x0007, 4
"""Where the ETC checks' toll lanes are (a toll given by the lane: no toll table)."""
TRAIL = 6
"""Exchanges a `CheckFailure` shows."""

_TYPE_NAMES: dict[int, str] = {
    TransactionType.EP_LOAD: "load", TransactionType.EP_PURCHASE: "purchase",
    TransactionType.CAPP_PURCHASE: "composite purchase"}
"""Transaction types as `CardRead` names them in a log entry."""
_INITIALIZE, _DEBIT, _CREDIT = 0x50, 0x54, 0x52


class ApduLink(Protocol):
    """A card or PSAM link: `unioncard.transport.Channel` is one."""

    def transmit(self, command: CommandAPDU) -> ResponseAPDU: ...


# --- failures and results ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One command and its answer (None: the link failed, ``error`` says how); ``number``
    counts the rig's exchanges from 1."""

    number: int
    device: str
    command: CommandAPDU
    response: ResponseAPDU | None
    error: str = ""

    def __str__(self) -> str:
        answer = (self.response.to_bytes().hex().upper() if self.response is not None
                  else f"no answer ({self.error})")
        return f"{self.device} {self.command.to_bytes().hex().upper()} -> {answer}"


class CheckFailure(CardError):
    """A card (or PSAM) answered otherwise than docs/protocol.md says.

    ``check``, ``app`` and ``step`` say where; ``detail`` what was wrong;
    ``exchanges`` are the last APDUs, newest last.
    """

    def __init__(self, detail: str, *, check: str = "", app: str = "", step: str = "",
                 exchanges: tuple[Exchange, ...] = ()) -> None:
        where = f"{check} ({app} purse), at {step}: " if check else ""
        trail = "; ".join(str(e) for e in exchanges)
        super().__init__(f"{where}{detail}" + (f" [last exchanges: {trail}]" if trail else ""))
        self.detail = detail
        self.check, self.app, self.step = check, app, step
        self.exchanges = exchanges


@dataclass(slots=True)
class CheckResult:
    """What a passed check saw: the purse's balance before and after, the engine's outcomes."""

    name: str
    app: str
    balance_before: int
    balance_after: int
    outcomes: list[Outcome] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


# --- the rig ---------------------------------------------------------------------------------


class _Recorded:
    """A link that notes every exchange in the rig's trail."""

    def __init__(self, link: ApduLink, device: str, rig: PurseRig) -> None:
        self.link, self.device, self._rig = link, device, rig

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        try:
            response = self.link.transmit(command)
        except Exception as exc:
            self._rig._note(self.device, command, None, f"{type(exc).__name__}: {exc}")
            raise
        self._rig._note(self.device, command, response)
        return response


class PurseRig:
    """The card and PSAM links, the keystore, a journal and a clock that the checks drive.

    ``card`` and ``psam`` are links with ``transmit(CommandAPDU) -> ResponseAPDU``
    (a `unioncard.transport.Channel` over any transport: T=0 is handled there);
    every exchange is kept in `exchanges` (the newest 64).  ``journal`` is a
    `TransactionJournal`, a path to open one at (closed by `close`), or None for
    one in memory.  Each transaction gets the time `tick` gives: ``start``, then
    one ``step`` later each time (the step stays under the engine's recovery
    window, so a re-presented card counts as the same tap).  ``present_again``,
    when given, re-powers the card after a simulated pull (a transport's
    ``power_on`` or ``reset``).  ``rules`` prices the transactions: by default
    none, so the card is charged the amounts the checks ask for.  ``host`` is the
    load host (the keystore's by default); ``max_balance`` the purse maximum of
    docs/protocol.md §1.6.  A rig serves one card: it remembers the card keys it
    derived for each purse.  Its sessions get the journal's pending transactions but
    not its MAC refusals (a terminal stops retrying a card that refused its MAC1; the
    checks provoke such refusals on purpose).
    """

    def __init__(
        self, card: ApduLink, psam: ApduLink, keys: Keystore, *,
        journal: TransactionJournal | str | Path | None = None,
        start: dt.datetime = DEFAULT_START, step: dt.timedelta = DEFAULT_STEP,
        present_again: Callable[[], object] | None = None, rules: RuleSet | None = None,
        host: LoadHost | None = None, max_balance: int = MAX_BALANCE,
    ) -> None:
        if not dt.timedelta(seconds=1) <= step < DEFAULT_RECOVERY_WINDOW:
            raise ValueError(f"the clock step must be 1 s or more and under the recovery "
                             f"window ({DEFAULT_RECOVERY_WINDOW})")
        self.exchanges: deque[Exchange] = deque(maxlen=64)
        self.count = 0
        """Exchanges so far (`Exchange.number` of the newest)."""
        self.card: ApduLink = _Recorded(card, "card", self)
        self.psam: ApduLink = _Recorded(psam, "PSAM", self)
        self.keys = keys
        self._own_journal = not isinstance(journal, TransactionJournal)
        self.journal = (journal if isinstance(journal, TransactionJournal)
                        else TransactionJournal(":memory:" if journal is None else journal))
        self.clock = start.replace(microsecond=0)
        self.step = step
        self.present_again = present_again
        self.rules = rules if rules is not None else NO_BENEFITS
        self.host: LoadHost = host if host is not None else KeystoreLoadHost(keys)
        self.max_balance = max_balance
        self._terminal_id: bytes | None = None
        self._card_keys: dict[str, CardKeys] = {}

    @classmethod
    def in_process(cls, card: VirtualCard, psam: VirtualCard, keys: Keystore,
                   **options: Any) -> PurseRig:
        """A rig over cards in this process (`InProcessTransport`), powered on here;
        ``present_again`` defaults to a cold power-up of the card."""
        card_transport, psam_transport = InProcessTransport(card), InProcessTransport(psam)
        card_transport.power_on()
        psam_transport.power_on()
        options.setdefault("present_again", card_transport.power_on)
        return cls(Channel(card_transport), Channel(psam_transport), keys, **options)

    # --- time, terminal, engine ----------------------------------------------------------

    def tick(self) -> dt.datetime:
        """The time of the next transaction (the clock then moves one step on)."""
        now, self.clock = self.clock, self.clock + self.step
        return now

    @property
    def terminal_id(self) -> bytes:
        """The PSAM's terminal id (``00 B0 96 00 06``), read once."""
        if self._terminal_id is None:
            answer = self.psam.transmit(cmd.sam_read_terminal_id())
            if answer.sw != SW.OK or len(answer.data) != 6:
                raise CardError(f"the PSAM answered READ terminal id with {answer.sw:04X} and "
                                f"{len(answer.data)} bytes")
            self._terminal_id = answer.data
        return self._terminal_id

    def run(self, session: Session, *, card: ApduLink | None = None,
            psam: ApduLink | None = None, host: LoadHost | None = None) -> Outcome:
        """``unioncard.terminal.run`` with the rig's links, journal and load host (or others)."""
        return run(session, card=card or self.card, psam=psam or self.psam,
                   journal=self.journal, host=host or self.host)

    def _options(self) -> dict[str, Any]:
        return {"now": self.tick(), "pending": self.journal.pending(), "rules": self.rules}

    def purchase_session(self, app: str, amount: int) -> Session:
        """A paying purchase of ``amount`` fen: a bus fare on the transit purse, a toll
        given by the lane (`EtcExit`, a composite purchase) on the ETC purse."""
        if _application(app) is Application.TRANSIT:
            return TransitPurchase(Mode.BUS, amount, **self._options())
        return EtcExit(amount=amount, network=TOLL_NETWORK, station=EXIT_STATION,
                       lane=TOLL_LANE, **self._options())

    def purchase(self, app: str, amount: int, **links: Any) -> Outcome:
        """Run `purchase_session` (``card=``, ``psam=`` replace the rig's links)."""
        return self.run(self.purchase_session(app, amount), **links)

    def entry_session(self, vehicle_class: int = 1) -> Session:
        """An ETC entry (`EtcEntry`): a composite purchase of 0 writing the entry record."""
        return EtcEntry(network=TOLL_NETWORK, station=ENTRY_STATION, lane=TOLL_LANE,
                        vehicle_class=vehicle_class, **self._options())

    def load_session(self, app: str, amount: int) -> Session:
        """A load (`Load`) of ``amount`` fen at the PSAM's terminal id."""
        return Load(_application(app), amount, terminal_id=self.terminal_id, **self._options())

    def load(self, app: str, amount: int, **links: Any) -> Outcome:
        """Run `load_session` (``host=`` replaces the load host)."""
        return self.run(self.load_session(app, amount), **links)

    def read(self) -> Outcome:
        """A card read (`CardRead`)."""
        return self.run(CardRead())

    # --- keys and maintenance --------------------------------------------------------------

    def card_keys(self, app: str) -> CardKeys:
        """The purse's keys, derived from the keystore at the key version its INITIALIZE
        gives (docs/protocol.md §1.5) and its EF 0015 diversifier; remembered per purse."""
        if app not in self._card_keys:
            card = _select_purse(self.card, app)
            init = self.card.transmit(cmd.initialize_for_purchase(0, self.terminal_id))
            if init.sw == SW.OK and len(init.data) == size_of(cmd.INIT_PURCHASE_RESPONSE):
                master = self.keys.by_version(
                    cmd.parse(cmd.INIT_PURCHASE_RESPONSE, init.data).key_version)
            else:
                master = self.keys.purse_keys(app)
            self._card_keys[app] = derive_card_keys(master, card.diversifier)
        return self._card_keys[app]

    def maintenance(self, app: str, *, unblock: bool = False, permanent: bool = False,
                    mac: bytes | None = None) -> ResponseAPDU:
        """GET CHALLENGE, then APPLICATION BLOCK (UNBLOCK) of the selected purse with the
        MAC of the keystore's maintenance key (or ``mac``); the card's answer."""
        keys = self.card_keys(app)
        challenge = self.card.transmit(cmd.get_challenge())
        if challenge.sw != SW.OK or len(challenge.data) != 4:
            raise CardError(f"GET CHALLENGE answered {challenge.sw:04X}")

        def build(value: bytes) -> CommandAPDU:
            return (cmd.application_unblock(value) if unblock
                    else cmd.application_block(value, permanent=permanent))

        header = build(bytes(4)).to_bytes()[:5]
        value = mac if mac is not None else pc.maintenance_mac(keys.maintenance,
                                                               challenge.data, header)
        return self.card.transmit(build(value))

    # --- the trail -------------------------------------------------------------------------

    def _note(self, device: str, command: CommandAPDU, response: ResponseAPDU | None,
              error: str = "") -> None:
        self.count += 1
        self.exchanges.append(Exchange(self.count, device, command, response, error))

    def answer_to(self, ins: int, *, p1: int | None = None, device: str = "card",
                  since: int = 0) -> Exchange | None:
        """The newest exchange of ``device`` whose command has this INS (and P1), among
        those numbered above ``since``."""
        for exchange in reversed(self.exchanges):
            command = exchange.command
            if exchange.number <= since:
                break
            if (exchange.device == device and command.ins == ins
                    and (p1 is None or command.p1 == p1)):
                return exchange
        return None

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the journal when the rig opened it."""
        if self._own_journal:
            self.journal.close()

    def __enter__(self) -> PurseRig:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _application(app: str) -> Application:
    try:
        return APPS[app]
    except KeyError:
        raise ValueError(f"unknown purse {app!r} (transit or etc)") from None


def _select_purse(link: ApduLink, app: str) -> PurseCard:
    """SELECT the purse and read its EF 0015 with the engine's own sub-flow
    (`unioncard.terminal.card.select_purse`); `CardError` when the card refuses."""
    flow = select_purse(_application(app))
    try:
        step = next(flow)
        while True:
            step = flow.send(link.transmit(step.apdu))
    except StopIteration as stop:
        card: PurseCard = stop.value
        return card
    except Refused as refused:
        raise CardError(refused.reason) from None


def select_application(link: ApduLink, app: str) -> ResponseAPDU:
    """SELECT the transit purse (by AID) or the ETC purse (MF, then DF 1001): the answer
    of the last SELECT (of the MF when that one fails)."""
    if _application(app) is Application.TRANSIT:
        return link.transmit(cmd.select_by_name(TRANSIT_AID))
    mf = link.transmit(cmd.select_file(MF))
    return mf if mf.sw != SW.OK else link.transmit(cmd.select_file(ETC_DF))


def expected_tac(keys: Keystore, record: OfflineRecord) -> bytes:
    """The TAC of an offline record, recomputed from the keystore as settlement does:
    the card's TAC key (DTK) at the record's key version and diversifier, then
    the load TAC or the purchase TAC over the record's fields (docs/protocol.md §2.4)."""
    dtk = derive_card_keys(keys.by_version(record.key_version), record.diversifier).tac
    date, time = bcd_datetime(record.when)
    if record.is_load:
        return pc.load_tac(dtk, record.balance_after, record.card_seq, record.charged_amount,
                           record.tx_type, record.terminal_id, date, time)
    return pc.purchase_tac(dtk, record.charged_amount, record.tx_type, record.terminal_id,
                           record.terminal_seq, date, time)


# --- single steps, for card tests that send commands on purpose -------------------------------


@dataclass(frozen=True, slots=True)
class PreparedDebit:
    """A purchase up to its DEBIT: INITIALIZE's answer, the PSAM's terminal seq and MAC1.

    ``command`` is the DEBIT to send; ``debit(mac1=...)`` builds it with another MAC1.
    """

    card: PurseCard
    terminal_id: bytes
    date: bytes
    time: bytes
    amount: int
    tx_type: int
    balance: int
    offline_seq: int
    key_version: int
    random: bytes
    terminal_seq: int
    mac1: bytes

    def debit(self, mac1: bytes | None = None) -> CommandAPDU:
        return cmd.debit_for_purchase(self.terminal_seq, self.date, self.time,
                                      self.mac1 if mac1 is None else mac1)

    @property
    def command(self) -> CommandAPDU:
        return self.debit()


def prepare_debit(card: ApduLink, psam: ApduLink, app: str, amount: int, *,
                  when: dt.datetime, capp: bool = False, capp_record: bytes | None = None,
                  terminal_id: bytes | None = None) -> PreparedDebit:
    """Select the purse, INITIALIZE FOR (CAPP) PURCHASE, get MAC1 from the PSAM and, with
    ``capp_record``, UPDATE CAPP DATA CACHE: everything a DEBIT needs, nothing sent
    after.  A composite purchase (type ``09``) with ``capp`` or a record.  Raises
    `CardError` when an answer is not ``9000``."""
    capp = capp or capp_record is not None
    if terminal_id is None:
        answer = psam.transmit(cmd.sam_read_terminal_id())
        terminal_id = _ok(answer, "READ terminal id (PSAM)", 6)
    purse = _select_purse(card, app)
    initialize = cmd.initialize_for_capp_purchase if capp else cmd.initialize_for_purchase
    init = cmd.parse(cmd.INIT_PURCHASE_RESPONSE, _ok(
        card.transmit(initialize(amount, terminal_id)), "INITIALIZE FOR PURCHASE",
        size_of(cmd.INIT_PURCHASE_RESPONSE)))
    tx_type = TransactionType.CAPP_PURCHASE if capp else TransactionType.EP_PURCHASE
    date, time = bcd_datetime(when)
    sam = cmd.parse(cmd.SAM_PURCHASE_RESPONSE, _ok(psam.transmit(cmd.sam_init_for_purchase(
        random=init.random, offline_seq=init.offline_seq, amount=amount, tx_type=tx_type,
        date=date, time=time, key_version=init.key_version, alg_id=init.alg_id,
        diversifier=purse.diversifier)), "INIT SAM FOR PURCHASE",
        size_of(cmd.SAM_PURCHASE_RESPONSE)))
    if capp_record is not None:
        _ok(card.transmit(cmd.update_capp_data_cache(capp_record, CAPP_SFI)),
            "UPDATE CAPP DATA CACHE")
    return PreparedDebit(purse, terminal_id, date, time, amount, tx_type, init.balance,
                         init.offline_seq, init.key_version, init.random, sam.terminal_seq,
                         sam.mac1)


@dataclass(frozen=True, slots=True)
class PreparedCredit:
    """A load up to its CREDIT: INITIALIZE FOR LOAD's answer and the load host's MAC2.

    ``command`` is the CREDIT FOR LOAD to send; ``credit(mac2=...)`` builds it with
    another MAC2.
    """

    card: PurseCard
    terminal_id: bytes
    date: bytes
    time: bytes
    amount: int
    balance: int
    online_seq: int
    key_version: int
    random: bytes
    mac2: bytes

    def credit(self, mac2: bytes | None = None) -> CommandAPDU:
        return cmd.credit_for_load(self.date, self.time, self.mac2 if mac2 is None else mac2)

    @property
    def command(self) -> CommandAPDU:
        return self.credit()


def prepare_credit(card: ApduLink, keys: Keystore | LoadHost, app: str, amount: int, *,
                   when: dt.datetime, terminal_id: bytes) -> PreparedCredit:
    """Select the purse, INITIALIZE FOR LOAD and have the load host (the keystore's)
    check the card's MAC1 and give MAC2: everything CREDIT FOR LOAD needs.  Loads of
    0 are allowed here (the engine's `Load` refuses them).  Raises `CardError` when an
    answer is not ``9000`` or the host refuses."""
    host = KeystoreLoadHost(keys) if isinstance(keys, Keystore) else keys
    purse = _select_purse(card, app)
    init = cmd.parse(cmd.INIT_LOAD_RESPONSE, _ok(
        card.transmit(cmd.initialize_for_load(amount, terminal_id)), "INITIALIZE FOR LOAD",
        size_of(cmd.INIT_LOAD_RESPONSE)))
    authorization = host.authorize(LoadRequest(
        key_version=init.key_version, diversifier=purse.diversifier, balance=init.balance,
        online_seq=init.online_seq, random=init.random, amount=amount,
        terminal_id=terminal_id, when=when, mac1=init.mac1))
    if not authorization.approved:
        raise CardError(f"the load host refused: {authorization.reason}")
    date, time = bcd_datetime(when)
    return PreparedCredit(purse, terminal_id, date, time, amount, init.balance,
                          init.online_seq, init.key_version, init.random, authorization.mac2)


def _ok(answer: ResponseAPDU, what: str, size: int | None = None) -> bytes:
    if answer.sw != SW.OK or (size is not None and len(answer.data) != size):
        raise CardError(f"{what} answered {answer.sw:04X} with {len(answer.data)} bytes")
    return answer.data


# --- tampered links ----------------------------------------------------------------------------


class _CorruptMac1:
    """A PSAM link whose MAC1 answers (``80 70``) come back with MAC1 inverted."""

    def __init__(self, psam: ApduLink) -> None:
        self.psam = psam

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        answer = self.psam.transmit(command)
        if command.cla == 0x80 and command.ins == 0x70 and answer.sw == SW.OK \
                and len(answer.data) == 8:
            return ResponseAPDU(answer.data[:4] + bytes(b ^ 0xFF for b in answer.data[4:]),
                                answer.sw)
        return answer


class _WrongMac2:
    """A load host that approves with a MAC2 the card must refuse."""

    def __init__(self, host: LoadHost) -> None:
        self.host = host

    def authorize(self, request: LoadRequest) -> LoadAuthorization:
        answer = self.host.authorize(request)
        if not answer.approved:
            return answer
        return LoadAuthorization(True, bytes(b ^ 0xFF for b in answer.mac2))


class _LoseDebitAnswer:
    """A card link that sends DEBIT to the card, keeps its answer in ``lost`` and reports
    the link lost instead (the card was pulled just as it answered)."""

    def __init__(self, card: ApduLink) -> None:
        self.card = card
        self.lost: ResponseAPDU | None = None

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        answer = self.card.transmit(command)
        if command.cla == 0x80 and command.ins == _DEBIT:
            self.lost = answer
            raise TransportError("the card was pulled before its DEBIT answer arrived "
                                 "(simulated)")
        return answer


# --- running a check ---------------------------------------------------------------------------


class _Run:
    """One check on one purse: its current step, its failures, what it sends."""

    def __init__(self, rig: PurseRig, name: str, app: str) -> None:
        self.rig, self.name, self.app = rig, name, app
        self.application = _application(app)
        self.step = "start"
        self.outcomes: list[Outcome] = []
        self.mark = rig.count
        """`PurseRig.count` when the last session started."""

    def at(self, step: str) -> None:
        self.step = step

    def fail(self, detail: str) -> NoReturn:
        raise CheckFailure(detail, check=self.name, app=self.app, step=self.step,
                           exchanges=tuple(self.rig.exchanges)[-TRAIL:])

    def equal(self, what: str, got: object, want: object) -> None:
        if got != want:
            self.fail(f"{what} is {_show(got)}, expected {_show(want)}")

    def result(self, before: int, after: int, **details: Any) -> CheckResult:
        return CheckResult(self.name, self.app, before, after, self.outcomes, details)

    # --- commands on purpose ---------------------------------------------------------------

    def send(self, command: CommandAPDU, status: int = SW.OK, *, size: int | None = None,
             what: str | None = None) -> bytes:
        """Send to the card; fail unless the status word (and the data size) are right."""
        what = what or command_name(command.to_bytes())
        try:
            answer = self.rig.card.transmit(command)
        except (TransportError, CardError, DecodeError) as exc:
            self.fail(f"{what} got no answer: {exc}")
        if answer.sw != status or (size is not None and len(answer.data) != size):
            want = f"{status:04X}" + ("" if size is None else f" with {size} bytes")
            self.fail(f"{what} answered {answer.sw:04X} with {len(answer.data)} bytes, "
                      f"expected {want}")
        return answer.data

    def select(self, *statuses: int) -> None:
        """SELECT the purse; it must answer one of ``statuses`` (9000 by default)."""
        statuses = statuses or (SW.OK,)
        name = "SELECT transit purse" if self.application is Application.TRANSIT \
            else "SELECT ETC application"
        try:
            answer = select_application(self.rig.card, self.app)
        except (TransportError, CardError, DecodeError) as exc:
            self.fail(f"{name} got no answer: {exc}")
        if answer.sw not in statuses:
            self.fail(f"{name} answered {answer.sw:04X}, expected "
                      + " or ".join(f"{s:04X}" for s in statuses))

    def initialize(self, kind: cmd.InitKind, amount: int, status: int = SW.OK) -> Any:
        """INITIALIZE of the selected purse; its parsed answer when ``9000`` is expected."""
        builder = {cmd.InitKind.LOAD: cmd.initialize_for_load,
                   cmd.InitKind.PURCHASE: cmd.initialize_for_purchase,
                   cmd.InitKind.CAPP_PURCHASE: cmd.initialize_for_capp_purchase}[kind]
        layout = cmd.INIT_LOAD_RESPONSE if kind is cmd.InitKind.LOAD \
            else cmd.INIT_PURCHASE_RESPONSE
        data = self.send(builder(amount, self.rig.terminal_id), status,
                         size=size_of(layout) if status == SW.OK else None)
        return cmd.parse(layout, data) if status == SW.OK else None

    def offline_seq(self) -> int:
        """The purse's offline seq, as INITIALIZE FOR PURCHASE of 0 tells it."""
        self.select()
        return int(self.initialize(cmd.InitKind.PURCHASE, 0).offline_seq)

    def online_seq(self) -> int:
        """The purse's online seq, as INITIALIZE FOR LOAD of 0 tells it."""
        self.select()
        return int(self.initialize(cmd.InitKind.LOAD, 0).online_seq)

    def answer(self, ins: int) -> ResponseAPDU | None:
        """The card's answer to the last command with this INS in the last session."""
        exchange = self.rig.answer_to(ins, since=self.mark)
        return None if exchange is None else exchange.response

    def expect_refusal(self, ins: int, what: str, *statuses: int) -> None:
        """The last session's ``what`` (by INS) was answered one of ``statuses``."""
        answer = self.answer(ins)
        if answer is None or answer.sw not in statuses:
            got = "nothing" if answer is None else f"{answer.sw:04X}"
            self.fail(f"{what} answered {got}, expected "
                      + " or ".join(f"{s:04X}" for s in statuses))

    def maintenance(self, what: str, status: int, **options: Any) -> None:
        """APPLICATION BLOCK or UNBLOCK with the keystore's MAC (`PurseRig.maintenance`)."""
        try:
            answer = self.rig.maintenance(self.app, **options)
        except (TransportError, CardError, DecodeError, CryptoError) as exc:
            self.fail(f"{what} failed: {exc}")
        if answer.sw != status:
            self.fail(f"{what} answered {answer.sw:04X}, expected {status:04X}")

    def card_keys(self) -> CardKeys:
        try:
            return self.rig.card_keys(self.app)
        except (TransportError, CardError, DecodeError, CryptoError) as exc:
            self.fail(f"cannot derive the purse's keys: {exc}")

    # --- engine sessions -------------------------------------------------------------------

    def session(self, what: str, session: Session, expect: Decision | None = Decision.APPROVED,
                **links: Any) -> Outcome:
        self.mark = self.rig.count
        outcome = self.rig.run(session, **links)
        self.outcomes.append(outcome)
        if expect is not None and outcome.decision is not expect:
            self.fail(f"the {what} was {outcome.decision.value} ({outcome.reason}), expected "
                      f"{expect.value}")
        return outcome

    def refused(self, outcome: Outcome, what: str) -> None:
        """The terminal refused the transaction (declined, or the terminal's error), with
        nothing left pending."""
        if outcome.decision not in (Decision.DECLINED, Decision.ERROR):
            self.fail(f"the {what} was {outcome.decision.value} ({outcome.reason}), expected "
                      "it refused")

    def purchase(self, amount: int, expect: Decision | None = Decision.APPROVED,
                 **links: Any) -> Outcome:
        what = "purchase" if self.application is Application.TRANSIT else "toll (ETC exit)"
        return self.session(what, self.rig.purchase_session(self.app, amount), expect, **links)

    def load(self, amount: int, expect: Decision | None = Decision.APPROVED,
             **links: Any) -> Outcome:
        return self.session("load", self.rig.load_session(self.app, amount), expect, **links)

    def read(self) -> dict[str, Any]:
        """The purse as `CardRead` shows it (fails when the card has no such purse)."""
        outcome = self.session("card read", CardRead())
        for purse in outcome.details["purses"]:
            if purse["application"] == self.app:
                if not purse["present"]:
                    self.fail(f"the card read finds no {self.app} purse: {purse['reason']}")
                return dict(purse)
        self.fail(f"the card read does not list the {self.app} purse")

    def balance(self) -> int:
        return int(self.read()["balance"])

    def ensure_balance(self, minimum: int) -> int:
        """Load what is missing for ``minimum`` (a verified load); the balance."""
        balance = self.balance()
        if balance < minimum:
            self.at(f"loading {minimum - balance} fen to reach {minimum}")
            outcome = self.load(minimum - balance)
            self.verify(outcome, balance)
            balance = minimum
        return balance

    def make_room(self, amount: int) -> int:
        """Spend ``amount`` (a verified purchase) when the purse is at its maximum, so that
        a load has room; the balance."""
        balance = self.balance()
        if balance >= self.rig.max_balance:
            self.at(f"spending {amount} fen to make room for a load")
            self.verify(self.purchase(amount), balance)
            balance -= amount
        return balance

    def clear_mac_errors(self) -> None:
        """A good purchase of 0: a right MAC clears the card's MAC error counter."""
        self.at("a good purchase of 0 (clears the MAC error counter)")
        before = self.balance()
        self.verify(self.purchase(0), before)

    # --- verification ----------------------------------------------------------------------

    def verify(self, outcome: Outcome, before: int) -> OfflineRecord:
        """An approved transaction, checked against the outcome's offline record on the card
        (`CardRead`: balance, EF 0018) and with the keystore (TAC; a purchase's MAC2, which
        the PSAM must have accepted too).  Right after the transaction's session."""
        record = outcome.record
        if record is None:
            self.fail(f"the approved {outcome.flow} has no offline record")
        if not record.is_load and not outcome.recovered:
            init, debit = self.answer(_INITIALIZE), self.answer(_DEBIT)
            sam = self.rig.answer_to(0x72, device="PSAM", since=self.mark)
            if init is None or debit is None:
                self.fail("the approved purchase sent no INITIALIZE or no DEBIT")
            mac2 = cmd.parse(cmd.DEBIT_RESPONSE, debit.data).mac2
            random = cmd.parse(cmd.INIT_PURCHASE_RESPONSE, init.data).random
            self.equal("MAC2 of the DEBIT answer (vs the keystore's)", mac2,
                       _mac2(self.rig.keys, record, random))
            if sam is None or sam.response is None or sam.response.sw != SW.OK:
                got = "nothing" if sam is None or sam.response is None \
                    else f"{sam.response.sw:04X}"
                self.fail(f"CREDIT SAM FOR PURCHASE (MAC2) answered {got}, expected 9000")
        load = record.is_load
        amount = record.charged_amount
        after = before + amount if load else before - amount
        what = "load" if load else "purchase"
        self.equal("the balance INITIALIZE gave (vs GET BALANCE before)",
                   outcome.balance_before, before)
        self.equal(f"the balance after the {what} (outcome)", outcome.balance_after, after)
        self.equal(f"the balance after the {what} (offline record)", record.balance_after, after)
        tac = expected_tac(self.rig.keys, record)
        if record.flags & RecordFlags.NO_TAC or tac != record.tac:
            label = "load TAC" if load else "TAC"
            self.fail(f"{label} {record.tac.hex().upper()} does not verify with the keystore "
                      f"(expected {tac.hex().upper()})")
        purse = self.read()
        self.equal(f"the balance after the {what} (GET BALANCE)", purse["balance"], after)
        if not purse["log"]:
            self.fail("the card's log (EF 0018) is empty after the transaction")
        date, time = bcd_datetime(record.when)
        want = {"seq": record.card_seq,
                "type": _TYPE_NAMES.get(record.tx_type, f"{record.tx_type:02X}"),
                "amount": amount, "terminal_id": record.terminal_id.hex().upper(),
                "date": record.when.strftime("%Y-%m-%d"),
                "time": record.when.strftime("%H:%M:%S")}
        self.equal("log record 1 (EF 0018)", {k: purse["log"][0].get(k) for k in want}, want)
        self.select()
        raw = self.send(cmd.read_record(LOG_SFI, 1, size_of(records.LOG_RECORD)),
                        size=size_of(records.LOG_RECORD), what="READ RECORD EF 0018 #1")
        self.equal("log record 1 (EF 0018), raw", raw, records.build(
            records.STORED_LOG_RECORD, seq=record.card_seq, overdraft=0, amount=amount,
            tx_type=record.tx_type, terminal_id=record.terminal_id, date=date, time=time))
        return record

    def no_pending(self) -> None:
        pending = self.rig.journal.pending()
        if pending:
            self.fail(f"{len(pending)} transaction(s) stay pending in the journal: "
                      + ", ".join(f"{p.flow} #{p.id}" for p in pending))

    def read_toll_record(self) -> bytes:
        self.select()
        size = size_of(records.CAPP_RECORD)
        return self.send(cmd.read_record(CAPP_SFI, 1, size), size=size,
                         what="READ RECORD EF 0019 #1")


def _toll_record(outcome: Outcome, status: int) -> bytes:
    """EF 0019 record 1 as it must be after the ETC entry or exit ``outcome`` (docs/protocol.md
    §4.5): this lane, the unix time of the transaction (China time), class 1, the plate."""
    assert outcome.record is not None
    station = ENTRY_STATION if status == TollStatus.ETC_ENTRY else EXIT_STATION
    plate = outcome.details.get("card", {}).get("plate", "")
    unix = calendar.timegm(outcome.record.when.replace(tzinfo=CHINA_STANDARD_TIME)
                           .utctimetuple())
    return records.build(
        records.CAPP_RECORD, lock=0, network=TOLL_NETWORK.to_bytes(2, "big"),
        station=station.to_bytes(2, "big"), lane=TOLL_LANE, unix_time=unix, vehicle_class=1,
        status=status, marker_station=bytes(9), staff_no=bytes(3), shift=0, plate=plate,
        reserved=bytes(4))


def _mac2(keys: Keystore, record: OfflineRecord, random: bytes) -> bytes:
    """A purchase's MAC2 from the keystore: the session key of the card's DPK, INITIALIZE's
    random and offline seq and the PSAM's terminal seq, over the amount (docs/protocol.md §2.4)."""
    dpk = derive_card_keys(keys.by_version(record.key_version), record.diversifier).purchase
    sespk = pc.purchase_session_key(dpk, random, record.card_seq, record.terminal_seq)
    return pc.purchase_mac2(sespk, record.charged_amount)


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex().upper()
    return repr(value)


# --- the checks ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """A named check: the purses it applies to, and whether it ruins the card."""

    name: str
    run: Callable[[PurseRig, str], CheckResult]
    apps: tuple[str, ...] = ("transit", "etc")
    destructive: bool = False

    @property
    def description(self) -> str:
        doc = self.run.__doc__ or ""
        return " ".join(doc.split("\n\n")[0].split())


CHECKS: dict[str, Check] = {}
"""Every check by name, in the order they are best run on one card."""


def _check(name: str, apps: tuple[str, ...] = ("transit", "etc"), destructive: bool = False
           ) -> Callable[[Callable[[PurseRig, str], CheckResult]],
                         Callable[[PurseRig, str], CheckResult]]:
    def register(function: Callable[[PurseRig, str], CheckResult]
                 ) -> Callable[[PurseRig, str], CheckResult]:
        CHECKS[name] = Check(name, function, apps, destructive)
        return function
    return register


PURCHASE_AMOUNT, LOAD_AMOUNT, CAPP_AMOUNT, SMALL_AMOUNT, PROVE_AMOUNT = 150, 5_000, 2_000, 100, 120


@_check("purchase")
def check_purchase(rig: PurseRig, app: str) -> CheckResult:
    """A purchase through the PSAM: INITIALIZE's balance is GET BALANCE's; the balance,
    the log record and the TAC follow; the offline seq moves on by one.

    On the transit purse a bus fare (type ``06``), on the ETC purse a toll given
    by the lane (composite, ``09``); loads first when the purse is short.
    """
    t = _Run(rig, "purchase", app)
    t.at("balance before")
    before = t.ensure_balance(PURCHASE_AMOUNT)
    t.at("purchase")
    outcome = t.purchase(PURCHASE_AMOUNT)
    record = t.verify(outcome, before)
    t.at("offline seq after the purchase")
    t.equal("offline seq", t.offline_seq(), record.card_seq + 1)
    return t.result(before, before - PURCHASE_AMOUNT, terminal_seq=record.terminal_seq,
                    tac=record.tac.hex().upper())


@_check("load")
def check_load(rig: PurseRig, app: str) -> CheckResult:
    """A load with the host's MAC2 (the host checks the card's MAC1): balance, log record,
    TAC, online seq; INITIALIZE FOR LOAD above the maximum balance answers ``9402``."""
    t = _Run(rig, "load", app)
    t.at("balance before")
    before = t.make_room(LOAD_AMOUNT)
    amount = min(LOAD_AMOUNT, rig.max_balance - before)
    t.at("load")
    record = t.verify(t.load(amount), before)
    after = before + amount
    t.at("load above the maximum balance")
    t.select()
    t.initialize(cmd.InitKind.LOAD, rig.max_balance - after + 1, SW.COUNTER_OVERFLOW)
    t.at("online seq after the load")
    t.equal("online seq", t.online_seq(), record.card_seq + 1)
    return t.result(before, after, tac=record.tac.hex().upper())


@_check("capp_purchase", apps=("etc",))
def check_capp_purchase(rig: PurseRig, app: str) -> CheckResult:
    """ETC composite purchases: UPDATE CAPP DATA CACHE of an unknown record id answers
    ``6A83``; the entry record (status ``03``, purchase of 0) and then the exit record
    (status ``04``) land in EF 0019 together with their debit; log type ``09``."""
    t = _Run(rig, "capp_purchase", app)
    t.at("balance before")
    before = t.ensure_balance(CAPP_AMOUNT)
    t.at("EF 0019 before")
    old = t.read_toll_record()
    t.at("UPDATE CAPP DATA CACHE of an unknown record id")
    t.select()
    t.initialize(cmd.InitKind.CAPP_PURCHASE, CAPP_AMOUNT)
    t.send(cmd.update_capp_data_cache(b"\xbb\x29" + bytes(41), CAPP_SFI), SW.RECORD_NOT_FOUND)
    t.at("ETC entry")
    entry = t.session("ETC entry", rig.entry_session())
    record = t.verify(entry, before)
    t.equal("transaction type of the entry", record.tx_type, TransactionType.CAPP_PURCHASE)
    t.equal("EF 0019 record 1 after the entry", t.read_toll_record(),
            _toll_record(entry, TollStatus.ETC_ENTRY))
    t.at("ETC exit")
    exit_ = t.purchase(CAPP_AMOUNT)
    record = t.verify(exit_, before)
    t.equal("transaction type of the exit", record.tx_type, TransactionType.CAPP_PURCHASE)
    t.equal("EF 0019 record 1 after the exit", t.read_toll_record(),
            _toll_record(exit_, TollStatus.ETC_EXIT))
    return t.result(before, before - CAPP_AMOUNT, old_record=old.hex().upper(),
                    tac=record.tac.hex().upper())


@_check("insufficient_balance")
def check_insufficient_balance(rig: PurseRig, app: str) -> CheckResult:
    """A purchase above the balance: INITIALIZE answers ``9401``, the terminal declines,
    a DEBIT after it answers ``6985``, and nothing changes."""
    t = _Run(rig, "insufficient_balance", app)
    t.at("balance before")
    before = t.balance()
    t.at(f"purchase of {before + 1} fen")
    outcome = t.purchase(before + 1, expect=None)
    t.expect_refusal(_INITIALIZE, f"INITIALIZE FOR PURCHASE of {before + 1} fen",
                     SW.INSUFFICIENT_BALANCE)
    t.refused(outcome, "purchase")
    t.equal("the balance the declined purchase reports", outcome.balance_before, before)
    t.at("DEBIT after the refused INITIALIZE")
    date, time = bcd_datetime(rig.clock)
    t.send(cmd.debit_for_purchase(1, date, time, bytes(4)), SW.CONDITIONS_NOT_SATISFIED)
    t.at("balance after")
    after = t.balance()
    t.equal("balance", after, before)
    t.no_pending()
    return t.result(before, after)


@_check("bad_mac1")
def check_bad_mac1(rig: PurseRig, app: str) -> CheckResult:
    """A purchase whose PSAM gives a wrong MAC1: DEBIT answers ``9302``, nothing is
    debited, the offline seq stays; then a good purchase of 0 clears the MAC error."""
    t = _Run(rig, "bad_mac1", app)
    t.at("balance before")
    before = t.ensure_balance(SMALL_AMOUNT)
    seq = t.offline_seq()
    t.at("purchase with a wrong MAC1")
    outcome = t.purchase(SMALL_AMOUNT, expect=None, psam=_CorruptMac1(rig.psam))
    t.expect_refusal(_DEBIT, "DEBIT with a wrong MAC1", SW.MAC_ERROR)
    t.refused(outcome, "purchase")
    t.no_pending()
    t.at("after the wrong MAC1")
    after = t.balance()
    t.equal("balance after a wrong MAC1", after, before)
    t.equal("offline seq after a wrong MAC1", t.offline_seq(), seq)
    t.clear_mac_errors()
    return t.result(before, after)


@_check("bad_mac2")
def check_bad_mac2(rig: PurseRig, app: str) -> CheckResult:
    """A load whose host gives a wrong MAC2: CREDIT FOR LOAD answers ``9302``, nothing is
    loaded, the online seq stays; then a good purchase of 0 clears the MAC error."""
    t = _Run(rig, "bad_mac2", app)
    t.at("balance before")
    before = t.make_room(SMALL_AMOUNT)
    amount = min(SMALL_AMOUNT, rig.max_balance - before)
    seq = t.online_seq()
    t.at("load with a wrong MAC2")
    outcome = t.load(amount, expect=None, host=_WrongMac2(rig.host))
    t.expect_refusal(_CREDIT, "CREDIT FOR LOAD with a wrong MAC2", SW.MAC_ERROR)
    t.refused(outcome, "load")
    t.no_pending()
    t.at("after the wrong MAC2")
    after = t.balance()
    t.equal("balance after a wrong MAC2", after, before)
    t.equal("online seq after a wrong MAC2", t.online_seq(), seq)
    t.clear_mac_errors()
    return t.result(before, after)


@_check("debit_without_initialize")
def check_debit_without_initialize(rig: PurseRig, app: str) -> CheckResult:
    """DEBIT or CREDIT with no matching INITIALIZE answers ``6985``: with none, after an
    INITIALIZE FOR LOAD (for DEBIT), and after a SELECT that ended the session."""
    t = _Run(rig, "debit_without_initialize", app)
    t.at("balance before")
    before = t.balance()
    date, time = bcd_datetime(rig.clock)
    debit = cmd.debit_for_purchase(1, date, time, bytes(4))
    t.at("DEBIT and CREDIT without INITIALIZE")
    t.select()
    t.send(debit, SW.CONDITIONS_NOT_SATISFIED)
    t.send(cmd.credit_for_load(date, time, bytes(4)), SW.CONDITIONS_NOT_SATISFIED)
    t.at("DEBIT after INITIALIZE FOR LOAD")
    t.initialize(cmd.InitKind.LOAD, 0)
    t.send(debit, SW.CONDITIONS_NOT_SATISFIED)
    t.at("DEBIT after INITIALIZE FOR PURCHASE and SELECT")
    t.initialize(cmd.InitKind.PURCHASE, 0)
    t.select()
    t.send(debit, SW.CONDITIONS_NOT_SATISFIED)
    t.at("balance after")
    after = t.balance()
    t.equal("balance", after, before)
    return t.result(before, after)


@_check("blocked_application")
def check_blocked_application(rig: PurseRig, app: str) -> CheckResult:
    """APPLICATION BLOCK: a wrong maintenance MAC answers ``9302`` (and the right one clears
    the count); blocked, SELECT answers ``6283`` and the purse commands ``6985``, the
    terminal declines; UNBLOCK restores the purse and its balance."""
    t = _Run(rig, "blocked_application", app)
    t.at("balance before")
    before = t.balance()
    t.at("APPLICATION BLOCK with a wrong MAC")
    t.card_keys()
    t.select()
    t.maintenance("APPLICATION BLOCK with a wrong MAC", SW.MAC_ERROR, mac=bytes(4))
    t.at("APPLICATION BLOCK")
    t.maintenance("APPLICATION BLOCK", SW.OK)
    t.at("the blocked purse")
    t.select(SW.SELECTED_FILE_INVALIDATED)
    t.send(cmd.get_balance(), SW.CONDITIONS_NOT_SATISFIED)
    t.initialize(cmd.InitKind.PURCHASE, 0, SW.CONDITIONS_NOT_SATISFIED)
    t.initialize(cmd.InitKind.LOAD, 0, SW.CONDITIONS_NOT_SATISFIED)
    t.send(cmd.get_transaction_prove(TransactionType.EP_PURCHASE, 1),
           SW.CONDITIONS_NOT_SATISFIED)
    t.at("a purchase on the blocked purse")
    outcome = t.purchase(0, expect=Decision.DECLINED)
    if "blocked" not in outcome.reason:
        t.fail(f"the terminal declined for another reason: {outcome.reason}")
    t.at("APPLICATION UNBLOCK")
    t.select(SW.SELECTED_FILE_INVALIDATED)
    t.maintenance("APPLICATION UNBLOCK", SW.OK, unblock=True)
    t.select()
    t.at("balance after")
    after = t.balance()
    t.equal("balance", after, before)
    t.clear_mac_errors()
    return t.result(before, after)


@_check("transaction_prove")
def check_transaction_prove(rig: PurseRig, app: str) -> CheckResult:
    """The DEBIT answer is lost after the card executed it: the tap is interrupted and
    stays pending; the card is presented again (``present_again``); the next tap
    settles it with GET TRANSACTION PROVE (MAC2 and TAC of that purchase, for
    INITIALIZE's seq + 1) and charges nothing more; ``9406`` for another seq or type."""
    t = _Run(rig, "transaction_prove", app)
    t.at("balance before")
    before = t.ensure_balance(PROVE_AMOUNT)
    t.at("purchase whose DEBIT answer is lost")
    lose = _LoseDebitAnswer(rig.card)
    t.purchase(PROVE_AMOUNT, expect=Decision.INTERRUPTED, card=lose)
    init_answer = t.answer(_INITIALIZE)
    if lose.lost is None or init_answer is None:
        t.fail("the purchase was interrupted before its DEBIT reached the card")
    if lose.lost.sw != SW.OK or len(lose.lost.data) != size_of(cmd.DEBIT_RESPONSE):
        t.fail(f"DEBIT answered {lose.lost.sw:04X} with {len(lose.lost.data)} bytes, "
               "expected 9000 with 8 bytes")
    lost = cmd.parse(cmd.DEBIT_RESPONSE, lose.lost.data)
    init = cmd.parse(cmd.INIT_PURCHASE_RESPONSE, init_answer.data)
    pending = rig.journal.pending()
    t.equal("pending transactions in the journal", len(pending), 1)
    t.equal("the pending transaction's card seq", pending[0].card_seq, init.offline_seq)
    if rig.present_again is not None:
        t.at("presenting the card again")
        try:
            rig.present_again()
        except (TransportError, CardError) as exc:
            t.fail(f"the card did not come back: {exc}")
    t.at("the next tap settles the interrupted one")
    outcome = t.purchase(PROVE_AMOUNT)
    if not outcome.recovered:
        t.fail(f"the tap was not recognized as the interrupted one ({outcome.reason})")
    record = outcome.record
    assert record is not None
    t.equal("the recovered TAC (vs the lost DEBIT answer)", record.tac, lost.tac)
    t.equal("the recovered record's flags", record.flags & RecordFlags.RECOVERED,
            RecordFlags.RECOVERED)
    t.verify(outcome, before)
    t.equal("MAC2 of the lost DEBIT answer (vs the keystore's)", lost.mac2,
            _mac2(rig.keys, record, init.random))
    t.no_pending()
    t.at("GET TRANSACTION PROVE")
    t.select()
    seq = init.offline_seq + 1
    proof = t.send(cmd.get_transaction_prove(record.tx_type, seq), size=8)
    t.equal("proof (MAC2, TAC)", proof, lost.mac2 + lost.tac)
    other = (TransactionType.EP_PURCHASE if record.tx_type == TransactionType.CAPP_PURCHASE
             else TransactionType.CAPP_PURCHASE)
    t.send(cmd.get_transaction_prove(other, seq), SW.MAC_NOT_AVAILABLE)
    t.send(cmd.get_transaction_prove(record.tx_type, init.offline_seq), SW.MAC_NOT_AVAILABLE)
    t.at("balance after")
    after = t.balance()
    t.equal("balance (charged once)", after, before - PROVE_AMOUNT)
    return t.result(before, after, tac=lost.tac.hex().upper())


@_check("three_mac_errors", destructive=True)
def check_three_mac_errors(rig: PurseRig, app: str) -> CheckResult:
    """Three consecutive MAC errors lock the purse for good: ``9303`` to INITIALIZE, GET
    BALANCE, UNBLOCK and SELECT; the terminal declines (destructive).  The error that
    locks may itself answer ``9302`` or already ``9303``: the protocol allows both."""
    t = _Run(rig, "three_mac_errors", app)
    t.at("balance before")
    before = t.balance()
    t.card_keys()
    t.clear_mac_errors()
    for n in (1, 2, 3):
        t.at(f"wrong MAC1 number {n}")
        t.refused(t.purchase(0, expect=None, psam=_CorruptMac1(rig.psam)), "purchase")
        locking = (SW.MAC_ERROR, SW.APPLICATION_LOCKED) if n == 3 else (SW.MAC_ERROR,)
        t.expect_refusal(_DEBIT, "DEBIT with a wrong MAC1", *locking)
    t.at("the locked purse")
    t.initialize(cmd.InitKind.PURCHASE, 0, SW.APPLICATION_LOCKED)
    t.initialize(cmd.InitKind.LOAD, 0, SW.APPLICATION_LOCKED)
    t.send(cmd.get_balance(), SW.APPLICATION_LOCKED)
    t.maintenance("APPLICATION UNBLOCK of a locked purse", SW.APPLICATION_LOCKED, unblock=True)
    # the protocol lets SELECT of a purse locked for good answer 9303, or its FCI with 6283
    t.select(SW.APPLICATION_LOCKED, SW.SELECTED_FILE_INVALIDATED)
    t.at("a purchase on the locked purse")
    outcome = t.purchase(0, expect=Decision.DECLINED)
    if "locked" not in outcome.reason:
        t.fail(f"the terminal declined for another reason: {outcome.reason}")
    return t.result(before, before)


def run_check(name: str, rig: PurseRig, *, app: str = "transit") -> CheckResult:
    """Run check ``name`` on the ``app`` purse (``transit`` or ``etc``) of the rig's card."""
    check = CHECKS.get(name)
    if check is None:
        raise KeyError(f"unknown check {name!r}; known: {', '.join(CHECKS)}")
    if app not in check.apps:
        raise ValueError(f"check {name} applies to the {' and '.join(check.apps)} purse, "
                         f"not {app!r}")
    return check.run(rig, app)


