"""The issuer host: verifies a card's ARQC and answers a response code with its ARPC.

Online authorization of a PBOC debit transaction (docs/emv-kernel.md §Online;
docs/protocol.md §5).  The terminal sends the ARQC with the data it covers; the
host derives the card's master key from the issuer master key (EMV option A),
the PBOC CVN 01 session key from the ATC, recomputes the ARQC, applies its
rules (card blocked, expired, amount limit, available funds), and answers an
authorisation response code (ARC, two ASCII characters) with the ARPC
``3DES(SK, ARQC xor ARC‖000000000000)`` for the card's issuer authentication.

`IssuerHost` is the interface a real acquirer link implements;
`SimulatedIssuer` implements it from an issuer master key, with accounts.

Response codes (ISO 8583 field 39 as UnionPay uses them): ``00`` approved,
``05`` do not honour (the ARQC does not verify, the amount asked is not the ``9F02`` it
covers, or its ATC is not above the last one seen: a replay), ``14`` no such card, ``51``
insufficient funds, ``54`` expired card, ``61`` over the amount limit, ``62``
restricted card (blocked), ``75`` PIN tries exceeded (the TVR the ARQC covers says so).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from unioncard.crypto.keystore import Keystore

__all__ = [
    "APPROVED_CODES",
    "Account",
    "AuthorizationRequest",
    "AuthorizationResponse",
    "IssuerHost",
    "SimulatedIssuer",
]

APPROVED_CODES = frozenset({b"00", b"10", b"11"})
"""ARCs that approve (ISO 8583: approved, partially approved, VIP)."""


@dataclass(frozen=True, slots=True)
class AuthorizationResponse:
    """The host's answer: the ARC, the ARPC (empty when none), and why."""

    arc: bytes
    arpc: bytes = field(default=b"", repr=False)
    reason: str = ""
    authorization_code: str = ""

    def __post_init__(self) -> None:
        if len(self.arc) != 2:
            raise ValueError("an authorisation response code has 2 characters")
        if self.arpc and len(self.arpc) != 8:
            raise ValueError("an ARPC has 8 bytes")

    @property
    def approved(self) -> bool:
        return self.arc in APPROVED_CODES

    @property
    def issuer_authentication_data(self) -> bytes:
        """Tag ``91``: ARPC ‖ ARC (ARPC method 1), empty when the host sent no ARPC."""
        return self.arpc + self.arc if self.arpc else b""


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """What the terminal sends: the card, the ARQC and every value it covers.

    ``values`` holds the AC data elements by tag (docs/protocol.md §5: ``9F02
    9F03 9F1A 95 5F2A 9A 9C 9F37 82 9F36``) and ``iad`` the card's ``9F10``.
    """

    answer_type: ClassVar[type] = AuthorizationResponse
    host_name: ClassVar[str] = "issuer host"

    pan: str
    psn: str
    atc: int
    arqc: bytes = field(repr=False)
    values: Mapping[int, bytes] = field(repr=False)
    iad: bytes = field(repr=False)
    amount: int
    when: dt.datetime
    aid: bytes = b""
    terminal_id: str = ""
    merchant_id: str = ""
    expiry: dt.date | None = None

    @property
    def dki(self) -> int | None:
        """The derivation key index (IAD byte 2), None without an IAD."""
        return self.iad[1] if len(self.iad) >= 2 else None

    @classmethod
    def from_clearing(cls, doc: Mapping[str, Any]) -> AuthorizationRequest:
        """The request that checks an approved sale's cryptogram from its clearing data
        (the ``clearing`` of an EMV outcome: docs/emv-kernel.md); `ValueError` for a
        malformed document."""
        try:
            return cls(pan=str(doc["pan"]), psn=str(doc["psn"]), atc=int(doc["atc"]),
                       arqc=bytes.fromhex(doc["ac"]),
                       values={int(t, 16): bytes.fromhex(v) for t, v in doc["values"].items()},
                       iad=bytes.fromhex(doc["iad"]), amount=int(doc["amount"]),
                       when=dt.datetime.fromisoformat(doc["when"]),
                       aid=bytes.fromhex(doc["aid"]), terminal_id=str(doc["terminal_id"]),
                       merchant_id=str(doc["merchant_id"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed clearing data: {exc}") from None

    @property
    def cvr(self) -> bytes:
        """The CVR in the PBOC IAD (bytes 4-7: its length byte and 3 bytes)."""
        return bytes(self.iad[3:7])


@runtime_checkable
class IssuerHost(Protocol):
    """What an issuer host does for the terminal."""

    def authorize(self, request: AuthorizationRequest) -> AuthorizationResponse:
        ...


@dataclass
class Account:
    """A card's account at the simulated issuer; ``balance`` None is unlimited;
    ``last_atc`` the highest ATC of an online request verified so far."""

    balance: int | None = None
    limit: int | None = None
    blocked: bool = False
    last_atc: int = -1


class SimulatedIssuer:
    """An issuer host holding the issuer master key (``master_key`` bytes, or a function of
    the request giving them: `from_keystore` picks them by AID and DKI) and the accounts
    by PAN; a card without an account gets an unlimited one, or is declined ``14`` when
    ``known_cards_only``.  An approval debits the account, unless the cryptogram is the
    card's TC (a qPBOC electronic cash purchase sent online after fDDA failed: the card
    paid it from its EC balance)."""

    def __init__(self, master_key: bytes | Callable[[AuthorizationRequest], bytes], *,
                 accounts: Mapping[str, Account] | None = None,
                 known_cards_only: bool = False) -> None:
        self._key = master_key
        self.accounts = dict(accounts or {})
        self.known_cards_only = known_cards_only
        self.log: list[tuple[AuthorizationRequest, AuthorizationResponse]] = []

    @classmethod
    def from_keystore(cls, keys: Keystore, **options: Any) -> SimulatedIssuer:
        """The AC issuer master keys of the keystore's ``[emv]`` section, by AID and DKI."""
        return cls(lambda request: keys.emv_issuer_keys(request.aid, request.dki).ac_mk,
                   **options)

    def expected_arqc(self, request: AuthorizationRequest) -> tuple[bytes, bytes]:
        """(the ARQC the card must have computed, the session key)."""
        from unioncard.crypto import emv

        imk = self._key(request) if callable(self._key) else self._key
        sk = emv.session_key(emv.derive_udk(imk, request.pan, request.psn), request.atc)
        data = emv.ac_data(request.values, request.cvr)
        return emv.application_cryptogram(sk, data), sk

    def verifies(self, request: AuthorizationRequest) -> bool:
        """Whether the request's cryptogram (an ARQC, or the TC or AAC of clearing data) is
        the card's over the request's values."""
        from unioncard.errors import CryptoError

        try:
            return self.expected_arqc(request)[0] == request.arqc
        except CryptoError:
            return False

    def authorize(self, request: AuthorizationRequest) -> AuthorizationResponse:
        from unioncard.crypto import emv
        from unioncard.errors import CryptoError

        try:
            expected, sk = self.expected_arqc(request)
        except CryptoError as exc:
            answer = AuthorizationResponse(b"05", reason=f"the request cannot be checked: {exc}")
            self.log.append((request, answer))
            return answer
        arc, reason = self._rules(request, expected)
        answer = AuthorizationResponse(arc, emv.arpc(sk, request.arqc, arc), reason,
                                       f"{request.atc:06d}" if arc in APPROVED_CODES else "")
        self.log.append((request, answer))
        return answer

    def _rules(self, request: AuthorizationRequest, expected: bytes) -> tuple[bytes, str]:
        if expected != request.arqc:
            return b"05", "the ARQC does not verify: not the card's key or altered data"
        covered = request.values.get(0x9F02)
        if covered is not None and (not covered.hex().isdigit()
                                    or int(covered.hex()) != request.amount):
            return b"05", (f"the amount asked ({request.amount}) is not the amount the ARQC "
                           f"covers ({covered.hex().upper()})")
        account = self.accounts.get(request.pan)
        if account is None:
            if self.known_cards_only:
                return b"14", "no such card at this issuer"
            account = self.accounts[request.pan] = Account()
        if request.atc <= account.last_atc:
            return b"05", (f"ATC {request.atc} is not above the last one seen "
                           f"({account.last_atc}): a replayed cryptogram")
        account.last_atc = request.atc
        if account.blocked:
            return b"62", "the card is blocked by its issuer"
        tvr = request.values.get(0x95, bytes(5))
        if len(tvr) == 5 and tvr[2] & 0x20:  # TVR byte 3 b6: PIN try limit exceeded
            return b"75", "the card's PIN is blocked (PIN try limit exceeded)"
        if request.expiry is not None and request.when.date() > request.expiry:
            return b"54", "the card has expired"
        if account.limit is not None and request.amount > account.limit:
            return b"61", "the amount is over the card's limit"
        if account.balance is not None and (len(request.cvr) < 2 or request.cvr[1] & 0x30 != 0x10):
            # a TC (CVR byte 2 b6-b5 = 01) is a qPBOC electronic cash purchase sent online
            # because fDDA failed: the card paid it from its EC balance, not the account
            if request.amount > account.balance:
                return b"51", "insufficient funds"
            account.balance -= request.amount
        return b"00", "approved by the issuer"
