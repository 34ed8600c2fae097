"""The reference tariff engine: :func:`quote`, and member usage history for caps.

The combination policy (the same in the batch path) is docs/tariffs.md, "Combination
policy": candidates, capped rules, the best non-stackable benefit then the stackable ones,
rebates on the charged amount, whole fen in the rule set's rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from unioncard.errors import TariffError
from unioncard.tariffs.conditions import EPOCH_ORDINAL
from unioncard.tariffs.context import AppliedRule, Quote, QuoteContext
from unioncard.tariffs.model import Caps, Period, Rule, RuleSet
from unioncard.tariffs.money import Rounding

__all__ = ["EPOCH_ORDINAL", "WINDOWS", "Usage", "UsageBook", "UsageColumns", "UsageHistory",
           "combine", "period_key", "quote", "quote_sequence"]


def period_key(period: Period, at: datetime) -> int:
    """The cap window ``at`` falls in: days since 1970-01-01, or ``year × 12 + month − 1``.

    >>> period_key(Period.DAY, datetime(1970, 1, 2, 8))
    1
    >>> period_key(Period.MONTH, datetime(2026, 5, 1))
    24316
    """
    if period is Period.DAY:
        return at.date().toordinal() - EPOCH_ORDINAL
    return at.year * 12 + at.month - 1


@dataclass(frozen=True, slots=True)
class Usage:
    """How often, and for how many fen, a member used a capped rule in one window."""

    count: int = 0
    amount: int = 0

    def __post_init__(self) -> None:
        if self.count < 0 or self.amount < 0:
            raise TariffError("usage count and amount are never negative")


UsageKey = tuple[str, str, Period, int]  # member id, rule id, period, period key


class UsageHistory(Protocol):
    """What the engine asks of a member history (settlement may back it with a ledger)."""

    def usage(self, member_id: str, rule_id: str, period: Period, key: int) -> Usage:
        """Usage of ``rule_id`` by ``member_id`` in the window ``(period, key)``."""
        ...


WINDOWS = (Period.DAY, Period.MONTH)
"""The batch path's window codes: 0 for a day, 1 for a month."""


class UsageColumns(Protocol):
    """What the batch path asks of a member history (`batch.evaluate_batch` reads,
    `batch.record_batch` adds): many windows at once, as numpy columns of member ids,
    rule ids, window codes (`WINDOWS`) and period keys."""

    def __len__(self) -> int:
        """How many windows it holds (none: nothing to ask)."""
        ...

    def usage_many(self, members: Any, rules: Any, windows: Any, keys: Any
                   ) -> tuple[Any, Any]:
        """The count and the amount used in each window (0 where never used)."""
        ...

    def add_many(self, members: Any, rules: Any, windows: Any, keys: Any, counts: Any,
                 amounts: Any) -> None:
        """Add ``counts`` uses worth ``amounts`` fen to the windows (each named once)."""
        ...


class UsageBook:
    """An in-memory member usage history of capped rules: ``record`` adds what a quote
    applied; ``quote`` itself never changes a book.  Both a `UsageHistory` and, one
    window at a time, a `UsageColumns`."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[UsageKey, Usage]] = ()) -> None:
        self._entries: dict[UsageKey, Usage] = {}
        for key, usage in entries:
            self.add(*key, count=usage.count, amount=usage.amount)

    def usage(self, member_id: str, rule_id: str, period: Period, key: int) -> Usage:
        return self._entries.get((member_id, rule_id, Period(period), key), Usage())

    def add(self, member_id: str, rule_id: str, period: Period, key: int, *, count: int,
            amount: int) -> None:
        """Add ``count`` uses worth ``amount`` fen to one window."""
        window = (member_id, rule_id, Period(period), int(key))
        old = self._entries.get(window, Usage())
        self._entries[window] = Usage(old.count + count, old.amount + amount)

    def usage_many(self, members: Any, rules: Any, windows: Any, keys: Any
                   ) -> tuple[Any, Any]:
        import numpy as np

        used = [self.usage(str(m), str(r), WINDOWS[w], k) for m, r, w, k in zip(
            members.tolist(), rules.tolist(), windows.tolist(), keys.tolist(), strict=True)]
        return (np.array([u.count for u in used], np.int64).reshape(-1),
                np.array([u.amount for u in used], np.int64).reshape(-1))

    def add_many(self, members: Any, rules: Any, windows: Any, keys: Any, counts: Any,
                 amounts: Any) -> None:
        for m, r, w, k, c, a in zip(members.tolist(), rules.tolist(), windows.tolist(),
                                    keys.tolist(), counts.tolist(), amounts.tolist(), strict=True):
            self.add(str(m), str(r), WINDOWS[w], k, count=c, amount=a)

    def record(self, context: QuoteContext, result: Quote, rules: RuleSet) -> None:
        """Count the capped rules ``result`` applied against ``context.member_id``."""
        if context.member_id is None:
            return
        for applied in result.applied:
            rule = rules.rule(applied.rule_id)
            if rule.caps is None:
                continue
            for period, _count, _amount in rule.caps.windows():
                self.add(context.member_id, rule.id, period, period_key(period, context.at),
                         count=1, amount=applied.amount)

    def entries(self) -> Iterator[tuple[UsageKey, Usage]]:
        return iter(sorted(self._entries.items(), key=lambda item: item[0]))

    def windows(self) -> dict[UsageKey, Usage]:
        """Every window's usage, unsorted (a copy): for a store that persists the book."""
        return dict(self._entries)

    @classmethod
    def of(cls, windows: dict[UsageKey, Usage]) -> UsageBook:
        """A book holding exactly ``windows`` (keys as `windows` gives them), taken as is."""
        book = cls()
        book._entries.update(windows)
        return book

    def copy(self) -> UsageBook:
        return UsageBook(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UsageBook):
            return NotImplemented
        return self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]


def _remaining(rule_id: str, caps: Caps, member_id: str, at: datetime,
               history: UsageHistory) -> int | None:
    """Fen still available under the rule's amount caps (``None``: no amount cap);
    ``-1`` when any count or amount cap is used up."""
    remaining: int | None = None
    for period, max_count, max_amount in caps.windows():
        used = history.usage(member_id, rule_id, period, period_key(period, at))
        if max_count is not None and used.count >= max_count:
            return -1
        if max_amount is not None:
            left = max_amount - used.amount
            if left <= 0:
                return -1
            remaining = left if remaining is None else min(remaining, left)
    return remaining


def _limit(benefit: int, remaining: int | None) -> int:
    return benefit if remaining is None else min(benefit, remaining)


def combine(usable: Sequence[tuple[Rule, int | None]], rebates: bool, amount: int,
            list_amount: int, rounding: Rounding) -> tuple[list[tuple[Rule, int]], int]:
    """Steps 3 and 4 of the policy for the instant benefits or the rebates of ``usable``
    (rules with what their caps leave, ``None``: no limit): the best non-stackable benefit
    on ``amount`` (ties: the first declared), then each stackable one in declared order,
    instant ones on what is left, rebates on the whole ``amount``; never more than
    ``amount`` in all.  Gives ``(rule, fen)`` for each rule that gives at least one fen,
    and the total (the kernel's ``combine`` is the same steps over arrays)."""
    best: Rule | None = None
    total = 0
    for rule, left in usable:
        if not rule.stackable and rule.effect.is_rebate is rebates:
            benefit = _limit(rule.effect.benefit(amount, list_amount, rounding), left)
            if benefit > total:
                best, total = rule, benefit
    given = [] if best is None else [(best, total)]
    for rule, left in usable:
        if rule.stackable and rule.effect.is_rebate is rebates:
            on = amount if rebates else amount - total
            benefit = min(_limit(rule.effect.benefit(on, list_amount, rounding), left),
                          amount - total)
            if benefit > 0:
                given.append((rule, benefit))
                total += benefit
    return given, total


def quote(context: QuoteContext, rules: RuleSet | None = None, *,
          history: UsageHistory | None = None) -> Quote:
    """Price ``context`` with ``rules`` (the shipped default set when ``None``): without
    ``history`` the terminal's offline quote, with it capped rules within their caps."""
    if rules is None:
        from unioncard.tariffs.loader import default_rules

        rules = default_rules()
    rounding = rules.rounding
    list_amount = context.amount
    mode_rules = rules.for_mode(context.mode)
    usable: list[tuple[Rule, int | None]] = []
    deferred: list[str] = []
    exhausted: list[str] = []
    matched = 0
    for rule in mode_rules:
        if not rule.eligible(context):
            continue
        matched += 1
        if rule.caps is None:
            usable.append((rule, None))
        elif history is None or context.member_id is None:
            deferred.append(rule.id)
        else:
            remaining = _remaining(rule.id, rule.caps, context.member_id, context.at, history)
            if remaining == -1:
                exhausted.append(rule.id)
            else:
                usable.append((rule, remaining))

    instant, discount = combine(usable, False, list_amount, list_amount, rounding)
    rebates, rebate = combine(usable, True, list_amount - discount, list_amount, rounding)
    applied = [AppliedRule(rule.id, "discount", benefit, rule.effect.describe())
               for rule, benefit in instant]
    applied += [AppliedRule(rule.id, "rebate", benefit, rule.effect.describe())
                for rule, benefit in rebates]
    reason = _reason(context, applied, mode_rules, matched, deferred, exhausted, history)
    return Quote(mode=context.mode, list_amount=list_amount,
                 charged_amount=list_amount - discount, discount=discount, rebate=rebate,
                 applied=tuple(applied), deferred=tuple(deferred), reason=reason,
                 version=rules.version, rounding=rounding, ruleset=rules.name)


def _reason(context: QuoteContext, applied: Sequence[AppliedRule], mode_rules: Sequence[Rule],
            matched: int, deferred: Sequence[str], exhausted: Sequence[str],
            history: UsageHistory | None) -> str:
    """One line that says why the quote came out as it did."""
    parts = []
    for item in applied:
        if item.kind == "discount":
            parts.append(f"{item.rule_id}: {item.text}, -{item.amount} fen")
        else:
            parts.append(f"{item.rule_id}: {item.text}, {item.amount} fen back in settlement")
    if not applied:
        mode = context.mode.label
        if not mode_rules:
            parts.append(f"list price: no rule for {mode}")
        elif matched == 0:
            parts.append(f"list price: no {mode} rule matches card type "
                         f"0x{context.card_type:02X} and these terms")
        elif matched > len(deferred) + len(exhausted):
            parts.append("list price: the matching rules give nothing on this amount")
        else:
            parts.append("list price")
    if deferred:
        why = "needs member history" if history is None else "needs a member id"
        parts.append(f"capped rule {', '.join(deferred)} left to settlement ({why})")
    if exhausted:
        parts.append(f"cap reached: {', '.join(exhausted)}")
    return "; ".join(parts)


def quote_sequence(contexts: Sequence[QuoteContext], rules: RuleSet,
                   history: UsageBook) -> list[Quote]:
    """Settle several transactions against ``history``, consuming caps in time order
    (ties: input order), and record what they used; quotes come back in input order."""
    order = sorted(range(len(contexts)), key=lambda i: (contexts[i].at, i))
    results: list[Quote | None] = [None] * len(contexts)
    for i in order:
        result = quote(contexts[i], rules, history=history)
        history.record(contexts[i], result, rules)
        results[i] = result
    return [r for r in results if r is not None]
