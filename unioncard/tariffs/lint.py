"""Warnings about valid rule sets: rules that can never be chosen (*shadowed*: an
earlier uncapped non-stackable rule matches wherever they do and always gives at least as
much, proven as docs/tariffs.md, "Checking rule files", says), and rules without a condition
that declares a ``missing`` warning (``conditions``).
"""

from __future__ import annotations

from unioncard.tariffs.conditions import CONDITIONS
from unioncard.tariffs.loader import Problem
from unioncard.tariffs.model import Effect, EffectKind, Rule, RuleSet
from unioncard.tariffs.money import RATE_SCALE, Rounding, round_div

__all__ = ["covers", "dominates", "lint", "shadowing"]


def covers(a: Rule, b: Rule) -> bool:
    """Whether ``a`` is a candidate wherever ``b`` is (same mode, wider conditions)."""
    if a.mode is not b.mode or a.min_amount > b.min_amount:
        return False
    wa, wb = a.when.values(), b.when.values()
    return all(c.covers(c.value(wa), c.value(wb)) for c in CONDITIONS)


def _floor(effect: Effect) -> int | None:
    """``effect`` always gives at least ``min(floor, amount)`` where it applies."""
    kind = effect.kind
    if kind is EffectKind.FIXED or (kind is EffectKind.REBATE and effect.amount):
        return effect.amount
    if kind is EffectKind.THRESHOLD:
        return min(effect.amount, effect.max_benefit or effect.amount)
    return None


def _upper(effect: Effect) -> int | None:
    """The most ``effect`` can ever give, when bounded."""
    floor = _floor(effect)
    if floor is None or (effect.kind is EffectKind.THRESHOLD and effect.repeat):
        return effect.max_benefit
    return floor


def _takes_all(effect: Effect) -> bool:
    if effect.kind is EffectKind.PRICE:
        return effect.price == 0
    if effect.kind in (EffectKind.PERCENT, EffectKind.REBATE) and effect.rate == RATE_SCALE:
        return effect.max_benefit is None
    return False


def _at_least(a: int | None, b: int | None) -> bool:
    """Limit ``a`` is at least limit ``b`` (``None``: no limit)."""
    return a is None or (b is not None and a >= b)


def dominates(a: Rule, b: Rule, rounding: Rounding) -> bool:
    """Whether ``a`` gives at least what ``b`` gives at every amount ``b`` accepts."""
    ea, eb = a.effect, b.effect
    if ea.is_rebate != eb.is_rebate:
        return False
    if _takes_all(ea):
        return True
    rated = (EffectKind.PERCENT, EffectKind.REBATE)
    if (ea.kind == eb.kind and ea.kind in rated and ea.rate and eb.rate
            and ea.rate >= eb.rate and _at_least(ea.max_benefit, eb.max_benefit)):
        return True
    if ea.kind is EffectKind.PRICE and eb.kind is EffectKind.PRICE and ea.price <= eb.price:
        return True
    if (ea.kind is EffectKind.THRESHOLD and eb.kind is EffectKind.THRESHOLD and ea.repeat
            and ea.threshold <= eb.threshold and ea.amount >= eb.amount
            and _at_least(ea.max_benefit, eb.max_benefit)):
        return True
    upper = _upper(eb)
    if upper is None:
        if ea.kind is EffectKind.PRICE and eb.kind is EffectKind.PERCENT and eb.rate:
            # b gives at most x - round(x(1 - r)) and a gives x - price: enough that
            # round(m(1 - r)) >= price at b's minimum m, as round(x(1 - r)) grows with x.
            keep = b.min_amount * (RATE_SCALE - eb.rate)
            return round_div(keep, RATE_SCALE, rounding) >= ea.price
        return False
    floor = _floor(ea)
    if floor is not None and floor >= upper:
        return True
    if ea.is_rebate:
        return False  # rebates are taken on any charged amount, down to 0
    return ea.benefit(b.min_amount, b.min_amount, rounding) >= upper


def shadowing(ruleset: RuleSet) -> list[tuple[Rule, Rule]]:
    """``(shadowed, by)`` pairs: rules that can never be chosen, and the first rule
    that always beats or ties them."""
    found = []
    rules = ruleset.rules
    for index, b in enumerate(rules):
        if b.stackable:
            continue
        for a in rules[:index]:
            if a.stackable or a.caps is not None:
                continue
            if covers(a, b) and dominates(a, b, ruleset.rounding):
                found.append((b, a))
                break
    return found


def lint(ruleset: RuleSet, source: str | None = None) -> list[Problem]:
    """Every warning about ``ruleset``, in declared order."""
    where = source or ruleset.source or "<rules>"
    out: list[Problem] = []
    shadowed = {b.id: a for b, a in shadowing(ruleset)}
    for rule in ruleset.rules:
        if rule.id in shadowed:
            a = shadowed[rule.id]
            at = f" (line {a.line})" if a.line else ""
            out.append(Problem(where, rule.line, rule.id,
                               f"never applies: rule {a.id!r}{at} matches whenever it does "
                               "and gives at least as much", "warning"))
        for condition in CONDITIONS:
            if condition.missing and condition.value(rule.when.values()) == condition.empty:
                out.append(Problem(where, rule.line, rule.id, condition.missing, "warning"))
    return out
