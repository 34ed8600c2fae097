"""Exact money: rounding modes against fractions, exact rate parsing."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.tariffs.money import (
    RATE_SCALE,
    Rounding,
    format_fen,
    format_rate,
    parse_percent,
    round_div,
    scale,
)


def reference_round(value: Fraction, rounding: Rounding) -> int:
    floor = value.numerator // value.denominator
    rest = value - floor
    if rounding is Rounding.DOWN or rest == 0:
        return floor
    if rest > Fraction(1, 2):
        return floor + 1
    if rest < Fraction(1, 2):
        return floor
    return floor + 1 if rounding is Rounding.HALF_UP or floor % 2 else floor


@given(st.integers(0, 2**53), st.integers(1, 2**40), st.sampled_from(list(Rounding)))
def test_round_div_matches_exact_fractions(numerator, denominator, rounding):
    assert round_div(numerator, denominator, rounding) == reference_round(
        Fraction(numerator, denominator), rounding
    )


@pytest.mark.parametrize(
    ("amount", "rate", "rounding", "expected"),
    [
        (155, 900_000, Rounding.HALF_UP, 140),  # 139.5
        (155, 900_000, Rounding.HALF_EVEN, 140),
        (165, 900_000, Rounding.HALF_EVEN, 148),  # 148.5
        (165, 900_000, Rounding.DOWN, 148),
        (10_000, 950_000, Rounding.HALF_UP, 9500),
        (1, 950_000, Rounding.HALF_UP, 1),
        (1, 950_000, Rounding.DOWN, 0),
        (0xFFFF_FFFF, 1, Rounding.HALF_UP, 4295),
    ],
)
def test_scale_known_answers(amount, rate, rounding, expected):
    assert scale(amount, rate, rounding) == expected


def test_round_div_refuses_negative_input():
    with pytest.raises(ValueError):
        round_div(-1, 2, Rounding.HALF_UP)
    with pytest.raises(ValueError):
        round_div(1, 0, Rounding.HALF_UP)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10", 100_000), ("12.5", 125_000), ("0.0001", 1), ("100", RATE_SCALE), ("5.00", 50_000),
     (" 9.5 ", 95_000), ("33.3333", 333_333)],
)
def test_parse_percent(text, rate):
    assert parse_percent(text) == rate


@pytest.mark.parametrize(
    ("text", "message"),
    [("-5", "negative"), ("1e1", "decimal percentage"), ("100.01", "above 100%"),
     ("12.34567", "at most 4 decimals"), ("", "decimal percentage"), ("ten", "decimal"),
     ("1,5", "decimal"), ("+5", "decimal")],
)
def test_parse_percent_refusals(text, message):
    with pytest.raises(ValueError, match=message):
        parse_percent(text)


@given(st.integers(0, RATE_SCALE))
def test_percent_text_round_trips(rate):
    assert parse_percent(format_rate(rate)[:-1]) == rate


def test_formatting():
    assert format_rate(95_000) == "9.5%" and format_rate(RATE_SCALE) == "100%"
    assert format_fen(180) == "1.80" and format_fen(5) == "0.05" and format_fen(-250) == "-2.50"
