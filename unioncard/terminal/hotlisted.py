"""Hotlisted cards (挂失) at the terminal: refused, and their purse blocked where the terminal can.

A purse flow given a hotlist (`unioncard.offline.hotlist.Hotlist`, or anything
with its ``listed_at``) looks the purse up by the issuer id and diversifier of
its EF 0015, once the card's interrupted transactions are settled.  A card
listed at or before the transaction's time is declined, with a reason that says
it is hotlisted.  A terminal that holds the maintenance key through a key host
(`unioncard.terminal.key_host`) also blocks the purse, so the card is refused
everywhere, even by terminals whose hotlist is older (docs/protocol.md §2.5):

1. INITIALIZE FOR PURCHASE of 0 gives the purse's key version (nothing is
   charged: no DEBIT follows);
2. GET CHALLENGE gives the random the MAC's IV starts with;
3. the key host computes the maintenance MAC over ``84 1E 00 00 04``;
4. APPLICATION BLOCK: the purse answers SELECT with ``6283`` and refuses every
   purse command from then on, until APPLICATION UNBLOCK.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from typing import Any, Protocol

from unioncard.apdu import SW
from unioncard.apdu import purse as cmd
from unioncard.apdu.records import size_of
from unioncard.apdu.status import describe as describe_sw
from unioncard.terminal.card import PurseCard, card_send
from unioncard.terminal.key_host import MaintenanceAuthorization, MaintenanceRequest
from unioncard.terminal.session import Authorize, LinkLost, Refused, Step

__all__ = ["HotlistLookup", "block_purse", "refuse_if_hotlisted"]


class HotlistLookup(Protocol):
    """What a purse flow asks of a hotlist."""

    def listed_at(self, issuer: bytes, diversifier: bytes) -> dt.datetime | None:
        """When the purse was listed (China Standard Time, naive), or None."""
        ...


def refuse_if_hotlisted(hotlist: HotlistLookup | None, card: PurseCard, *, now: dt.datetime,
                        terminal_id: bytes, block: bool) -> Generator[Step, Any, None]:
    """Decline a purse listed at or before ``now``; with ``block``, block it first."""
    listed = None if hotlist is None else hotlist.listed_at(card.issuer, card.diversifier)
    if listed is None or listed > now:
        return
    status: dict[str, Any] = {"listed_at": listed.isoformat(), "blocked": False}
    reason = f"the card is hotlisted (reported lost or cancelled, listed {listed.isoformat()})"
    if block:
        problem = yield from block_purse(card, terminal_id)
        status["blocked"] = problem is None
        reason += ("; its purse was blocked (APPLICATION BLOCK)" if problem is None
                   else f"; its purse could not be blocked: {problem}")
    raise Refused(reason, details={"card": card.to_dict(), "hotlisted": status})


def block_purse(card: PurseCard, terminal_id: bytes) -> Generator[Step, Any, str | None]:
    """Block the selected purse with APPLICATION BLOCK; None when blocked, else why not."""
    try:
        init = yield card_send(cmd.initialize_for_purchase(0, terminal_id),
                               "INITIALIZE FOR PURCHASE (key version)")
        if init.sw != SW.OK or len(init.data) != size_of(cmd.INIT_PURCHASE_RESPONSE):
            return f"INITIALIZE answered {init.sw:04X} ({describe_sw(init.sw)})"
        key_version = int(cmd.parse(cmd.INIT_PURCHASE_RESPONSE, init.data).key_version)
        challenge = yield card_send(cmd.get_challenge(), "GET CHALLENGE")
        if challenge.sw != SW.OK or len(challenge.data) not in (4, 8):
            return f"GET CHALLENGE answered {challenge.sw:04X} ({describe_sw(challenge.sw)})"
        header = cmd.application_block(bytes(4)).to_bytes()[:5]
        answer: MaintenanceAuthorization = yield Authorize(MaintenanceRequest(
            key_version=key_version, diversifier=card.diversifier, challenge=challenge.data,
            header=header, issuer=card.issuer))
        if not answer.approved:
            return f"the key host refused: {answer.reason}"
        blocked = yield card_send(cmd.application_block(answer.mac), "APPLICATION BLOCK")
        if blocked.sw != SW.OK:
            return f"APPLICATION BLOCK answered {blocked.sw:04X} ({describe_sw(blocked.sw)})"
    except LinkLost as exc:
        return f"the card left before it was blocked ({exc})"
    return None
