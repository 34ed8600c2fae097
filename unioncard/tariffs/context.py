"""What a quote is asked about (:class:`QuoteContext`) and what it answers (:class:`Quote`).

The context carries the local wall-clock time of the transaction: the engine
never reads the clock, so every quote can be replayed exactly.  Card type,
category flags and member status are the card's bytes (docs/protocol.md §4 profile).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from unioncard.errors import TariffError
from unioncard.tariffs.model import MemberStatus, Mode
from unioncard.tariffs.money import MAX_FEN, Rounding

__all__ = ["AppliedRule", "Quote", "QuoteContext"]


def _optional_text(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or value != value.strip() or not value.isprintable():
        raise TariffError(
            f"{name} must be None or a non-empty printable string without surrounding spaces"
        )


def _optional_int(name: str, value: object, hi: int) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
        raise TariffError(f"{name} must be None or an integer 0..{hi}, not {value!r}")


@dataclass(frozen=True, slots=True)
class QuoteContext:
    """One transaction to price.

    ``amount`` is the list amount in fen; ``at`` the local wall-clock time as a naive
    ``datetime``; ``route`` is the route (bus, coach, ferry) or station (metro, toll
    plaza) code; ``member_id`` is only needed for capped rules, in settlement.
    """

    mode: Mode
    amount: int
    card_type: int
    at: datetime
    member_categories: int = 0
    member_status: MemberStatus = MemberStatus.ACTIVE
    merchant_id: str | None = None
    merchant_category: int | None = None
    route: str | None = None
    vehicle_class: int | None = None
    member_id: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise TariffError(f"unknown mode {self.mode!r}") from None
        try:
            object.__setattr__(self, "member_status", MemberStatus(self.member_status))
        except ValueError:
            raise TariffError(
                f"member status must be 1 (active), 2 (reported lost) or 3 (cancelled), "
                f"not {self.member_status!r}"
            ) from None
        amount = self.amount
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= MAX_FEN:
            raise TariffError(f"amount must be integer fen 0..{MAX_FEN}, not {amount!r}")
        _optional_int("card_type", self.card_type, 0xFF)
        if self.card_type is None:
            raise TariffError("card_type is required (the purse's card type byte)")
        _optional_int("member_categories", self.member_categories, 0xFF)
        if self.member_categories is None:
            raise TariffError("member_categories must be an integer 0..255 (0: none)")
        _optional_int("merchant_category", self.merchant_category, 9999)
        _optional_int("vehicle_class", self.vehicle_class, 0xFF)
        _optional_text("merchant_id", self.merchant_id)
        _optional_text("route", self.route)
        _optional_text("member_id", self.member_id)
        if not isinstance(self.at, datetime):
            raise TariffError(f"at must be a datetime, not {type(self.at).__name__}")
        if self.at.tzinfo is not None:
            raise TariffError("at must be the local wall-clock time as a naive datetime")


@dataclass(frozen=True, slots=True)
class AppliedRule:
    """One rule that changed the outcome: a ``discount`` taken off at the terminal, or a
    ``rebate`` paid back in settlement, with its amount in fen."""

    rule_id: str
    kind: Literal["discount", "rebate"]
    amount: int
    text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("discount", "rebate"):
            raise TariffError(f"applied rule kind must be discount or rebate, not {self.kind!r}")
        if not isinstance(self.amount, int) or self.amount <= 0:
            raise TariffError("an applied rule gives a positive amount")


@dataclass(frozen=True, slots=True)
class Quote:
    """The priced transaction: ``list_amount = charged_amount + discount`` and the rebate
    is paid later; ``rules`` names what applied, ``deferred`` the matching capped rules
    that were left to settlement; ``version`` and ``rounding`` identify the rule set."""

    mode: Mode
    list_amount: int
    charged_amount: int
    discount: int
    rebate: int
    applied: tuple[AppliedRule, ...]
    deferred: tuple[str, ...]
    reason: str
    version: str
    rounding: Rounding
    ruleset: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.charged_amount <= self.list_amount:
            raise TariffError("charged amount must lie between 0 and the list amount")
        if self.charged_amount + self.discount != self.list_amount:
            raise TariffError("list amount must equal charged amount plus discount")
        if not 0 <= self.rebate <= self.charged_amount:
            raise TariffError("rebate must lie between 0 and the charged amount")
        discounts = sum(a.amount for a in self.applied if a.kind == "discount")
        rebates = sum(a.amount for a in self.applied if a.kind == "rebate")
        if discounts != self.discount or rebates != self.rebate:
            raise TariffError("applied rules must add up to the discount and the rebate")

    @property
    def rules(self) -> tuple[str, ...]:
        """Ids of the rules that applied, in the order they were applied."""
        return tuple(a.rule_id for a in self.applied)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: amounts in integer fen."""
        return {
            "mode": self.mode.label,
            "list_amount": self.list_amount,
            "charged_amount": self.charged_amount,
            "discount": self.discount,
            "rebate": self.rebate,
            "rules": list(self.rules),
            "applied": [
                {"rule": a.rule_id, "kind": a.kind, "amount": a.amount, "text": a.text}
                for a in self.applied
            ],
            "deferred_to_settlement": list(self.deferred),
            "reason": self.reason,
            "version": self.version,
            "rounding": str(self.rounding),
            "ruleset": self.ruleset,
        }
