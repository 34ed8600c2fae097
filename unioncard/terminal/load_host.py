"""The load host: checks a card's load MAC1 and gives MAC2 (JR/T 0025 load; docs/protocol.md §2).

A load (圈存) is authorized online: the terminal sends what INITIALIZE FOR LOAD
returned, and the host, holding the load master keys, derives the card's load
key, checks the card's MAC1 and answers MAC2 for CREDIT FOR LOAD.  `LoadHost`
is the interface a real host implements (over the network, with the member's
account behind it); `KeystoreLoadHost` implements it from a keystore file, by
key version (``01`` transit, ``02`` ETC in the profile).

>>> from unioncard.crypto import Keystore, derive_card_keys, purse as pc
>>> keys = Keystore.test()
>>> diversifier, terminal = bytes.fromhex("5500000000000001"), bytes.fromhex("000000000001")
>>> dlk = derive_card_keys(keys.by_version(1), diversifier).load
>>> seslk = pc.load_session_key(dlk, bytes(4), 0)
>>> mac1 = pc.load_mac1(seslk, 0, 5000, 0x02, terminal)
>>> when = dt.datetime(2026, 5, 1, 9, 0)
>>> answer = KeystoreLoadHost(keys).authorize(LoadRequest(
...     key_version=1, diversifier=diversifier, balance=0, online_seq=0, random=bytes(4),
...     amount=5000, terminal_id=terminal, when=when, mac1=mac1))
>>> answer.approved, answer.mac2 == pc.load_mac2(seslk, 5000, 0x02, terminal,
...                                              *bcd_datetime(when))
(True, True)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from unioncard.apdu.purse import TransactionType, bcd_datetime
from unioncard.errors import CryptoError

if TYPE_CHECKING:
    from unioncard.crypto.keystore import Keystore

__all__ = ["KeystoreLoadHost", "LoadAuthorization", "LoadHost", "LoadRequest"]


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What the terminal sends the host: the card's INITIALIZE FOR LOAD answer and the load."""

    key_version: int
    diversifier: bytes
    balance: int
    online_seq: int
    random: bytes
    amount: int
    terminal_id: bytes
    when: dt.datetime
    mac1: bytes = field(repr=False)
    issuer: bytes | None = None
    """The card's issuer id (EF 0015): a host serving several issuers picks its keys by it."""


@dataclass(frozen=True, slots=True)
class LoadAuthorization:
    """The host's answer: MAC2 for CREDIT FOR LOAD, or a refusal with its reason."""

    approved: bool
    mac2: bytes = field(default=b"", repr=False)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.approved and len(self.mac2) != 4:
            raise ValueError("an approved load carries a 4-byte MAC2")


@runtime_checkable
class LoadHost(Protocol):
    """What a load host does for the terminal."""

    def authorize(self, request: LoadRequest) -> LoadAuthorization:
        """Check MAC1 and answer MAC2, or refuse (unknown key version, bad MAC1, limits)."""
        ...


class KeystoreLoadHost:
    """A load host holding the load master keys of a keystore, by key version."""

    def __init__(self, keys: Keystore) -> None:
        self._keys = keys

    def authorize(self, request: LoadRequest) -> LoadAuthorization:
        from unioncard.crypto import purse as pc  # a fare never needs them: start-up time
        from unioncard.crypto.keystore import derive_card_keys

        try:
            master = (self._keys.by_version(request.key_version) if request.issuer is None
                      else self._keys.for_card(request.issuer, request.key_version))
        except CryptoError as exc:
            return LoadAuthorization(False, reason=f"the load host has no such keys: {exc}")
        dlk = derive_card_keys(master, request.diversifier).load
        seslk = pc.load_session_key(dlk, request.random, request.online_seq)
        load = TransactionType.EP_LOAD
        expected = pc.load_mac1(seslk, request.balance, request.amount, load,
                                request.terminal_id)
        if expected != request.mac1:
            return LoadAuthorization(False, reason="the card's load MAC1 does not verify: "
                                                   "the card is not genuine or its keys differ")
        date, time = bcd_datetime(request.when)
        mac2 = pc.load_mac2(seslk, request.amount, load, request.terminal_id, date, time)
        return LoadAuthorization(True, mac2)
