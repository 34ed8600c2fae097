"""What settlement refuses: a whole batch file (`BatchRefused`), or the run (`SettlementError`)."""

from __future__ import annotations

from unioncard.errors import SettlementError

__all__ = ["BatchRefused", "SettlementError"]


class BatchRefused(SettlementError):
    """A batch file refused whole: damaged, or in conflict with a settled batch.  ``reason``
    is the short cause (without the file name), as the report shows it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
