"""What a quote is asked about (:class:`QuoteContext`: local wall-clock time, card bytes
as docs/protocol.md §4 has them) and what it answers (:class:`Quote`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

from unioncard.errors import TariffError
from unioncard.tariffs.model import MemberStatus, Mode
from unioncard.tariffs.money import MAX_FEN, Rounding

__all__ = ["FIELDS", "OPTIONAL", "AppliedRule", "FieldSpec", "Quote", "QuoteContext"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How a context field is checked, in a quote and a batch column: an integer ``lo..hi``
    (``enum``: converted to it), text (``max_bytes`` of UTF-8 as the offline record holds
    it, else printable without surrounding spaces) or the local time."""

    kind: Literal["int", "text", "time"]
    lo: int = 0
    hi: int = 0
    what: str = "an integer"
    enum: type[IntEnum] | None = None
    max_bytes: int = 0

    def ints(self, optional: bool = False) -> str:
        """What an integer field holds, as its errors say: ``an integer 0..255 or None``."""
        bounds = "" if self.enum else f" {self.lo}..{self.hi}"
        return f"{self.what}{bounds}{' or None' if optional else ''}"


def _int(lo: int, hi: int, what: str = "an integer") -> dict[str, FieldSpec]:
    return {"spec": FieldSpec("int", lo, hi, what)}


def _enum(enum: type[IntEnum]) -> dict[str, FieldSpec]:
    values = [int(v) for v in enum]
    choices = ", ".join(f"{int(v)} ({v.name.lower()})" for v in enum)
    return {"spec": FieldSpec("int", min(values), max(values), f"one of {choices}", enum)}


_TEXT = {"spec": FieldSpec("text")}


def _bad_text(spec: FieldSpec, value: object) -> bool:
    if not isinstance(value, str) or not value:
        return True
    if spec.max_bytes:
        return (len(value.encode("utf-8", "replace")) > spec.max_bytes
                or any(ch < " " or "\x7f" <= ch < "\xa0" for ch in value))
    return value != value.strip() or not value.isprintable()


@dataclass(frozen=True, slots=True)
class QuoteContext:
    """One transaction to price (docs/tariffs.md, "Quote"): ``amount`` in fen, ``at`` the
    local time (naive), ``route`` a route or station code, ``member_id`` for capped rules,
    ``organization`` the member application's ``DF43``; each field checked by its spec."""

    mode: Mode = field(metadata=_enum(Mode))
    amount: int = field(metadata=_int(0, MAX_FEN, "integer fen"))
    card_type: int = field(metadata=_int(0, 0xFF))
    at: datetime = field(metadata={"spec": FieldSpec("time")})
    member_categories: int = field(default=0, metadata=_int(0, 0xFF))
    member_status: MemberStatus = field(default=MemberStatus.ACTIVE,
                                        metadata=_enum(MemberStatus))
    merchant_id: str | None = field(default=None, metadata=_TEXT)
    merchant_category: int | None = field(default=None, metadata=_int(0, 9999))
    route: str | None = field(default=None, metadata=_TEXT)
    vehicle_class: int | None = field(default=None, metadata=_int(0, 0xFF))
    member_id: str | None = field(default=None, metadata=_TEXT)
    organization: str | None = field(default=None,
                                     metadata={"spec": FieldSpec("text", max_bytes=48)})

    def __post_init__(self) -> None:
        for name, spec in FIELDS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            if spec.kind == "int":
                if (not isinstance(value, int) or isinstance(value, bool)
                        or not spec.lo <= value <= spec.hi):
                    label = name.replace("_", " ") if spec.enum else name
                    raise TariffError(f"{label} must be {spec.ints(name in OPTIONAL)}, "
                                      f"not {value!r}")
                if spec.enum is not None:
                    object.__setattr__(self, name, spec.enum(value))
            elif spec.kind == "text" and _bad_text(spec, value):
                what = (f"string of at most {spec.max_bytes} bytes of UTF-8 without control "
                        "characters" if spec.max_bytes
                        else "printable string without surrounding spaces")
                raise TariffError(f"{name} must be None or a non-empty {what}")
            elif spec.kind == "time" and not isinstance(value, datetime):
                raise TariffError(f"{name} must be a datetime, not {type(value).__name__}")
            elif spec.kind == "time" and value.tzinfo is not None:
                raise TariffError(f"{name} must be the local wall-clock time as a naive datetime")


FIELDS: dict[str, FieldSpec] = {f.name: f.metadata["spec"] for f in fields(QuoteContext)}
"""Each context field's spec, in declared order."""
OPTIONAL = frozenset(f.name for f in fields(QuoteContext) if f.default is None)
"""The fields that may be ``None`` (``-1`` or ``""`` in a batch column)."""


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
        return {"mode": self.mode.label, "list_amount": self.list_amount,
                "charged_amount": self.charged_amount, "discount": self.discount,
                "rebate": self.rebate, "rules": list(self.rules),
                "applied": [{"rule": a.rule_id, "kind": a.kind, "amount": a.amount,
                             "text": a.text} for a in self.applied],
                "deferred_to_settlement": list(self.deferred), "reason": self.reason,
                "version": self.version, "rounding": str(self.rounding), "ruleset": self.ruleset}
