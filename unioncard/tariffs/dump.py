"""A rule set as a TOML rule file that loads to an equal rule set (``tariffs show --toml``)."""

from __future__ import annotations

from unioncard.tariffs.conditions import toml_string
from unioncard.tariffs.model import EFFECT_FIELDS, Effect, Rule, RuleSet
from unioncard.tariffs.money import format_rate

__all__ = ["dumps"]


def _effect(effect: Effect) -> list[str]:
    """The canonical fields, and a needed one even at 0 (``price = 0``)."""
    needed = {name: 0 for name, need in EFFECT_FIELDS[effect.kind].items() if need}
    values = {**needed, **effect.canonical()}
    lines = [f'kind = "{values.pop("kind")}"']
    for name, value in values.items():
        if name == "rate":
            lines.append(f'percent = "{format_rate(value)[:-1]}"')
        else:
            lines.append(f"{name} = {'true' if value is True else value}")
    return lines


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
        lines += ["[rule.cap]", *(f"{k} = {v}" for k, v in rule.caps.canonical().items())]
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
