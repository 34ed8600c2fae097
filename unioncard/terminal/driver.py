"""The loop that runs a session over real links: the only place the engine does I/O.

`run` feeds a sans-IO `Session` its replies: APDUs through a `Channel` to the
card or the PSAM (any transport: in process, PC/SC, vpcd), load
authorizations from a `LoadHost` (or, for an EMV sale, online authorizations
from an `IssuerHost`, given as ``host``), maintenance MACs from a `KeyHost`,
journal writes to a `TransactionJournal`.
A transport failure, a card that breaks the T=0 protocol, a load host that
fails in any way or a journal that cannot write is handed to `Session.fail`,
which decides the outcome; the outcome's resolutions are journaled before it
is returned.

A session that may move money journals it before the card commits: `run`
refuses to run one without a journal (``TransactionJournal(":memory:")`` for
one that keeps nothing, in tests); a card read needs none.

>>> from unioncard.terminal import CardRead
>>> class NoCard:
...     def transmit(self, apdu): raise TransportError("no card in reader 'demo'")
>>> run(CardRead(), card=NoCard()).reason
"no card in reader 'demo' (at SELECT member application (card)); nothing was charged"
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Protocol

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.apdu.trace import Device
from unioncard.errors import CardError, DecodeError, TransportError
from unioncard.terminal.journal import JournalError, TransactionJournal
from unioncard.terminal.key_host import KeyHost, MaintenanceAuthorization, MaintenanceRequest
from unioncard.terminal.load_host import LoadAuthorization, LoadHost
from unioncard.terminal.session import (
    Journal,
    JournalReceipt,
    Outcome,
    Send,
    Session,
    SessionError,
    Step,
)

if TYPE_CHECKING:  # a purse tap has no issuer host to import
    from unioncard.terminal.issuer_host import AuthorizationResponse, IssuerHost

__all__ = ["ApduLink", "HostFailure", "run"]

LINK_FAILURES = (TransportError, CardError, DecodeError, JournalError, OSError, sqlite3.Error)
"""What ends a step without its reply: the session decides what it means."""


class ApduLink(Protocol):
    """What the driver needs of a card link: `unioncard.transport.Channel` is one."""

    def transmit(self, command: CommandAPDU) -> ResponseAPDU: ...


class HostFailure(TransportError):
    """The load host or the key host failed (network, timeout, a defect): no MAC came back."""


def run(
    session: Session,
    *,
    card: ApduLink,
    psam: ApduLink | None = None,
    journal: TransactionJournal | None = None,
    host: LoadHost | IssuerHost | None = None,
    key_host: KeyHost | None = None,
) -> Outcome:
    """Run ``session`` to its outcome."""
    step = session.start()
    while not isinstance(step, Outcome):
        try:
            reply = _carry(step, card, psam, journal, host, key_host)
        except LINK_FAILURES as exc:
            step = session.fail(exc)
            continue
        step = session.receive(reply)
    outcome = step
    if outcome.resolutions and journal is not None:
        try:
            journal.resolve(outcome.resolutions)
        except (JournalError, OSError, sqlite3.Error) as exc:
            outcome = outcome.with_changes(warnings=(
                *outcome.warnings,
                f"the journal could not record the result ({exc}); the transaction stays "
                "pending and is settled when the card is presented again"))
    return outcome


def _carry(step: Step, card: ApduLink, psam: ApduLink | None,
           journal: TransactionJournal | None, host: LoadHost | IssuerHost | None,
           key_host: KeyHost | None
           ) -> ResponseAPDU | JournalReceipt | LoadAuthorization | MaintenanceAuthorization \
        | AuthorizationResponse:
    if isinstance(step, Send):
        link = card if step.device is Device.CARD else psam
        if link is None:
            raise SessionError(f"the session needs a PSAM ({step.what}) and none was given")
        return link.transmit(step.apdu)
    if isinstance(step, Journal):
        if journal is None:
            raise SessionError("this session journals its transaction before the card commits "
                               "it: give run() a TransactionJournal (':memory:' keeps nothing)")
        return journal.write(step)
    request = step.request
    what, chosen = (("key host", key_host) if isinstance(request, MaintenanceRequest)
                    else (getattr(request, "host_name", "load host"), host))
    if chosen is None:
        raise SessionError(f"the session needs a {what} and none was given")
    try:
        return chosen.authorize(request)  # type: ignore[arg-type]  # paired just above
    except Exception as exc:  # a real host fails in its own ways: none may escape the loop
        raise HostFailure(f"the {what} failed: {exc}") from exc
