"""Sans-IO transaction sessions: what a session asks for, what it answers, and its driver protocol.

A session is one transaction.  It never does I/O: it yields a *step* and is
fed the reply, until it returns an `Outcome`::

    step = session.start()
    while not isinstance(step, Outcome):
        if isinstance(step, Send):          # an APDU for the card or the PSAM
            reply = channels[step.device].transmit(step.apdu)
        elif isinstance(step, Authorize):   # a host's MAC: load MAC2, maintenance MAC
            reply = host.authorize(step.request)
        else:                               # Journal: write it durably, then go on
            reply = journal.write(step)
        step = session.receive(reply)

When the link fails (card pulled, reader gone, host unreachable) the driver
calls `Session.fail` instead of `receive`; the session decides what that
means: before a DEBIT or CREDIT was sent nothing happened (`Decision.ERROR`),
after it the transaction stays pending in the journal (`Decision.INTERRUPTED`)
until the card is presented again.

Flows are written as generator functions (`Flow`): each ``yield`` is one step
and receives its reply, so a flow reads in the order of the specification.
`Session` checks every reply against the step it answers; a reply of the
wrong kind, or a call in the wrong state, is an error naming the state and
the event.  Time, randomness and the journal's pending transactions are
inputs of a session, never read by it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Generator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.apdu.trace import Device
from unioncard.errors import CardError, DecodeError, TransportError, UnionCardError
from unioncard.terminal.key_host import MaintenanceAuthorization, MaintenanceRequest
from unioncard.terminal.load_host import LoadAuthorization, LoadRequest

if TYPE_CHECKING:
    from unioncard.offline import OfflineRecord
    from unioncard.terminal.issuer_host import AuthorizationRequest

__all__ = [
    "Authorize",
    "Decision",
    "Device",
    "Flow",
    "Journal",
    "JournalReceipt",
    "LinkLost",
    "Outcome",
    "PendingTransaction",
    "Refused",
    "Resolution",
    "ResolutionState",
    "Send",
    "Session",
    "SessionError",
    "Step",
]


class SessionError(UnionCardError):
    """A session was driven wrongly: a reply of the wrong kind, or after its outcome."""


class LinkLost(TransportError):
    """Thrown into a flow at the step whose reply never came (the original error chained)."""


class Refused(UnionCardError):
    """Raised by a flow to end with ``decision`` (declined by default) and a reason a
    passenger or an operator understands; ``outcome`` holds more `Outcome` fields."""

    def __init__(self, reason: str, decision: Decision | None = None, **outcome: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.decision = decision or Decision.DECLINED
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``apdu`` to the card or the PSAM; the reply is its `ResponseAPDU`."""

    device: Device
    apdu: CommandAPDU
    what: str


@dataclass(frozen=True, slots=True)
class Authorize:
    """Ask a host for a MAC: the load host to check the card's load MAC1 and give MAC2
    (a `LoadRequest`, answered by a `LoadAuthorization`), the key host for the
    maintenance MAC of APPLICATION BLOCK (a `MaintenanceRequest`, answered by a
    `MaintenanceAuthorization`), or the issuer host for an online authorization (an
    `AuthorizationRequest`, answered by an `AuthorizationResponse`)."""

    request: LoadRequest | MaintenanceRequest | AuthorizationRequest

    @property
    def answer_type(self) -> type:
        declared = getattr(self.request, "answer_type", None)  # the issuer host's request
        if declared is not None:
            return declared  # type: ignore[no-any-return]
        return (MaintenanceAuthorization if isinstance(self.request, MaintenanceRequest)
                else LoadAuthorization)


class ResolutionState(StrEnum):
    """Where a journaled transaction ends."""

    COMPLETED = "completed"
    VOIDED = "voided"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The end of a journaled transaction: completed with its offline record, or voided."""

    transaction_id: int
    state: ResolutionState
    record: OfflineRecord | None = None
    reason: str = ""
    mac_refused: bool = False
    """Voided because the card refused the terminal's MAC1 (``9302``): the terminal does
    not try that card again within the recovery window (each refusal counts toward
    locking the card's purse)."""

    def __post_init__(self) -> None:
        if (self.state is ResolutionState.COMPLETED) != (self.record is not None):
            raise ValueError("a completed transaction has a record, a voided one none")


@dataclass(frozen=True, slots=True)
class PendingTransaction:
    """A transaction whose DEBIT or CREDIT may have reached the card.

    Written to the journal before the command is sent, so it survives the
    terminal's death; ``draft`` is its offline record as it will be if the card
    committed (TAC zero, flagged without TAC), ``card_seq`` the seq INITIALIZE
    returned and ``balance_before`` the balance it reported.  ``id`` is the
    journal's number for it (None until written); ``disbursement`` the journal's
    number of the union payment a load credits (None for other transactions).
    """

    flow: str
    draft: OfflineRecord
    balance_before: int
    id: int | None = None
    disbursement: int | None = None

    @property
    def card_key(self) -> tuple[int, bytes, bytes]:
        """(application, issuer, diversifier): which purse of which card."""
        return int(self.draft.application), self.draft.issuer, self.draft.diversifier

    @property
    def amount(self) -> int:
        return self.draft.charged_amount

    @property
    def card_seq(self) -> int:
        return self.draft.card_seq

    @property
    def is_load(self) -> bool:
        return self.draft.is_load

    @property
    def when(self) -> dt.datetime:
        return self.draft.when

    def journaled(self, receipt: JournalReceipt) -> PendingTransaction:
        """This transaction with the number the journal gave it."""
        return dataclasses.replace(self, id=receipt.transaction_id)

    def completed(self, tac: bytes | None, flags: int = 0, reason: str = "") -> Resolution:
        """The resolution that completes this transaction with ``tac`` (None: no TAC).

        A load's terminal seq is its journal number (docs/records.md), known once
        the transaction is journaled.
        """
        if self.id is None:
            raise SessionError("a transaction is completed only once it is journaled")
        from unioncard.offline import RecordFlags

        flags = RecordFlags(flags) | (RecordFlags.NO_TAC if tac is None else 0)
        record = dataclasses.replace(
            self.draft, tac=tac or bytes(4), flags=flags,
            terminal_seq=self.id if self.is_load else self.draft.terminal_seq)
        return Resolution(self.id, ResolutionState.COMPLETED, record, reason)

    def voided(self, reason: str, *, mac_refused: bool = False) -> Resolution:
        if self.id is None:
            raise SessionError("only a journaled transaction can be voided")
        return Resolution(self.id, ResolutionState.VOIDED, None, reason, mac_refused)


@dataclass(frozen=True, slots=True)
class Journal:
    """Write durably before going on: a new pending transaction and/or resolutions.

    The reply is a `JournalReceipt` with the id given to ``begin`` (None when
    there is no ``begin``).  Both parts are one journal transaction.
    """

    begin: PendingTransaction | None = None
    resolutions: tuple[Resolution, ...] = ()


@dataclass(frozen=True, slots=True)
class JournalReceipt:
    transaction_id: int | None


Step = Send | Authorize | Journal


class Decision(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    ERROR = "error"
    INTERRUPTED = "interrupted"

    @property
    def exit_status(self) -> int:
        """The CLI's exit status: 0 approved, 1 declined, 2 error or interrupted."""
        return {"approved": 0, "declined": 1}.get(self.value, 2)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a session ended.

    ``resolutions`` are journal writes the driver applies before reporting the
    outcome (the transaction completed or voided, older pending ones resolved);
    ``journal_id`` is the journal's number of the transaction (pending when the
    outcome is interrupted).
    ``record`` is the offline record of the transaction this outcome is about.
    ``details`` holds flow-specific facts (the card read, the toll, warnings).
    """

    flow: str
    decision: Decision
    reason: str
    list_amount: int | None = None
    charged_amount: int | None = None
    balance_before: int | None = None
    balance_after: int | None = None
    rules: tuple[str, ...] = ()
    tac: bytes | None = None
    recovered: bool = False
    record: OfflineRecord | None = None
    resolutions: tuple[Resolution, ...] = ()
    journal_id: int | None = None
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> Outcome:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: amounts in integer fen, ids and TAC in hex, dates ISO 8601."""
        record = self.record
        return {
            "flow": self.flow,
            "decision": self.decision.value,
            "reason": self.reason,
            "list_amount": self.list_amount,
            "charged_amount": self.charged_amount,
            "balance_before": self.balance_before,
            "balance_after": self.balance_after,
            "rules": list(self.rules),
            "tac": None if self.tac is None else self.tac.hex().upper(),
            "recovered": self.recovered,
            "journal_id": self.journal_id,
            "record": None if record is None else record.to_dict(),
            "warnings": list(self.warnings),
            **self.details,
        }


Flow = Generator[Step, Any, Outcome]
"""A flow: yields steps, receives their replies, returns the outcome."""


class Session:
    """Drives one `Flow` for a driver: `start`, then `receive` or `fail` until an `Outcome`.

    ``in_flight`` is set by the flow (`value_sent`) between sending a DEBIT or
    CREDIT and knowing its result: a failure then leaves the transaction
    pending (`Decision.INTERRUPTED`) instead of `Decision.ERROR`.
    """

    flow_name = "session"

    def __init__(self) -> None:
        self._flow: Flow | None = None
        self._step: Step | None = None
        self._outcome: Outcome | None = None
        self.journal_id: int | None = None
        self.in_flight = False
        self.notes: list[str] = []
        """Warnings gathered on the way (older transactions resolved, ...), added to the
        outcome's."""

    def flow(self) -> Flow:  # pragma: no cover - every session defines it
        raise NotImplementedError

    # --- the driver's side ---------------------------------------------------------------

    @property
    def state(self) -> str:
        """What the session waits for: ``"new"``, the step's description, or ``"done"``."""
        if self._outcome is not None:
            return "done"
        if self._step is None:
            return "new"
        return _describe(self._step)

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    def start(self) -> Step | Outcome:
        if self._flow is not None or self._outcome is not None:
            raise SessionError(f"{self.flow_name}: start() called twice (state {self.state})")
        self._flow = self.flow()
        return self._advance(lambda flow: next(flow))

    def receive(self, reply: Any) -> Step | Outcome:
        """Feed the reply to the current step: a `ResponseAPDU` for `Send`, a
        `LoadAuthorization` or `MaintenanceAuthorization` for `Authorize`, a
        `JournalReceipt` for `Journal`."""
        step = self._current("receive")
        expected: type
        if isinstance(step, Send):
            expected = ResponseAPDU
        elif isinstance(step, Journal):
            expected = JournalReceipt
        else:
            expected = step.answer_type
        if not isinstance(reply, expected):
            raise SessionError(
                f"{self.flow_name} in state {self.state!r} expected a "
                f"{expected.__name__} and got {type(reply).__name__}"
            )
        if isinstance(reply, JournalReceipt) and isinstance(step, Journal) and step.begin:
            self.journal_id = reply.transaction_id
        return self._advance(lambda flow: flow.send(reply))

    def fail(self, error: BaseException) -> Step | Outcome:
        """The current step's reply will never come (card pulled, link or host lost)."""
        self._current("fail")
        lost = error if isinstance(error, LinkLost) else LinkLost(str(error))
        if lost is not error:
            lost.__cause__ = error
        return self._advance(lambda flow: flow.throw(lost))

    # --- internals -------------------------------------------------------------------------

    def _current(self, event: str) -> Step:
        if self._outcome is not None:
            raise SessionError(f"{self.flow_name}: {event}() after the outcome "
                               f"({self._outcome.decision.value})")
        if self._flow is None or self._step is None:
            raise SessionError(f"{self.flow_name}: {event}() before start()")
        return self._step

    def _advance(self, move: Any) -> Step | Outcome:
        assert self._flow is not None
        try:
            step = move(self._flow)
        except StopIteration as stop:
            return self._finish(stop.value)
        except Refused as refusal:
            return self._finish(Outcome(self.flow_name, refusal.decision, refusal.reason,
                                        **refusal.outcome))
        except (LinkLost, CardError, DecodeError) as exc:
            return self._finish(self._broken(exc))
        if not isinstance(step, Send | Authorize | Journal):
            raise SessionError(f"{self.flow_name} yielded {step!r}, not a step")
        self._step = step
        return step

    def _broken(self, exc: Exception) -> Outcome:
        """The flow ended on an exception: pending stays pending when a value was in flight."""
        what = self.state
        if isinstance(exc, LinkLost):
            reason = f"{exc} (at {what})"
        elif isinstance(exc, DecodeError | CardError):
            device = "PSAM" if isinstance(self._step, Send) and self._step.device is Device.PSAM \
                else "card"
            reason = f"the {device} broke the protocol at {what}: {exc}"
        else:
            reason = str(exc)
        if self.in_flight:
            return Outcome(self.flow_name, Decision.INTERRUPTED,
                           f"interrupted after the value command was sent: {reason}; "
                           "the transaction stays pending and is resolved when the card "
                           "is presented again", journal_id=self.journal_id)
        return Outcome(self.flow_name, Decision.ERROR, f"{reason}; nothing was charged")

    def _finish(self, outcome: Outcome) -> Outcome:
        if not isinstance(outcome, Outcome):
            raise SessionError(f"{self.flow_name} returned {outcome!r}, not an Outcome")
        if outcome.journal_id is None and self.in_flight:
            outcome = outcome.with_changes(journal_id=self.journal_id)
        if self.notes:
            outcome = outcome.with_changes(warnings=(*self.notes, *outcome.warnings))
        self._outcome = outcome
        self._flow = None
        return outcome


def _describe(step: Step) -> str:
    if isinstance(step, Send):
        return f"{step.what} ({step.device.value})"
    if isinstance(step, Authorize):
        if isinstance(step.request, MaintenanceRequest):
            return "key host maintenance MAC"
        return f"{getattr(step.request, 'host_name', 'load host')} authorization"
    return "journal write"
