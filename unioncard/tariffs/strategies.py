"""Hypothesis strategies for tariff rule sets, quote contexts and usage histories.

Generated rule sets use every condition, effect kind, stacking, caps and all
rounding modes, and often share or derive an earlier rule's conditions, so that
several rules compete.  Contexts are drawn mostly to meet one rule's conditions,
boundaries included (first and last day, the window's edges, the minimum amount),
sometimes with one field changed or just outside; the rest are unrelated, with
extreme dates.  Used by the property tests and available to integrators' own
tests (needs hypothesis).  Strategies are built once, at import, to keep
generation cheap.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st

from unioncard.tariffs.context import QuoteContext
from unioncard.tariffs.engine import UsageBook, period_key
from unioncard.tariffs.model import (
    Caps,
    Conditions,
    Effect,
    EffectKind,
    MemberStatus,
    Mode,
    Period,
    Rule,
    RuleSet,
)
from unioncard.tariffs.money import MAX_FEN, RATE_SCALE, Rounding

__all__ = [
    "BASE_DAY",
    "caps",
    "conditions",
    "context_lists",
    "contexts",
    "effects",
    "histories",
    "rules",
    "rulesets",
]

T = TypeVar("T")

BASE_DAY = date(2026, 5, 1)
MERCHANTS = ("M-0001", "M-0002", "商户-3")
ROUTES = ("8", "K12", "G4-Station-7")
MCCS = (5411, 5812, 4111)
MEMBERS = ("m-a", "m-b", "m-c")
MODES = (Mode.BUS, Mode.POS, Mode.ETC)


def _maybe(strategy: st.SearchStrategy[Any], weight: float = 0.6) -> st.SearchStrategy[Any]:
    """``None`` or a value; a higher ``weight`` draws ``None`` more often, so that rules
    stay broad enough to match."""
    nones = max(1, round(weight * 4))
    values = max(1, 4 - nones)
    return st.one_of(*([st.none()] * nones), *([strategy] * values))


def _subset(values: tuple[Any, ...], max_size: int | None = None) -> st.SearchStrategy[Any]:
    return st.frozensets(st.sampled_from(values), min_size=1, max_size=max_size or len(values))


def _choice(draw: st.DrawFn, items: list[T] | tuple[T, ...]) -> T:
    """One of ``items`` (cheaper than building ``sampled_from`` for every draw)."""
    return items[draw(st.integers(0, len(items) - 1))]


_money = st.one_of(
    st.integers(1, 300), st.integers(1, 20_000), st.sampled_from([100, 1000, 10_000])
)
_rate = st.one_of(
    st.sampled_from([100_000, 50_000, 200_000, 95_000, 333_333, RATE_SCALE]),
    st.integers(1, RATE_SCALE),
)
_valid_from = _maybe(st.integers(-40, 10).map(lambda d: BASE_DAY + timedelta(d)), 0.8)
_valid_until = _maybe(st.integers(-10, 40).map(lambda d: BASE_DAY + timedelta(d)), 0.8)
_time_from = _maybe(st.integers(0, 47).map(lambda h: h * 1800), 0.8)
_time_until = _maybe(st.integers(1, 48).map(lambda h: h * 1800), 0.8)
CARD_TYPES = (0x55, 0x01, 0x02, 0xF0, 0xFF)  # bytes in every position of a 64-bit word
VEHICLE_CLASSES = (1, 2, 3, 4, 40, 200)
_card_types = _maybe(_subset(CARD_TYPES, 3), 0.3)
_categories = _maybe(st.integers(1, 7), 0.8)
_statuses = _maybe(_subset((1, 2, 3)), 0.7)
_merchants = _maybe(_subset(MERCHANTS, 2), 0.7)
_mccs = _maybe(_subset(MCCS, 2), 0.8)
_routes = _maybe(_subset(ROUTES, 2), 0.8)
_vehicles = _maybe(_subset(VEHICLE_CLASSES, 2), 0.8)
_days = _maybe(st.frozensets(st.integers(1, 7), min_size=1), 0.8)
_min_amount = st.one_of(st.just(0), st.just(0), _money)
_max_benefit = _maybe(_money, 0.7)
_kinds = st.sampled_from(list(EffectKind))
_price = st.one_of(st.just(0), _money)
_rebate_amount = st.one_of(_money, st.just(MAX_FEN))


@st.composite
def conditions(draw: st.DrawFn) -> Conditions:
    """Any valid conditions, mostly broad."""
    valid_from = draw(_valid_from)
    valid_until = draw(_valid_until)
    if valid_from and valid_until and valid_until < valid_from:
        valid_from, valid_until = valid_until, valid_from
    time_from = draw(_time_from)
    time_until = draw(_time_until)
    if time_from is not None and time_from == time_until:
        time_until = None
    return Conditions(
        card_types=draw(_card_types),
        member_categories=draw(_categories),
        member_status=draw(_statuses),
        merchants=draw(_merchants),
        merchant_categories=draw(_mccs),
        routes=draw(_routes),
        vehicle_classes=draw(_vehicles),
        valid_from=valid_from,
        valid_until=valid_until,
        days=draw(_days),
        time_from=time_from,
        time_until=time_until,
        min_amount=draw(_min_amount),
    )


@st.composite
def effects(draw: st.DrawFn) -> Effect:
    """Any valid effect, of every kind."""
    kind = draw(_kinds)
    max_benefit = draw(_max_benefit)
    if kind is EffectKind.PERCENT:
        return Effect(kind, rate=draw(_rate), max_benefit=max_benefit)
    if kind is EffectKind.FIXED:
        return Effect(kind, amount=draw(_money))
    if kind is EffectKind.THRESHOLD:
        return Effect(kind, amount=draw(_money), threshold=draw(_money),
                      repeat=draw(st.booleans()), max_benefit=max_benefit)
    if kind is EffectKind.PRICE:
        return Effect(kind, price=draw(_price))
    if draw(st.booleans()):
        return Effect(kind, rate=draw(_rate), max_benefit=max_benefit)
    return Effect(kind, amount=draw(_rebate_amount))


_daily_count = _maybe(st.integers(1, 3), 0.5)
_daily_amount = _maybe(st.integers(1, 60_000), 0.7)
_monthly_count = _maybe(st.integers(1, 4), 0.5)
_monthly_amount = _maybe(st.integers(1, 100_000), 0.6)


@st.composite
def caps(draw: st.DrawFn) -> Caps:
    """Caps where counts bind as often as amounts do."""
    values = {
        "daily_count": draw(_daily_count),
        "daily_amount": draw(_daily_amount),
        "monthly_count": draw(_monthly_count),
        "monthly_amount": draw(_monthly_amount),
    }
    if all(v is None for v in values.values()):
        values["monthly_count"] = draw(st.integers(1, 3))
    return Caps(**values)


_caps = _maybe(caps(), 0.5)
_conditions = conditions()
_effects = effects()
_descriptions = st.sampled_from(["", "a rule", "会员九折"])


@st.composite
def rules(draw: st.DrawFn, rule_id: str = "r", modes: tuple[Mode, ...] = MODES) -> Rule:
    """One valid rule with id ``rule_id``."""
    return Rule(
        id=rule_id,
        mode=_choice(draw, modes),
        effect=draw(_effects),
        when=draw(_conditions),
        stackable=draw(st.integers(0, 2)) == 0,
        caps=draw(_caps),
        description=draw(_descriptions),
    )


_NARROWABLE = ("card_types", "member_categories", "member_status", "merchants", "routes",
               "days", "min_amount", "merchant_categories", "vehicle_classes")
_roundings = st.sampled_from(list(Rounding))
_names = st.sampled_from(["", "generated"])


@st.composite
def rulesets(draw: st.DrawFn, min_rules: int = 0, max_rules: int = 8) -> RuleSet:
    """A valid rule set of up to ``max_rules`` rules over a few modes."""
    n = draw(st.integers(min_rules, max_rules))
    made: list[Rule] = []
    for i in range(n):
        rule = draw(rules(f"r{i}"))
        share: bool = draw(st.booleans())
        if made and share:  # share an earlier rule's mode and conditions
            model = _choice(draw, made)
            when = model.when
            if draw(st.booleans()):  # narrowed or widened in one respect
                name = _choice(draw, _NARROWABLE)
                when = replace(when, **{name: getattr(draw(_conditions), name)})
            rule = replace(rule, mode=model.mode, when=when)
        made.append(rule)
    return RuleSet(rules=tuple(made), rounding=draw(_roundings), name=draw(_names))


_instants = st.one_of(
    st.builds(lambda d, s: datetime.combine(BASE_DAY + timedelta(d), time()) + timedelta(seconds=s),
              st.integers(-40, 40), st.integers(0, 86_399)),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
        lambda t: t.replace(microsecond=0)
    ),
    st.sampled_from([datetime(1969, 12, 31, 23, 59, 59), datetime(1970, 1, 1),
                     datetime(2026, 2, 28, 23, 59, 59), datetime(2028, 2, 29, 12)]),
)
_statuses_any = list(MemberStatus)


def _pick(draw: st.DrawFn, allowed: frozenset[Any] | None, pool: tuple[Any, ...]) -> Any:
    return _choice(draw, sorted(allowed)) if allowed else _choice(draw, pool)


@st.composite
def _targeted(draw: st.DrawFn, rule: Rule) -> dict[str, Any]:
    """Field values that satisfy ``rule``'s conditions, boundaries included, or fall
    just outside a date or time boundary."""
    when = rule.when
    lo_day = when.valid_from or (when.valid_until or BASE_DAY) - timedelta(40)
    hi_day = when.valid_until or (when.valid_from or BASE_DAY) + timedelta(40)
    days = [lo_day + timedelta(d) for d in range((hi_day - lo_day).days + 1)]
    if when.days:
        days = [d for d in days if d.isoweekday() in when.days] or days
    where = draw(st.integers(0, 5))
    if where == 0:
        day = _choice(draw, [lo_day - timedelta(1), hi_day + timedelta(1)])
    else:
        day = days[0] if where == 1 else days[-1] if where == 2 else _choice(draw, days)
    start = 0 if when.time_from is None else when.time_from
    end = 86_400 if when.time_until is None else when.time_until
    edges = [start, end - 1, (start - 1) % 86_400, end % 86_400]
    if draw(st.booleans()):
        second = _choice(draw, edges)
    elif start < end:
        second = draw(st.integers(start, end - 1))
    else:
        second = (start + draw(st.integers(0, 86_400 - start + end - 1))) % 86_400
    mask = when.member_categories
    categories = draw(st.integers(0, 7))
    if mask and not categories & mask:
        categories |= mask & -mask
    low = rule.min_amount
    amount_kind = draw(st.integers(0, 3))
    if amount_kind == 0:
        amount = _choice(draw, [low, low + 1, max(0, low - 1)])
    elif amount_kind == 1:
        amount = low + draw(st.integers(0, MAX_FEN - low))
    else:
        amount = low + draw(st.integers(0, 30_000))
    return {
        "mode": rule.mode,
        "amount": amount,
        "card_type": _pick(draw, when.card_types, CARD_TYPES),
        "at": datetime.combine(day, time()) + timedelta(seconds=second),
        "member_categories": categories,
        "member_status": _pick(draw, when.member_status, tuple(MemberStatus)),
        "merchant_id": _pick(draw, when.merchants, (None, *MERCHANTS)),
        "merchant_category": _pick(draw, when.merchant_categories, MCCS),
        "route": _pick(draw, when.routes, (None, *ROUTES)),
        "vehicle_class": _pick(draw, when.vehicle_classes, (None, *VEHICLE_CLASSES)),
    }


_random_amount = st.one_of(st.integers(0, 400), st.integers(0, 30_000), st.integers(0, MAX_FEN),
                           st.just(MAX_FEN))
_random_card = st.one_of(st.sampled_from(CARD_TYPES), st.integers(0, 255))
_random_merchant = st.one_of(st.none(), st.sampled_from(MERCHANTS), st.just("M-9999"))
_random_mcc = st.one_of(st.none(), st.sampled_from(MCCS), st.integers(0, 9999))
_random_route = st.one_of(st.none(), st.sampled_from(ROUTES), st.just("99"))
_random_vehicle = st.one_of(st.none(), st.sampled_from(VEHICLE_CLASSES), st.integers(0, 255))
_all_modes = list(Mode)


@st.composite
def _random_fields(draw: st.DrawFn, modes: list[Mode]) -> dict[str, Any]:
    return {
        "mode": _choice(draw, modes if draw(st.booleans()) else _all_modes),
        "amount": draw(_random_amount),
        "card_type": draw(_random_card),
        "at": draw(_instants),
        "member_categories": draw(st.integers(0, 7)),
        "member_status": _choice(draw, _statuses_any),
        "merchant_id": draw(_random_merchant),
        "merchant_category": draw(_random_mcc),
        "route": draw(_random_route),
        "vehicle_class": draw(_random_vehicle),
    }


_FIELDS = ("mode", "amount", "card_type", "at", "member_categories", "member_status",
           "merchant_id", "merchant_category", "route", "vehicle_class")
_member = st.one_of(st.sampled_from(MEMBERS), st.sampled_from(MEMBERS), st.sampled_from(MEMBERS),
                    st.none())


@st.composite
def contexts(draw: st.DrawFn, ruleset: RuleSet | None = None) -> QuoteContext:
    """A context: mostly one that meets a rule's conditions (sometimes with one field
    changed, to probe the boundaries), sometimes an unrelated one."""
    modes = sorted({r.mode for r in ruleset.rules}) if ruleset and ruleset.rules else list(MODES)
    if ruleset and ruleset.rules and draw(st.integers(0, 3)) > 0:
        fields = draw(_targeted(_choice(draw, ruleset.rules)))
        if draw(st.integers(0, 4)) == 0:  # break one condition, or not
            name = _choice(draw, _FIELDS)
            fields[name] = draw(_random_fields(modes))[name]
    else:
        fields = draw(_random_fields(modes))
    fields["member_id"] = draw(_member)
    return QuoteContext(**fields)


@st.composite
def context_lists(draw: st.DrawFn, ruleset: RuleSet | None = None, min_size: int = 1,
                  max_size: int = 40) -> list[QuoteContext]:
    """Contexts as a settlement batch has them: often the same member buying again
    where they did before, minutes later, so that day and month caps come into play."""
    items = draw(st.lists(contexts(ruleset), min_size=min_size, max_size=max_size))
    for i in range(1, len(items)):
        if draw(st.booleans()):
            earlier = items[draw(st.integers(0, i - 1))]
            at = earlier.at + timedelta(seconds=draw(st.integers(0, 900)))
            if at.year <= 9999:
                items[i] = replace(earlier, at=at, amount=items[i].amount)
    return items


@st.composite
def histories(draw: st.DrawFn, ruleset: RuleSet, around: list[QuoteContext]) -> UsageBook:
    """A usage history of the rule set's capped rules, in windows the contexts touch."""
    capped = [r for r in ruleset.rules if r.caps is not None]
    book = UsageBook()
    if not capped or not around:
        return book
    for _ in range(draw(st.integers(0, 6))):
        rule = _choice(draw, capped)
        context = _choice(draw, around)
        period = _choice(draw, (Period.DAY, Period.MONTH))
        book.add(_choice(draw, MEMBERS), rule.id, period, period_key(period, context.at),
                 count=draw(st.integers(0, 3)), amount=draw(st.integers(0, 3000)))
    return book
