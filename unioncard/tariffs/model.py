"""The validated rule model: modes, effects, caps, rules and rule sets (docs/tariffs.md).

Every object is frozen and validates itself, so a rule set that exists can be evaluated.
Its version is the SHA-256 of its canonical JSON (docs/tariffs.md, "The version hash").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

from unioncard.apdu.records import CardType, MemberStatus
from unioncard.apdu.records import MemberCategory as Category
from unioncard.errors import TariffError
from unioncard.tariffs.conditions import Conditions
from unioncard.tariffs.money import (
    MAX_FEN,
    RATE_SCALE,
    Rounding,
    check_int,
    format_fen,
    format_rate,
    scale,
)

if TYPE_CHECKING:
    from unioncard.tariffs.context import QuoteContext

__all__ = ["CAP_LIMITS", "EFFECT_FIELDS", "MAX_CAP_FEN", "RULE_ID", "Caps", "CardType",
           "Category", "Conditions", "Effect", "EffectKind", "MemberStatus", "Mode", "Period",
           "Rule", "RuleSet", "check_id", "misplaced", "missing"]

RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_CAP_FEN = 10**15
CAP_LIMITS = {"daily_count": 10**9, "daily_amount": MAX_CAP_FEN, "monthly_count": 10**9,
              "monthly_amount": MAX_CAP_FEN}
"""The fields of `Caps` (``[rule.cap]`` keys) and the largest value of each."""


def check_id(rule_id: object) -> None:
    """:class:`TariffError` unless ``rule_id`` is a valid rule id."""
    if not isinstance(rule_id, str) or RULE_ID.fullmatch(rule_id) is None:
        raise TariffError(f"id {rule_id!r} must be 1-64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")


class Mode(IntEnum):
    """Where a fare or price is charged; the TOML and CLI spell it in lower case."""

    BUS = 1
    METRO = 2
    COACH = 3
    FERRY = 4
    TAXI = 5
    ETC = 6
    POS = 7

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Mode:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(m.label for m in cls)
            raise ValueError(f"unknown mode {text!r} (one of: {names})") from None


class EffectKind(StrEnum):
    """What a rule gives: four instant kinds, taken off at the terminal, and a rebate."""

    PERCENT = "percent"
    FIXED = "fixed"
    THRESHOLD = "threshold"
    PRICE = "price"
    REBATE = "rebate"


class Period(StrEnum):
    """Cap windows, in the local calendar of the transaction time."""

    DAY = "day"
    MONTH = "month"


EFFECT_FIELDS: dict[EffectKind, dict[str, bool]] = {
    EffectKind.PERCENT: {"rate": True, "max_benefit": False},
    EffectKind.FIXED: {"amount": True},
    EffectKind.THRESHOLD: {"threshold": True, "amount": True, "repeat": False,
                           "max_benefit": False},
    EffectKind.PRICE: {"price": True},
    EffectKind.REBATE: {"rate": False, "amount": False, "max_benefit": False},
}
"""The fields of `Effect` each kind uses, in rule-file order, and whether it needs each (a
rebate: exactly one of ``rate`` and ``amount``); the others keep their defaults."""
_NEED_KEYS = {"rate": "percent (or basis_points)"}


def misplaced(kind: EffectKind, given: list[str]) -> dict[str, str]:
    """The fields of ``given`` (in order) an effect of ``kind`` cannot take, each with
    why, in rule-file words (``{key}``: the key that gave the field)."""
    out = {}
    for index, name in enumerate(given):
        if name not in EFFECT_FIELDS[kind]:
            out[name] = f"effect.{{key}} is not used by a {kind} effect"
        elif kind is EffectKind.REBATE and {"rate", "amount"} <= {*given[:index + 1]}:
            out[name] = "effect.{key}: a rebate has a rate or an amount, not both"
    return out


def missing(kind: EffectKind, given: list[str]) -> list[str]:
    """Why the fields ``given`` are not enough for an effect of ``kind``."""
    out = [f"a {kind} effect needs effect.{_NEED_KEYS.get(name, name)}"
           for name, needed in EFFECT_FIELDS[kind].items() if needed and name not in given]
    if kind is EffectKind.REBATE and not {"rate", "amount"} & {*given}:
        out.append("a rebate needs effect.percent, effect.basis_points or effect.amount")
    return out


@dataclass(frozen=True, slots=True)
class Effect:
    """What a rule gives (docs/tariffs.md, "Effects"): ``rate`` in millionths
    (``RATE_SCALE``), amounts in fen; a rebate never changes what the terminal charges."""

    kind: EffectKind
    rate: int = 0
    amount: int = 0
    threshold: int = 0
    repeat: bool = False
    price: int = 0
    max_benefit: int | None = None

    def __post_init__(self) -> None:
        kind = self.kind
        if not isinstance(kind, EffectKind):
            raise TariffError(f"effect kind must be an EffectKind, not {kind!r}")
        check_int("rate", self.rate, 0, RATE_SCALE)
        for name in ("amount", "threshold", "price"):
            check_int(name, getattr(self, name), 0, MAX_FEN)
        if not isinstance(self.repeat, bool):
            raise TariffError("repeat must be a boolean")
        if self.max_benefit is not None:
            check_int("max_benefit", self.max_benefit, 1, MAX_FEN)
        given = [f.name for f in fields(self)[1:] if getattr(self, f.name) != f.default]
        if kind is EffectKind.PRICE and not self.price:
            given.append("price")  # a price of 0 is a price: free
        for name, why in misplaced(kind, given).items():
            raise TariffError(why.format(key=name))
        for why in missing(kind, given):
            raise TariffError(why)
        if kind is EffectKind.REBATE and self.amount and self.max_benefit is not None:
            raise TariffError("max_benefit is not used by a fixed-amount rebate")

    @property
    def is_rebate(self) -> bool:
        return self.kind is EffectKind.REBATE

    def benefit(self, running: int, list_amount: int, rounding: Rounding) -> int:
        """Fen this effect gives on ``running`` (the amount so far; for a rebate, the
        charged amount), before caps.  Never more than ``running``."""
        kind = self.kind
        if kind is EffectKind.PERCENT:
            off = running - scale(running, RATE_SCALE - self.rate, rounding)
        elif kind is EffectKind.FIXED:
            off = min(self.amount, running)
        elif kind is EffectKind.THRESHOLD:
            times = list_amount // self.threshold if self.repeat else 1
            off = min(times * self.amount, running)
        elif kind is EffectKind.PRICE:
            off = max(0, running - self.price)
        elif self.rate:
            off = scale(running, self.rate, rounding)
        else:
            off = min(self.amount, running)
        if self.max_benefit is not None:
            off = min(off, self.max_benefit)
        return off

    def describe(self) -> str:
        """A few words for receipts and reasons: ``'10% off'``, ``'5.00 yuan rebate'``."""
        limit = f" (at most {format_fen(self.max_benefit)} yuan)" if self.max_benefit else ""
        kind = self.kind
        if kind is EffectKind.PERCENT:
            return f"{format_rate(self.rate)} off{limit}"
        if kind is EffectKind.FIXED:
            return f"{format_fen(self.amount)} yuan off"
        if kind is EffectKind.THRESHOLD:
            per = "per" if self.repeat else "from"
            threshold = format_fen(self.threshold)
            return f"{format_fen(self.amount)} yuan off {per} {threshold} yuan{limit}"
        if kind is EffectKind.PRICE:
            return f"price {format_fen(self.price)} yuan"
        if self.rate:
            return f"{format_rate(self.rate)} rebate{limit}"
        return f"{format_fen(self.amount)} yuan rebate"

    def canonical(self) -> dict[str, Any]:
        """The kind and the fields it uses that are set, in rule-file order."""
        used = {name: getattr(self, name) for name in EFFECT_FIELDS[self.kind]}
        return {"kind": str(self.kind), **{name: v for name, v in used.items() if v}}


@dataclass(frozen=True, slots=True)
class Caps:
    """Per-member limits of a rule: uses (count) and benefit (fen) per local day and
    calendar month.  A capped rule needs the member's history, so an offline terminal
    never applies it; settlement (or an online host) does."""

    daily_count: int | None = None
    daily_amount: int | None = None
    monthly_count: int | None = None
    monthly_amount: int | None = None

    def __post_init__(self) -> None:
        limits = {f.name: getattr(self, f.name) for f in fields(self)}
        if all(v is None for v in limits.values()):
            raise TariffError("a cap needs at least one of daily/monthly count/amount")
        for name, value in limits.items():
            if value is not None:
                check_int(name, value, 1, CAP_LIMITS[name])

    def windows(self) -> tuple[tuple[Period, int | None, int | None], ...]:
        """The capped periods as ``(period, max count, max amount)``."""
        windows = ((Period.DAY, self.daily_count, self.daily_amount),
                   (Period.MONTH, self.monthly_count, self.monthly_amount))
        return tuple(w for w in windows if w[1] is not None or w[2] is not None)

    def canonical(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    def describe(self) -> str:
        parts = []
        for period, count, amount in self.windows():
            unit = "day" if period is Period.DAY else "month"
            if count is not None:
                parts.append(f"first {count} per {unit}")
            if amount is not None:
                parts.append(f"at most {format_fen(amount)} yuan per {unit}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Rule:
    """One benefit: where (mode), for whom and when (conditions), what (effect)."""

    id: str
    mode: Mode
    effect: Effect
    when: Conditions = field(default_factory=Conditions)
    stackable: bool = False
    caps: Caps | None = None
    description: str = ""
    line: int | None = field(default=None, compare=False)
    _floor: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_id(self.id)
        if not isinstance(self.mode, Mode):
            raise TariffError(f"rule {self.id!r}: mode must be a Mode, not {self.mode!r}")
        if not isinstance(self.effect, Effect) or not isinstance(self.when, Conditions):
            raise TariffError(f"rule {self.id!r}: effect and conditions must be model objects")
        if self.caps is not None and not isinstance(self.caps, Caps):
            raise TariffError(f"rule {self.id!r}: caps must be Caps or None")
        if not isinstance(self.stackable, bool):
            raise TariffError(f"rule {self.id!r}: stackable must be a boolean")
        threshold = self.effect.threshold if self.effect.kind is EffectKind.THRESHOLD else 0
        object.__setattr__(self, "_floor", max(self.when.floor(), threshold))

    @property
    def capped(self) -> bool:
        return self.caps is not None

    @property
    def min_amount(self) -> int:
        """The smallest list amount the rule accepts (a threshold offer's included)."""
        return self._floor

    def eligible(self, context: QuoteContext) -> bool:
        """Mode and every condition hold (caps are the engine's business)."""
        return (context.mode is self.mode and context.amount >= self._floor
                and self.when.matches(context))

    def canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "mode": self.mode.label, "stackable": self.stackable,
                               "when": self.when.canonical(), "effect": self.effect.canonical()}
        if self.caps is not None:
            out["cap"] = self.caps.canonical()
        return out


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An ordered, validated set of rules with its rounding mode and version hash."""

    rules: tuple[Rule, ...]
    rounding: Rounding = Rounding.HALF_UP
    name: str = ""
    description: str = ""
    source: str | None = field(default=None, compare=False)
    version: str = field(init=False, compare=False, repr=False)
    _by_mode: dict[Mode, tuple[Rule, ...]] = field(init=False, compare=False, repr=False)
    _by_id: dict[str, Rule] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.rules, tuple) or not all(isinstance(r, Rule) for r in self.rules):
            raise TariffError("rules must be a tuple of Rule")
        if not isinstance(self.rounding, Rounding):
            raise TariffError(f"rounding must be a Rounding, not {self.rounding!r}")
        by_id: dict[str, Rule] = {}
        for rule in self.rules:
            if rule.id in by_id:
                raise TariffError(f"duplicate rule id {rule.id!r}")
            by_id[rule.id] = rule
        by_mode = {mode: tuple(r for r in self.rules if r.mode is mode) for mode in Mode}
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "version", hashlib.sha256(text.encode()).hexdigest())
        object.__setattr__(self, "_by_mode", by_mode)
        object.__setattr__(self, "_by_id", by_id)

    def canonical(self) -> dict[str, Any]:
        """Everything that can change an amount or a quote's rule ids, JSON-ready."""
        return {"format": 1, "rounding": str(self.rounding),
                "rules": [rule.canonical() for rule in self.rules]}

    @property
    def short_version(self) -> str:
        return self.version[:12]

    def for_mode(self, mode: Mode) -> tuple[Rule, ...]:
        """The rules of ``mode`` in declared order."""
        return self._by_mode[mode]

    def rule(self, rule_id: str) -> Rule:
        try:
            return self._by_id[rule_id]
        except KeyError:
            raise TariffError(f"no rule {rule_id!r} in this rule set") from None

    def index(self, rule_id: str) -> int:
        """Position of a rule in declared order (the batch path reports rules by it)."""
        return self.rules.index(self.rule(rule_id))

    def __len__(self) -> int:
        return len(self.rules)
