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
  settlement does (`unioncard.testing.purse_rig.expected_tac`).

Checks about a card refusing a bad command send that command on purpose with
the builders of `unioncard.apdu.purse` (DEBIT without INITIALIZE: ``6985``), or
tamper with one link of an engine session (the tampered links of
`unioncard.testing.purse_rig`): a PSAM link that corrupts MAC1, a load host that
answers a wrong MAC2, a card link that loses the DEBIT answer after the card
executed it (recovered by the engine with GET TRANSACTION PROVE).  A check that
finds the card deviating from docs/protocol.md raises `CheckFailure` (a
`unioncard.errors.CardError`) naming the check, the step and the last exchanges.

The checks drive a `PurseRig` (`unioncard.testing.purse_rig`, re-exported here).
Non-destructive checks leave the card usable (a MAC error is followed by a
good transaction, which clears the card's error counter; a blocked purse is
unblocked); ``three_mac_errors`` locks the purse for good: give it a card you
can lose.  docs/simulator.md, "Conformance checks", lists the checks and runs
them against a card over PC/SC.

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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from unioncard.apdu import SW, CommandAPDU, ResponseAPDU, command_name, records
from unioncard.apdu import purse as cmd
from unioncard.apdu.purse import TransactionType, bcd_datetime
from unioncard.apdu.records import size_of
from unioncard.crypto.keystore import CardKeys
from unioncard.errors import CardError, CryptoError, DecodeError, TransportError
from unioncard.offline import Application, OfflineRecord, RecordFlags
from unioncard.terminal import CardRead, Decision, Outcome, Session
from unioncard.terminal.card import CAPP_SFI, LOG_SFI
from unioncard.terminal.etc import TollStatus
from unioncard.testing.purse_rig import (
    CorruptMac1,
    Exchange,
    LoseDebitAnswer,
    PurseRig,
    WrongMac2,
    expected_mac2,
    expected_tac,
    expected_toll_record,
    purse_application,
    select_application,
)

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailure",
    "CheckResult",
    "PurseRig",
    "run_check",
]

TRAIL = 6
"""Exchanges a `CheckFailure` shows."""

_TYPE_NAMES: dict[int, str] = {
    TransactionType.EP_LOAD: "load", TransactionType.EP_PURCHASE: "purchase",
    TransactionType.CAPP_PURCHASE: "composite purchase"}
"""Transaction types as `CardRead` names them in a log entry."""
_INITIALIZE, _DEBIT, _CREDIT = 0x50, 0x54, 0x52


# --- failures and results ------------------------------------------------------------------


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


# --- running a check ---------------------------------------------------------------------------


class _Run:
    """One check on one purse: its current step, its failures, what it sends."""

    def __init__(self, rig: PurseRig, name: str, app: str) -> None:
        self.rig, self.name, self.app = rig, name, app
        self.application = purse_application(app)
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
                       expected_mac2(self.rig.keys, record, random))
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
            expected_toll_record(entry, TollStatus.ETC_ENTRY))
    t.at("ETC exit")
    exit_ = t.purchase(CAPP_AMOUNT)
    record = t.verify(exit_, before)
    t.equal("transaction type of the exit", record.tx_type, TransactionType.CAPP_PURCHASE)
    t.equal("EF 0019 record 1 after the exit", t.read_toll_record(),
            expected_toll_record(exit_, TollStatus.ETC_EXIT))
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
    outcome = t.purchase(SMALL_AMOUNT, expect=None, psam=CorruptMac1(rig.psam))
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
    outcome = t.load(amount, expect=None, host=WrongMac2(rig.host))
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
    lose = LoseDebitAnswer(rig.card)
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
            expected_mac2(rig.keys, record, init.random))
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
        t.refused(t.purchase(0, expect=None, psam=CorruptMac1(rig.psam)), "purchase")
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
