"""Rule files: TOML in, a validated :class:`RuleSet` out, or every problem with its file,
line and rule id (all or nothing; docs/tariffs.md, "Rule files").
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path as FilePath
from typing import Any, Literal

from unioncard.bounded_read import RULE_FILE_LIMIT, InputFileError, read_utf8
from unioncard.errors import TariffError
from unioncard.tariffs.conditions import KEYS as WHEN_KEYS
from unioncard.tariffs.conditions import Conditions
from unioncard.tariffs.model import (
    CAP_LIMITS,
    Caps,
    Effect,
    EffectKind,
    Mode,
    Rule,
    RuleSet,
    check_id,
    misplaced,
    missing,
)
from unioncard.tariffs.money import Rounding, parse_fen, parse_percent
from unioncard.toml_lines import Path, SourceMap

__all__ = ["DEFAULT_RULES", "Problem", "RuleFileError", "default_rules", "load", "loads", "parse",
           "read_rule_file"]

DEFAULT_RULES = "default.toml"

RULE_KEYS = ("id", "mode", "description", "stackable", "when", "effect", "cap")
EFFECT_KEYS = {"percent": "rate", "basis_points": "rate", "threshold": "threshold",
               "amount": "amount", "repeat": "repeat", "price": "price",
               "max_benefit": "max_benefit"}
"""Keys of ``[rule.effect]`` (besides ``kind``) and the `Effect` field each gives."""
CAP_KEYS = tuple(CAP_LIMITS)
RULESET_KEYS = ("name", "description", "rounding")
_TOML_LINE = re.compile(r"at line (\d+)")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a rule file, with where it is."""

    source: str
    line: int | None
    rule: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        who = f"rule {self.rule!r}: " if self.rule else ""
        return f"{where}: {self.severity}: {who}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "rule": self.rule,
                "severity": self.severity, "message": self.message}


class RuleFileError(TariffError):
    """A rule file that cannot be loaded; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        first = str(problems[0]).replace(": error: ", ": ", 1)
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(first + suffix)


def _rate(key: str, value: object) -> int:
    if isinstance(value, float):
        exact = Decimal(repr(value)).normalize() if math.isfinite(value) else None
        if exact is not None and exact >= 0 and exact == exact.quantize(Decimal("0.01")):
            hint = f'percent = "{exact:f}" or basis_points = {int(exact * 100)}'
        else:
            hint = 'a decimal string such as percent = "12.5" or integer basis_points'
        raise ValueError(f"{value!r} is a float and rates must be exact; write {hint}")
    if key == "percent":
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f'write the percentage as a string, percent = "{value}", '
                             f"or as integer basis_points = {value * 100}")
        if not isinstance(value, str):
            raise ValueError(f"must be a decimal string such as \"10\", not {type(value).__name__}")
        rate = parse_percent(value)
    else:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"basis points are an integer such as 1000, not {value!r}")
        if value < 0:
            raise ValueError(f"negative rate {value}")
        if value > 10_000:
            raise ValueError(f"{value} basis points is above 100%")
        rate = value * 100
    if rate == 0:
        raise ValueError("a rate of 0 gives nothing")
    return rate


class _Builder:
    """Walks the parsed TOML, converting and collecting problems with their lines."""

    def __init__(self, source: str, smap: SourceMap) -> None:
        self.source = source
        self.smap = smap
        self.problems: list[Problem] = []

    def error(self, path: Path, message: str, rule: str | None = None) -> None:
        self.problems.append(Problem(self.source, self.smap.line(path), rule, message))

    def table(self, value: object, path: Path, name: str, rule: str | None
              ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, f"{name} must be a table", rule)
            return None
        return value

    def unknown(self, data: dict[str, Any], allowed: tuple[str, ...], path: Path, prefix: str,
                rule: str | None) -> None:
        for key in data:
            if key not in allowed:
                known = ", ".join(allowed)
                self.error((*path, key), f"unknown field '{prefix}{key}' (known: {known})", rule)

    def ruleset(self, data: dict[str, Any], source: str) -> RuleSet | None:
        self.unknown(data, ("ruleset", "rule"), (), "", None)
        header = self.table(data.get("ruleset", {}), ("ruleset",), "[ruleset]", None) or {}
        self.unknown(header, RULESET_KEYS, ("ruleset",), "ruleset.", None)
        name = header.get("name", "")
        description = header.get("description", "")
        for key, value in (("name", name), ("description", description)):
            if not isinstance(value, str):
                self.error(("ruleset", key), f"ruleset.{key} must be a string")
        rounding = Rounding.HALF_UP
        if "rounding" in header:
            try:
                rounding = Rounding(header["rounding"])
            except ValueError:
                modes = ", ".join(r.value for r in Rounding)
                self.error(("ruleset", "rounding"),
                           f"unknown rounding {header['rounding']!r} (one of: {modes})")
        raw_rules = data.get("rule", [])
        if not isinstance(raw_rules, list):
            self.error(("rule",), "rule must be an array of tables: write each as [[rule]]")
            raw_rules = []
        rules: list[Rule] = []
        first_line: dict[str, int | None] = {}
        for index, raw in enumerate(raw_rules):
            rule_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(rule_id, str):
                if rule_id in first_line:
                    where = first_line[rule_id]
                    at = f" (first defined at line {where})" if where else ""
                    self.error(("rule", index, "id"), f"duplicate rule id{at}", rule_id)
                else:
                    first_line[rule_id] = self.smap.line(("rule", index))
            rule = self.rule(index, raw)
            if rule is not None:
                rules.append(rule)
        if self.problems:
            return None
        return RuleSet(rules=tuple(rules), rounding=rounding, name=str(name),
                       description=str(description), source=source)

    def rule(self, index: int, raw: object) -> Rule | None:
        base: Path = ("rule", index)
        before = len(self.problems)
        data = self.table(raw, base, f"rule #{index + 1}", None)
        if data is None:
            return None
        rule_id = data.get("id")
        label = rule_id if isinstance(rule_id, str) and rule_id else f"#{index + 1}"
        self.unknown(data, RULE_KEYS, base, "", label)
        if "id" not in data:
            self.error(base, "missing id", label)
        else:
            try:
                check_id(rule_id)
            except TariffError as exc:
                self.error((*base, "id"), str(exc), label)
        mode: Mode | None = None
        if "mode" not in data:
            self.error(base, "missing mode", label)
        elif not isinstance(data["mode"], str):
            self.error((*base, "mode"), "mode must be a string such as \"bus\"", label)
        else:
            try:
                mode = Mode.parse(data["mode"])
            except ValueError as exc:
                self.error((*base, "mode"), str(exc), label)
        description = data.get("description", "")
        if not isinstance(description, str):
            self.error((*base, "description"), "description must be a string", label)
        stackable = data.get("stackable", False)
        if not isinstance(stackable, bool):
            self.error((*base, "stackable"), "stackable must be true or false", label)
        when = self.conditions(data.get("when", {}), (*base, "when"), label)
        if "effect" not in data:
            self.error(base, "missing effect (a [rule.effect] table)", label)
            effect = None
        else:
            effect = self.effect(data["effect"], (*base, "effect"), label)
        caps = self.caps(data["cap"], (*base, "cap"), label) if "cap" in data else None
        if len(self.problems) > before or mode is None or effect is None or when is None:
            return None
        try:
            return Rule(id=str(rule_id), mode=mode, effect=effect, when=when, stackable=stackable,
                        caps=caps, description=description, line=self.smap.line(base))
        except TariffError as exc:
            self.error(base, str(exc), label)
            return None

    def conditions(self, raw: object, path: Path, label: str) -> Conditions | None:
        data = self.table(raw, path, "when", label)
        if data is None:
            return None
        self.unknown(data, tuple(WHEN_KEYS), path, "when.", label)
        values: dict[str, Any] = {}
        for key, value in data.items():
            try:
                if key in WHEN_KEYS:
                    values[key] = WHEN_KEYS[key].parse(key, value)
            except ValueError as exc:
                self.error((*path, key), f"when.{key}: {exc}", label)
        for condition in dict.fromkeys(WHEN_KEYS[key] for key in values):
            try:
                condition.check(condition.value(values))
            except TariffError as exc:  # between its keys: an end before its start
                self.error((*path, condition.keys[-1]), f"when: {exc}", label)
                return None
        return Conditions(**values)

    def effect(self, raw: object, path: Path, label: str) -> Effect | None:
        data = self.table(raw, path, "effect", label)
        if data is None:
            return None
        self.unknown(data, ("kind", *EFFECT_KEYS), path, "effect.", label)
        raw_kind = data.get("kind")
        kind = next((k for k in EffectKind if k.value == raw_kind), None)
        if kind is None:
            kinds = ", ".join(k.value for k in EffectKind)
            where = (*path, "kind") if "kind" in data else path
            self.error(where, f"effect.kind {raw_kind!r} is not one of: {kinds}", label)
            return None
        given = [EFFECT_KEYS[key] for key in data if key in EFFECT_KEYS]
        values: dict[str, Any] = {"kind": kind}
        before = len(self.problems)
        wrong = misplaced(kind, given)
        for key, value in data.items():
            name = EFFECT_KEYS.get(key)
            if name is None:
                continue
            if name in wrong:
                self.error((*path, key), wrong[name].format(key=key), label)
                continue
            try:
                if name == "rate" and "rate" in values:
                    raise ValueError("give one of percent and basis_points")
                if name == "repeat" and not isinstance(value, bool):
                    raise ValueError("must be true or false")
                if name == "rate":
                    value = _rate(key, value)
                elif name != "repeat":
                    value = parse_fen(value, positive=name != "price")
                values[name] = value
            except ValueError as exc:
                self.error((*path, key), f"effect.{key}: {exc}", label)
        if len(self.problems) == before:
            for why in missing(kind, given):
                self.error(path, why, label)
        if len(self.problems) > before:
            return None
        try:
            return Effect(**values)
        except TariffError as exc:
            self.error(path, f"effect: {exc}", label)
            return None

    def caps(self, raw: object, path: Path, label: str) -> Caps | None:
        data = self.table(raw, path, "cap", label)
        if data is None:
            return None
        self.unknown(data, CAP_KEYS, path, "cap.", label)
        values: dict[str, int] = {}
        for key in set(CAP_KEYS) & set(data):
            try:
                values[key] = parse_fen(data[key], positive=True, hi=CAP_LIMITS[key])
            except ValueError as exc:
                self.error((*path, key), f"cap.{key}: {exc}", label)
        if not values:
            if not data:
                self.error(path, "a cap needs daily_count, daily_amount, monthly_count or "
                           "monthly_amount", label)
            return None
        return Caps(**values)


def parse(text: str, source: str = "<string>") -> tuple[RuleSet | None, list[Problem]]:
    """Validate rule-file text: the rule set (``None`` on any error) and every error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        line = int(match.group(1)) if match else None
        message = _TOML_LINE.sub("", str(exc)).replace("()", "").strip().rstrip(" ,")
        return None, [Problem(source, line, None, f"not valid TOML: {message}")]
    except RecursionError:
        return None, [Problem(source, None, None,
                              "not valid TOML: arrays or tables nested too deeply")]
    builder = _Builder(source, SourceMap(text))
    ruleset = builder.ruleset(data, source)
    problems = sorted(builder.problems, key=lambda p: (p.line is None, p.line or 0))
    return ruleset, problems


def loads(text: str, source: str = "<string>") -> RuleSet:
    """A rule set from TOML text; raises :class:`RuleFileError` listing every problem."""
    ruleset, problems = parse(text, source)
    if ruleset is None:
        raise RuleFileError(problems)
    return ruleset


def read_rule_file(path: str | FilePath) -> str:
    """The text of a rule file: UTF-8, at most `RULE_FILE_LIMIT` bytes, a regular file
    (:class:`RuleFileError` otherwise, naming the file and the problem)."""
    try:
        return read_utf8(path, limit=RULE_FILE_LIMIT, what="rule file")
    except InputFileError as exc:
        raise RuleFileError([Problem(exc.path, None, None, exc.reason)]) from None


def load(path: str | FilePath) -> RuleSet:
    """A rule set from a TOML file (UTF-8, at most `RULE_FILE_LIMIT` bytes)."""
    return loads(read_rule_file(path), str(path))


@functools.cache
def default_rules() -> RuleSet:
    """The shipped default rule set (``unioncard/tariffs/default.toml``, read beside this
    module: every tap reads it, and `importlib.resources` costs start-up time)."""
    text = FilePath(__file__).with_name(DEFAULT_RULES).read_text(encoding="utf-8")
    return loads(text, f"<default {DEFAULT_RULES}>")
