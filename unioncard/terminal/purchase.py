"""Purse purchases: what every paying flow shares, and the transit fares (JR/T 0025 EP purchase).

A purchase (docs/protocol.md §1-§3), after the card has been read and its pending
transactions resolved (`unioncard.terminal.recovery`):

1. the fare is quoted with the tariffs engine (member benefits);
2. INITIALIZE FOR PURCHASE (or CAPP PURCHASE) with the charged amount: the card
   answers its balance, offline seq, key version and a random (``9401``: the
   balance is short);
3. the PSAM computes MAC1 (``80 70``) and gives its terminal seq;
4. for a composite purchase, UPDATE CAPP DATA CACHE with the new EF 0019 record;
5. the transaction is journaled as pending (`Journal`), then DEBIT is sent;
6. the card answers TAC and MAC2; the PSAM verifies MAC2 (``80 72``);
7. the offline record, with the TAC for settlement, completes the transaction.

`TransitPurchase` is the bus, metro (and coach, ferry, taxi) fare on the
T-Union transit purse; the ETC flows (`unioncard.terminal.etc`) and loads use
the same pieces.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Sequence
from typing import Any

from unioncard.apdu import SW, records
from unioncard.apdu import purse as cmd
from unioncard.apdu.member import MemberRecord
from unioncard.apdu.purse import TransactionType, bcd_datetime
from unioncard.apdu.status import describe as describe_sw
from unioncard.errors import CardError
from unioncard.offline import Application, OfflineRecord, RecordFlags
from unioncard.tariffs import Mode, Quote, QuoteContext, RuleSet, default_rules, quote
from unioncard.tariffs.money import ROUNDING_CODES
from unioncard.terminal.card import (
    MF,
    PurseCard,
    card_send,
    expect_ok,
    get_balance,
    member_dict,
    membership_active,
    parse_answer,
    read_member,
    select_purse,
)
from unioncard.terminal.hotlisted import HotlistLookup, refuse_if_hotlisted
from unioncard.terminal.recovery import Recovered, resolve_pending, within
from unioncard.terminal.session import (
    Decision,
    Device,
    Flow,
    Journal,
    JournalReceipt,
    LinkLost,
    Outcome,
    PendingTransaction,
    Refused,
    Send,
    Session,
    Step,
)

__all__ = ["DEFAULT_RECOVERY_WINDOW", "MAC_REFUSAL_MEMORY", "PSAM_PURCHASE_DF", "PurseSession",
           "Sale", "TransitPurchase"]

DEFAULT_RECOVERY_WINDOW = dt.timedelta(minutes=10)
"""How long after an interrupted purchase a re-tap counts as the same transaction."""
MAC_REFUSAL_MEMORY = dt.timedelta(hours=24)
"""How long a card's refusal of this terminal's MAC1 keeps the terminal from retrying."""
PSAM_PURCHASE_DF = 0x1001
"""The PSAM's purchase application DF (docs/protocol.md §3)."""

TRANSIT_MODES = frozenset({Mode.BUS, Mode.METRO, Mode.COACH, Mode.FERRY, Mode.TAXI})
ORGANIZATION_BYTES = 48
"""The offline record's organization field (docs/records.md): longer names are cut."""
ROUTE_BYTES, MERCHANT_BYTES = 16, 24


class Sale:
    """What is being sold, for the offline record: where, and on which terms."""

    def __init__(self, mode: Mode, *, route: str | None = None, station: int = 0,
                 entry_station: int = 0, vehicle_class: int | None = None,
                 merchant: str | None = None, mcc: int | None = None) -> None:
        for name, text, size in (("route", route, ROUTE_BYTES),
                                 ("merchant", merchant, MERCHANT_BYTES)):
            if text is not None and not (text.isascii() and text.isprintable()
                                         and 0 < len(text) <= size):
                raise ValueError(f"{name} {text!r}: 1 to {size} printable ASCII characters "
                                 "(the offline record's field)")
        for name, value in (("station", station), ("entry_station", entry_station)):
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} must be 0..0xFFFF")
        self.mode = mode
        self.route = route
        self.station = station
        self.entry_station = entry_station
        self.vehicle_class = vehicle_class
        self.merchant = merchant
        self.mcc = mcc


class PurseSession(Session):
    """The pieces every purse flow shares: terminal id, card reading, recovery, purchase.

    ``now`` is the local wall-clock time of the transaction (it goes to the card
    and to the tariffs); ``pending`` the journal's pending transactions;
    ``mac_refusals`` the transactions voided because a card refused this terminal's
    MAC1 in the last `MAC_REFUSAL_MEMORY` (`TransactionJournal.mac_refusals`): such a
    card is not tried again, since each refusal counts toward locking its purse, and
    once two cards have refused it the terminal stops selling (its PSAM is wrong);
    ``terminal_id`` None reads it from the PSAM (EF 0016), then selects the PSAM's
    purchase DF ``psam_df`` (None: none).  ``hotlist`` declines a hotlisted card
    (`unioncard.terminal.hotlisted`), and ``block_hotlisted`` blocks its purse too
    (the driver then needs a key host).
    """

    def __init__(
        self, *, now: dt.datetime, pending: Sequence[PendingTransaction] = (),
        mac_refusals: Sequence[OfflineRecord] = (), terminal_id: bytes | None = None,
        rules: RuleSet | None = None, recovery_window: dt.timedelta = DEFAULT_RECOVERY_WINDOW,
        psam_df: int | None = PSAM_PURCHASE_DF, hotlist: HotlistLookup | None = None,
        block_hotlisted: bool = False,
    ) -> None:
        super().__init__()
        if now.tzinfo is not None:
            raise ValueError("now is the local wall-clock time, a naive datetime")
        if terminal_id is not None and len(terminal_id) != 6:
            raise ValueError("a terminal id has 6 bytes")
        self.now = now.replace(microsecond=0)
        self.pending = tuple(pending)
        self.mac_refusals = tuple(mac_refusals)
        self.terminal_id = terminal_id
        self.psam_df = psam_df
        self.rules = rules if rules is not None else default_rules()
        self.recovery_window = recovery_window
        self.hotlist = hotlist
        self.block_hotlisted = block_hotlisted
        self.date, self.time = bcd_datetime(self.now)

    application: Application = Application.TRANSIT
    """The purse this session works on."""
    disbursement: int | None = None
    """The union payment a load credits (`unioncard.terminal.disbursements`)."""

    def flow(self) -> Flow:
        """Every purse flow: the terminal id, the card, its interrupted transactions
        settled (which may be this tap's outcome), then the flow's own `transact`."""
        yield from self.read_terminal_id()
        card, member = yield from self.read_card(self.application)
        recovered = yield from self.recover(card)  # before any refusal: nothing stays pending
        if recovered is not None:
            return recovered
        assert self.terminal_id is not None
        yield from refuse_if_hotlisted(self.hotlist, card, now=self.now,
                                       terminal_id=self.terminal_id, block=self.block_hotlisted)
        problem = card.validity_problem(self.now.date())
        if problem is not None:
            raise Refused(problem, details={"card": card.to_dict()})
        return (yield from self.transact(card, member))

    def transact(self, card: PurseCard, member: MemberRecord | None) -> Flow:
        """The flow's own steps, once the card is read and settled."""
        raise NotImplementedError  # pragma: no cover - every purse flow defines it

    # --- reading the terminal and the card --------------------------------------------------

    def read_terminal_id(self) -> Generator[Step, Any, bytes]:
        """The terminal id: given, or the PSAM's: its MF selected (the PSAM may still be in
        the DF an earlier session chose), ``00 B0 96 00 06``, then its purchase DF
        selected (many PSAMs want it; one that answers ``80 70`` from its MF refuses the
        SELECT, which changes nothing)."""
        if self.terminal_id is None:
            yield Send(Device.PSAM, cmd.select_file(MF), "SELECT PSAM MF")
            answer = yield Send(Device.PSAM, cmd.sam_read_terminal_id(), "READ terminal id")
            if answer.sw != SW.OK:
                raise Refused(f"the PSAM does not give its terminal id: {answer.sw:04X} "
                              f"({describe_sw(answer.sw)})", Decision.ERROR)
            self.terminal_id = expect_ok(answer, "READ terminal id", size=6)
            if self.psam_df is not None:
                yield Send(Device.PSAM, cmd.select_file(self.psam_df),
                           "SELECT PSAM purchase application")
        return self.terminal_id

    def read_card(self, app: Application) -> Generator[Step, Any,
                                                        tuple[PurseCard, MemberRecord | None]]:
        """The member application (when there is one), then the purse."""
        member = yield from read_member()
        card = yield from select_purse(app)
        return card, member

    def recover(self, card: PurseCard) -> Generator[Step, Any, Outcome | None]:
        """Resolve this purse's pending transactions.  Within the recovery window, a
        completed one of this flow is this tap's outcome (nothing more is charged), and
        one the card cannot settle refuses the tap (it might be charged twice)."""
        assert self.terminal_id is not None
        results = yield from resolve_pending(self.pending, card, self.terminal_id)
        self.notes += [_note(r) for r in results]
        recent = [r for r in results if within(r.pending, self.now, self.recovery_window)]
        for item in recent:
            if item.resolution is None:
                raise Refused(
                    f"an interrupted transaction of {item.pending.when.isoformat()} on this "
                    "card cannot be settled yet (the card does not tell); try again later",
                    Decision.ERROR)
        same_flow = [r for r in recent if r.pending.flow == self.flow_name
                     and r.resolution is not None and r.resolution.record is not None
                     and r.pending.disbursement == self.disbursement
                     and self.same_sale(r.pending.draft)]
        if same_flow:
            return self._recovered_outcome(same_flow[-1], card)
        return None

    def same_sale(self, draft: OfflineRecord) -> bool:
        """Whether an interrupted transaction is the one this tap repeats (the same fare
        or toll where the same place is): a passenger changing buses pays the new ride."""
        return True

    def _recovered_outcome(self, item: Recovered, card: PurseCard) -> Outcome:
        assert item.resolution is not None and item.resolution.record is not None
        record = item.resolution.record
        return Outcome(
            self.flow_name, Decision.APPROVED,
            f"the interrupted {'load' if record.is_load else 'transaction'} of "
            f"{item.pending.when.isoformat()} was completed on the card "
            f"({item.resolution.reason}); "
            + ("nothing more was loaded" if record.is_load else "nothing more was charged"),
            list_amount=record.list_amount, charged_amount=record.charged_amount,
            balance_before=item.pending.balance_before, balance_after=record.balance_after,
            rules=self._rule_ids(record.rules),
            tac=None if record.flags & RecordFlags.NO_TAC else record.tac,
            recovered=True, record=record, journal_id=item.pending.id,
            details={"card": card.to_dict()})

    def _rule_ids(self, indexes: Sequence[int]) -> tuple[str, ...]:
        rules = self.rules.rules
        return tuple(rules[i].id if i < len(rules) else f"#{i}" for i in indexes)

    # --- pricing --------------------------------------------------------------------------

    def priced_card_type(self, card: PurseCard, member: MemberRecord | None) -> int:
        """The card type the tariffs see: EF 0015's, or ordinary when a member application
        says the member is not active today (the offline record keeps this one, so
        settlement prices the record as the terminal did)."""
        if member is not None and not membership_active(member, self.now.date()):
            return int(records.CardType.ORDINARY)
        return card.card_type

    def price(self, card: PurseCard, member: MemberRecord | None, amount: int,
              sale: Sale) -> Quote:
        """Quote ``amount`` with the member's benefits.  A member application that says the
        member is not active today makes the card an ordinary one for pricing."""
        status = records.MemberStatus.ACTIVE
        categories = card.category_flags
        if member is not None:
            categories = member.category_flags
            status = member.status
        return quote(QuoteContext(
            mode=sale.mode, amount=amount, card_type=self.priced_card_type(card, member),
            at=self.now,
            member_categories=categories, member_status=status, route=sale.route,
            vehicle_class=sale.vehicle_class, merchant_id=sale.merchant,
            merchant_category=sale.mcc, organization=_organization(member) or None), self.rules)

    # --- the purchase ---------------------------------------------------------------------

    def draft(self, card: PurseCard, member: MemberRecord | None, priced: Quote | None,
              sale: Sale | None, *, card_seq: int, key_version: int, tx_type: int,
              amount: int, balance_after: int, terminal_seq: int) -> OfflineRecord:
        """The offline record of this transaction as it will be if the card commits."""
        assert self.terminal_id is not None
        return OfflineRecord(
            terminal_id=self.terminal_id, terminal_seq=terminal_seq, issuer=card.issuer,
            diversifier=card.diversifier, application=card.application, card_seq=card_seq,
            key_version=key_version, tx_type=tx_type, mode=0 if sale is None else int(sale.mode),
            card_type=self.priced_card_type(card, member),
            category_flags=member.category_flags if member else card.category_flags,
            member_status=int(member.status) if member else 0,
            organization=_organization(member),
            card_expiry=card.expiry,
            list_amount=priced.list_amount if priced else amount, charged_amount=amount,
            balance_after=balance_after,
            rules=tuple(self.rules.index(r) for r in priced.rules) if priced else (),
            route=(sale.route or "") if sale else "", station=sale.station if sale else 0,
            entry_station=sale.entry_station if sale else 0,
            merchant=(sale.merchant or "") if sale else "",
            vehicle_class=(sale.vehicle_class or 0) if sale else 0,
            mcc=(sale.mcc or 0) if sale else 0, when=self.now, tac=bytes(4),
            flags=RecordFlags.NO_TAC,
            ruleset_version=bytes.fromhex(self.rules.version) if priced else bytes(32),
            rounding=ROUNDING_CODES[self.rules.rounding] if priced else 0)

    def purchase(self, card: PurseCard, member: MemberRecord | None, priced: Quote,
                 sale: Sale, *, capp_record: bytes | None = None,
                 details: dict[str, Any] | None = None) -> Flow:
        """INITIALIZE, MAC1, [CAPP record], journal, DEBIT, MAC2: the approved outcome."""
        amount = priced.charged_amount
        details = {"card": card.to_dict(), **(details or {})}
        if member is not None:
            details["member"] = member_dict(member)
        capp = capp_record is not None
        tx_type = TransactionType.CAPP_PURCHASE if capp else TransactionType.EP_PURCHASE
        assert self.terminal_id is not None
        self._refuse_if_refused_before(card, details)
        initialize = (cmd.initialize_for_capp_purchase if capp else cmd.initialize_for_purchase)
        answer = yield card_send(initialize(amount, self.terminal_id), "INITIALIZE FOR PURCHASE")
        if answer.sw != SW.OK:
            yield from self._refuse_initialize(answer.sw, priced, details)
        init = parse_answer(answer, "INITIALIZE FOR PURCHASE", cmd.INIT_PURCHASE_RESPONSE)
        if init.balance < amount:
            raise CardError(f"INITIALIZE FOR PURCHASE accepted {amount} fen with a balance of "
                            f"{init.balance} fen (it must answer 9401)")
        sam = yield Send(Device.PSAM, cmd.sam_init_for_purchase(
            random=init.random, offline_seq=init.offline_seq, amount=amount, tx_type=tx_type,
            date=self.date, time=self.time, key_version=init.key_version, alg_id=init.alg_id,
            diversifier=card.diversifier), "INIT SAM FOR PURCHASE")
        if sam.sw != SW.OK:
            raise Refused(_psam_refusal(sam.sw, init.key_version), Decision.ERROR,
                          list_amount=priced.list_amount, details=details)
        mac1 = parse_answer(sam, "INIT SAM FOR PURCHASE", cmd.SAM_PURCHASE_RESPONSE)
        if capp_record is not None:
            cached = yield card_send(cmd.update_capp_data_cache(capp_record, 0x19),
                                     "UPDATE CAPP DATA CACHE")
            if cached.sw != SW.OK:
                raise Refused(f"the card refused the toll record: {cached.sw:04X} "
                              f"({describe_sw(cached.sw)})", Decision.ERROR, details=details)
        balance_after = init.balance - amount
        pending = PendingTransaction(self.flow_name, self.draft(
            card, member, priced, sale, card_seq=init.offline_seq,
            key_version=init.key_version, tx_type=tx_type, amount=amount,
            balance_after=balance_after, terminal_seq=mac1.terminal_seq), init.balance)
        receipt: JournalReceipt = yield Journal(begin=pending)
        pending = pending.journaled(receipt)
        self.in_flight = True
        debit = yield card_send(cmd.debit_for_purchase(mac1.terminal_seq, self.date, self.time,
                                                       mac1.mac1), "DEBIT FOR PURCHASE")
        common = dict(list_amount=priced.list_amount, balance_before=init.balance,
                      rules=priced.rules, details=details)
        if debit.sw != SW.OK:
            self.in_flight = False
            # 9302: this terminal's PSAM does not hold the card's keys: the terminal's fault
            blame = Decision.ERROR if debit.sw == SW.MAC_ERROR else Decision.DECLINED
            refused = pending.voided(f"DEBIT refused: {debit.sw:04X}",
                                     mac_refused=debit.sw == SW.MAC_ERROR)
            raise Refused(_debit_refusal(debit.sw), blame, resolutions=(refused,),
                          **common)
        proof = parse_answer(debit, "DEBIT FOR PURCHASE", cmd.DEBIT_RESPONSE)
        self.in_flight = False
        completed = pending.completed(proof.tac)
        assert completed.record is not None
        done = Outcome(self.flow_name, Decision.APPROVED, priced.reason,
                       charged_amount=amount, balance_after=balance_after, tac=proof.tac,
                       record=completed.record, resolutions=(completed,),
                       journal_id=pending.id, **common)
        try:
            verified = yield Send(Device.PSAM, cmd.sam_credit_for_purchase(proof.mac2),
                                  "CREDIT SAM FOR PURCHASE")
        except LinkLost as exc:
            return done.with_changes(warnings=(
                f"the PSAM did not verify MAC2 ({exc}); the card was debited and the TAC "
                "goes to settlement",))
        if verified.sw == SW.MAC_ERROR:
            return done.with_changes(
                decision=Decision.DECLINED,
                reason="the card's MAC2 does not verify (9302): the card is not genuine; its "
                       "debit and TAC go to settlement for checking")
        if verified.sw != SW.OK:
            return done.with_changes(warnings=(
                f"the PSAM could not check MAC2 ({verified.sw:04X}, {describe_sw(verified.sw)});"
                " the card was debited and the TAC goes to settlement",))
        return done

    def _refuse_if_refused_before(self, card: PurseCard, details: dict[str, Any]) -> None:
        """No purchase a card refusal already showed would fail: each refused MAC1 counts
        toward locking the card's purse for good (three in a row)."""
        recent = [d for d in self.mac_refusals if d.terminal_id == self.terminal_id
                  and self.now - d.when <= MAC_REFUSAL_MEMORY]
        this_card = (card.application, card.issuer, card.diversifier)
        for draft in recent:
            if (draft.application, draft.issuer, draft.diversifier) == this_card:
                raise Refused(
                    f"this card refused this terminal's MAC1 at {draft.when.isoformat()}: not "
                    "tried again (each refusal counts toward locking the card's purse); the "
                    "terminal's PSAM must be checked", Decision.ERROR, details=details)
        cards = {(d.application, d.issuer, d.diversifier) for d in recent}
        if len(cards) >= 2:
            raise Refused(
                f"{len(cards)} cards refused this terminal's MAC1 since "
                f"{min(d.when for d in recent).isoformat()}: the terminal is out of service "
                "until its PSAM is checked (a new PSAM has a new terminal id)", Decision.ERROR,
                details=details)

    def _refuse_initialize(self, sw: int, priced: Quote,
                           details: dict[str, Any]) -> Generator[Step, Any, None]:
        amounts: dict[str, Any] = {"list_amount": priced.list_amount, "details": details}
        if sw == SW.INSUFFICIENT_BALANCE:
            balance = yield from get_balance()
            raise Refused(f"insufficient balance: {_yuan(balance)} on the card, "
                          f"{_yuan(priced.charged_amount)} to pay", balance_before=balance,
                          balance_after=balance, **amounts)
        raise Refused(_purse_refusal(sw), _decision(sw), **amounts)


class TransitPurchase(PurseSession):
    """A fare on the T-Union transit purse: bus, metro, coach, ferry or taxi.

    ``amount`` is the list fare in fen; the member benefit of the tariffs
    engine is taken off it.
    """

    def __init__(self, mode: Mode, amount: int, *, route: str | None = None,
                 station: int = 0, **options: Any) -> None:
        super().__init__(**options)
        mode = Mode(mode)
        if mode not in TRANSIT_MODES:
            raise ValueError(f"{mode.label} is not a transit fare (bus, metro, coach, ferry, "
                             "taxi)")
        if not isinstance(amount, int) or amount < 0:
            raise ValueError("the fare is a non-negative integer of fen")
        self.flow_name = mode.label
        self.amount = amount
        self.sale = Sale(mode, route=route, station=station)

    def same_sale(self, draft: OfflineRecord) -> bool:
        return (draft.mode == self.sale.mode and draft.list_amount == self.amount
                and draft.route == (self.sale.route or "") and draft.station == self.sale.station)

    def transact(self, card: PurseCard, member: MemberRecord | None) -> Flow:
        priced = self.price(card, member, self.amount, self.sale)
        return (yield from self.purchase(card, member, priced, self.sale))


# --- wording ----------------------------------------------------------------------------------


def _organization(member: MemberRecord | None) -> str:
    """The member's organization (``DF43``) as the offline record holds it, "" for none."""
    return _fit_utf8(member.organization, ORGANIZATION_BYTES) if member else ""


def _fit_utf8(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` bytes of UTF-8, on a character boundary."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore")


def _note(item: Recovered) -> str:
    """One line on how an interrupted transaction was resolved, for the outcome's warnings."""
    pending = item.pending
    what = (f"interrupted {pending.flow} #{pending.id} of {pending.when.isoformat()} "
            f"({pending.amount} fen)")
    if item.resolution is None:
        return f"{what}: still pending, the card does not tell"
    return f"{what}: {item.resolution.state.value}, {item.resolution.reason}"


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d} yuan"


def _decision(sw: int) -> Decision:
    return Decision.DECLINED if sw in _PURSE_REFUSALS else Decision.ERROR


_PURSE_REFUSALS: dict[int, str] = {
    SW.COUNTER_OVERFLOW: "the card's transaction counter is exhausted",
    SW.CONDITIONS_NOT_SATISFIED: "the purse is blocked",
    SW.APPLICATION_LOCKED: "the purse is locked for good",
    SW.KEY_INDEX_NOT_SUPPORTED: "the card does not support the terminal's key index",
}


def _purse_refusal(sw: int) -> str:
    return _PURSE_REFUSALS.get(sw) or f"the card refused the purchase: {sw:04X} ({describe_sw(sw)})"


def _psam_refusal(sw: int, key_version: int) -> str:
    if sw == SW.KEY_INDEX_NOT_SUPPORTED:
        return (f"the PSAM has no purchase key of key version {key_version:02X} (the card's): "
                "wrong PSAM for this card")
    return f"the PSAM refused MAC1: {sw:04X} ({describe_sw(sw)})"


def _debit_refusal(sw: int) -> str:
    if sw == SW.MAC_ERROR:
        return ("the card refused MAC1 (9302): this terminal's PSAM does not hold the card's "
                "keys; nothing was charged (the card counts the refusal: three in a row lock "
                "its purse, so take the terminal out of service)")
    return f"the card refused the debit: {sw:04X} ({describe_sw(sw)}); nothing was charged"
