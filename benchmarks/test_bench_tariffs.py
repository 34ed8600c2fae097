"""Tariffs: batch path vs reference ``quote``, quotes per second, in the same run.

One million contexts with the shipped rule set (bus, metro, coach, ferry, taxi,
ETC and POS; member and ordinary cards; partner and other merchants).  The batch
path prices all of them per round; the reference is timed on a 20 000-context
sample of the same batch (quotes/s extrapolates linearly: each quote is
independent).  Both are medians of several rounds; both figures and their ratio
go into the benchmark's extra_info and are printed at the end of the run; the
target is batch ≥ 50× reference.

    .venv/bin/python -m pytest benchmarks/test_bench_tariffs.py -p no:xdist --benchmark-only
    .venv/bin/python benchmarks/test_bench_tariffs.py          # the same figures, printed
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest
from bench_report import Report

from unioncard.tariffs import (
    ContextBatch,
    Mode,
    UsageBook,
    default_rules,
    evaluate_batch,
    quote,
    quote_sequence,
)

N = 1_000_000
SAMPLE = 20_000
TARGET = 50.0
REFERENCE_ROUNDS = 5

summary = Report("tariffs: batch path vs reference quote, 1M contexts (medians)")


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    summary.emit(request.config)


def make_batch(n: int = N, seed: int = 2026, members: int = 0) -> ContextBatch:
    """A realistic mix: mostly transit fares, some tolls and shop purchases."""
    rng = np.random.default_rng(seed)
    mode = rng.choice([Mode.BUS, Mode.METRO, Mode.COACH, Mode.FERRY, Mode.TAXI, Mode.ETC,
                       Mode.POS], n, p=[0.4, 0.2, 0.05, 0.02, 0.08, 0.1, 0.15]).astype(np.int64)
    amount = np.where(mode == Mode.ETC, rng.integers(500, 30_000, n),
                      np.where(mode == Mode.POS, rng.integers(100, 50_000, n),
                               rng.integers(100, 1500, n)))
    start = np.datetime64("2026-05-01T00:00", "s")
    return ContextBatch.from_columns(
        mode=mode,
        amount=amount,
        card_type=rng.choice([0x55, 0x01], n, p=[0.7, 0.3]),
        at=start + rng.integers(0, 31 * 86_400, n).astype("m8[s]"),
        member_status=rng.choice([1, 2, 3], n, p=[0.97, 0.02, 0.01]),
        merchant_id=np.where(mode == Mode.POS,
                             rng.choice(["EXAMPLE-PARTNER-0001", "898310058120002",
                                         "898310058120003"], n), ""),
        merchant_category=np.where(mode == Mode.POS, rng.choice([5411, 5812, 5311], n), -1),
        route=np.where(mode == Mode.BUS, rng.choice(["8", "K12", "302"], n), ""),
        vehicle_class=np.where(mode == Mode.ETC, rng.integers(1, 5, n), -1),
        member_id=(np.char.add("m", rng.integers(0, members, n).astype(str))
                   if members else None),
    )


def reference_rate(batch: ContextBatch, sample: int = SAMPLE, history: bool = False) -> float:
    """Reference quotes per second over the first ``sample`` contexts of ``batch``
    (median of `REFERENCE_ROUNDS` rounds)."""
    contexts = [batch.context(j) for j in range(min(sample, len(batch)))]
    rules = default_rules()
    seconds = []
    for _ in range(REFERENCE_ROUNDS):
        started = time.perf_counter()
        if history:
            quote_sequence(contexts, rules, UsageBook())
        else:
            for context in contexts:
                quote(context, rules)
        seconds.append(time.perf_counter() - started)
    return len(contexts) / statistics.median(seconds)


def report(benchmark: object, label: str, batch_rate: float, ref_rate: float) -> float:
    ratio = batch_rate / ref_rate
    extra = getattr(benchmark, "extra_info", {})
    extra.update({"contexts": N, "reference_sample": SAMPLE,
                  "batch_quotes_per_s": round(batch_rate), "reference_quotes_per_s":
                  round(ref_rate), "ratio": round(ratio, 1)})
    line = (f"{label}: batch {batch_rate:,.0f} quotes/s, reference {ref_rate:,.0f} quotes/s "
            f"(sample of {SAMPLE:,}), batch/reference = {ratio:,.1f}x")
    summary.add(line)
    if benchmark is None:
        print(line)
    return ratio


@pytest.fixture(scope="module")
def batch() -> ContextBatch:
    made = make_batch()
    evaluate_batch(make_batch(1000), default_rules())  # compile (or load the cache) first
    return made


def test_terminal_quotes_batch_vs_reference(benchmark, batch):
    """Offline terminal view (stateless rules) on 1M contexts."""
    rules = default_rules()
    result = benchmark.pedantic(evaluate_batch, args=(batch, rules), rounds=5, iterations=1)
    assert len(result) == N
    ratio = report(benchmark, "terminal", N / benchmark.stats.stats.median, reference_rate(batch))
    assert ratio >= TARGET


def test_settlement_quotes_with_caps_batch_vs_reference(benchmark):
    """Settlement view: 1M contexts of 50 000 members, caps consumed in time order."""
    settled = make_batch(members=50_000)
    rules = default_rules()
    evaluate_batch(make_batch(1000, members=10), rules, history=UsageBook())  # compile first
    result = benchmark.pedantic(evaluate_batch, args=(settled, rules),
                                kwargs={"history": UsageBook()}, rounds=3, iterations=1)
    assert int(result.rebate.sum()) > 0
    ratio = report(benchmark, "settlement", N / benchmark.stats.stats.median,
                   reference_rate(settled, history=True))
    assert ratio >= TARGET


def main() -> None:
    rules = default_rules()
    for label, members, history in (("terminal", 0, None), ("settlement", 50_000, UsageBook())):
        made = make_batch(members=members)
        evaluate_batch(make_batch(1000, members=10), rules, history=history)
        median = statistics.median(_timed(evaluate_batch, made, rules, history)
                                   for _ in range(3))
        report(None, label, N / median, reference_rate(made, history=history is not None))


def _timed(action: Callable[..., object], batch: ContextBatch, rules: object,
           history: UsageBook | None) -> float:
    started = time.perf_counter()
    action(batch, rules, history=history)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
