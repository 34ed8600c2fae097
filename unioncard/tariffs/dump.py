"""Write a rule set back as a TOML rule file that loads to an equal rule set.

Used by ``unioncard tariffs show --toml`` (to normalize a file) and by the
round-trip tests; the output follows the documented format (docs/tariffs.md).
"""

from __future__ import annotations

from unioncard.tariffs.conditions import toml_string
from unioncard.tariffs.model import EFFECT_FIELDS, EFFECT_NEEDS, Caps, Effect, Rule, RuleSet

__all__ = ["dumps"]


def _percent(rate: int) -> str:
    whole, frac = divmod(rate, 10_000)
    text = f"{whole}.{frac:04d}".rstrip("0").rstrip(".")
    return f'"{text}"'


def _effect(effect: Effect) -> list[str]:
    lines = [f'kind = "{effect.kind}"']
    for name in EFFECT_FIELDS[effect.kind]:
        value = getattr(effect, name)
        if name == "rate" and value:
            lines.append(f"percent = {_percent(value)}")
        elif name != "rate" and (value or name in EFFECT_NEEDS[effect.kind]):
            lines.append(f"{name} = {'true' if value is True else value}")
    return lines


def _caps(caps: Caps) -> list[str]:
    return [f"{key} = {value}" for key, value in caps.canonical().items()]


def _rule(rule: Rule) -> list[str]:
    lines = ["[[rule]]", f"id = {toml_string(rule.id)}", f'mode = "{rule.mode.label}"']
    if rule.description:
        lines.append(f"description = {toml_string(rule.description)}")
    if rule.stackable:
        lines.append("stackable = true")
    when = [line for condition, value in rule.when.items() for line in condition.toml(value)]
    if when:
        lines += ["[rule.when]", *when]
    lines += ["[rule.effect]", *_effect(rule.effect)]
    if rule.caps is not None:
        lines += ["[rule.cap]", *_caps(rule.caps)]
    return lines


def dumps(ruleset: RuleSet) -> str:
    """The TOML text of ``ruleset``; ``loads(dumps(r)) == r`` with the same version."""
    lines = ["[ruleset]"]
    if ruleset.name:
        lines.append(f"name = {toml_string(ruleset.name)}")
    if ruleset.description:
        lines.append(f"description = {toml_string(ruleset.description)}")
    lines.append(f'rounding = "{ruleset.rounding}"')
    for rule in ruleset.rules:
        lines += ["", *_rule(rule)]
    return "\n".join(lines) + "\n"
