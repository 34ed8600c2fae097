"""The purse test rig: what the conformance checks drive, and the single steps card tests share.

`PurseRig` holds what the checks of `unioncard.testing.purse_checks` drive: the
card and PSAM links (any object with ``transmit(CommandAPDU) -> ResponseAPDU``,
e.g. a `unioncard.transport.Channel` over a PC/SC reader), the keystore, a
transaction journal and a clock.  It runs the engine's sessions (purchase, ETC
entry, load, card read) on them, derives the card keys from the keystore, sends
APPLICATION BLOCK and UNBLOCK with the maintenance MAC, and keeps the last
exchanges (`Exchange`).  `expected_tac` and `expected_mac2` recompute a TAC and a
purchase's MAC2 from the keystore, as settlement does; `expected_toll_record` is the
EF 0019 record an ETC entry or exit of the rig must leave.

Card tests that send single commands on purpose share the step helpers here
(`prepare_debit`, `prepare_credit`, `select_application`) rather than a terminal
of their own.  The tampered links wrap one link of an engine session: a PSAM link
that corrupts MAC1 (`CorruptMac1`), a load host that answers a wrong MAC2
(`WrongMac2`), a card link that loses the DEBIT answer after the card executed
it (`LoseDebitAnswer`).  docs/simulator.md, "Conformance checks", describes the rig.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from unioncard.apdu import SW, CommandAPDU, ResponseAPDU, records
from unioncard.apdu import purse as cmd
from unioncard.apdu.purse import TransactionType, bcd_datetime
from unioncard.apdu.records import size_of
from unioncard.crypto import purse as pc
from unioncard.crypto.keystore import CardKeys, Keystore, derive_card_keys
from unioncard.errors import CardError, TransportError
from unioncard.offline import Application, OfflineRecord
from unioncard.tariffs import Mode, RuleSet
from unioncard.terminal import (
    DEFAULT_RECOVERY_WINDOW,
    CardRead,
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
    "ApduLink",
    "CorruptMac1",
    "Exchange",
    "LoseDebitAnswer",
    "PreparedCredit",
    "PreparedDebit",
    "PurseRig",
    "WrongMac2",
    "expected_mac2",
    "expected_tac",
    "expected_toll_record",
    "prepare_credit",
    "prepare_debit",
    "purse_application",
    "read_psam_terminal_id",
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


class ApduLink(Protocol):
    """A card or PSAM link: `unioncard.transport.Channel` is one."""

    def transmit(self, command: CommandAPDU) -> ResponseAPDU: ...


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
            self._terminal_id = read_psam_terminal_id(self.psam)
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
        if purse_application(app) is Application.TRANSIT:
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
        return Load(purse_application(app), amount, terminal_id=self.terminal_id,
                    **self._options())

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


def purse_application(app: str) -> Application:
    """The `Application` of a purse by its name in `APPS`; `ValueError` for another name."""
    try:
        return APPS[app]
    except KeyError:
        raise ValueError(f"unknown purse {app!r} (transit or etc)") from None


def _select_purse(link: ApduLink, app: str) -> PurseCard:
    """SELECT the purse and read its EF 0015 with the engine's own sub-flow
    (`unioncard.terminal.card.select_purse`); `CardError` when the card refuses."""
    flow = select_purse(purse_application(app))
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
    if purse_application(app) is Application.TRANSIT:
        return link.transmit(cmd.select_by_name(TRANSIT_AID))
    mf = link.transmit(cmd.select_file(MF))
    return mf if mf.sw != SW.OK else link.transmit(cmd.select_file(ETC_DF))


def read_psam_terminal_id(psam: ApduLink) -> bytes:
    """The PSAM's terminal id: its MF selected (a session may have left it in its purchase
    DF), then ``00 B0 96 00 06`` (docs/protocol.md §3)."""
    psam.transmit(cmd.select_file(MF))
    answer = psam.transmit(cmd.sam_read_terminal_id())
    if answer.sw != SW.OK or len(answer.data) != 6:
        raise CardError(f"the PSAM answered READ terminal id with {answer.sw:04X} and "
                        f"{len(answer.data)} bytes")
    return answer.data


def expected_tac(keys: Keystore, record: OfflineRecord) -> bytes:
    """The TAC of an offline record, recomputed from the keystore as settlement does:
    the card's TAC key (DTK) at the record's key version and diversifier, then
    the load TAC or the purchase TAC over the record's fields (docs/protocol.md §2.4)."""
    return record.computed_tac(
        derive_card_keys(keys.by_version(record.key_version), record.diversifier).tac)


def expected_toll_record(outcome: Outcome, status: int) -> bytes:
    """EF 0019 record 1 as it must be after the ETC entry or exit ``outcome`` (docs/protocol.md
    §4.5): the rig's lane, the unix time of the transaction (China time), class 1, the plate."""
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


def expected_mac2(keys: Keystore, record: OfflineRecord, random: bytes) -> bytes:
    """A purchase's MAC2 from the keystore: the session key of the card's DPK, INITIALIZE's
    random and offline seq and the PSAM's terminal seq, over the amount (docs/protocol.md §2.4)."""
    dpk = derive_card_keys(keys.by_version(record.key_version), record.diversifier).purchase
    sespk = pc.purchase_session_key(dpk, random, record.card_seq, record.terminal_seq)
    return pc.purchase_mac2(sespk, record.charged_amount)

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
        terminal_id = read_psam_terminal_id(psam)
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


class CorruptMac1:
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


class WrongMac2:
    """A load host that approves with a MAC2 the card must refuse."""

    def __init__(self, host: LoadHost) -> None:
        self.host = host

    def authorize(self, request: LoadRequest) -> LoadAuthorization:
        answer = self.host.authorize(request)
        if not answer.approved:
            return answer
        return LoadAuthorization(True, bytes(b ^ 0xFF for b in answer.mac2))


class LoseDebitAnswer:
    """A card link whose DEBIT reaches the card but whose answer is lost (kept in ``lost``)."""

    def __init__(self, card: ApduLink) -> None:
        self.card = card
        self.lost: ResponseAPDU | None = None

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        answer = self.card.transmit(command)
        if command.cla == 0x80 and command.ins == 0x54:  # DEBIT FOR PURCHASE
            self.lost = answer
            raise TransportError("the card was pulled before its DEBIT answer arrived "
                                 "(simulated)")
        return answer
