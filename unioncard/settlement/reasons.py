"""Why a record is rejected (docs/settlement.md, "Classification"), in the order they are tried.

Each check sets its bit in a per-record mask; a record's reason is the first bit set,
in `Reason` order, so a forged duplicate counts as forged and a replayed record of an
unknown issuer as unknown.

>>> import numpy as np
>>> mask = np.array([0, bit(Reason.REPLAY) | bit(Reason.BAD_TAC), bit(Reason.EXPIRED)])
>>> [Reason(r).label for r in first_reason(mask)]
['accepted', 'bad_tac', 'expired']
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["Reason", "bit", "first_reason"]


class Reason(IntEnum):
    """A record's classification: accepted, or the first reason it is rejected."""

    ACCEPTED = 0
    UNKNOWN_ISSUER = 1
    BAD_TAC = 2
    UNPROVEN = 3
    DUPLICATE = 4
    REPLAY = 5
    HOTLISTED = 6
    EXPIRED = 7
    UNKNOWN_RULES = 8
    AMOUNT_MISMATCH = 9

    @property
    def label(self) -> str:
        """The reason as reports and the ledger spell it (``bad_tac``)."""
        return self.name.lower()


def bit(reason: Reason) -> int:
    """The mask bit of ``reason``."""
    return 1 << (int(reason) - 1)


def first_reason(mask: np.ndarray) -> np.ndarray:
    """Per record, the first `Reason` whose bit is set in ``mask`` (0: accepted)."""
    mask = np.asarray(mask, dtype=np.int64)
    lowest = mask & -mask
    out = np.zeros(len(mask), dtype=np.uint8)
    nonzero = lowest != 0
    out[nonzero] = np.log2(lowest[nonzero]).astype(np.uint8) + 1
    return out
