"""Masking card and identity numbers for display (DESIGN: logs never show a full PAN).

A PAN keeps its first 6 and last 4 digits; an identity number is shown the same
way; a short number keeps only its last 4.

>>> mask_digits("6230580000123456789")
'623058*********6789'
>>> mask_digits("11010519491231002X")
'110105********002X'
"""

from __future__ import annotations

__all__ = ["mask_digits", "mask_positions"]


def mask_positions(n: int) -> range:
    """Which of n digits `mask_digits` hides."""
    head = 6 if n >= 13 else 0
    return range(head, max(head, n - 4))


def mask_digits(digits: str) -> str:
    """Keep the first 6 and last 4 characters (all but the last 4 if the number is short)."""
    hide = mask_positions(len(digits))
    return digits[:hide.start] + "*" * len(hide) + digits[hide.start + len(hide):]
