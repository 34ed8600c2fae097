"""Resolving interrupted transactions when their card is presented again.

A transaction is journaled as pending before its DEBIT or CREDIT is sent.  If
the answer never came (card pulled, reader lost, terminal killed), only the
card knows whether it committed.  When the same purse is presented again on
the same journal, each of its pending transactions is asked about, in card-seq
order, and resolved (JR/T 0025 purse; docs/protocol.md §1):

Purchases (``06``, CAPP ``09``):

1. GET TRANSACTION PROVE for the seq INITIALIZE returned, plus one.  ``9000``:
   the debit happened; its TAC (and MAC2) come back: completed, recovered.
2. ``9406``: INITIALIZE FOR PURCHASE of 0 tells the card's offline seq.  Still
   the seq of the pending transaction: the debit never happened, voided.
3. Seq advanced (the card was used since): the card's EF 0018 log says what
   that seq was.  Our transaction (terminal id, amount, type, date and time):
   completed without TAC.  Another terminal's transaction at that seq: ours
   never happened, voided.  No longer in the log: completed without TAC and
   flagged unverified: it is never voided on a guess, settlement decides.

Loads (``02``): INITIALIZE FOR LOAD of 0 tells the online seq and balance;
unchanged: voided; advanced: the log decides as above.

A card whose answers decide nothing (a blocked purse, an odd status word)
leaves the transaction pending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from unioncard.apdu import SW
from unioncard.apdu import purse as cmd
from unioncard.apdu.purse import bcd_datetime
from unioncard.apdu.records import size_of
from unioncard.offline import RecordFlags
from unioncard.terminal.card import PurseCard, card_send, read_log
from unioncard.terminal.session import Journal, PendingTransaction, Resolution, Step

__all__ = ["Recovered", "pending_for", "resolve_pending", "within"]

PURCHASE_TYPES = frozenset({0x06, 0x09})


@dataclass(frozen=True, slots=True)
class Recovered:
    """One pending transaction and how it was resolved (None: still pending)."""

    pending: PendingTransaction
    resolution: Resolution | None


def pending_for(pending: Sequence[PendingTransaction], card: PurseCard
                ) -> list[PendingTransaction]:
    """The pending transactions of this purse of this card, in card-seq order."""
    key = (int(card.application), card.issuer, card.diversifier)
    return sorted((p for p in pending if p.card_key == key),
                  key=lambda p: (p.is_load, p.card_seq, p.id or 0))


def resolve_pending(
    pending: Sequence[PendingTransaction], card: PurseCard, terminal_id: bytes,
) -> Generator[Step, Any, list[Recovered]]:
    """Ask the card about each of its pending transactions; journal what it settles."""
    mine = pending_for(pending, card)
    results: list[Recovered] = []
    log: list[Any] | None = None
    for item in mine:
        probe = (_probe_load(item, terminal_id) if item.is_load
                 else _probe_purchase(item, terminal_id))
        answer = yield from probe
        if isinstance(answer, Resolution) or answer is None:
            results.append(Recovered(item, answer))
            continue
        if log is None:
            log = yield from read_log()
        results.append(Recovered(item, _from_log(item, log)))
    settled = tuple(r.resolution for r in results if r.resolution is not None)
    if settled:
        yield Journal(resolutions=settled)
    return results


def _probe_purchase(item: PendingTransaction, terminal_id: bytes
                    ) -> Generator[Step, Any, Resolution | int | None]:
    """A resolution, the card's current offline seq when the log must decide, or None."""
    prove = yield card_send(cmd.get_transaction_prove(item.draft.tx_type, item.card_seq + 1),
                            "GET TRANSACTION PROVE")
    if prove.sw == SW.OK and len(prove.data) == size_of(cmd.PROVE_RESPONSE):
        proof = cmd.parse(cmd.PROVE_RESPONSE, prove.data)
        return item.completed(proof.tac, RecordFlags.RECOVERED,
                              "the card proved the debit (GET TRANSACTION PROVE)")
    if prove.sw != SW.MAC_NOT_AVAILABLE:
        return None
    init = yield card_send(cmd.initialize_for_purchase(0, terminal_id),
                           "INITIALIZE FOR PURCHASE (offline seq)")
    if init.sw != SW.OK or len(init.data) != size_of(cmd.INIT_PURCHASE_RESPONSE):
        return None
    return _by_seq(item, int(cmd.parse(cmd.INIT_PURCHASE_RESPONSE, init.data).offline_seq),
                   "offline seq", "debit")


def _probe_load(item: PendingTransaction, terminal_id: bytes
                ) -> Generator[Step, Any, Resolution | int | None]:
    """A resolution, the card's current online seq when the log must decide, or None."""
    init = yield card_send(cmd.initialize_for_load(0, terminal_id),
                           "INITIALIZE FOR LOAD (online seq)")
    if init.sw != SW.OK or len(init.data) != size_of(cmd.INIT_LOAD_RESPONSE):
        return None
    return _by_seq(item, int(cmd.parse(cmd.INIT_LOAD_RESPONSE, init.data).online_seq),
                   "online seq", "credit")


def _by_seq(item: PendingTransaction, seq_now: int, counter: str, what: str
            ) -> Resolution | int | None:
    if seq_now == item.card_seq:
        return item.voided(f"the card's {counter} did not move: the {what} never happened")
    if seq_now < item.card_seq:
        return None  # a counter never goes back: not the card we think; leave it pending
    return seq_now


def _from_log(item: PendingTransaction, log: list[Any]) -> Resolution:
    """Decide from EF 0018 whether ``item``'s seq was ours (docs/protocol.md §4 log layout)."""
    kinds = {0x02} if item.is_load else PURCHASE_TYPES
    date, time = bcd_datetime(item.when)
    draft = item.draft
    for entry in log:
        if entry.seq != item.card_seq or entry.tx_type not in kinds:
            continue
        if (entry.terminal_id == draft.terminal_id and entry.amount == draft.charged_amount
                and entry.tx_type == draft.tx_type and entry.date == date and entry.time == time):
            return item.completed(None, RecordFlags.RECOVERED,
                                  "the card's log (EF 0018) shows the transaction")
        return item.voided(f"the card's log shows seq {item.card_seq} used by terminal "
                           f"{entry.terminal_id.hex().upper()}: ours never happened")
    return item.completed(None, RecordFlags.RECOVERED | RecordFlags.UNVERIFIED,
                          "the card's counter moved past it and its log no longer shows it")


def within(item: PendingTransaction, now: dt.datetime, window: dt.timedelta) -> bool:
    """Whether ``now`` is within ``window`` after the transaction's time.  A clock set
    back (``now`` before the transaction) counts as within: treating it as an old
    transaction could charge the card twice."""
    return now - item.when <= window
