"""Resolving interrupted transactions when their card is presented again.

A transaction is journaled as pending before its DEBIT or CREDIT is sent.  If
the answer never came (card pulled, reader lost, terminal killed), only the
card knows whether it committed.  When the same purse is presented again on
the same journal, each of its pending transactions is asked about, in card-seq
order, and resolved (JR/T 0025 purse; docs/protocol.md §1):

Purchases (``06``, CAPP ``09``):

1. GET TRANSACTION PROVE for the seq INITIALIZE returned, plus one.  ``9000``
   gives a proof *of that seq*, but a card keys its proof by seq and type only:
   another terminal's purchase at the same seq (ours never happened) proves
   too.  So the card's EF 0018 log decides whose it was: ours (terminal id,
   amount, type, date and time): completed with the proof's TAC; another's:
   voided.
2. ``9406``: INITIALIZE of 0 (of the pending transaction's kind) tells the
   card's offline seq.  Still the seq of the pending transaction: the debit
   never happened, voided.
3. Seq advanced (the card was used since): the log decides as above; ours is
   completed without TAC.  No longer in the log: completed without TAC and
   flagged unverified: it is never voided on a guess, settlement decides.

Loads (``02``): INITIALIZE FOR LOAD of 0 tells the online seq and balance;
unchanged seq: voided; advanced: the log decides as above, and when the log no
longer shows it, a seq one further and a balance higher by exactly the load
complete it (without TAC), anything else leaves it unverified.

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
from unioncard.apdu.purse import TransactionType, bcd_datetime
from unioncard.apdu.records import size_of
from unioncard.offline import RecordFlags
from unioncard.terminal.card import PurseCard, card_send, read_log
from unioncard.terminal.session import Journal, PendingTransaction, Resolution, Step

__all__ = ["Recovered", "pending_for", "resolve_pending", "within"]

PURCHASE_TYPES = frozenset({TransactionType.EP_PURCHASE, TransactionType.CAPP_PURCHASE})


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
        evidence = yield from probe
        if evidence is None or isinstance(evidence, Resolution):
            results.append(Recovered(item, evidence))
            continue
        if log is None:
            log = yield from read_log()
        results.append(Recovered(item, _from_log(item, log, evidence)))
    settled = tuple(r.resolution for r in results if r.resolution is not None)
    if settled:
        yield Journal(resolutions=settled)
    return results


@dataclass(frozen=True, slots=True)
class _Moved:
    """The card's counter moved past the pending transaction: its log must say whether
    that seq was ours.  ``tac`` is the proof GET TRANSACTION PROVE gave for that seq
    (whoever's it is), ``consistent`` that the balance fits our load alone."""

    tac: bytes | None = None
    consistent: bool = False


def _probe_purchase(item: PendingTransaction, terminal_id: bytes
                    ) -> Generator[Step, Any, Resolution | _Moved | None]:
    """GET TRANSACTION PROVE, then the offline seq (INITIALIZE of 0, of the same kind)."""
    prove = yield card_send(cmd.get_transaction_prove(item.draft.tx_type, item.card_seq + 1),
                            "GET TRANSACTION PROVE")
    if prove.sw == SW.OK and len(prove.data) == size_of(cmd.PROVE_RESPONSE):
        # A proof of that seq, but the card keys proofs by seq and type only: another
        # terminal's purchase at the same seq proves too.  The log says whose it was.
        return _Moved(tac=cmd.parse(cmd.PROVE_RESPONSE, prove.data).tac)
    if prove.sw != SW.MAC_NOT_AVAILABLE:
        return None
    initialize = (cmd.initialize_for_capp_purchase
                  if item.draft.tx_type == TransactionType.CAPP_PURCHASE
                  else cmd.initialize_for_purchase)
    init = yield card_send(initialize(0, terminal_id), "INITIALIZE FOR PURCHASE (offline seq)")
    if init.sw != SW.OK or len(init.data) != size_of(cmd.INIT_PURCHASE_RESPONSE):
        return None
    seq_now = int(cmd.parse(cmd.INIT_PURCHASE_RESPONSE, init.data).offline_seq)
    return _by_seq(item, seq_now, "offline seq", "debit", _Moved())


def _probe_load(item: PendingTransaction, terminal_id: bytes
                ) -> Generator[Step, Any, Resolution | _Moved | None]:
    """The online seq and balance (INITIALIZE FOR LOAD of 0)."""
    init = yield card_send(cmd.initialize_for_load(0, terminal_id),
                           "INITIALIZE FOR LOAD (online seq)")
    if init.sw != SW.OK or len(init.data) != size_of(cmd.INIT_LOAD_RESPONSE):
        return None
    answer = cmd.parse(cmd.INIT_LOAD_RESPONSE, init.data)
    consistent = (answer.online_seq == item.card_seq + 1
                  and answer.balance == item.balance_before + item.amount)
    return _by_seq(item, int(answer.online_seq), "online seq", "credit",
                   _Moved(consistent=consistent))


def _by_seq(item: PendingTransaction, seq_now: int, counter: str, what: str, moved: _Moved
            ) -> Resolution | _Moved | None:
    if seq_now == item.card_seq:
        return item.voided(f"the card's {counter} did not move: the {what} never happened")
    if seq_now < item.card_seq:
        return None  # a counter never goes back: not the card we think; leave it pending
    return moved


def _from_log(item: PendingTransaction, log: list[Any], moved: _Moved) -> Resolution:
    """Decide from EF 0018 whether ``item``'s seq was ours (docs/protocol.md §4 log layout)."""
    kinds = {TransactionType.EP_LOAD} if item.is_load else PURCHASE_TYPES
    date, time = bcd_datetime(item.when)
    draft = item.draft
    for entry in log:
        if entry.seq != item.card_seq or entry.tx_type not in kinds:
            continue
        if (entry.terminal_id == draft.terminal_id and entry.amount == draft.charged_amount
                and entry.tx_type == draft.tx_type and entry.date == date and entry.time == time):
            if moved.tac is not None:
                return item.completed(moved.tac, RecordFlags.RECOVERED,
                                      "the card proved the debit (GET TRANSACTION PROVE) and "
                                      "its log (EF 0018) shows it")
            return item.completed(None, RecordFlags.RECOVERED,
                                  "the card's log (EF 0018) shows the transaction")
        return item.voided(f"the card's log shows seq {item.card_seq} used by terminal "
                           f"{entry.terminal_id.hex().upper()} at {entry.date.hex()} "
                           f"{entry.time.hex()}: ours never happened")
    if moved.consistent:
        return item.completed(None, RecordFlags.RECOVERED,
                              "the card's online seq moved by one and its balance by exactly "
                              "the load")
    return item.completed(None, RecordFlags.RECOVERED | RecordFlags.UNVERIFIED,
                          "the card's counter moved past it and its log no longer shows it")


def within(item: PendingTransaction, now: dt.datetime, window: dt.timedelta) -> bool:
    """Whether ``now`` is within ``window`` after the transaction's time.  A clock set
    back (``now`` before the transaction) counts as within: treating it as an old
    transaction could charge the card twice."""
    return now - item.when <= window
