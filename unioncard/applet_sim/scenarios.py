"""Purse conformance scenarios over any "transmit raw bytes" link.

Each scenario drives a member card and a PSAM with APDUs only, as a terminal
(and, for loads, the issuer host) would, and checks every answer against
PROTOCOL.md; a deviation raises `ScenarioFailure` naming the step, the status
word and the last exchanges.  The links are plain callables ``bytes -> bytes``
(``SimulatedCard.transmit`` in process, a PC/SC transport's ``transmit`` through
pcscd and vpcd), so the same scenarios run everywhere; ``61xx``/``6Cxx`` are
handled by the shared `unioncard.transport.base.Channel`, so T=0 cards work.

>>> import datetime as dt
>>> from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
>>> from unioncard.crypto import Keystore
>>> keys = Keystore.test()
>>> member = MemberData("李四", "20260002", "市总工会", "110105194912310037",
...                     dt.date(2026, 1, 1), dt.date(2030, 12, 31))
>>> card, psam = issue_member_card(member, keys, card_no=2), issue_psam(keys, "001122334455")
>>> _ = card.power_on(), psam.power_on()
>>> result = run_scenario("purchase", card.transmit, psam.transmit, keys, app="etc")
>>> result.balance_before - result.balance_after
150

The scenarios keep the card usable (MAC-error scenarios end with a good
transaction, which clears the error counter; the blocked-application scenario
unblocks), except those marked ``destructive`` (three MAC errors lock the
purse for good): give those a fresh card.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unioncard.apdu import SW, CommandAPDU, ResponseAPDU, command_name, records
from unioncard.crypto import purse as pc
from unioncard.crypto.keystore import CardKeys, Keystore, derive_card_keys
from unioncard.crypto.purse import TransactionType
from unioncard.errors import CardError
from unioncard.transport.base import Channel

__all__ = [
    "DEFAULT_WHEN",
    "SCENARIOS",
    "Link",
    "PurseTerminal",
    "Scenario",
    "ScenarioFailure",
    "ScenarioResult",
    "Transmit",
    "bcd_datetime",
    "capp_entry_record",
    "run_scenario",
]

Transmit = Callable[[bytes], bytes]
"""Raw command APDU in, raw response APDU out."""

DEFAULT_WHEN = dt.datetime(2026, 3, 15, 8, 30, 0)
TRANSIT_AID = bytes.fromhex("A000000632010105")
PURSE = 0x02  # P2 of INITIALIZE / GET BALANCE: the EP
KEY_INDEX = 0x01
CAPP_SFI = 0x19
LOG_SFI = 0x18


def capp_entry_record(
    *, network: int, station: int, lane: int, when: dt.datetime, vehicle_class: int,
    status: int, plate: str = "", lock: int = 0x00,
) -> bytes:
    """An EF 0019 toll record (PROTOCOL.md §4, `records.CAPP_RECORD`): ``AA 29`` lock
    network station lane unix-time class status marker-station(9) staff(3) shift(1)
    plate(12, GBK) reserved(4).

    ``when`` is taken as UTC for the unix time.  Status ``03`` is an ETC entry.
    """
    return records.build(
        records.CAPP_RECORD, lock=lock, network=network.to_bytes(2, "big"),
        station=station.to_bytes(2, "big"), lane=lane,
        unix_time=calendar.timegm(when.timetuple()), vehicle_class=vehicle_class,
        status=status, marker_station=bytes(9), staff_no=bytes(3), shift=0, plate=plate,
        reserved=bytes(4))


class ScenarioFailure(CardError):
    """A card or PSAM answered otherwise than PROTOCOL.md says."""


def bcd_datetime(when: dt.datetime) -> tuple[bytes, bytes]:
    """(date BCD YYYYMMDD, time BCD HHMMSS) as the purse commands carry them."""
    return bytes.fromhex(when.strftime("%Y%m%d")), bytes.fromhex(when.strftime("%H%M%S"))


class _RawTransport:
    """Adapts a transmit callable to the `Transport` shape `Channel` drives."""

    def __init__(self, transmit: Transmit, log: list[tuple[bytes, bytes]]) -> None:
        self._transmit = transmit
        self._log = log

    def power_on(self) -> bytes:  # pragma: no cover - scenarios never power cards
        raise CardError("scenario links do not power cards")

    def power_off(self) -> None:  # pragma: no cover
        raise CardError("scenario links do not power cards")

    def transmit(self, command: bytes) -> bytes:
        response = bytes(self._transmit(command))
        self._log.append((command, response))
        del self._log[:-12]
        return response


class Link:
    """APDU exchanges with one device, checked: ``expect`` raises `ScenarioFailure`."""

    def __init__(self, name: str, transmit: Transmit) -> None:
        self.name = name
        self.log: list[tuple[bytes, bytes]] = []
        self._channel = Channel(_RawTransport(transmit, self.log))

    def send(self, command: bytes | str | CommandAPDU) -> ResponseAPDU:
        if isinstance(command, str):
            command = bytes.fromhex(command.replace(" ", ""))
        if isinstance(command, bytes):
            command = CommandAPDU.from_bytes(command)
        return self._channel.transmit(command)

    def expect(self, command: bytes | str | CommandAPDU, status: int = SW.OK,
               length: int | None = None) -> bytes:
        """Send; fail unless the status word (and the data length, if given) match."""
        response = self.send(command)
        if response.sw != status or (length is not None and len(response.data) != length):
            name = command_name(self.log[-1][0]) if self.log else "command"
            got = f"{response.sw:04X} with {len(response.data)} bytes"
            want = f"{status:04X}" + ("" if length is None else f" with {length} bytes")
            self.fail(f"{name} answered {got}, expected {want}")
        return response.data

    def fail(self, message: str) -> None:
        trail = "; ".join(f"{c.hex().upper()} -> {r.hex().upper()}" for c, r in self.log[-4:])
        raise ScenarioFailure(f"{self.name}: {message} [last exchanges: {trail}]")


@dataclass(slots=True)
class Purchase:
    """What a completed purchase returned and what the terminal derived."""

    balance_before: int
    offline_seq: int
    terminal_seq: int
    tac: bytes
    mac2: bytes
    tx_type: int


class PurseTerminal:
    """A terminal with its PSAM, and the issuer host's keys for loads and maintenance."""

    def __init__(
        self, card: Transmit, psam: Transmit, keys: Keystore, *,
        when: dt.datetime = DEFAULT_WHEN,
    ) -> None:
        self.card = Link("card", card)
        self.psam = Link("PSAM", psam)
        self.keys = keys
        self.date, self.time = bcd_datetime(when)
        self.psam.expect("00A40000023F00")
        self.terminal_id = self.psam.expect("00B0960006", length=6)
        self.psam.expect("00A40000021001")  # the PSAM's purchase application
        self.app = ""
        self.diversifier = b""

    # --- card side ------------------------------------------------------------------------

    def select(self, app: str, status: int = SW.OK) -> bytes:
        """Select the transit (by AID) or ETC (MF, then DF 1001) purse; read its EF 0015.

        A SELECT expected to be refused (``9303``, locked for good) returns ``b""``.
        """
        if app == "transit":
            self.card.expect(CommandAPDU(0x00, 0xA4, 0x04, 0x00, TRANSIT_AID, 256), status)
            read_info, size = "00B095001E", 30
        elif app == "etc":
            self.card.expect("00A40000023F00")
            self.card.expect("00A40000021001", status)
            read_info, size = "00B095002B", 43
        else:
            raise ValueError(f"unknown purse {app!r} (transit or etc)")
        if status >> 8 not in (0x90, 0x62):
            return b""
        info = self.card.expect(read_info, length=size)
        self.app, self.diversifier = app, info[12:20]
        return info

    @property
    def card_keys(self) -> CardKeys:
        return derive_card_keys(self.keys.purse_keys(self.app), self.diversifier)

    def balance(self) -> int:
        return int.from_bytes(self.card.expect("805C000204", length=4), "big")

    def initialize(self, p1: int, amount: int, status: int = SW.OK,
                   key_index: int = KEY_INDEX) -> bytes:
        data = bytes([key_index]) + amount.to_bytes(4, "big") + self.terminal_id
        le = 0x10 if p1 == 0x00 else 0x0F
        return self.card.expect(CommandAPDU(0x80, 0x50, p1, PURSE, data, le), status,
                                None if status != SW.OK else le)

    def log_record(self, number: int = 1) -> bytes:
        return self.card.expect(CommandAPDU(0x00, 0xB2, number, LOG_SFI << 3 | 4, le=23),
                                length=23)

    # --- purchase -------------------------------------------------------------------------

    def mac1(self, init: bytes, amount: int, tx_type: int) -> tuple[int, bytes]:
        """PSAM 80 70 for the card's INITIALIZE answer: (terminal seq, MAC1)."""
        # INITIALIZE answered balance(4) offline seq(2) overdraft(3) key version(1) alg id(1)
        # random(4); 80 70 takes random(4) offline seq(2) amount(4) type(1) date(4) time(3)
        # key version(1) alg id(1) diversifier(8)
        data = (init[11:15] + init[4:6] + amount.to_bytes(4, "big") + bytes([tx_type])
                + self.date + self.time + init[9:11] + self.diversifier)
        answer = self.psam.expect(CommandAPDU(0x80, 0x70, 0x00, 0x00, data, 8), length=8)
        return int.from_bytes(answer[:4], "big"), answer[4:]

    def debit(self, terminal_seq: int, mac1: bytes, status: int = SW.OK) -> bytes:
        data = terminal_seq.to_bytes(4, "big") + self.date + self.time + mac1
        return self.card.expect(CommandAPDU(0x80, 0x54, 0x01, 0x00, data, 8), status,
                                8 if status == SW.OK else None)

    def check_proof(self, purchase: Purchase, amount: int) -> None:
        """MAC2 through the PSAM (80 72) and the TAC with the host's TAC key."""
        self.psam.expect(CommandAPDU(0x80, 0x72, 0x00, 0x00, purchase.mac2))
        tac = pc.purchase_tac(self.card_keys.tac, amount, purchase.tx_type, self.terminal_id,
                              purchase.terminal_seq, self.date, self.time)
        if tac != purchase.tac:
            self.card.fail(f"TAC {purchase.tac.hex().upper()} is not {tac.hex().upper()}")

    def purchase(self, amount: int, *, capp_record: bytes | None = None,
                 lose_response: bool = False) -> Purchase:
        """INITIALIZE (CAPP when a record is given), PSAM MAC1, [UPDATE CAPP DATA CACHE],
        DEBIT; then MAC2 and TAC are checked (unless the answer is to be lost)."""
        capp = capp_record is not None
        tx_type = TransactionType.CAPP_PURCHASE if capp else TransactionType.EP_PURCHASE
        init = self.initialize(0x03 if capp else 0x01, amount)
        balance, offline_seq = int.from_bytes(init[:4], "big"), int.from_bytes(init[4:6], "big")
        terminal_seq, mac1 = self.mac1(init, amount, tx_type)
        if capp_record is not None:
            self.card.expect(CommandAPDU(0x80, 0xDC, capp_record[0], CAPP_SFI << 3,
                                         capp_record))
        answer = self.debit(terminal_seq, mac1)
        result = Purchase(balance, offline_seq, terminal_seq, answer[:4], answer[4:], tx_type)
        if not lose_response:
            self.check_proof(result, amount)
        return result

    # --- load (the terminal plays the issuer host too) ----------------------------------------

    def load(self, amount: int) -> tuple[int, int, bytes]:
        """INITIALIZE FOR LOAD, host checks MAC1 and makes MAC2, CREDIT; returns
        (old balance, online seq, TAC), the TAC checked."""
        init = self.initialize(0x00, amount)
        balance, online = int.from_bytes(init[:4], "big"), int.from_bytes(init[4:6], "big")
        keys, load = self.card_keys, TransactionType.EP_LOAD
        seslk = pc.load_session_key(keys.load, init[8:12], online)
        if init[12:16] != pc.load_mac1(seslk, balance, amount, load, self.terminal_id):
            self.card.fail("the card's load MAC1 does not verify")
        mac2 = pc.load_mac2(seslk, amount, load, self.terminal_id, self.date, self.time)
        tac = self.card.expect(CommandAPDU(0x80, 0x52, 0, 0, self.date + self.time + mac2, 4),
                               length=4)
        expected = pc.load_tac(keys.tac, balance + amount, online, amount, load,
                               self.terminal_id, self.date, self.time)
        if tac != expected:
            self.card.fail(f"load TAC {tac.hex().upper()} is not {expected.hex().upper()}")
        return balance, online, tac

    def ensure_balance(self, minimum: int) -> int:
        """Load what is missing for ``minimum``; returns the balance."""
        balance = self.balance()
        if balance < minimum:
            self.load(minimum - balance)
            balance = minimum
        return balance

    def maintenance(self, ins: int, p2: int = 0x00, status: int = SW.OK) -> None:
        """APPLICATION BLOCK (1E) or UNBLOCK (18) with a fresh challenge and the host's MAC."""
        challenge = self.card.expect("0084000004", length=4)
        header = bytes([0x84, ins, 0x00, p2, 0x04])
        mac = pc.maintenance_mac(self.card_keys.maintenance, challenge, header)
        self.card.expect(CommandAPDU(0x84, ins, 0x00, p2, mac), status)

    def clear_mac_errors(self) -> None:
        """A zero-amount purchase: a good MAC clears the card's MAC error counter."""
        self.purchase(0)


# --- the scenarios --------------------------------------------------------------------------


@dataclass(slots=True)
class ScenarioResult:
    name: str
    app: str
    balance_before: int
    balance_after: int
    details: dict[str, Any] = field(default_factory=dict)


def _expect_equal(link: Link, what: str, got: object, want: object) -> None:
    if got != want:
        link.fail(f"{what} is {got!r}, expected {want!r}")


def scenario_purchase(t: PurseTerminal, app: str, amount: int = 150) -> ScenarioResult:
    """A purchase through the PSAM: balance, offline seq and log record follow."""
    t.select(app)
    before = t.ensure_balance(amount)
    p = t.purchase(amount)
    _expect_equal(t.card, "balance in INITIALIZE", p.balance_before, before)
    after = t.balance()
    _expect_equal(t.card, "balance after the purchase", after, before - amount)
    record = t.log_record()
    _expect_equal(t.card, "log record", record, p.offline_seq.to_bytes(2, "big") + bytes(3)
                  + amount.to_bytes(4, "big") + b"\x06" + t.terminal_id + t.date + t.time)
    again = t.initialize(0x01, 0)
    _expect_equal(t.card, "offline seq", int.from_bytes(again[4:6], "big"), p.offline_seq + 1)
    return ScenarioResult("purchase", app, before, after,
                          {"terminal_seq": p.terminal_seq, "tac": p.tac.hex().upper()})


def scenario_load(t: PurseTerminal, app: str, amount: int = 5_000) -> ScenarioResult:
    """A load with the host's MAC2; above the maximum balance INITIALIZE answers 9402."""
    t.select(app)
    before = t.balance()
    if before + amount > 100_000:
        amount = 100_000 - before
    _, online, tac = t.load(amount)
    after = t.balance()
    _expect_equal(t.card, "balance after the load", after, before + amount)
    record = t.log_record()
    _expect_equal(t.card, "log record", record, online.to_bytes(2, "big") + bytes(3)
                  + amount.to_bytes(4, "big") + b"\x02" + t.terminal_id + t.date + t.time)
    t.initialize(0x00, 100_000 - after + 1, SW.COUNTER_OVERFLOW)
    init = t.initialize(0x00, 0)
    _expect_equal(t.card, "online seq", int.from_bytes(init[4:6], "big"), online + 1)
    return ScenarioResult("load", app, before, after, {"tac": tac.hex().upper()})


def scenario_capp_purchase(
    t: PurseTerminal, app: str = "etc", amount: int = 2_000
) -> ScenarioResult:
    """ETC composite purchase: the EF 0019 record and the debit land together."""
    t.select(app)
    before = t.ensure_balance(amount)
    read_capp = CommandAPDU(0x00, 0xB2, 0x01, CAPP_SFI << 3 | 4, le=43)
    old = t.card.expect(read_capp, length=43)
    record = capp_entry_record(network=0x1101, station=0x0203, lane=4, when=DEFAULT_WHEN,
                               vehicle_class=1, status=0x03, plate="京A12345")
    t.initialize(0x03, amount)
    t.card.expect(CommandAPDU(0x80, 0xDC, 0xBB, CAPP_SFI << 3, b"\xbb" + record[1:]),
                  SW.RECORD_NOT_FOUND)
    t.select(app)  # the refused UPDATE does not matter, but start the transaction cleanly
    p = t.purchase(amount, capp_record=record)
    _expect_equal(t.card, "EF 0019 record 1", t.card.expect(read_capp, length=43), record)
    after = t.balance()
    _expect_equal(t.card, "balance after the CAPP purchase", after, before - amount)
    _expect_equal(t.card, "log type", t.log_record()[9], TransactionType.CAPP_PURCHASE)
    return ScenarioResult("capp_purchase", app, before, after,
                          {"old_record": old.hex().upper(), "tac": p.tac.hex().upper()})


def scenario_insufficient_balance(t: PurseTerminal, app: str) -> ScenarioResult:
    """INITIALIZE FOR PURCHASE above the balance answers 9401 and changes nothing."""
    t.select(app)
    before = t.balance()
    t.initialize(0x01, before + 1, SW.INSUFFICIENT_BALANCE)
    t.debit(1, bytes(4), SW.CONDITIONS_NOT_SATISFIED)
    after = t.balance()
    _expect_equal(t.card, "balance", after, before)
    return ScenarioResult("insufficient_balance", app, before, after)


def scenario_bad_mac1(t: PurseTerminal, app: str, amount: int = 100) -> ScenarioResult:
    """A wrong MAC1 at DEBIT answers 9302 and debits nothing."""
    t.select(app)
    before = t.ensure_balance(amount)
    init = t.initialize(0x01, amount)
    terminal_seq, mac1 = t.mac1(init, amount, TransactionType.EP_PURCHASE)
    t.debit(terminal_seq, bytes(b ^ 0xFF for b in mac1), SW.MAC_ERROR)
    after = t.balance()
    _expect_equal(t.card, "balance after a bad MAC1", after, before)
    again = t.initialize(0x01, 0)
    _expect_equal(t.card, "offline seq after a bad MAC1", again[4:6], init[4:6])
    t.clear_mac_errors()
    return ScenarioResult("bad_mac1", app, before, after)


def scenario_bad_mac2(t: PurseTerminal, app: str, amount: int = 100) -> ScenarioResult:
    """A wrong host MAC2 at CREDIT FOR LOAD answers 9302 and loads nothing."""
    t.select(app)
    before = t.balance()
    amount = min(amount, 100_000 - before)
    init = t.initialize(0x00, amount)
    t.card.expect(CommandAPDU(0x80, 0x52, 0, 0, t.date + t.time + bytes(4), 4), SW.MAC_ERROR)
    after = t.balance()
    _expect_equal(t.card, "balance after a bad MAC2", after, before)
    again = t.initialize(0x00, 0)
    _expect_equal(t.card, "online seq after a bad MAC2", again[4:6], init[4:6])
    t.clear_mac_errors()
    return ScenarioResult("bad_mac2", app, before, after)


def scenario_debit_without_initialize(t: PurseTerminal, app: str) -> ScenarioResult:
    """DEBIT or CREDIT with no matching INITIALIZE answers 6985."""
    t.select(app)
    before = t.balance()
    t.debit(1, bytes(4), SW.CONDITIONS_NOT_SATISFIED)
    t.card.expect(CommandAPDU(0x80, 0x52, 0, 0, t.date + t.time + bytes(4), 4),
                  SW.CONDITIONS_NOT_SATISFIED)
    t.initialize(0x00, 0)  # a load session does not allow a DEBIT
    t.debit(1, bytes(4), SW.CONDITIONS_NOT_SATISFIED)
    t.initialize(0x01, 0)
    t.select(app)  # SELECT ends the purchase session
    t.debit(1, bytes(4), SW.CONDITIONS_NOT_SATISFIED)
    return ScenarioResult("debit_without_initialize", app, before, t.balance())


def scenario_blocked_application(t: PurseTerminal, app: str) -> ScenarioResult:
    """APPLICATION BLOCK: SELECT gives the FCI with 6283, purse commands 6985; UNBLOCK
    restores; a bad maintenance MAC answers 9302 (and a good one clears the MAC error count)."""
    t.select(app)
    before = t.balance()
    t.card.expect("0084000004", length=4)
    t.card.expect(CommandAPDU(0x84, 0x1E, 0x00, 0x00, bytes(4)), SW.MAC_ERROR)
    t.maintenance(0x1E)
    t.select(app, SW.SELECTED_FILE_INVALIDATED)
    t.card.expect("805C000204", SW.CONDITIONS_NOT_SATISFIED)
    t.initialize(0x01, 0, SW.CONDITIONS_NOT_SATISFIED)
    t.initialize(0x00, 0, SW.CONDITIONS_NOT_SATISFIED)
    t.card.expect(CommandAPDU(0x80, 0x5A, 0x00, 0x06, b"\x00\x01", 8),
                  SW.CONDITIONS_NOT_SATISFIED)
    t.maintenance(0x18)
    t.select(app)
    _expect_equal(t.card, "balance", t.balance(), before)
    t.purchase(0)
    return ScenarioResult("blocked_application", app, before, t.balance())


def scenario_transaction_prove(
    t: PurseTerminal, app: str, amount: int = 120, *,
    power_cycle: Callable[[], None] | None = None,
) -> ScenarioResult:
    """The DEBIT answer is lost: GET TRANSACTION PROVE gives MAC2 then TAC of that
    purchase (seq = INITIALIZE's + 1), 9406 for any other seq or type."""
    t.select(app)
    before = t.ensure_balance(amount)
    capp = app == "etc"
    record = b"\xaa\x29" + bytes(41) if capp else None
    p = t.purchase(amount, capp_record=record, lose_response=True)
    if power_cycle is not None:
        power_cycle()
    t.select(app)
    seq = (p.offline_seq + 1).to_bytes(2, "big")
    answer = t.card.expect(CommandAPDU(0x80, 0x5A, 0x00, p.tx_type, seq, 8), length=8)
    _expect_equal(t.card, "proof (MAC2, TAC)", answer, p.mac2 + p.tac)
    t.check_proof(Purchase(p.balance_before, p.offline_seq, p.terminal_seq, answer[4:],
                           answer[:4], p.tx_type), amount)
    other = 0x06 if capp else 0x09
    t.card.expect(CommandAPDU(0x80, 0x5A, 0x00, other, seq, 8), SW.MAC_NOT_AVAILABLE)
    t.card.expect(CommandAPDU(0x80, 0x5A, 0x00, p.tx_type, p.offline_seq.to_bytes(2, "big"),
                              8), SW.MAC_NOT_AVAILABLE)
    after = t.balance()
    _expect_equal(t.card, "balance", after, before - amount)
    return ScenarioResult("transaction_prove", app, before, after)


def scenario_three_mac_errors(t: PurseTerminal, app: str) -> ScenarioResult:
    """Three consecutive MAC errors lock the purse for good: 9303 (destructive)."""
    t.select(app)
    before = t.balance()
    t.clear_mac_errors()
    for _ in range(3):
        init = t.initialize(0x01, 0)
        terminal_seq, _mac1 = t.mac1(init, 0, TransactionType.EP_PURCHASE)
        t.debit(terminal_seq, bytes(4), SW.MAC_ERROR)
    t.initialize(0x01, 0, SW.APPLICATION_LOCKED)
    t.initialize(0x00, 0, SW.APPLICATION_LOCKED)
    t.card.expect("805C000204", SW.APPLICATION_LOCKED)
    t.maintenance(0x18, status=SW.APPLICATION_LOCKED)
    t.select(app, SW.APPLICATION_LOCKED)  # SELECT itself refuses a purse locked for good
    return ScenarioResult("three_mac_errors", app, before, before)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    run: Callable[..., ScenarioResult]
    apps: tuple[str, ...] = ("transit", "etc")
    destructive: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("purchase", scenario_purchase),
        Scenario("load", scenario_load),
        Scenario("capp_purchase", scenario_capp_purchase, ("etc",)),
        Scenario("insufficient_balance", scenario_insufficient_balance),
        Scenario("bad_mac1", scenario_bad_mac1),
        Scenario("bad_mac2", scenario_bad_mac2),
        Scenario("debit_without_initialize", scenario_debit_without_initialize),
        Scenario("blocked_application", scenario_blocked_application),
        Scenario("transaction_prove", scenario_transaction_prove),
        Scenario("three_mac_errors", scenario_three_mac_errors, destructive=True),
    )
}
"""Every scenario by name, with the purses it applies to."""


def run_scenario(
    name: str, card: Transmit, psam: Transmit, keys: Keystore, *, app: str = "transit",
    when: dt.datetime = DEFAULT_WHEN, **options: Any,
) -> ScenarioResult:
    """Run one scenario on a powered card and PSAM (raw transmit callables)."""
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if app not in scenario.apps:
        raise ValueError(f"scenario {name} applies to {', '.join(scenario.apps)}, not {app}")
    return scenario.run(PurseTerminal(card, psam, keys, when=when), app, **options)
