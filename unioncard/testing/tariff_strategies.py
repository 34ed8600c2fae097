"""Hypothesis strategies for tariff rule sets, quote contexts and usage histories.

Generated rule sets use every condition of ``unioncard.tariffs.conditions.CONDITIONS``
(drawn by kind, so a new condition is covered as soon as it is declared), every effect
kind, stacking, caps and all rounding modes, and often share or derive an earlier rule's
conditions, so that several rules compete.  Contexts are drawn mostly to meet one rule's
conditions, boundaries included (first and last day, the window's edges, the minimum
amount), sometimes with one field changed or just outside; the rest are unrelated, with
extreme dates.  Used by the property tests and available to integrators' own tests (needs
hypothesis).  Strategies are built once, at import, to keep generation cheap.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st

from unioncard.tariffs.conditions import (
    CONDITIONS,
    DATE,
    DAY_SECONDS,
    TIME_OF_DAY,
    WEEKDAY,
    AnyFlag,
    AtLeast,
    Condition,
    Conditions,
    DateRange,
    OneOf,
    TimeWindow,
)
from unioncard.tariffs.context import FIELDS, QuoteContext
from unioncard.tariffs.engine import UsageBook, period_key
from unioncard.tariffs.model import Caps, Effect, EffectKind, Mode, Period, Rule, RuleSet
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
TEXTS = ("M-0001", "M-0002", "商户-3", "K12", "工" * 16)  # the last is 48 bytes of UTF-8
MEMBERS = ("m-a", "m-b", "m-c")
MODES = (Mode.BUS, Mode.POS, Mode.ETC)


def _maybe(strategy: st.SearchStrategy[Any], weight: float = 0.6) -> st.SearchStrategy[Any]:
    """``None`` or a value; a higher ``weight`` draws ``None`` more often, so that rules
    stay broad enough to match."""
    nones = max(1, round(weight * 4))
    values = max(1, 4 - nones)
    return st.one_of(*([st.none()] * nones), *([strategy] * values))


def _choice(draw: st.DrawFn, items: list[T] | tuple[T, ...]) -> T:
    """One of ``items`` (cheaper than building ``sampled_from`` for every draw)."""
    return items[draw(st.integers(0, len(items) - 1))]


def _pool(condition: OneOf) -> tuple[Any, ...]:
    """A few values of a set condition's domain, shared by rules and contexts so they meet:
    its ends and middle (every 64-bit word of a byte set), its named values, or texts."""
    if condition.text:
        return tuple(t for t in TEXTS if not condition.max_bytes
                     or len(t.encode("utf-8")) <= condition.max_bytes)
    lo, hi = condition.lo, condition.hi
    named = {v for v in condition.names.values() if isinstance(v, int)}
    return tuple(sorted({lo, lo + 1, (lo + hi) // 2, hi - 1, hi, *named} & set(range(lo, hi + 1))))


_money = st.one_of(
    st.integers(1, 300), st.integers(1, 20_000), st.sampled_from([100, 1000, 10_000])
)
_rate = st.one_of(
    st.sampled_from([100_000, 50_000, 200_000, 95_000, 333_333, RATE_SCALE]),
    st.integers(1, RATE_SCALE),
)
_half_hours = st.integers(0, 48).map(lambda h: h * 1800)


def _values(condition: Condition) -> st.SearchStrategy[Any]:
    """Values of ``condition`` as rules have them (``None`` often, so rules stay broad)."""
    if isinstance(condition, OneOf):
        pool = _pool(condition)
        weight = 0.3 if condition.missing else 0.8
        return _maybe(st.frozensets(st.sampled_from(pool), min_size=1,
                                    max_size=min(len(pool), 3)), weight)
    if isinstance(condition, AnyFlag):
        return _maybe(st.integers(1, max(condition.names.values()) * 2 - 1), 0.8)
    if isinstance(condition, DateRange):
        def ordered(pair: tuple[Any, Any]) -> tuple[Any, Any]:
            lo, hi = pair
            return (hi, lo) if lo and hi and hi < lo else (lo, hi)

        day = st.integers(-40, 40).map(lambda d: BASE_DAY + timedelta(d))
        return st.tuples(_maybe(day, 0.8), _maybe(day, 0.8)).map(ordered)
    if isinstance(condition, TimeWindow):
        return st.tuples(_maybe(_half_hours.filter(lambda s: s < DAY_SECONDS), 0.8),
                         _maybe(_half_hours.filter(lambda s: s > 0), 0.8)).map(
            lambda pair: (pair[0], None) if pair[0] is not None and pair[0] == pair[1] else pair)
    if isinstance(condition, AtLeast):
        return st.one_of(st.just(0), st.just(0), _money)
    raise TypeError(f"no strategy for the kind of {condition.keys}")


_CONDITION_VALUES = [(c, _values(c)) for c in CONDITIONS]


@st.composite
def conditions(draw: st.DrawFn) -> Conditions:
    """Any valid conditions, mostly broad."""
    values: dict[str, Any] = {}
    for condition, strategy in _CONDITION_VALUES:
        value = draw(strategy)
        parts = value if len(condition.keys) > 1 else (value,)
        values.update((k, v) for k, v in zip(condition.keys, parts, strict=True)
                      if v is not None)
    return Conditions(**values)


_max_benefit = _maybe(_money, 0.7)
_kinds = st.sampled_from(list(EffectKind))
_price = st.one_of(st.just(0), _money)
_rebate_amount = st.one_of(_money, st.just(MAX_FEN))


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
                condition, strategy = _choice(draw, _CONDITION_VALUES)
                value = draw(strategy)
                parts = value if len(condition.keys) > 1 else (value,)
                when = when.replace(**dict(zip(condition.keys, parts, strict=True)))
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
_READERS: dict[str, list[Condition]] = {}
for _condition in CONDITIONS:
    _READERS.setdefault(_condition.reads, []).append(_condition)


def _field_pool(name: str) -> tuple[Any, ...]:
    """Values of a context field that rules name (and some they do not)."""
    spec = FIELDS[name]
    pool: set[Any] = set()
    for condition in _READERS.get(name, []):
        if isinstance(condition, OneOf):
            pool.update(_pool(condition))
        elif isinstance(condition, AnyFlag):
            pool.update(range(max(condition.names.values()) * 2))
    if spec.kind == "text":
        return (None, *sorted(pool | {"Z-9999"}))
    if spec.enum is not None:
        return tuple(spec.enum)
    pool |= {spec.lo, spec.hi}
    return (*((None,) if QuoteContext.__dataclass_fields__[name].default is None else ()),
            *sorted(pool))


_POOLS = {name: _field_pool(name) for name in FIELDS if name not in ("mode", "amount", "at")}


@st.composite
def _targeted(draw: st.DrawFn, rule: Rule) -> dict[str, Any]:
    """Field values that satisfy ``rule``'s conditions, boundaries included, or fall
    just outside a date or time boundary."""
    present = dict(rule.when.items())
    by_reading = {c.reads: v for c, v in present.items()}
    lo_day, hi_day = by_reading.get(DATE, (None, None))
    lo_day = lo_day or (hi_day or BASE_DAY) - timedelta(40)
    hi_day = hi_day or (lo_day or BASE_DAY) + timedelta(40)
    days = [lo_day + timedelta(d) for d in range((hi_day - lo_day).days + 1)]
    weekdays = by_reading.get(WEEKDAY)
    if weekdays:
        days = [d for d in days if d.isoweekday() in weekdays] or days
    where = draw(st.integers(0, 5))
    if where == 0:
        day = _choice(draw, [lo_day - timedelta(1), hi_day + timedelta(1)])
    else:
        day = days[0] if where == 1 else days[-1] if where == 2 else _choice(draw, days)
    start, end = by_reading.get(TIME_OF_DAY, (None, None))
    start = 0 if start is None else start
    end = DAY_SECONDS if end is None else end
    if draw(st.booleans()):
        second = _choice(draw, [start, end - 1, (start - 1) % DAY_SECONDS, end % DAY_SECONDS])
    elif start < end:
        second = draw(st.integers(start, end - 1))
    else:
        second = (start + draw(st.integers(0, DAY_SECONDS - start + end - 1))) % DAY_SECONDS
    low = rule.min_amount
    amount_kind = draw(st.integers(0, 3))
    if amount_kind == 0:
        amount = _choice(draw, [low, low + 1, max(0, low - 1)])
    elif amount_kind == 1:
        amount = low + draw(st.integers(0, MAX_FEN - low))
    else:
        amount = low + draw(st.integers(0, 30_000))
    fields: dict[str, Any] = {
        "mode": rule.mode, "amount": amount,
        "at": datetime.combine(day, time()) + timedelta(seconds=second),
        **{name: _choice(draw, pool) for name, pool in _POOLS.items()},
    }
    for condition, value in present.items():
        if isinstance(condition, OneOf) and condition.reads in _POOLS:
            fields[condition.reads] = _choice(draw, sorted(value))
        elif isinstance(condition, AnyFlag):
            flags = draw(st.integers(0, 7))
            fields[condition.reads] = flags if flags & value else flags | (value & -value)
    return fields


_random_amount = st.one_of(st.integers(0, 400), st.integers(0, 30_000), st.integers(0, MAX_FEN),
                           st.just(MAX_FEN))
_all_modes = list(Mode)


@st.composite
def _random_fields(draw: st.DrawFn, modes: list[Mode]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "mode": _choice(draw, modes if draw(st.booleans()) else _all_modes),
        "amount": draw(_random_amount),
        "at": draw(_instants),
    }
    for name, pool in _POOLS.items():
        spec = FIELDS[name]
        if spec.kind == "int" and spec.enum is None and draw(st.integers(0, 3)) == 0:
            fields[name] = draw(st.integers(spec.lo, spec.hi))
        else:
            fields[name] = _choice(draw, pool)
    return fields


_BREAKABLE = ("mode", "amount", "at", *(name for name in _POOLS if name != "member_id"))
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
            name = _choice(draw, _BREAKABLE)
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

