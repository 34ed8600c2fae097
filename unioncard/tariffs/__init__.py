"""Member-benefit tariffs: TOML rule sets, the reference ``quote`` and the batch path
(docs/tariffs.md).  ``quote`` without a history is the offline terminal's view (capped rules
are left to settlement); with a ``UsageBook`` it is settlement's; ``evaluate_batch`` prices
numpy batches with a numba kernel that agrees with ``quote`` fen for fen.
"""

from typing import TYPE_CHECKING, Any

from unioncard.tariffs.conditions import Conditions
from unioncard.tariffs.context import AppliedRule, Quote, QuoteContext
from unioncard.tariffs.dump import dumps
from unioncard.tariffs.engine import (
    Usage,
    UsageBook,
    UsageHistory,
    period_key,
    quote,
    quote_sequence,
)
from unioncard.tariffs.lint import lint
from unioncard.tariffs.loader import Problem, RuleFileError, default_rules, load, loads, parse
from unioncard.tariffs.model import (
    Caps,
    CardType,
    Category,
    Effect,
    EffectKind,
    MemberStatus,
    Mode,
    Period,
    Rule,
    RuleSet,
)
from unioncard.tariffs.money import RATE_SCALE, Rounding

if TYPE_CHECKING:
    from unioncard.tariffs.batch import (
        BatchResult,
        ContextBatch,
        compile_rules,
        evaluate_batch,
        record_batch,
    )

_BATCH = ("BatchResult", "ContextBatch", "compile_rules", "evaluate_batch", "record_batch")
"""Imported on first use: the batch path loads numba, which costs start-up time."""


def __getattr__(name: str) -> Any:
    if name in _BATCH:
        from unioncard.tariffs import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["RATE_SCALE", "AppliedRule", "BatchResult", "Caps", "CardType", "Category", "Conditions",
           "ContextBatch", "Effect", "EffectKind", "MemberStatus", "Mode", "Period", "Problem",
           "Quote", "QuoteContext", "Rounding", "Rule", "RuleFileError", "RuleSet", "Usage",
           "UsageBook", "UsageHistory", "compile_rules", "default_rules", "dumps", "evaluate_batch",
           "lint", "load", "loads", "parse", "period_key", "quote", "quote_sequence",
           "record_batch"]
