"""Exact money arithmetic for tariffs: integer fen, exact rates, explicit rounding.

Money is integer fen (1/100 yuan) and a rate is an integer number of millionths
of the amount (``RATE_SCALE``): 1 % is 10 000, one basis point is 100.  A
product such as "10 % off 155 fen" is computed exactly as a fraction and then
rounded once with the rule set's mode.  No float is ever involved.

>>> round_div(155 * 9, 10, Rounding.HALF_UP)
140
>>> round_div(1395, 10, Rounding.HALF_EVEN), round_div(1385, 10, Rounding.HALF_EVEN)
(140, 138)
>>> parse_percent("12.5"), format_rate(125_000)
(125000, '12.5%')
"""

from __future__ import annotations

import re
from enum import StrEnum

from unioncard.errors import TariffError

__all__ = ["MAX_FEN", "RATE_SCALE", "ROUNDING_CODES", "Rounding", "check_int", "format_fen",
           "format_rate", "parse_fen", "parse_percent", "round_div", "scale"]

RATE_SCALE = 1_000_000
"""Rates are integer millionths of the amount: 1 % = 10 000, 1 basis point = 100."""

MAX_FEN = 0xFFFF_FFFF
"""Largest amount of one transaction: amounts are 4-byte unsigned fen (docs/protocol.md)."""

_PERCENT = re.compile(r"(\d{1,3})(?:\.(\d{1,4}))?")


class Rounding(StrEnum):
    """How an exact fractional fen amount becomes whole fen (amounts are never negative)."""

    HALF_UP = "half-up"
    HALF_EVEN = "half-even"
    DOWN = "down"


ROUNDING_CODES: dict[Rounding, int] = {Rounding.HALF_UP: 0, Rounding.HALF_EVEN: 1, Rounding.DOWN: 2}
"""Integer codes of the rounding modes, as the batch kernel receives them."""


def round_div(numerator: int, denominator: int, rounding: Rounding) -> int:
    """``numerator / denominator`` rounded to an integer; both non-negative, denominator > 0."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_div takes a non-negative numerator and a positive denominator")
    quotient, remainder = divmod(numerator, denominator)
    if rounding is Rounding.DOWN or remainder == 0:
        return quotient
    twice = 2 * remainder
    if twice > denominator:
        return quotient + 1
    if twice == denominator and (rounding is Rounding.HALF_UP or quotient % 2 == 1):
        return quotient + 1
    return quotient


def scale(amount: int, rate: int, rounding: Rounding) -> int:
    """``amount × rate / RATE_SCALE`` rounded: the exact share ``rate`` of ``amount``.

    >>> scale(200, 900_000, Rounding.HALF_UP)     # 90 % of 2.00 yuan
    180
    """
    return round_div(amount * rate, RATE_SCALE, rounding)


def parse_percent(text: str) -> int:
    """A percentage written as a decimal string ("10", "12.5", "9.9999") in millionths.

    Raises ``ValueError`` with a readable reason for anything else: signs,
    exponents, more than four decimals (not exact in millionths), or above 100.
    """
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"negative rate {text!r}")
    match = _PERCENT.fullmatch(stripped)
    if match is None:
        raise ValueError(
            f"rate {text!r} is not a decimal percentage such as \"10\" or \"12.5\" "
            "(at most 4 decimals)"
        )
    whole, frac = match.group(1), match.group(2) or ""
    value = int(whole) * 10_000 + int(frac.ljust(4, "0") or "0")
    if value > RATE_SCALE:
        raise ValueError(f"rate {text!r} is above 100%")
    return value


def parse_fen(value: object, *, positive: bool = False, hi: int = MAX_FEN) -> int:
    """An amount written in a rule file: integer fen, ``0..hi`` (``ValueError`` says why not)."""
    if isinstance(value, float):
        raise ValueError(f"{value!r} is a float; amounts are integer fen")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"must be integer fen, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"must not be negative ({value})")
    if positive and value == 0:
        raise ValueError("must be above 0")
    if value > hi:
        raise ValueError(f"{value} is above the limit {hi}")
    return value


def check_int(name: str, value: object, lo: int, hi: int) -> None:
    """:class:`TariffError` unless ``value`` is an integer ``lo..hi`` (model validation)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TariffError(f"{name} must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise TariffError(f"{name} {value} is out of range {lo}..{hi}")


def format_rate(rate: int) -> str:
    """Millionths as a percentage without trailing zeros: ``95000`` → ``'9.5%'``."""
    whole, frac = divmod(rate, 10_000)
    text = f"{whole}.{frac:04d}".rstrip("0").rstrip(".")
    return f"{text}%"


def format_fen(fen: int) -> str:
    """Fen as yuan with two decimals: ``180`` → ``'1.80'``."""
    sign = "-" if fen < 0 else ""
    yuan, rest = divmod(abs(fen), 100)
    return f"{sign}{yuan}.{rest:02d}"
