"""The members' usage of capped benefits during a run, as columns (docs/settlement.md).

A capped rule's window (member, rule, day or month, period key) holds how often and for
how many fen the member used it.  The ledger keeps every window (`Ledger.usage`); a run
holds those of the days and months its batches reach in `UsageStore` (loaded as the
first batch reaches them: `prepare`): a row per window, found by its fields
(`KeyedRows`).  The batch path reads and adds whole columns of windows
(`tariffs.UsageColumns`), the reference path a `UsageBook` per batch (`book_for`,
`absorb`); `changes` gives the windows changed since the last commit.

Members are cards: `card_ids` names them ``ISSUER/DIVERSIFIER`` in hex, `card_numbers`
reads them back.

>>> store = UsageStore([])
>>> member = np.array(["00000000000000A1/0000000000000002"])
>>> store.add_many(member, np.array(["cap"]), np.array([0]), np.array([20000]),
...                np.array([1]), np.array([50]))
>>> [c.tolist() for c in store.usage_many(member, np.array(["cap"]), np.array([0]),
...                                       np.array([20000]))]
[[1], [50]]
>>> store.changes()
[('00000000000000A1/0000000000000002', 'cap', 'day', 20000, 1, 50)]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from unioncard.settlement.errors import SettlementError
from unioncard.settlement.keyindex import KeyedRows, group_rows

__all__ = ["UsageStore", "card_ids", "card_numbers"]

_NIBBLES = np.full(256, 0xFF, np.uint8)
_NIBBLES[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLES[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_WINDOWS = ("day", "month")
_TAKE = 20_000


_HEX = np.frombuffer(b"0123456789ABCDEF", np.uint8)


def card_ids(issuer: np.ndarray, diversifier: np.ndarray) -> np.ndarray:
    """Each card's member id, ``f"{issuer:016X}/{diversifier:016X}"``, as a ``U33`` column.

    >>> card_ids(np.array([0xA1], np.uint64), np.array([2**64 - 1], np.uint64)).tolist()
    ['00000000000000A1/FFFFFFFFFFFFFFFF']
    """
    n = len(issuer)
    out = np.empty((n, 33), np.uint8)
    for column, at in ((issuer, 0), (diversifier, 17)):
        digits = np.ascontiguousarray(column, ">u8").view(np.uint8).reshape(n, 8)
        out[:, at:at + 16:2] = _HEX[digits >> 4]
        out[:, at + 1:at + 16:2] = _HEX[digits & 15]
    out[:, 16] = ord("/")
    return out.astype(np.uint32).view("U33").ravel()  # ASCII: code points are the bytes


def card_numbers(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(issuer, diversifier) of member ids ``ISSUER/DIVERSIFIER`` (16 upper-case hex
    digits each), as ``uint64`` columns.

    >>> [c.tolist() for c in card_numbers(np.array(["00000000000000A1/FFFFFFFFFFFFFFFF"]))]
    [[161], [18446744073709551615]]
    """
    members = np.asarray(members)
    if members.dtype == np.dtype("U33"):  # the code points, as bytes where they are ASCII
        points = np.ascontiguousarray(members).view(np.uint32).reshape(-1, 33)
        raw = np.minimum(points, 0xFF).astype(np.uint8)
    else:
        try:
            raw = members.astype("S33").view(np.uint8).reshape(-1, 33)
        except (UnicodeEncodeError, ValueError):
            raw = np.zeros((0, 33), np.uint8)
            members = np.asarray([None])
    nibbles = _NIBBLES[raw]
    if len(raw) != len(members) or (np.delete(nibbles, 16, axis=1) > 15).any() or (
            raw[:, 16] != ord("/")).any():
        raise SettlementError("usage: a member id is not a card's ISSUER/DIVERSIFIER")
    out = []
    for at in (0, 17):
        digits = (nibbles[:, at:at + 16:2] << 4) | nibbles[:, at + 1:at + 16:2]
        out.append(np.ascontiguousarray(digits).view(">u8").ravel().astype(np.uint64))
    return out[0], out[1]


class UsageStore:
    """Every member's usage of capped rules in a run: one row per window (`KeyedRows`
    of issuer, diversifier, rule code, window code, period key; count and amount its
    payload)."""

    def __init__(self, rows: Iterable[tuple[str, str, str, int, int, int]] = (), *,
                 load: Callable[[list[tuple[str, int]]], Iterable[tuple[
                     str, str, str, int, int, int]]] | None = None) -> None:
        """``rows``: windows the ledger holds; ``load``: what gives the ledger's rows of
        some windows (period, key) when `prepare` asks for them."""
        self._rules: list[str] = []
        self._rule_codes: dict[str, int] = {}
        self._windows = KeyedRows(5, payload=2)
        self._dirty: list[np.ndarray] = []
        self._load, self._loaded = load, set[tuple[str, int]]()
        self._take(rows)

    def __len__(self) -> int:
        return len(self._windows)

    def prepare(self, at: np.ndarray) -> None:
        """Hold the ledger's windows of the days and months of the times ``at``
        (``datetime64``, local time) before they are asked: each window is loaded once,
        the first time a batch of the run reaches it."""
        if self._load is None or not len(at):
            return
        from unioncard.tariffs.batch import window_keys

        days, months = window_keys(np.unique(at.astype("datetime64[D]")))
        wanted = [(period, int(key)) for period, keys in (("day", days),
                                                            ("month", np.unique(months)))
                  for key in keys.tolist() if (period, key) not in self._loaded]
        if wanted:
            self._take(self._load(wanted))
            self._loaded.update(wanted)

    def _take(self, rows: Iterable[tuple[str, str, str, int, int, int]]) -> None:
        """Hold windows as the ledger has them (not changes), ``_TAKE`` rows at a time (a
        month of a city's members is hundreds of thousands of rows: as Python tuples, a
        few hundred bytes each)."""
        rows = iter(rows)
        while chunk := list(itertools.islice(rows, _TAKE)):
            member, rule, period, key, count, amount = zip(*chunk, strict=True)
            windows = np.array([_WINDOWS.index(p) for p in period], np.int64)
            self._add(np.asarray(member), np.asarray(rule), windows, np.asarray(key, np.int64),
                      np.asarray(count, np.int64), np.asarray(amount, np.int64))

    # --- tariffs.UsageColumns --------------------------------------------------------------

    def usage_many(self, members: np.ndarray, rules: np.ndarray, windows: np.ndarray,
                   keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, used = self._windows.find(self._keys(members, rules, windows, keys),
                                        payload=True)
        used = np.where((rows >= 0)[:, None], used.view(np.int64), 0)  # count, amount
        return used[:, 0], used[:, 1]

    def add_many(self, members: np.ndarray, rules: np.ndarray, windows: np.ndarray,
                 keys: np.ndarray, counts: np.ndarray, amounts: np.ndarray) -> None:
        self._dirty.append(self._add(members, rules, windows, keys, counts, amounts))

    def _add(self, members: np.ndarray, rules: np.ndarray, windows: np.ndarray,
             keys: np.ndarray, counts: np.ndarray, amounts: np.ndarray) -> np.ndarray:
        """Add to the windows' counts and amounts; the windows' rows."""
        rows: np.ndarray = self._windows.add(self._keys(members, rules, windows, keys))
        self._windows.set_payload(rows, np.column_stack([counts, amounts]).astype(np.int64),
                                  add=True)
        return rows

    # --- the reference path and the ledger ---------------------------------------------------

    def book_for(self, members: Iterable[str]) -> Any:
        """A `UsageBook` of every window of ``members``."""
        from unioncard.tariffs import Usage, UsageBook
        from unioncard.tariffs.engine import WINDOWS

        held = self._windows.fields()
        used = self._windows.payload_of(np.arange(len(held))).view(np.int64)
        owners = card_ids(held[:, 0], held[:, 1])
        keys = held[:, 4].view(np.int64)  # a day before 1970 is negative
        return UsageBook.of({
            (str(owners[i]), self._rules[int(held[i, 2])], WINDOWS[int(held[i, 3])],
             int(keys[i])): Usage(int(used[i, 0]), int(used[i, 1]))
            for i in np.flatnonzero(np.isin(owners, list(members))).tolist()})

    def absorb(self, book: Any) -> None:
        """Take back a `book_for` book that the reference path changed."""
        from unioncard.tariffs.engine import WINDOWS

        entries = list(book.windows().items())
        if not entries:
            return
        ids, rule_ids, periods, period_keys = zip(*(key for key, _ in entries), strict=True)
        columns = (np.asarray(ids), np.asarray(rule_ids),
                   np.array([WINDOWS.index(p) for p in periods], np.int64),
                   np.asarray(period_keys, np.int64))
        count, amount = self.usage_many(*columns)
        counts = np.array([u.count for _, u in entries], np.int64) - count
        amounts = np.array([u.amount for _, u in entries], np.int64) - amount
        changed = np.flatnonzero((counts != 0) | (amounts != 0))
        if changed.size:
            members, rules, windows, keys = (column[changed] for column in columns)
            self.add_many(members, rules, windows, keys, counts[changed], amounts[changed])

    def changes(self) -> list[tuple[str, str, str, int, int, int]]:
        """The windows changed since the last call, as the ledger stores them (member,
        rule, period, key, count, amount), sorted."""
        if not self._dirty:
            return []
        rows = np.unique(np.concatenate(self._dirty))
        self._dirty = []
        held = self._windows.fields(rows)
        rule_rank = np.argsort(np.argsort(np.array(self._rules, dtype=object)))
        # the order of the ledger's key: period ("day" before "month": window codes 0, 1),
        # period key, member id (its hex digits sort as the numbers), rule id
        order = np.lexsort((rule_rank[held[:, 2]], held[:, 1], held[:, 0],
                            held[:, 4].view(np.int64), held[:, 3]))
        held, rows = held[order], rows[order]
        used = self._windows.payload_of(rows).view(np.int64)
        return list(zip(card_ids(held[:, 0], held[:, 1]).tolist(),
                        [self._rules[r] for r in held[:, 2].tolist()],
                        [_WINDOWS[w] for w in held[:, 3].tolist()],
                        held[:, 4].view(np.int64).tolist(),  # a day before 1970 is negative
                        used[:, 0].tolist(), used[:, 1].tolist(), strict=True))

    # --- columns ---------------------------------------------------------------------------

    def _keys(self, members: np.ndarray, rules: np.ndarray, windows: np.ndarray,
              keys: np.ndarray) -> np.ndarray:
        """The windows as `KeyedRows` keys."""
        issuer, diversifier = card_numbers(members)
        out = np.empty((len(issuer), 5), np.uint64)
        out[:, 0], out[:, 1] = issuer, diversifier
        out[:, 2] = self._rule_column(np.asarray(rules, str))
        out[:, 3], out[:, 4] = windows, np.asarray(keys, np.int64).view(np.uint64)
        return out

    def _rule_column(self, rules: np.ndarray) -> np.ndarray:
        """Each rule id's code (ids are few: grouped by their characters' code points,
        `group_rows`)."""
        if not len(rules):
            return np.zeros(0, np.int64)
        first, inverse = group_rows(np.ascontiguousarray(rules).view(np.uint32).reshape(
            len(rules), -1))
        for rule in rules[first].tolist():
            if rule not in self._rule_codes:
                self._rule_codes[rule] = len(self._rules)
                self._rules.append(rule)
        codes = np.array([self._rule_codes[r] for r in rules[first].tolist()], np.int64)
        each: np.ndarray = codes[inverse]
        return each
