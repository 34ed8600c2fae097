"""Collects figures measured by the trace benchmarks and prints them as one table at the end.

pytest-benchmark's own table gives each test's min/median/max and, within a
group, the ratio to the fastest.  This adds what that table cannot: MB/s and
records/s, and our-versus-pyemv ratios of medians measured in the same run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Report"]


class Report:
    def __init__(self, title: str) -> None:
        self.title = title
        self.medians: dict[str, float] = {}
        self.lines: list[str] = []

    def median(self, name: str, benchmark: Any) -> float:
        """Remember (and return) the median seconds of a finished benchmark."""
        value = float(benchmark.stats.stats.median)
        self.medians[name] = value
        return value

    def add(self, line: str) -> None:
        self.lines.append(line)

    def emit(self, config: Any) -> None:
        """Print past pytest's output capture (the way ``capsys.disabled()`` does)."""
        if not self.lines:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n== {self.title} ==")
            for line in self.lines:
                print(line)
