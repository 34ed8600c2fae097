"""The run's usage store answers and records windows as a `UsageBook` does, in bulk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unioncard.settlement.errors import SettlementError
from unioncard.settlement.usage import UsageStore, card_ids, card_numbers
from unioncard.tariffs import UsageBook
from unioncard.tariffs.engine import WINDOWS

MEMBERS = card_ids(np.array([0xA1, 0xA1, 0xB2], np.uint64),
                   np.array([1, 2, 2**64 - 1], np.uint64))
RULES = np.array(["bus-cap", "pos-rebate-cap", "x"])

window = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1),
                   st.integers(20_000, 20_003))
additions = st.lists(st.dictionaries(window, st.tuples(st.integers(1, 3), st.integers(0, 500)),
                                     min_size=1, max_size=6), min_size=1, max_size=5)


def _columns(windows):
    m, r, w, k = (np.array(c) for c in zip(*windows, strict=True))
    return MEMBERS[m], RULES[r], w, k


@given(additions)
@settings(max_examples=60, deadline=None)
def test_store_agrees_with_a_usage_book(steps):
    ledger_rows = [(MEMBERS[0], "bus-cap", "day", 20_001, 2, 40)]
    store = UsageStore(ledger_rows)
    book = UsageBook.of({(MEMBERS[0], "bus-cap", WINDOWS[0], 20_001): _usage(2, 40)})
    assert store.changes() == []  # what the ledger held is not a change
    for step in steps:
        windows, values = list(step), list(step.values())
        counts, amounts = (np.array(c) for c in zip(*values, strict=True))
        store.add_many(*_columns(windows), counts, amounts)
        book.add_many(*_columns(windows), counts, amounts)
    every = [(m, r, w, k) for m in range(3) for r in range(3) for w in range(2)
             for k in range(20_000, 20_004)]
    got = store.usage_many(*_columns(every))
    want = book.usage_many(*_columns(every))
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    changed = store.changes()
    touched = {(MEMBERS[m], RULES[r], WINDOWS[w].value, k) for step in steps
               for (m, r, w, k) in step}
    # in the order of the ledger's key: period, period key, member, rule
    assert [c[:4] for c in changed] == sorted(touched, key=lambda w: (w[2], w[3], w[0], w[1]))
    for member, rule, period, key, count, amount in changed:
        usage = book.usage(member, rule, WINDOWS[("day", "month").index(period)], key)
        assert (count, amount) == (usage.count, usage.amount)
    assert store.changes() == []


def test_reference_book_round_trip():
    store = UsageStore([(MEMBERS[2], "bus-cap", "month", 24_316, 1, 20)])
    book = store.book_for([MEMBERS[2], MEMBERS[1]])
    assert book.usage(MEMBERS[2], "bus-cap", WINDOWS[1], 24_316).amount == 20
    book.add(MEMBERS[1], "x", WINDOWS[0], 20_000, count=1, amount=5)
    book.add(MEMBERS[2], "bus-cap", WINDOWS[1], 24_316, count=1, amount=7)
    store.absorb(book)
    assert store.changes() == [(MEMBERS[1], "x", "day", 20_000, 1, 5),
                               (MEMBERS[2], "bus-cap", "month", 24_316, 2, 27)]


def test_member_ids_must_be_card_ids():
    assert [c.tolist() for c in card_numbers(MEMBERS)] == [[0xA1, 0xA1, 0xB2],
                                                          [1, 2, 2**64 - 1]]
    for bad in ("00000000000000A1-0000000000000001", "00000000000000a1/0000000000000001",
                "member 7", "会员"):
        with pytest.raises(SettlementError, match="not a card's ISSUER/DIVERSIFIER"):
            card_numbers(np.array([bad]))


def _usage(count, amount):
    from unioncard.tariffs import Usage

    return Usage(count, amount)


def test_windows_before_1970_keep_their_negative_keys():
    """Records may be dated from the year 1000: a day key is then negative."""
    store = UsageStore([(MEMBERS[0], "bus-cap", "day", -3, 1, 10)])
    store.add_many(MEMBERS[:1], np.array(["bus-cap"]), np.array([0]), np.array([-3]),
                   np.array([1]), np.array([5]))
    assert store.changes() == [(MEMBERS[0], "bus-cap", "day", -3, 2, 15)]
    assert [c.tolist() for c in store.usage_many(MEMBERS[:1], np.array(["bus-cap"]),
                                                 np.array([0]), np.array([-3]))] == [[2], [15]]
    book = store.book_for([MEMBERS[0]])
    assert book.usage(MEMBERS[0], "bus-cap", WINDOWS[0], -3).amount == 15


def test_a_store_loads_the_windows_of_the_days_and_months_it_is_asked_for():
    """`prepare` loads each window (period, key) of the times given once, and only those:
    the rows of other days and months stay in the ledger."""
    ledger = {("day", 20_574): [(MEMBERS[0], "bus-cap", "day", 20_574, 2, 40)],
              ("month", 24_316): [(MEMBERS[0], "bus-cap", "month", 24_316, 5, 90)],
              ("day", 20_575): [(MEMBERS[1], "bus-cap", "day", 20_575, 1, 10)]}
    asked = []

    def load(windows):
        asked.append(sorted(windows))
        return [row for window in windows for row in ledger.get(window, [])]

    store = UsageStore(load=load)
    may_1 = np.array(["2026-05-01T08:00", "2026-05-01T23:59"], "datetime64[s]")
    store.prepare(may_1)
    store.prepare(may_1[:1])
    assert asked == [[("day", 20_574), ("month", 24_316)]]
    assert len(store) == 2 and store.changes() == []
    members, rules = MEMBERS[[0, 0, 1]], np.array(["bus-cap"] * 3)
    count, amount = store.usage_many(members, rules, np.array([0, 1, 0]),
                                     np.array([20_574, 24_316, 20_575]))
    assert count.tolist() == [2, 5, 0] and amount.tolist() == [40, 90, 0]
    store.prepare(np.array(["2026-05-02T07:00"], "datetime64[s]"))
    assert asked[-1] == [("day", 20_575)]
    assert store.usage_many(members[2:], rules[2:], np.array([0]), np.array([20_575]))[0] == 1
