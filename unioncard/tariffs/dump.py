"""Write a rule set back as a TOML rule file that loads to an equal rule set.

Used by ``unioncard tariffs show --toml`` (to normalize a file) and by the
round-trip tests; the output follows the documented format (docs/tariffs.md).
"""

from __future__ import annotations

import json

from unioncard.tariffs.model import (
    CATEGORY_NAMES,
    WEEKDAY_NAMES,
    Caps,
    Conditions,
    Effect,
    EffectKind,
    Rule,
    RuleSet,
)

__all__ = ["dumps"]

_STATUS = {1: "active", 2: "lost", 3: "cancelled"}
_MCC = '"{:04d}"'
_CATEGORY = {bit: name for name, bit in CATEGORY_NAMES.items()}


def _string(text: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML escapes; DEL must be escaped)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _strings(values: frozenset[str]) -> str:
    return "[" + ", ".join(_string(v) for v in sorted(values)) + "]"


def _ints(values: frozenset[int], fmt: str = "{}") -> str:
    return "[" + ", ".join(fmt.format(v) for v in sorted(values)) + "]"


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'"{hours:02d}:{minutes:02d}:{secs:02d}"'


def _percent(rate: int) -> str:
    whole, frac = divmod(rate, 10_000)
    text = f"{whole}.{frac:04d}".rstrip("0").rstrip(".")
    return f'"{text}"'


def _conditions(when: Conditions) -> list[str]:
    lines = []
    if when.card_types is not None:
        lines.append(f"card_types = {_ints(when.card_types, '0x{:02X}')}")
    if when.member_categories is not None:
        mask = when.member_categories
        named = [name for bit, name in sorted(_CATEGORY.items()) if mask & bit]
        rest = mask & ~sum(_CATEGORY)
        items = [_string(n) for n in named] + ([f"0x{rest:02X}"] if rest else [])
        lines.append(f"member_categories = [{', '.join(items)}]")
    if when.member_status is not None:
        items = [_string(_STATUS[s]) for s in sorted(when.member_status)]
        lines.append(f"member_status = [{', '.join(items)}]")
    if when.merchants is not None:
        lines.append(f"merchants = {_strings(when.merchants)}")
    if when.merchant_categories is not None:
        mccs = _ints(when.merchant_categories, _MCC)
        lines.append(f"merchant_categories = {mccs}")
    if when.routes is not None:
        lines.append(f"routes = {_strings(when.routes)}")
    if when.vehicle_classes is not None:
        lines.append(f"vehicle_classes = {_ints(when.vehicle_classes)}")
    if when.valid_from is not None:
        lines.append(f"valid_from = {when.valid_from.isoformat()}")
    if when.valid_until is not None:
        lines.append(f"valid_until = {when.valid_until.isoformat()}")
    if when.days is not None:
        items = [_string(WEEKDAY_NAMES[d - 1]) for d in sorted(when.days)]
        lines.append(f"days = [{', '.join(items)}]")
    if when.time_from is not None:
        lines.append(f"time_from = {_clock(when.time_from)}")
    if when.time_until is not None:
        lines.append(f"time_until = {_clock(when.time_until)}")
    if when.min_amount:
        lines.append(f"min_amount = {when.min_amount}")
    return lines


def _effect(effect: Effect) -> list[str]:
    lines = [f'kind = "{effect.kind}"']
    if effect.kind in (EffectKind.PERCENT, EffectKind.REBATE) and effect.rate:
        lines.append(f"percent = {_percent(effect.rate)}")
    if effect.kind is EffectKind.THRESHOLD:
        lines.append(f"threshold = {effect.threshold}")
    if effect.kind in (EffectKind.FIXED, EffectKind.THRESHOLD, EffectKind.REBATE) and effect.amount:
        lines.append(f"amount = {effect.amount}")
    if effect.repeat:
        lines.append("repeat = true")
    if effect.kind is EffectKind.PRICE:
        lines.append(f"price = {effect.price}")
    if effect.max_benefit is not None:
        lines.append(f"max_benefit = {effect.max_benefit}")
    return lines


def _caps(caps: Caps) -> list[str]:
    return [f"{key} = {value}" for key, value in caps.canonical().items()]


def _rule(rule: Rule) -> list[str]:
    lines = ["[[rule]]", f"id = {_string(rule.id)}", f'mode = "{rule.mode.label}"']
    if rule.description:
        lines.append(f"description = {_string(rule.description)}")
    if rule.stackable:
        lines.append("stackable = true")
    when = _conditions(rule.when)
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
        lines.append(f"name = {_string(ruleset.name)}")
    if ruleset.description:
        lines.append(f"description = {_string(ruleset.description)}")
    lines.append(f'rounding = "{ruleset.rounding}"')
    for rule in ruleset.rules:
        lines += ["", *_rule(rule)]
    return "\n".join(lines) + "\n"
