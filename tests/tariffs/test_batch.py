"""The batch path agrees with the reference quote, fen for fen, on generated rule sets."""

from datetime import datetime

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
from unioncard.tariffs.strategies import context_lists, histories, rulesets

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
