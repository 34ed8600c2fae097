"""Hypothesis strategies for tariff rule sets, quote contexts and usage histories.

Generated rule sets use every condition, effect kind, stacking, caps and all
rounding modes; contexts are drawn mostly from the values the rules mention
(merchants, routes, card types, dates and times near the boundaries), so that
rules actually match, with some strangers and extreme dates mixed in.  Used by
the property tests and available to integrators' own tests (needs hypothesis).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any

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

__all__ = ["BASE_DAY", "context_lists", "contexts", "histories", "rules", "rulesets"]

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


_money = st.one_of(
    st.integers(1, 300), st.integers(1, 20_000), st.sampled_from([100, 1000, 10_000])
)
_rate = st.one_of(
    st.sampled_from([100_000, 50_000, 200_000, 95_000, 333_333, RATE_SCALE]),
    st.integers(1, RATE_SCALE),
)


@st.composite
def conditions(draw: st.DrawFn) -> Conditions:
    valid_from = draw(_maybe(st.integers(-40, 10).map(lambda d: BASE_DAY + timedelta(d)), 0.8))
    valid_until = draw(_maybe(st.integers(-10, 40).map(lambda d: BASE_DAY + timedelta(d)), 0.8))
    if valid_from and valid_until and valid_until < valid_from:
        valid_from, valid_until = valid_until, valid_from
    time_from = draw(_maybe(st.integers(0, 47).map(lambda h: h * 1800), 0.8))
    time_until = draw(_maybe(st.integers(1, 48).map(lambda h: h * 1800), 0.8))
    if time_from is not None and time_from == time_until:
        time_until = None
    return Conditions(
        card_types=draw(_maybe(_subset((0x55, 0x01, 0x02)), 0.3)),
        member_categories=draw(_maybe(st.integers(1, 7), 0.8)),
        member_status=draw(_maybe(_subset((1, 2, 3)), 0.7)),
        merchants=draw(_maybe(_subset(MERCHANTS, 2), 0.7)),
        merchant_categories=draw(_maybe(_subset(MCCS, 2), 0.8)),
        routes=draw(_maybe(_subset(ROUTES, 2), 0.8)),
        vehicle_classes=draw(_maybe(_subset((1, 2, 3, 4), 2), 0.8)),
        valid_from=valid_from,
        valid_until=valid_until,
        days=draw(_maybe(st.frozensets(st.integers(1, 7), min_size=1), 0.8)),
        time_from=time_from,
        time_until=time_until,
        min_amount=draw(st.one_of(st.just(0), st.just(0), _money)),
    )


@st.composite
def effects(draw: st.DrawFn) -> Effect:
    kind = draw(st.sampled_from(list(EffectKind)))
    max_benefit = draw(_maybe(_money, 0.7))
    if kind is EffectKind.PERCENT:
        return Effect(kind, rate=draw(_rate), max_benefit=max_benefit)
    if kind is EffectKind.FIXED:
        return Effect(kind, amount=draw(_money))
    if kind is EffectKind.THRESHOLD:
        return Effect(kind, amount=draw(_money), threshold=draw(_money),
                      repeat=draw(st.booleans()), max_benefit=max_benefit)
    if kind is EffectKind.PRICE:
        return Effect(kind, price=draw(st.one_of(st.just(0), _money)))
    if draw(st.booleans()):
        return Effect(kind, rate=draw(_rate), max_benefit=max_benefit)
    return Effect(kind, amount=draw(st.one_of(_money, st.just(MAX_FEN))))


@st.composite
def caps(draw: st.DrawFn) -> Caps:
    """Caps where counts bind as often as amounts do."""
    values = {
        "daily_count": draw(_maybe(st.integers(1, 3), 0.5)),
        "daily_amount": draw(_maybe(st.integers(1, 60_000), 0.7)),
        "monthly_count": draw(_maybe(st.integers(1, 4), 0.5)),
        "monthly_amount": draw(_maybe(st.integers(1, 100_000), 0.6)),
    }
    if all(v is None for v in values.values()):
        values["monthly_count"] = draw(st.integers(1, 3))
    return Caps(**values)


@st.composite
def rules(draw: st.DrawFn, rule_id: str = "r", modes: tuple[Mode, ...] = MODES) -> Rule:
    """One valid rule with id ``rule_id``."""
    return Rule(
        id=rule_id,
        mode=draw(st.sampled_from(modes)),
        effect=draw(effects()),
        when=draw(conditions()),
        stackable=draw(st.integers(0, 2)) == 0,
        caps=draw(_maybe(caps(), 0.5)),
        description=draw(st.sampled_from(["", "a rule", "会员九折"])),
    )


_NARROWABLE = ("card_types", "member_categories", "member_status", "merchants", "routes",
               "days", "min_amount", "merchant_categories", "vehicle_classes")


@st.composite
def rulesets(draw: st.DrawFn, min_rules: int = 0, max_rules: int = 8) -> RuleSet:
    """A valid rule set of up to ``max_rules`` rules over a few modes."""
    n = draw(st.integers(min_rules, max_rules))
    made: list[Rule] = []
    for i in range(n):
        rule = draw(rules(f"r{i}"))
        share: bool = draw(st.booleans())
        if made and share:  # share an earlier rule's mode and conditions
            model = draw(st.sampled_from(made))
            when = model.when
            if draw(st.booleans()):  # narrowed or widened in one respect
                when = replace(when, **{name: getattr(draw(conditions()), name)
                                        for name in [draw(st.sampled_from(_NARROWABLE))]})
            rule = replace(rule, mode=model.mode, when=when)
        made.append(rule)
    return RuleSet(
        rules=tuple(made),
        rounding=draw(st.sampled_from(list(Rounding))),
        name=draw(st.sampled_from(["", "generated"])),
    )


_instants = st.one_of(
    st.integers(-40, 40).flatmap(
        lambda d: st.integers(0, 86_399).map(
            lambda s: datetime.combine(BASE_DAY + timedelta(d), time()) + timedelta(seconds=s)
        )
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
        lambda t: t.replace(microsecond=0)
    ),
    st.sampled_from([datetime(1969, 12, 31, 23, 59, 59), datetime(1970, 1, 1),
                     datetime(2026, 2, 28, 23, 59, 59), datetime(2028, 2, 29, 12)]),
)


def _pick(draw: st.DrawFn, allowed: frozenset[Any] | None, pool: st.SearchStrategy[Any]) -> Any:
    return draw(st.sampled_from(sorted(allowed))) if allowed else draw(pool)


@st.composite
def _targeted(draw: st.DrawFn, rule: Rule) -> dict[str, Any]:
    """Field values that satisfy ``rule``'s conditions, boundaries included."""
    when = rule.when
    lo_day = when.valid_from or (when.valid_until or BASE_DAY) - timedelta(40)
    hi_day = when.valid_until or (when.valid_from or BASE_DAY) + timedelta(40)
    span = (hi_day - lo_day).days
    days = [lo_day + timedelta(d) for d in range(span + 1)]
    if when.days:
        days = [d for d in days if d.isoweekday() in when.days] or days
    outside = [lo_day - timedelta(1), hi_day + timedelta(1)]  # just out of range
    day = draw(st.one_of(st.sampled_from([days[0], days[-1]]), st.sampled_from(days),
                         st.sampled_from(outside)))
    start = 0 if when.time_from is None else when.time_from
    end = 86_400 if when.time_until is None else when.time_until
    edges = st.sampled_from([(start - 1) % 86_400, end % 86_400])  # just outside the window
    if start < end:
        second = draw(st.one_of(st.sampled_from([start, end - 1]), st.integers(start, end - 1),
                                edges))
    else:
        second = draw(st.one_of(st.sampled_from([start, end - 1, 86_399, 0]),
                                st.integers(start, 86_399), st.integers(0, max(0, end - 1)),
                                edges))
    mask = when.member_categories
    categories = draw(st.integers(0, 7))
    if mask and not categories & mask:
        categories |= mask & -mask
    low = rule.min_amount
    return {
        "mode": rule.mode,
        "amount": draw(st.one_of(st.sampled_from([low, low + 1, max(0, low - 1)]),
                                 st.integers(low, low + 30_000), st.integers(low, MAX_FEN))),
        "card_type": _pick(draw, when.card_types, st.sampled_from([0x55, 0x01])),
        "at": datetime.combine(day, time()) + timedelta(seconds=second),
        "member_categories": categories,
        "member_status": _pick(draw, when.member_status, st.sampled_from(list(MemberStatus))),
        "merchant_id": _pick(draw, when.merchants, st.sampled_from([None, *MERCHANTS])),
        "merchant_category": _pick(draw, when.merchant_categories, st.sampled_from(MCCS)),
        "route": _pick(draw, when.routes, st.sampled_from([None, *ROUTES])),
        "vehicle_class": _pick(draw, when.vehicle_classes, st.integers(0, 5)),
    }


@st.composite
def _random_fields(draw: st.DrawFn, modes: list[Mode]) -> dict[str, Any]:
    return {
        "mode": draw(st.one_of(st.sampled_from(modes), st.sampled_from(list(Mode)))),
        "amount": draw(st.one_of(st.integers(0, 400), st.integers(0, 30_000),
                                 st.integers(0, MAX_FEN), st.just(MAX_FEN))),
        "card_type": draw(st.one_of(st.sampled_from([0x55, 0x01, 0x02]), st.integers(0, 255))),
        "at": draw(_instants),
        "member_categories": draw(st.integers(0, 7)),
        "member_status": draw(st.sampled_from(list(MemberStatus))),
        "merchant_id": draw(st.one_of(st.none(), st.sampled_from(MERCHANTS), st.just("M-9999"))),
        "merchant_category": draw(st.one_of(st.none(), st.sampled_from(MCCS),
                                            st.integers(0, 9999))),
        "route": draw(st.one_of(st.none(), st.sampled_from(ROUTES), st.just("99"))),
        "vehicle_class": draw(st.one_of(st.none(), st.integers(0, 5))),
    }


@st.composite
def contexts(draw: st.DrawFn, ruleset: RuleSet | None = None) -> QuoteContext:
    """A context: mostly one that meets a rule's conditions (sometimes with one field
    changed, to probe the boundaries), sometimes an unrelated one."""
    modes = sorted({r.mode for r in ruleset.rules}) if ruleset and ruleset.rules else list(MODES)
    fields = draw(_random_fields(modes))
    if ruleset and ruleset.rules and draw(st.integers(0, 3)) > 0:
        fields = draw(_targeted(draw(st.sampled_from(ruleset.rules))))
        if draw(st.integers(0, 4)) == 0:  # break one condition, or not
            name = draw(st.sampled_from(sorted(fields)))
            fields[name] = draw(_random_fields(modes))[name]
    fields["member_id"] = draw(st.one_of(st.sampled_from(MEMBERS), st.sampled_from(MEMBERS),
                                         st.sampled_from(MEMBERS), st.none()))
    return QuoteContext(**fields)


@st.composite
def context_lists(draw: st.DrawFn, ruleset: RuleSet | None = None, min_size: int = 1,
                  max_size: int = 40) -> list[QuoteContext]:
    """Contexts as a settlement batch has them: often the same member buying again
    where they did before, minutes later, so that day and month caps come into play."""
    items = draw(st.lists(contexts(ruleset), min_size=min_size, max_size=max_size))
    for i in range(1, len(items)):
        if draw(st.integers(0, 1)) == 0:
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
        rule = draw(st.sampled_from(capped))
        context = draw(st.sampled_from(around))
        period = draw(st.sampled_from([Period.DAY, Period.MONTH]))
        book.add(draw(st.sampled_from(MEMBERS)), rule.id, period,
                 period_key(period, context.at), count=draw(st.integers(0, 3)),
                 amount=draw(st.integers(0, 3000)))
    return book

