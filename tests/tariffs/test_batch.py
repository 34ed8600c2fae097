"""The batch path agrees with the reference quote, fen for fen, on generated rule sets."""

from datetime import date, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unioncard.errors import TariffError
from unioncard.tariffs import (
    ContextBatch,
    Mode,
    QuoteContext,
    default_rules,
    evaluate_batch,
    quote,
    quote_sequence,
    record_batch,
)
from unioncard.testing.tariff_strategies import context_lists, histories, rulesets

AGREEMENT = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_row_agrees(result, j, reference):
    assert int(result.charged[j]) == reference.charged_amount
    assert int(result.discount[j]) == reference.discount
    assert int(result.rebate[j]) == reference.rebate
    assert result.applied(j) == reference.rules
    amounts = [int(a) for a in result.amounts[j][: len(reference.applied)]]
    assert amounts == [a.amount for a in reference.applied]
    assert bool(result.deferred[j]) == bool(reference.deferred)


@st.composite
def batches(draw):
    ruleset = draw(rulesets(max_rules=8))
    return ruleset, draw(context_lists(ruleset))


@AGREEMENT
@given(batches())
def test_stateless_batch_agrees_with_quote(case):
    ruleset, items = case
    result = evaluate_batch(ContextBatch.from_contexts(items), ruleset)
    assert result.version == ruleset.version
    for j, context in enumerate(items):
        assert_row_agrees(result, j, quote(context, ruleset))


@AGREEMENT
@given(st.data())
def test_batch_with_history_agrees_with_sequential_settlement(data):
    ruleset, items = data.draw(batches())
    book = data.draw(histories(ruleset, items))
    before = book.copy()
    result = evaluate_batch(ContextBatch.from_contexts(items), ruleset, history=book)
    assert book == before  # evaluating never changes the history
    settled_book = book.copy()
    settled = quote_sequence(items, ruleset, settled_book)
    for j, reference in enumerate(settled):
        assert_row_agrees(result, j, reference)
    record_batch(book, ContextBatch.from_contexts(items), result, ruleset)
    assert book == settled_book


def test_default_rules_batch_known_answers():
    at = np.datetime64("2026-05-01T08:30")
    batch = ContextBatch.from_columns(
        mode=np.array([Mode.BUS, Mode.BUS, Mode.ETC, Mode.BUS, Mode.METRO]),
        amount=[200, 150, 10_000, 200, 155],
        card_type=[0x55, 0x55, 0x55, 0x01, 0x55],
        at=at,
    )
    result = evaluate_batch(batch)
    assert result.charged.tolist() == [180, 135, 9500, 200, 140]
    assert result.discount.tolist() == [20, 15, 500, 0, 15]
    assert [result.applied(j) for j in range(5)] == [
        ("bus-member-10",), ("bus-member-10",), ("etc-member-5",), (), ("metro-member-10",)
    ]


def test_million_row_batch_matches_a_sample_of_reference_quotes():
    rng = np.random.default_rng(7)
    n = 200_000
    batch = ContextBatch.from_columns(
        mode=rng.integers(1, 8, n),
        amount=rng.integers(0, 30_000, n),
        card_type=rng.choice([0x55, 0x01], n),
        at=np.datetime64("2026-05-01T00:00") + rng.integers(0, 86_400 * 60, n).astype("m8[s]"),
        member_status=rng.integers(1, 4, n),
        merchant_id=rng.choice(["EXAMPLE-PARTNER-0001", "", "OTHER"], n),
        merchant_category=rng.choice([5411, 5812, -1, 4111], n),
    )
    result = evaluate_batch(batch)
    for j in rng.choice(n, 2000, replace=False).tolist():
        assert_row_agrees(result, j, quote(batch.context(j)))


def test_batch_columns_are_validated():
    at = np.datetime64("2026-05-01T08:30")
    with pytest.raises(TariffError, match="mode"):
        ContextBatch.from_columns(mode=[0], amount=[1], card_type=0x55, at=at)
    with pytest.raises(TariffError, match="amount"):
        ContextBatch.from_columns(mode="bus", amount=[-1], card_type=0x55, at=at)
    with pytest.raises(TariffError, match="member_status"):
        ContextBatch.from_columns(mode="bus", amount=[1], card_type=0x55, at=at, member_status=4)
    with pytest.raises(TariffError, match="lengths"):
        ContextBatch.from_columns(mode="bus", amount=[1, 2], card_type=[0x55], at=at)
    with pytest.raises(TariffError, match="integer fen"):
        ContextBatch.from_columns(mode="bus", amount=[1.5], card_type=0x55, at=at)


def test_empty_batch():
    batch = ContextBatch.from_contexts([])
    assert len(evaluate_batch(batch, default_rules())) == 0


def test_batch_row_back_to_context():
    context = QuoteContext(Mode.POS, 12_345, 0x55, datetime(1969, 12, 31, 23, 59, 59),
                           member_categories=3, merchant_id="X", merchant_category=5411,
                           route="8", vehicle_class=2, member_id="m")
    assert ContextBatch.from_contexts([context]).context(0) == context


def test_kernel_calendar_matches_python_over_the_whole_range():
    from unioncard.tariffs.kernel import _month_key

    epoch = date(1970, 1, 1).toordinal()
    probes = list(range(date(1, 1, 1).toordinal(), date(9999, 12, 31).toordinal(), 997))
    probes += [date(y, m, 1).toordinal() + d for y in (1600, 1900, 2000, 2100, 2400)
               for m in range(1, 13) for d in (-1, 0)]
    for ordinal in probes:
        day = date.fromordinal(ordinal)
        assert _month_key(ordinal - epoch) == day.year * 12 + day.month - 1, day


def test_agreement_with_numba_bounds_checking(run_bounds_checked):
    """The kernel re-compiled with boundscheck (UNIONCARD_JIT_DEBUG=1) agrees too."""
    script = """
from hypothesis import HealthCheck, given, settings, strategies as st
from unioncard.jit import JIT_OPTIONS
from unioncard.tariffs import ContextBatch, evaluate_batch, quote, quote_sequence
from unioncard.testing.tariff_strategies import context_lists, histories, rulesets
assert JIT_OPTIONS["boundscheck"] is True

@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def check(data):
    ruleset = data.draw(rulesets())
    items = data.draw(context_lists(ruleset))
    book = data.draw(histories(ruleset, items))
    batch = ContextBatch.from_contexts(items)
    for result, refs in ((evaluate_batch(batch, ruleset), [quote(c, ruleset) for c in items]),
                         (evaluate_batch(batch, ruleset, history=book),
                          quote_sequence(items, ruleset, book.copy()))):
        for j, ref in enumerate(refs):
            assert int(result.charged[j]) == ref.charged_amount
            assert int(result.rebate[j]) == ref.rebate
            assert result.applied(j) == ref.rules
check()
print("agreed")
"""
    run_bounds_checked(script)


texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["", "a", "ab", "ba", "b", "商户"]), texts),
                max_size=30), st.lists(texts.filter(bool), max_size=6, unique=True))
def test_text_kernels_agree_with_python(column, vocabulary):
    from unioncard.tariffs import kernel
    from unioncard.tariffs.batch import CompiledRules, _code_points

    array = np.asarray(column, dtype=str).reshape(-1)
    # numbering in first-seen order, with a hash table barely larger than the input
    slots = np.full(1 << max(1, len(column)).bit_length(), -1, np.int64)
    codes = np.empty(len(column), np.int64)
    firsts = np.empty(len(column), np.int64)
    count = kernel.intern_text(_code_points(array), slots, codes, firsts)
    seen: dict[str, int] = {}
    expected = [-1 if not v else seen.setdefault(v, len(seen)) for v in column]
    assert codes.tolist() == expected and count == len(seen)
    assert [column[i] for i in firsts[:count]] == list(seen)
    # lookup in a sorted vocabulary
    vocab = np.asarray(sorted(vocabulary), dtype=str).reshape(-1)
    found = CompiledRules.encode(vocab, array)
    assert found.tolist() == [sorted(vocabulary).index(v) if v in vocabulary else -1
                              for v in column]


def test_interning_survives_a_crowded_table():
    from unioncard.tariffs import kernel
    from unioncard.tariffs.batch import _code_points

    # One-character strings with the same low 4 bits hash to the same slot of a
    # 16-slot table (FNV-1a multiplies by an odd prime), so every probe must compare.
    column = ["!", "1", "A", "Q", "a", "q"] * 2
    slots = np.full(16, -1, np.int64)
    codes = np.empty(len(column), np.int64)
    firsts = np.empty(len(column), np.int64)
    count = kernel.intern_text(_code_points(np.asarray(column)), slots, codes, firsts)
    assert count == 6 and codes.tolist() == list(range(6)) * 2


def test_the_compile_cache_takes_threads_evicting_at_once(race_threads):
    """Analysis threads (settle --jobs) compile rule sets together: with more versions
    than the cache holds, evictions race, and none of them fails."""
    from pathlib import Path

    import unioncard.tariffs
    from unioncard.tariffs.batch import compile_rules
    from unioncard.tariffs.loader import loads

    text = (Path(unioncard.tariffs.__file__).parent / "default.toml").read_text()
    variants = [loads(text.replace('id = "bus-member-10"',
                                   f'id = "bus-member-10-v{i}"')) for i in range(20)]
    assert len({rules.version for rules in variants}) == 20

    def compile_all() -> None:
        for _ in range(5):
            for rules in variants:
                assert compile_rules(rules).ruleset.version == rules.version

    errors = race_threads(compile_all, 16)
    assert not errors, errors[:3]
