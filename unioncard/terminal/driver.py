"""The loop that runs a session over real links: the only place the engine does I/O.

`run` feeds a sans-IO `Session` its replies: APDUs through a `Channel` to the
card or the PSAM (any transport: in process, PC/SC, vpcd), load
authorizations from a `LoadHost`, journal writes to a `TransactionJournal`.
A transport failure, a card that breaks the T=0 protocol, an unreachable host
or a journal that cannot write is handed to `Session.fail`, which decides the
outcome; the outcome's resolutions are journaled before it is returned.

>>> from unioncard.terminal import CardRead
>>> class NoCard:
...     def transmit(self, apdu): raise TransportError("no card in reader 'demo'")
>>> run(CardRead(), card=NoCard()).reason
"no card in reader 'demo' (at SELECT member application (card)); nothing was charged"
"""

from __future__ import annotations

import sqlite3
from typing import Protocol

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.apdu.trace import Device
from unioncard.errors import CardError, DecodeError, TransportError
from unioncard.terminal.journal import JournalError, TransactionJournal
from unioncard.terminal.load_host import LoadHost
from unioncard.terminal.session import (
    Authorize,
    Journal,
    JournalReceipt,
    Outcome,
    Send,
    Session,
    SessionError,
)

__all__ = ["ApduLink", "run"]


class ApduLink(Protocol):
    """What the driver needs of a card link: `unioncard.transport.Channel` is one."""

    def transmit(self, command: CommandAPDU) -> ResponseAPDU: ...


def run(
    session: Session,
    *,
    card: ApduLink,
    psam: ApduLink | None = None,
    journal: TransactionJournal | None = None,
    host: LoadHost | None = None,
) -> Outcome:
    """Run ``session`` to its outcome.  Without a ``journal`` an in-memory one is used
    (nothing survives the process: for reads and tests)."""
    own_journal = journal is None
    book = journal if journal is not None else TransactionJournal(":memory:")
    try:
        step = session.start()
        while not isinstance(step, Outcome):
            try:
                reply = _carry(step, card, psam, book, host)
            except (TransportError, CardError, DecodeError, JournalError, OSError,
                    sqlite3.Error) as exc:
                step = session.fail(exc)
                continue
            step = session.receive(reply)
        outcome = step
        if outcome.resolutions:
            try:
                book.resolve(outcome.resolutions)
            except (JournalError, OSError, sqlite3.Error) as exc:
                outcome = outcome.with_changes(warnings=(
                    *outcome.warnings,
                    f"the journal could not record the result ({exc}); the transaction stays "
                    "pending and is settled when the card is presented again"))
        return outcome
    finally:
        if own_journal:
            book.close()


def _carry(step: Send | Authorize | Journal, card: ApduLink, psam: ApduLink | None,
           journal: TransactionJournal, host: LoadHost | None
           ) -> ResponseAPDU | JournalReceipt | object:
    if isinstance(step, Send):
        link = card if step.device is Device.CARD else psam
        if link is None:
            raise SessionError(f"the session needs a PSAM ({step.what}) and none was given")
        return link.transmit(step.apdu)
    if isinstance(step, Journal):
        return journal.write(step)
    if host is None:
        raise SessionError("the session needs a load host and none was given")
    return host.authorize(step.request)
