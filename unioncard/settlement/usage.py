"""The members' usage of capped benefits during a run, as columns (docs/settlement.md).

A capped rule's window (member, rule, day or month, period key) holds how often and for
how many fen the member used it.  The ledger keeps every window (`Ledger.usage`); a run
holds them in `UsageStore`: columns indexed by a `KeyIndex` of each window's hash, every
hit confirmed field by field.  The batch path reads and adds whole columns of windows
(`tariffs.UsageColumns`), the reference path a `UsageBook` per batch
(`book_for`, `absorb`); `changes` gives the windows changed since the last commit.

Members are cards: `pipeline.card_ids` names them ``ISSUER/DIVERSIFIER`` in hex.

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

from collections.abc import Iterable
from typing import Any

import numpy as np

from unioncard.settlement.errors import SettlementError
from unioncard.settlement.keyindex import KeyIndex, mix64

__all__ = ["UsageStore", "card_numbers"]

_NIBBLES = np.full(256, 0xFF, np.uint8)
_NIBBLES[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLES[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_WINDOWS = ("day", "month")
_COLUMNS = ("issuer", "diversifier", "rule", "window", "key", "count", "amount")


def card_numbers(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(issuer, diversifier) of member ids ``ISSUER/DIVERSIFIER`` (16 upper-case hex
    digits each), as ``uint64`` columns.

    >>> [c.tolist() for c in card_numbers(np.array(["00000000000000A1/FFFFFFFFFFFFFFFF"]))]
    [[161], [18446744073709551615]]
    """
    try:
        raw = np.asarray(members).astype("S33").view(np.uint8).reshape(-1, 33)
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
    """Every member's usage of capped rules in a run: columns, found by window hash."""

    def __init__(self, rows: Iterable[tuple[str, str, str, int, int, int]]) -> None:
        self._rules: list[str] = []
        self._rule_codes: dict[str, int] = {}
        self._columns = {name: np.zeros(0, np.uint64 if name in ("issuer", "diversifier")
                                        else np.int64) for name in _COLUMNS}
        self._count = 0
        self._index = KeyIndex()
        self._dirty: list[np.ndarray] = []
        rows = list(rows)
        if rows:
            member, rule, period, key, count, amount = zip(*rows, strict=True)
            windows = np.array([_WINDOWS.index(p) for p in period], np.int64)
            self.add_many(np.asarray(member), np.asarray(rule), windows,
                          np.asarray(key, np.int64), np.asarray(count, np.int64),
                          np.asarray(amount, np.int64))
            self._dirty = []

    def __len__(self) -> int:
        return self._count

    # --- tariffs.UsageColumns --------------------------------------------------------------

    def usage_many(self, members: np.ndarray, rules: np.ndarray, windows: np.ndarray,
                   keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._find(*self._keys(members, rules, windows, keys))
        held = rows >= 0
        count, amount = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
        count[held] = self._columns["count"][rows[held]]
        amount[held] = self._columns["amount"][rows[held]]
        return count, amount

    def add_many(self, members: np.ndarray, rules: np.ndarray, windows: np.ndarray,
                 keys: np.ndarray, counts: np.ndarray, amounts: np.ndarray) -> None:
        fields = self._keys(members, rules, windows, keys)
        rows = self._find(*fields)
        new = np.flatnonzero(rows < 0)
        if new.size:
            self._append(fields, new)
            rows = self._find(*fields)
        np.add.at(self._columns["count"], rows, counts)
        np.add.at(self._columns["amount"], rows, amounts)
        self._dirty.append(rows)

    # --- the reference path and the ledger ---------------------------------------------------

    def book_for(self, members: Iterable[str]) -> Any:
        """A `UsageBook` of every window of ``members``."""
        from unioncard.tariffs import Usage, UsageBook
        from unioncard.tariffs.engine import WINDOWS

        wanted = set(members)
        c = {name: column[:self._count] for name, column in self._columns.items()}
        issuer, diversifier = card_numbers(np.asarray(sorted(wanted), "U33"))
        held = np.isin(mix64(np.column_stack([c["issuer"], c["diversifier"]])),
                       mix64(np.column_stack([issuer, diversifier])))
        windows = {}
        for i in np.flatnonzero(held).tolist():
            member = f"{int(c['issuer'][i]):016X}/{int(c['diversifier'][i]):016X}"
            if member in wanted:  # the hash only says where to look
                windows[(member, self._rules[int(c["rule"][i])], WINDOWS[int(c["window"][i])],
                         int(c["key"][i]))] = Usage(int(c["count"][i]), int(c["amount"][i]))
        return UsageBook.of(windows)

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
        c = {name: column[rows].tolist() for name, column in self._columns.items()}
        return sorted((f"{i:016X}/{d:016X}", self._rules[r], _WINDOWS[w], k, n, a)
                      for i, d, r, w, k, n, a in zip(*(c[name] for name in _COLUMNS),
                                                     strict=True))

    # --- columns ---------------------------------------------------------------------------

    def _keys(self, members: np.ndarray, rules: np.ndarray, windows: np.ndarray,
              keys: np.ndarray) -> tuple[np.ndarray, ...]:
        issuer, diversifier = card_numbers(members)
        return (issuer, diversifier, self._rule_column(np.asarray(rules, str)),
                np.asarray(windows, np.int64), np.asarray(keys, np.int64))

    def _rule_column(self, rules: np.ndarray) -> np.ndarray:
        """Each rule id's code (ids are few: grouped by a hash of their characters, each
        group confirmed equal to its first id)."""
        if not len(rules):
            return np.zeros(0, np.int64)
        words = np.ascontiguousarray(rules).view(np.uint32).reshape(len(rules), -1)
        _, first, inverse = np.unique(mix64(words), return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        if not (rules == rules[first][inverse]).all():  # two ids share a hash
            _, first, inverse = np.unique(rules, return_index=True, return_inverse=True)
            inverse = inverse.ravel()
        for rule in rules[first].tolist():
            if rule not in self._rule_codes:
                self._rule_codes[rule] = len(self._rules)
                self._rules.append(rule)
        return np.array([self._rule_codes[r] for r in rules[first].tolist()], np.int64)[inverse]

    @staticmethod
    def _hash(issuer: np.ndarray, diversifier: np.ndarray, rule: np.ndarray,
              window: np.ndarray, key: np.ndarray) -> np.ndarray:
        return mix64(np.column_stack([issuer, diversifier,
                                      (rule.astype(np.uint64) << np.uint64(1))
                                      | window.astype(np.uint64), key.astype(np.uint64)]))

    def _find(self, *fields: np.ndarray) -> np.ndarray:
        """The row of each window, -1 where absent (hash hits confirmed field by field)."""
        rows = self._index.find(self._hash(*fields))
        hit = np.flatnonzero(rows >= 0)
        same = np.ones(hit.size, bool)
        for name, values in zip(_COLUMNS, fields, strict=False):
            same &= self._columns[name][rows[hit]] == values[hit]
        if not same.all():
            raise SettlementError("usage: two capped-benefit windows share a 64-bit hash")
        return rows

    def _append(self, fields: tuple[np.ndarray, ...], new: np.ndarray) -> None:
        """Add the windows ``new`` (not held) as zero rows."""
        hashes = self._hash(*fields)
        new = new[np.sort(np.unique(hashes[new], return_index=True)[1])]
        start, end = self._count, self._count + new.size
        if end > len(self._columns["count"]):
            size = max(1024, 2 * end)
            self._columns = {name: np.resize(column, size) if len(column) else
                             np.zeros(size, column.dtype) for name, column in self._columns.items()}
        for name, values in zip(_COLUMNS, fields, strict=False):
            self._columns[name][start:end] = values[new]
        self._columns["count"][start:end] = 0
        self._columns["amount"][start:end] = 0
        self._count = end
        self._index.insert(hashes[new], np.arange(start, end, dtype=np.int64))
