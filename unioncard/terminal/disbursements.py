"""Union disbursements (互助金, 困难补助, 消费补贴): payments credited to members' cards.

A union pays mutual-aid money, hardship subsidies and consumption subsidies onto
its members' cards.  The payments arrive as a sheet (CSV, UTF-8 or GBK, like the
member sheet): ``member_no,amount,reason`` (or ``会员编号,金额,事由``), amounts in
fen, with two optional columns: ``reference`` (``编号``), the union's own id of the
payment, and ``purse`` (``钱包``), ``transit`` (default) or ``etc``.

A service point imports the sheet into its journal (`read_disbursements`, then
`TransactionJournal.import_disbursements`): every payment is then *pending* for
its member.  When the member's card is next presented, `credit_pending` reads
the card's member number and loads each pending payment onto the card, one load
(圈存) per payment.  Each payment is loaded exactly once, whatever is interrupted
or re-run:

- a payment is known by its reference; a row without one is known by its member,
  amount, purse and reason and by how many identical rows come before it in the
  sheet, so importing the same sheet again adds nothing;
- a load is journaled as pending *together with* its payment (one commit), and
  the payment is loaded in the same commit that completes the load; a load whose
  card was pulled is resolved by the engine's recovery the next time the card is
  presented (docs/terminal.md), and the payment follows it: loaded, or pending
  again when the card never received the credit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from unioncard.offline import Application
from unioncard.sheet import RowError, control_character, read_rows
from unioncard.terminal.session import Decision, Outcome

if TYPE_CHECKING:
    from unioncard.terminal.driver import ApduLink
    from unioncard.terminal.journal import TransactionJournal
    from unioncard.terminal.load_host import LoadHost

__all__ = ["COLUMNS", "MAX_DISBURSEMENT", "Disbursement", "DisbursementSheet",
           "DisbursementState", "ServiceVisit", "credit_pending", "read_disbursements"]

COLUMNS = ("member_no", "amount", "reason")
OPTIONAL_COLUMNS = ("reference", "purse")
CHINESE_COLUMNS = {"会员编号": "member_no", "金额": "amount", "金额(分)": "amount",
                   "事由": "reason", "编号": "reference", "钱包": "purse"}
MAX_DISBURSEMENT = 100_000
"""The purse maximum (docs/protocol.md §1.6, 1000.00 yuan): a larger payment could never
be loaded and must be split by the union."""
REASON_MAX_UTF8_BYTES = 120
REFERENCE_MAX = 64
PURSES = {"transit": Application.TRANSIT, "etc": Application.ETC}


class DisbursementState(StrEnum):
    """Where a payment is: waiting for the card, being loaded (its load pending in the
    journal), or loaded."""

    PENDING = "pending"
    LOADING = "loading"
    LOADED = "loaded"


@dataclass(frozen=True, slots=True)
class Disbursement:
    """One payment to one member.  ``id``, ``state``, ``transaction_id`` (its load in the
    journal) and ``last_error`` (why the last attempt did not load it) come from the
    journal; ``line`` is its line in the sheet it was read from."""

    reference: str
    member_no: str
    amount: int
    reason: str
    application: Application = Application.TRANSIT
    line: int = 0
    id: int | None = None
    state: DisbursementState = DisbursementState.PENDING
    transaction_id: int | None = None
    last_error: str = ""

    def same_payment(self, other: Disbursement) -> bool:
        """Whether ``other`` says the same as this about the payment (reference aside)."""
        return ((self.member_no, self.amount, self.reason, self.application)
                == (other.member_no, other.amount, other.reason, other.application))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reference": self.reference, "member_no": self.member_no,
                "amount": self.amount, "reason": self.reason,
                "purse": self.application.name.lower(), "state": self.state.value,
                "transaction_id": self.transaction_id, "last_error": self.last_error}


@dataclass(slots=True)
class DisbursementSheet:
    """The payments of a sheet, and its refused rows with their reasons."""

    encoding: str
    items: list[Disbursement] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def read_disbursements(raw: bytes, *, default_purse: Application = Application.TRANSIT
                       ) -> DisbursementSheet:
    """Read a whole disbursement sheet; raises `unioncard.sheet.SheetError` only for an
    unreadable sheet, and gives every refused row with its line and reason.  Rows
    without a purse go to ``default_purse``.

    >>> sheet = read_disbursements("会员编号,金额,事由\\n20260001,50000,2026年互助金\\n"
    ...                            .encode("gbk"))
    >>> d = sheet.items[0]
    >>> (d.member_no, d.amount, d.reason, d.reference[:5], sheet.encoding)
    ('20260001', 50000, '2026年互助金', 'auto:', 'gbk')
    """
    encoding, rows = read_rows(raw, COLUMNS, CHINESE_COLUMNS, optional=OPTIONAL_COLUMNS)
    sheet = DisbursementSheet(encoding)
    references: dict[str, int] = {}
    occurrences: dict[tuple[str, int, str, int], int] = {}
    for row in rows:
        if isinstance(row, RowError):
            sheet.errors.append(row)
            continue
        line, values = row
        checked = _check_row(values, default_purse)
        if isinstance(checked, str):
            sheet.errors.append(RowError(line, values["member_no"], checked))
            continue
        member_no, amount, reason, application = checked
        reference = values.get("reference", "")
        if not reference:
            payment = (member_no, amount, reason, int(application))
            occurrences[payment] = occurrences.get(payment, 0) + 1
            reference = _derived_reference(*payment, occurrences[payment])
        if reference in references:
            sheet.errors.append(RowError(line, member_no, f"reference {reference!r} already on "
                                                          f"line {references[reference]}"))
            continue
        references[reference] = line
        sheet.items.append(Disbursement(reference, member_no, amount, reason, application, line))
    return sheet


def _check_row(values: dict[str, str], default_purse: Application
               ) -> tuple[str, int, str, Application] | str:
    """The row's member number, amount, reason and purse, or why it is refused."""
    member_no, amount_text, reason = values["member_no"], values["amount"], values["reason"]
    if not (member_no.isascii() and member_no.isdigit() and 1 <= len(member_no) <= 16):
        return f"member number {member_no!r} must be 1 to 16 digits"
    if not (amount_text.isascii() and amount_text.isdigit()):
        return f"amount {amount_text!r} must be a whole number of fen (5000 is 50.00 yuan)"
    amount = int(amount_text)
    if not 1 <= amount <= MAX_DISBURSEMENT:
        return (f"amount {amount} fen is outside 1 to {MAX_DISBURSEMENT} fen (the purse "
                "maximum; split larger payments)")
    if not reason:
        return "reason is empty"
    if len(reason.encode("utf-8")) > REASON_MAX_UTF8_BYTES:
        return f"reason is longer than {REASON_MAX_UTF8_BYTES} bytes"
    if control_character(reason):
        return f"reason holds the control character {control_character(reason)}"
    reference = values.get("reference", "")
    if reference and not (reference.isprintable() and len(reference) <= REFERENCE_MAX):
        return f"reference must be 1 to {REFERENCE_MAX} printable characters"
    purse = values.get("purse", "").lower()
    if purse and purse not in PURSES:
        return f"purse {purse!r} must be transit or etc"
    return member_no, amount, reason, PURSES[purse] if purse else default_purse


def _derived_reference(member_no: str, amount: int, reason: str, application: int,
                       occurrence: int) -> str:
    """The reference of a row that has none: the same row of a sheet imported again gets
    the same one; the n-th identical row is another payment."""
    text = f"{member_no}\x1f{amount}\x1f{reason}\x1f{application}\x1f{occurrence}"
    return "auto:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


# --- at the service point ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceVisit:
    """A member's card at a service point: who, and each pending payment's outcome."""

    member_no: str | None
    decision: Decision
    reason: str
    loads: tuple[tuple[Disbursement, Outcome], ...] = ()
    waiting: tuple[Disbursement, ...] = ()
    """The member's payments still not loaded after the visit."""

    @property
    def loaded_amount(self) -> int:
        return sum(d.amount for d, o in self.loads if o.decision is Decision.APPROVED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value, "reason": self.reason, "member_no": self.member_no,
            "loaded_amount": self.loaded_amount,
            "loads": [{"disbursement": d.to_dict(), **o.to_dict()} for d, o in self.loads],
            "still_pending": [d.to_dict() for d in self.waiting],
        }


def credit_pending(card: ApduLink, *, journal: TransactionJournal, host: LoadHost,
                   terminal_id: bytes, now: dt.datetime, **options: Any) -> ServiceVisit:
    """Load the pending payments of the member whose card ``card`` is, one load each.

    The card's member number comes from a card read; each load checks it again
    (the card may change between loads).  A payment left *loading* by an interrupted
    load is presented first: the engine's recovery settles that load, and the
    payment with it.  The visit stops at the first load that is interrupted or
    fails (the card is gone or the host is down); a declined load (the purse would
    pass its maximum) leaves its payment pending, with the reason, and the next
    payment is tried.  ``options`` go to each `unioncard.terminal.load.Load`.
    """
    from unioncard.terminal.driver import run
    from unioncard.terminal.load import Load
    from unioncard.terminal.read import CardRead

    read = run(CardRead(), card=card)
    if read.decision is not Decision.APPROVED:
        return ServiceVisit(None, read.decision, f"the card could not be read: {read.reason}")
    member_no = (read.details.get("member") or {}).get("member_no")
    if not member_no:
        return ServiceVisit(None, Decision.DECLINED, "the card carries no member application: "
                                                     "disbursements are paid to member cards")
    loads: list[tuple[Disbursement, Outcome]] = []
    decision = Decision.APPROVED
    for listed in journal.disbursements(member_no=member_no, unloaded=True):
        payment = journal.disbursement(listed.id)
        if payment.state is DisbursementState.LOADED:  # settled by an earlier recovery
            continue
        outcome = run(Load(payment.application, payment.amount, terminal_id=terminal_id,
                           member_no=member_no, disbursement=payment.id, now=now,
                           pending=journal.pending(), **options),
                      card=card, journal=journal, host=host)
        if outcome.decision is Decision.DECLINED:
            journal.note_disbursement_refusal(_id(payment), outcome.reason)
            decision = Decision.DECLINED
        loads.append((journal.disbursement(_id(payment)), outcome))
        if outcome.decision in (Decision.ERROR, Decision.INTERRUPTED):
            decision = outcome.decision
            break
    waiting = tuple(journal.disbursements(member_no=member_no, unloaded=True))
    return ServiceVisit(member_no, decision, _visit_reason(member_no, loads, waiting),
                        tuple(loads), waiting)


def _id(payment: Disbursement) -> int:
    assert payment.id is not None
    return payment.id


def _visit_reason(member_no: str, loads: Sequence[tuple[Disbursement, Outcome]],
                  waiting: Sequence[Disbursement]) -> str:
    if not loads and not waiting:
        return f"no disbursement waits for member {member_no}"
    loaded = [d for d, o in loads if o.decision is Decision.APPROVED]
    text = (f"loaded {len(loaded)} disbursement(s) of member {member_no}, "
            f"{sum(d.amount for d in loaded)} fen")
    if waiting:
        text += f"; {len(waiting)} still pending ({sum(d.amount for d in waiting)} fen)"
    last = loads[-1][1] if loads else None
    if last is not None and last.decision is not Decision.APPROVED:
        text += f": {last.reason}"
    return text
