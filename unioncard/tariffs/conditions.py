"""The conditions of a rule (``[rule.when]``), each declared once (docs/tariffs.md,
"Conditions"): its key(s), what it reads of the context, and its kind, which parses,
checks, matches, writes (canonical JSON, TOML), compares (lint) and compiles (the batch
kernel) its values.  Everything else walks `CONDITIONS`.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from unioncard.apdu.records import CardType, MemberStatus
from unioncard.apdu.records import MemberCategory as Category
from unioncard.errors import TariffError
from unioncard.tariffs.money import MAX_FEN, check_int, parse_fen

__all__ = ["CARD_TYPE_NAMES", "CATEGORY_NAMES", "CONDITIONS", "DAY_SECONDS", "EPOCH_ORDINAL",
           "STATUS_NAMES", "AnyFlag", "AtLeast", "Condition", "Conditions", "DateRange", "Kind",
           "OneOf", "TimeWindow", "day_intervals", "named", "toml_string"]

DAY_SECONDS = 86_400
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
FAR = 2**62
"""An open end of a range in the kernel's checks."""
IN_BITSET, IN_SORTED_RUN, HAS_ANY_FLAG, IN_RANGE, IN_TIME_WINDOW = range(5)
"""Kernel checks: what ``kernel.condition_holds`` tests a reading against."""
DATE, WEEKDAY, TIME_OF_DAY = "date", "weekday", "time of day"
CLOCK: dict[str, Callable[[datetime], Any]] = {
    DATE: datetime.date, WEEKDAY: datetime.isoweekday,
    TIME_OF_DAY: lambda at: at.hour * 3600 + at.minute * 60 + at.second,
}
"""Readings of the local time ``at`` (the kernel computes them from its seconds)."""

CARD_TYPE_NAMES: dict[str, int] = {"union-member": CardType.UNION_MEMBER,
                                   "member": CardType.UNION_MEMBER, "ordinary": CardType.ORDINARY}
CATEGORY_NAMES: dict[str, int] = {str(c.name).lower().replace("_", "-"): c for c in Category}
STATUS_NAMES: dict[str, int] = {"active": MemberStatus.ACTIVE, "lost": MemberStatus.REPORTED_LOST,
                                "reported-lost": MemberStatus.REPORTED_LOST,
                                "cancelled": MemberStatus.CANCELLED}
DAY_NAMES: dict[str, int | tuple[int, ...]] = {
    **{name: i + 1 for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
    "weekdays": (1, 2, 3, 4, 5), "weekend": (6, 7)}
_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2}))?")


def day_intervals(start: int | None, end: int | None) -> list[tuple[int, int]]:
    """The time window ``start <= seconds < end`` on a 24-hour clock as intervals of
    the day: a window whose start is after its end wraps midnight (22:00–05:00, two
    intervals).  A missing bound is midnight.

    >>> day_intervals(22 * 3600, 5 * 3600), day_intervals(None, 12 * 3600)
    ([(79200, 86400), (0, 18000)], [(0, 43200)])
    """
    lo = 0 if start is None else start
    hi = DAY_SECONDS if end is None else end
    if lo < hi:
        return [(lo, hi)]
    return [(x, y) for x, y in ((lo, DAY_SECONDS), (0, hi)) if x < y]


def toml_string(text: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML escapes; DEL must be escaped)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _words(values: frozenset[int]) -> list[int]:
    """A set of bytes as four 64-bit words (int64: the top bit makes a word negative)."""
    words = [0, 0, 0, 0]
    for value in values:
        words[value >> 6] |= 1 << (value & 63)
    return [w - (1 << 64) if w >> 63 else w for w in words]


@dataclass(frozen=True, kw_only=True, eq=False)
class Condition:
    """One condition: its key(s) in ``[rule.when]``, what it reads, and the lint warning
    for a rule without it (``missing``).  Subclasses are the kinds (`Kind`); each has
    ``parse(key, raw)``, one key's value as a rule file writes it (``ValueError`` says why
    it is refused), ``check(value)`` (:class:`TariffError` unless valid), ``test(value)``,
    whether a reading meets it, ``covers(a, b)``, whether value ``a`` admits every reading
    ``b`` admits, and ``compile(value, pool, codes)``, the kernel check ``(kind, lo, hi)``,
    adding what it needs to ``pool`` (text compiled to its ``codes``)."""

    keys: tuple[str, ...]
    reads: str
    missing: str = ""
    empty: Any = None

    def value(self, values: Mapping[str, Any]) -> Any:
        """This condition's value among ``values`` (by key); ``empty`` when absent."""
        if len(self.keys) == 1:
            return values.get(self.keys[0], self.empty)
        return tuple(values.get(key) for key in self.keys)

    def reader(self) -> Callable[[Any], Any]:
        """What the condition reads of a `QuoteContext`, as a function of the context."""
        clock = CLOCK.get(self.reads)
        if clock is None:
            return operator.attrgetter(self.reads)
        return lambda context: clock(context.at)

    def json(self, value: Any) -> dict[str, Any]:
        """Canonical form by key (part of the version hash: never change an existing one)."""
        return {self.keys[0]: value}

    def toml(self, value: Any) -> list[str]:
        return [f"{self.keys[0]} = {value}"]


def _listed(value: object) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("is empty, so the rule could never apply; omit it to match any")
    return items


def named(value: object, names: Mapping[str, Any], lo: int, hi: int, what: str) -> Any:
    """``value`` (a rule file's or an option's) as one of ``names`` or a number
    ``lo..hi`` (decimal or ``0x`` hex); `ValueError` says why not."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in names:
            return names[key]
        if not re.fullmatch(r"0x[0-9a-f]+|\d+", key):
            known = ", ".join(sorted(names))
            raise ValueError(f"unknown {what} {value!r} (names: {known}; or a number)")
        value = int(key, 16 if key.startswith("0x") else 10)
    elif not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} entries are names or integers, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} {value} is out of range {lo}..{hi}")
    return value


@dataclass(frozen=True, kw_only=True, eq=False)
class OneOf(Condition):
    """Matches when the value read is listed: integers ``lo..hi`` (or their ``names``;
    ``digits``: written as a string of that many digits, ``form`` says how) or, with
    ``text``, strings (at most ``max_bytes`` of UTF-8).  ``spell`` formats an item in
    TOML (``name``: its first name)."""

    what: str
    lo: int = 0
    hi: int = 0
    names: Mapping[str, int | tuple[int, ...]] = field(default_factory=dict)
    text: bool = False
    max_bytes: int = 0
    digits: int = 0
    form: str = ""
    spell: str = "{}"

    def _item(self, item: object) -> tuple[Any, ...]:
        if self.text:
            if not isinstance(item, str):
                raise ValueError(f"{self.what} are strings, not {type(item).__name__} {item!r}")
            if not item or item != item.strip() or not item.isprintable():
                raise ValueError(f"{self.what} must be non-empty and printable, without "
                                 f"surrounding spaces: {item!r}")
            size = len(item.encode("utf-8"))
            if self.max_bytes and size > self.max_bytes:
                cut = item.encode("utf-8")[:self.max_bytes].decode("utf-8", "ignore")
                raise ValueError(f"{item!r} is {size} bytes of UTF-8 and {self.what} are "
                                 f"compared as the offline record holds them, {self.max_bytes}"
                                 f" bytes: write {cut!r}")
            return (item,)
        if self.digits:
            if isinstance(item, str) and re.fullmatch(rf"\d{{{self.digits}}}", item):
                return (int(item),)
            if not (isinstance(item, int) and not isinstance(item, bool)
                    and self.lo <= item <= self.hi):
                raise ValueError(f"{self.what} {item!r} is not {self.form}")
            return (item,)
        value = named(item, self.names, self.lo, self.hi, self.what)
        return value if isinstance(value, tuple) else (value,)

    def parse(self, key: str, raw: object) -> frozenset[Any]:
        return frozenset(v for item in _listed(raw) for v in self._item(item))

    def check(self, value: Any) -> None:
        """The checks of `parse`, on values as parsed (numbers, not names)."""
        name = self.keys[0]
        if not isinstance(value, frozenset):
            raise TariffError(f"{name} must be a frozenset or None")
        try:
            parsed = self.parse(name, list(value))
        except ValueError as exc:
            raise TariffError(f"{name}: {exc}") from None
        if parsed != value:
            raise TariffError(f"{name} holds the values, not their names")

    def test(self, value: frozenset[Any]) -> Callable[[Any], bool]:
        return value.__contains__

    def json(self, value: frozenset[Any]) -> dict[str, Any]:
        return {self.keys[0]: sorted(value)}

    def toml(self, value: frozenset[Any]) -> list[str]:
        if self.text:
            items = [toml_string(v) for v in sorted(value)]
        elif self.spell == "name":
            first = {v: n for n, v in list(self.names.items())[::-1] if isinstance(v, int)}
            items = [toml_string(first[v]) for v in sorted(value)]
        else:
            items = [self.spell.format(v) for v in sorted(value)]
        return [f"{self.keys[0]} = [{', '.join(items)}]"]

    def covers(self, a: frozenset[Any] | None, b: frozenset[Any] | None) -> bool:
        return a is None or (b is not None and b <= a)

    def compile(self, value: frozenset[Any], pool: list[int], codes: Mapping[str, int]
                ) -> tuple[int, int, int]:
        start = len(pool)
        if not self.text and self.hi <= 0xFF:
            pool.extend(_words(value))
            return IN_BITSET, start, len(pool)
        pool.extend(sorted(codes[v] for v in value) if self.text else sorted(value))
        return IN_SORTED_RUN, start, len(pool)


@dataclass(frozen=True, kw_only=True, eq=False)
class AnyFlag(Condition):
    """Matches when the value read has any of the flags of a mask 1..255 (written as a
    list of flag names or values)."""

    what: str
    names: Mapping[str, int]

    def parse(self, key: str, raw: object) -> int:
        mask = 0
        for item in _listed(raw):
            mask |= named(item, self.names, 1, 0xFF, self.what)
        return mask

    def check(self, value: Any) -> None:
        check_int(self.keys[0], value, 1, 0xFF)

    def test(self, value: int) -> Callable[[Any], bool]:
        return lambda reading: bool(reading and reading & value)

    def toml(self, value: int) -> list[str]:
        named = [toml_string(n) for n, bit in sorted(self.names.items(), key=lambda item: item[1])
                 if value & bit]
        rest = value & ~sum(self.names.values())
        return [f"{self.keys[0]} = [{', '.join(named + ([f'0x{rest:02X}'] if rest else []))}]"]

    def covers(self, a: int | None, b: int | None) -> bool:
        return a is None or (b is not None and not b & ~a)

    def compile(self, value: int, pool: list[int], codes: Mapping[str, int]
                ) -> tuple[int, int, int]:
        return HAS_ANY_FLAG, value, 0


@dataclass(frozen=True, kw_only=True, eq=False)
class DateRange(Condition):
    """Matches when the date read is within ``keys`` (from, until), both ends included."""

    empty: Any = (None, None)

    def parse(self, key: str, raw: object) -> date:
        if isinstance(raw, datetime):
            raise ValueError(f"{raw} has a time of day; write a date such as 2026-05-01")
        if isinstance(raw, date):
            return raw
        if isinstance(raw, str):
            try:
                return date.fromisoformat(raw.strip())
            except ValueError:
                raise ValueError(f"{raw!r} is not a date YYYY-MM-DD") from None
        raise ValueError(f"must be a date such as 2026-05-01, not {type(raw).__name__}")

    def check(self, value: tuple[date | None, date | None]) -> None:
        for key, part in zip(self.keys, value, strict=True):
            if part is not None and type(part) is not date:
                raise TariffError(f"{key} must be a date (without a time of day)")
        lo, hi = value
        if lo is not None and hi is not None and hi < lo:
            raise TariffError(f"{self.keys[1]} {hi} is before {self.keys[0]} {lo}")

    def test(self, value: tuple[date | None, date | None]) -> Callable[[Any], bool]:
        lo, hi = value
        return lambda day: (lo is None or day >= lo) and (hi is None or day <= hi)

    def json(self, value: tuple[date | None, date | None]) -> dict[str, Any]:
        return {k: v.isoformat() for k, v in zip(self.keys, value, strict=True) if v is not None}

    def toml(self, value: tuple[date | None, date | None]) -> list[str]:
        return [f"{k} = {v}" for k, v in self.json(value).items()]

    def covers(self, a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
        return ((a[0] is None or (b[0] is not None and b[0] >= a[0]))
                and (a[1] is None or (b[1] is not None and b[1] <= a[1])))

    def compile(self, value: tuple[date | None, date | None], pool: list[int],
                codes: Mapping[str, int]) -> tuple[int, int, int]:
        lo, hi = value
        return (IN_RANGE, -FAR if lo is None else lo.toordinal() - EPOCH_ORDINAL,
                FAR if hi is None else hi.toordinal() - EPOCH_ORDINAL)


@dataclass(frozen=True, kw_only=True, eq=False)
class TimeWindow(Condition):
    """Matches when the time of day read (seconds) is in ``[from, until)``, wrapping
    midnight when from is later than until; ``until`` may be ``"24:00"``."""

    empty: Any = (None, None)

    def parse(self, key: str, raw: object) -> int:
        if isinstance(raw, time):
            if raw.tzinfo is not None or raw.microsecond:
                raise ValueError("a time of day is local and whole seconds")
            return raw.hour * 3600 + raw.minute * 60 + raw.second
        if isinstance(raw, str):
            match = _TIME.fullmatch(raw.strip())
            if match is not None:
                hh, mm, ss = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
                seconds = hh * 3600 + mm * 60 + ss
                valid = hh < 24 and mm < 60 and ss < 60
                if valid or (key == self.keys[1] and seconds == DAY_SECONDS and hh == 24):
                    return seconds
            raise ValueError(f"{raw!r} is not a time of day HH:MM or HH:MM:SS")
        raise ValueError(f"must be a time of day such as \"07:30\", not {type(raw).__name__}")

    def check(self, value: tuple[int | None, int | None]) -> None:
        lo, hi = value
        if lo is not None:
            check_int(self.keys[0], lo, 0, DAY_SECONDS - 1)
        if hi is not None:
            check_int(self.keys[1], hi, 1, DAY_SECONDS)
        if lo is not None and lo == hi:
            raise TariffError(f"{self.keys[0]} equals {self.keys[1]}: an empty time window")

    def test(self, value: tuple[int | None, int | None]) -> Callable[[Any], bool]:
        intervals = day_intervals(*value)
        return lambda seconds: any(lo <= seconds < hi for lo, hi in intervals)

    def json(self, value: tuple[int | None, int | None]) -> dict[str, Any]:
        return {k: v for k, v in zip(self.keys, value, strict=True) if v is not None}

    def toml(self, value: tuple[int | None, int | None]) -> list[str]:
        return [f'{k} = "{v // 3600:02d}:{v % 3600 // 60:02d}:{v % 60:02d}"'
                for k, v in self.json(value).items()]

    def covers(self, a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
        outer = day_intervals(*a)
        return all(any(lo >= x and hi <= y for x, y in outer) for lo, hi in day_intervals(*b))

    def compile(self, value: tuple[int | None, int | None], pool: list[int],
                codes: Mapping[str, int]) -> tuple[int, int, int]:
        lo, hi = value
        return IN_TIME_WINDOW, 0 if lo is None else lo, DAY_SECONDS if hi is None else hi


@dataclass(frozen=True, kw_only=True, eq=False)
class AtLeast(Condition):
    """Matches when the amount read is at least this many fen (0: any).  Lint compares the
    rules' minimum amounts, thresholds included (``Rule.min_amount``), instead."""

    empty: Any = 0

    def parse(self, key: str, raw: object) -> int:
        return parse_fen(raw)

    def check(self, value: Any) -> None:
        check_int(self.keys[0], value, 0, MAX_FEN)

    def test(self, value: int) -> Callable[[Any], bool]:
        return lambda amount: amount >= value

    def covers(self, a: int, b: int) -> bool:
        return True

    def compile(self, value: int, pool: list[int], codes: Mapping[str, int]
                ) -> tuple[int, int, int]:
        return IN_RANGE, value, FAR


Kind = OneOf | AnyFlag | DateRange | TimeWindow | AtLeast
CONDITIONS: tuple[Kind, ...] = (
    OneOf(keys=("card_types",), reads="card_type", what="card type", hi=0xFF,
          names=CARD_TYPE_NAMES, spell="0x{:02X}",
          missing="has no card_types condition, so ordinary cards get it too (write "
                  "card_types = [0x01, 0x55] if that is meant)"),
    AnyFlag(keys=("member_categories",), reads="member_categories", what="member category",
            names=CATEGORY_NAMES),
    OneOf(keys=("member_status",), reads="member_status", what="member status", lo=1, hi=3,
          names=STATUS_NAMES, spell="name"),
    OneOf(keys=("organizations",), reads="organization", what="union organizations",
          text=True, max_bytes=48),  # the offline record's field (docs/records.md)
    OneOf(keys=("merchants",), reads="merchant_id", what="merchant ids", text=True),
    OneOf(keys=("merchant_categories",), reads="merchant_category", what="merchant category",
          hi=9999, digits=4, form='a 4-digit MCC such as "5411"', spell='"{:04d}"'),
    OneOf(keys=("routes",), reads="route", what="route and station codes", text=True),
    OneOf(keys=("vehicle_classes",), reads="vehicle_class", what="vehicle class", hi=0xFF),
    DateRange(keys=("valid_from", "valid_until"), reads=DATE),
    OneOf(keys=("days",), reads=WEEKDAY, what="day", lo=1, hi=7, names=DAY_NAMES, spell="name"),
    TimeWindow(keys=("time_from", "time_until"), reads=TIME_OF_DAY),
    AtLeast(keys=("min_amount",), reads="amount"),
)
KEYS = {key: condition for condition in CONDITIONS for key in condition.keys}
"""Every key of ``[rule.when]``, in the documented order, with its condition."""


class Conditions:
    """When a rule applies: the values of the conditions it has, by rule-file key
    (``Conditions(card_types=frozenset({0x55}))``); an absent condition admits anything,
    and reads as ``None`` (``min_amount``: 0).  Frozen; validated on construction."""

    __slots__ = ("_tests", "_values")
    _values: dict[str, Any]
    _tests: tuple[tuple[Callable[[Any], Any], Callable[[Any], bool]], ...]

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise TariffError(f"unknown condition {unknown[0]!r} (known: {', '.join(KEYS)})")
        kept: dict[str, Any] = {}
        tests = []
        for condition in CONDITIONS:
            value = condition.value(values)
            if value == condition.empty and type(value) is type(condition.empty):
                continue
            condition.check(value)
            parts = value if len(condition.keys) > 1 else (value,)
            kept.update((k, v) for k, v in zip(condition.keys, parts, strict=True)
                        if v is not None)
            tests.append((condition.reader(), condition.test(value)))
        object.__setattr__(self, "_values", kept)
        object.__setattr__(self, "_tests", tuple(tests))

    def __getattr__(self, name: str) -> Any:
        condition = KEYS.get(name) if not name.startswith("_") else None
        if condition is None:
            raise AttributeError(f"no condition {name!r}")
        return self._values.get(name, condition.empty if len(condition.keys) == 1 else None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Conditions are frozen")

    def items(self) -> Iterator[tuple[Kind, Any]]:
        """The conditions the rule has, in declared order, with their values."""
        for condition in CONDITIONS:
            value = condition.value(self._values)
            if value != condition.empty:
                yield condition, value

    def values(self) -> dict[str, Any]:
        """The values given, by key."""
        return dict(self._values)

    def replace(self, **changes: Any) -> Conditions:
        return Conditions(**{**self._values, **changes})

    def matches(self, context: Any) -> bool:
        """Whether every condition holds for ``context`` (the mode is the rule's business)."""
        for read, test in self._tests:  # noqa: SIM110 (a loop: no generator on the hot path)
            if not test(read(context)):
                return False
        return True

    def floor(self) -> int:
        """The smallest list amount the conditions admit (0: any)."""
        return max((v for c, v in self.items() if isinstance(c, AtLeast)), default=0)

    def canonical(self) -> dict[str, Any]:
        """The conditions that are set, in a stable JSON-ready form."""
        out: dict[str, Any] = {}
        for condition, value in self.items():
            out.update(condition.json(value))
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Conditions) and self._values == other._values

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def __repr__(self) -> str:
        return f"Conditions({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._values,))


def _rebuild(values: dict[str, Any]) -> Conditions:
    return Conditions(**values)
