"""The key host: the maintenance MAC that blocks a hotlisted card's purse (docs/protocol.md §2.5).

APPLICATION BLOCK carries a MAC under the card's maintenance key, diversified
from the issuer's maintenance master key.  A terminal does not hold master keys
itself: it asks a key host (a security module, or a host over the network),
like the load host for loads.  `KeyHost` is the interface; `KeystoreKeyHost`
implements it from a keystore file.

>>> from unioncard.crypto import Keystore
>>> host = KeystoreKeyHost(Keystore.test())
>>> answer = host.authorize(MaintenanceRequest(
...     key_version=1, diversifier=bytes.fromhex("5500000000000042"),
...     challenge=bytes.fromhex("C0FFEE11"), header=bytes.fromhex("841E000004")))
>>> answer.approved, answer.mac.hex().upper()   # docs/protocol.md §2.7.5, the BLOCK vector
(True, '6392AA2D')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from unioncard.errors import CryptoError

if TYPE_CHECKING:
    from unioncard.crypto.keystore import Keystore

__all__ = ["KeyHost", "KeystoreKeyHost", "MaintenanceAuthorization", "MaintenanceRequest"]


@dataclass(frozen=True, slots=True)
class MaintenanceRequest:
    """What the terminal sends the key host: whose purse, the card's GET CHALLENGE random,
    and the command header the MAC covers (``84 1E 00 00 04`` for APPLICATION BLOCK)."""

    key_version: int
    diversifier: bytes
    challenge: bytes
    header: bytes
    issuer: bytes | None = None
    """The card's issuer id (EF 0015): a host serving several issuers picks its keys by it."""


@dataclass(frozen=True, slots=True)
class MaintenanceAuthorization:
    """The key host's answer: the 4-byte MAC, or a refusal with its reason."""

    approved: bool
    mac: bytes = field(default=b"", repr=False)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.approved and len(self.mac) != 4:
            raise ValueError("an approved maintenance command carries a 4-byte MAC")


@runtime_checkable
class KeyHost(Protocol):
    """What a key host does for the terminal."""

    def authorize(self, request: MaintenanceRequest) -> MaintenanceAuthorization:
        """The maintenance MAC for ``request``, or a refusal (unknown key version, policy)."""
        ...


class KeystoreKeyHost:
    """A key host holding the maintenance master keys of a keystore, by key version."""

    def __init__(self, keys: Keystore) -> None:
        self._keys = keys

    def authorize(self, request: MaintenanceRequest) -> MaintenanceAuthorization:
        from unioncard.crypto import purse as pc  # a fare never needs them: start-up time
        from unioncard.crypto.keystore import derive_card_keys

        try:
            master = (self._keys.by_version(request.key_version) if request.issuer is None
                      else self._keys.for_card(request.issuer, request.key_version))
        except CryptoError as exc:
            return MaintenanceAuthorization(False, reason=f"the key host has no such keys: {exc}")
        key = derive_card_keys(master, request.diversifier).maintenance
        return MaintenanceAuthorization(True, pc.maintenance_mac(key, request.challenge,
                                                                 request.header))
