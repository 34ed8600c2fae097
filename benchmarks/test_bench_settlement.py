"""Settlement: the fast path end to end on a generated day, the reference path, OpenSSL DES.

Days come from `unioncard demo generate` (`unioncard.settlement.generate`: several
issuers, operators, routes and members, real TACs under the test keys), generated once
and kept in a cache directory keyed by the generator's parameters and sources
(``$UNIONCARD_BENCH_CACHE``, default ``~/.cache/unioncard/bench-days``; a 5M-record day is
1.3 GB).  Measured in the same run (docs/settlement.md, "Speed"):

(a) the OpenSSL limit: OpenSSL DES through `cryptography`, one key, ECB over 8 MiB,
    in purchase TACs per second (one TAC = one 24-byte CBC-MAC = 3 DES blocks), as
    benchmarks/test_bench_tac.py measures it;
(b) the fast path in process, files → ledger → report, on the 5M-record day after a
    warm-up run (numba caches loaded) with the files read once, each round into a new
    ledger (the previous one removed before the round, untimed);
    the same with ``jobs`` = this machine's cores (threads analyzing files ahead while one
    settles: `unioncard settle --jobs N`), beside it;
(c) the reference path (one record at a time) and the fast path on a 20k-record day,
    and the ratio of the rates;
(d) ``unioncard settle`` as a command on the 1M-record day, best of two runs: records/s (start-up
    included), its fraction of the OpenSSL limit, the share of records accepted;
(e) peak memory: the peak RSS of ``unioncard settle`` on the 20k, 1M and 5M days (the
    20k run is the baseline: interpreter, imports, numba code), each into a new ledger;
    the generated days hold a card for every 20 records, so these grow with the cards
    the run's index learns.  Then the days after the 5M day, over its 250 000 cards: the
    next (5M records) on the ledger of the first, and a third day, of 1M and of 5M
    records, each on a copy of the ledger of the first two (the index then knows the
    city's cards, as runs after the first few days do): flat in the day's size means
    the records are streamed;
(f) a run's start on the ledger that holds the 5M-record day: reading every settled
    batch to index it, the same writing the index snapshot, and starting from the
    snapshot (what the next day's run does).

    .venv/bin/python -m pytest benchmarks/test_bench_settlement.py -p no:xdist --benchmark-only
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bench_report import BULK, Report, openssl_block_rate

from unioncard.crypto import Keystore
from unioncard.settlement import RunInputs, settle
from unioncard.settlement.generate import DayPlan

BIG = 5_000_000
CLI_DAY = 1_000_000
SAMPLE = 20_000
TARGET, GOAL = 500_000, 1_000_000  # fast path records/s, one core
RATIO_TARGET = 5.0  # fast path ÷ reference path
CLI_FRACTION = 0.08  # a CLI run of the 1M day, as a fraction of the OpenSSL limit
ACCEPTED_SHARE = 0.99
FAST_ROUNDS = 3
JOBS = max(2, os.cpu_count() or 2)
"""Threads of the run measured beside the one-core figure (b)."""
FLAT = 0.05
"""Peak RSS of the 5M-record day over known cards within this fraction of the 1M-record
day's: flat."""
CLI_ROUNDS = 2  # the best counts: the machine may be busy with other work
SOURCES = ("settlement/generate.py", "offline/record.py", "offline/batch.py",
           "data/test-keystore.toml", "tariffs/default.toml")
"""The files a generated day depends on besides its plan: a change invalidates the cache."""

report = Report("Settlement: fast path end to end vs the reference path and OpenSSL DES")
figures: dict[str, Any] = {}


# ---- generated days, cached ----


def _cache_root() -> Path:
    given = os.environ.get("UNIONCARD_BENCH_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unioncard" / "bench-days"


def _key(records: int, after: tuple[Path, ...] = ()) -> str:
    import unioncard

    package = Path(unioncard.__file__).parent
    plan = dataclasses.asdict(DayPlan(records).resolved())
    plan["after"] = [day.name for day in after]  # the earlier days' shapes and keys
    digest = hashlib.sha256(json.dumps(plan, default=str, sort_keys=True).encode())
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()[:16]


def _unioncard(*args: str) -> list[str]:
    return [sys.executable, "-m", "unioncard", *args]


def _shape(records: int, after: tuple[Path, ...]) -> str:
    """How a cached day's directory is named: its records, and which day it is."""
    return f"{records}-day{len(after) + 1}" if after else f"{records}"


def _directory(records: int, after: tuple[Path, ...]) -> Path:
    """Where the cache keeps the day of ``records`` records (after the days ``after``)."""
    return _cache_root() / f"day-{_shape(records, after)}-{_key(records, after)}"


def _day(records: int, after: tuple[Path, ...] = ()) -> Path:
    """The directory of the generated day of ``records`` records (the day after the
    cached days ``after``, over their cards): from the cache, else generated by
    ``unioncard demo generate`` (older days of that shape are removed)."""
    root, shape = _cache_root(), _shape(records, after)
    directory = _directory(records, after)
    if (directory / "day.json").exists():
        return directory
    root.mkdir(parents=True, exist_ok=True)
    for stale in (*root.glob(f"day-{shape}-*"), *root.glob(f"partial-{shape}-*")):
        shutil.rmtree(stale)  # another generator's day, or one interrupted
    partial = root / f"partial-{shape}-{os.getpid()}"
    started = time.perf_counter()
    done = subprocess.run(_unioncard("demo", "generate", "--records", str(records), "--out",
                                     str(partial), "--json",
                                     *(arg for day in after for arg in ("--after", str(day)))),
                          capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    summary["seconds"] = time.perf_counter() - started
    (partial / "day.json").write_text(json.dumps(summary))
    partial.rename(directory)
    return directory


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.ucb"))


def _generated(records: int, after: tuple[Path, ...] = ()) -> Path:
    cached = (_directory(records, after) / "day.json").exists()
    directory = _day(records, after)
    summary = json.loads((directory / "day.json").read_text())
    figures.setdefault("generated", {})[(records, summary["day"])] = (
        summary["seconds"], cached, summary["cards"])
    return directory


@pytest.fixture(scope="module")
def sample_day() -> Path:
    return _generated(SAMPLE)


@pytest.fixture(scope="module")
def cli_day() -> Path:
    return _generated(CLI_DAY)


@pytest.fixture(scope="module")
def big_day() -> Path:
    return _generated(BIG)


@pytest.fixture(scope="module")
def second_day(big_day) -> Path:
    """The day after the 5M-record day, as busy, over its cards."""
    return _generated(BIG, after=(big_day,))


@pytest.fixture(scope="module", params=[CLI_DAY, BIG], ids=["1M", "5M"])
def third_day(request, big_day, second_day) -> tuple[int, Path]:
    """The day after that, over the same cards: a quiet one and a busy one."""
    return request.param, _generated(request.param, after=(big_day, second_day))


INPUTS = RunInputs(Keystore.test())


CPU: dict[str, list[float]] = {}
"""The CPU time of this process in each round, by measurement: beside the wall time
(which the benchmark reports), what the run cost when other work shares the cores."""


def _fresh(where: Path) -> None:
    """A round's set-up, not timed: the previous round's ledger and report removed (a
    5M-record ledger is 300 MB to unlink)."""
    shutil.rmtree(where, ignore_errors=True)


def _settle(files: list[Path], where: Path, engine: str = "fast", name: str = "",
            jobs: int = 1) -> Any:
    """One run end to end: the files into a new ledger, the report written."""
    shutil.rmtree(where, ignore_errors=True)  # done by the set-up of timed rounds
    where.mkdir(parents=True)
    started = time.process_time()
    result = settle(files, ledger_path=where / "ledger.sqlite", inputs=INPUTS,
                    out=where / "report", engine=engine, jobs=jobs)
    if name:
        CPU.setdefault(name, []).append(time.process_time() - started)
    return result


def _cpu_rate(name: str, records: int) -> str:
    """Records per CPU second (median round), as a note."""
    rounds = sorted(CPU.get(name, []))
    return f" ({records / rounds[len(rounds) // 2]:,.0f} per CPU second)" if rounds else ""


@pytest.fixture(scope="module")
def warm(sample_day, tmp_path_factory) -> Any:
    """The warm-up run: numba's cached code loaded, the modules imported."""
    return _settle(_files(sample_day), tmp_path_factory.mktemp("warm-up"))


_MEASURED = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(json.dumps({"seconds": seconds, "peak_kb": usage.ru_maxrss,
                                         "cpu": usage.ru_utime + usage.ru_stime}))
sys.exit(code)
"""
"""Runs a command and writes its wall time and peak RSS.  A small process of its own
starts it: a child inherits the peak RSS of the process it was forked from (Linux keeps
the high-water mark across exec), and this one is small, unlike pytest's."""


def _cli(directory: Path, where: Path, ledger: Path | None = None) -> dict[str, Any]:
    """``unioncard settle DIR --json`` in a new process (into a copy of the ``ledger``
    given, else a new one): its wall time, peak RSS and summary."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    if ledger is not None:
        for part in (ledger, ledger.with_name(ledger.name + "-wal")):
            if part.exists():
                shutil.copyfile(part, where / part.name.replace(ledger.name, "ledger.sqlite"))
    command = _unioncard("settle", str(directory), "--ledger", str(where / "ledger.sqlite"),
                         "--out", str(where / "report"), "--json")
    with (where / "stdout").open("wb") as out, (where / "stderr").open("wb") as err:
        done = subprocess.run([sys.executable, "-c", _MEASURED, str(where / "measured"),
                               *command], stdout=out, stderr=err)
    assert done.returncode == 0, (where / "stderr").read_text()
    measured = json.loads((where / "measured").read_text())
    summary = json.loads((where / "stdout").read_text())
    return {"seconds": measured["seconds"], "peak_mb": measured["peak_kb"] / 1024,
            "cpu": measured["cpu"], "summary": summary}


# ---- the report ----


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    f = figures
    limit = f["openssl_blocks"] / 3 if "openssl_blocks" in f else None
    lines = []
    for (records, day), (seconds, cached, cards) in sorted(f.get("generated", {}).items()):
        lines.append(f"{records:,}-record day of {day} over {cards:,} cards: " + (
            f"from the cache ({_cache_root()}; generated in {seconds:.1f} s)" if cached else
            f"generated in {seconds:.1f} s, kept in {_cache_root()} for the next runs"))
    if limit is not None:
        lines.append(f"(a) OpenSSL via cryptography, bulk, one key, TripleDES(K‖K‖K) ECB over "
                     f"{BULK >> 20} MiB: {f['openssl_blocks']:,.0f} blocks/s → OpenSSL limit "
                     f"{limit:,.0f} TACs/s (blocks/s ÷ 3)")
    if "fast" in f:
        line = (f"(b) fast path, files → ledger → report, {BIG:,}-record day, median of "
                f"{FAST_ROUNDS} after a warm-up run: {f['fast']:,.0f} records/s"
                f"{_cpu_rate('fast', BIG)} "
                f"(target {TARGET:,}: {'met' if f['fast'] >= TARGET else 'MISSED'}; goal "
                f"{GOAL:,}: {'met' if f['fast'] >= GOAL else 'not yet'})")
        if limit is not None:
            line += f", {f['fast'] / limit:.2f}x the OpenSSL limit"
        lines.append(line)
    if "threads" in f:
        line = (f"    with jobs={JOBS} (the cores of this machine: threads analyze files "
                f"ahead of the one settling): {f['threads']:,.0f} records/s "
                f"(goal {GOAL:,}: {'met' if f['threads'] >= GOAL else 'not yet'})")
        if "fast" in f:
            line += f", {f['threads'] / f['fast']:.2f}x one thread"
        lines.append(line)
    if "reference" in f:
        lines.append(f"(c) reference path, {SAMPLE:,}-record day: {f['reference']:,.0f} "
                     f"records/s{_cpu_rate('reference', SAMPLE)}; fast path on the same day "
                     f"{f.get('fast_sample', 0):,.0f} records/s"
                     f"{_cpu_rate('fast_sample', SAMPLE)}")
        if "fast" in f:
            ratio = f["fast"] / f["reference"]
            lines.append(f"    ratio fast ({BIG:,}) ÷ reference: {ratio:.1f}x (target "
                         f"{RATIO_TARGET:.0f}x: {'met' if ratio >= RATIO_TARGET else 'MISSED'})"
                         + (f"; on the same {SAMPLE:,} records "
                            f"{f['fast_sample'] / f['reference']:.1f}x"
                            if "fast_sample" in f else ""))
    if "cli" in f:
        cli = f["cli"]
        line = (f"(d) unioncard settle, {CLI_DAY:,}-record day, process start to exit, best "
                f"of {CLI_ROUNDS}: {cli['rate']:,.0f} records/s ({cli['seconds']:.2f} s; "
                f"{cli['cpu_rate']:,.0f} per CPU second), accepted "
                f"{cli['accepted_share']:.2%}")
        if limit is not None:
            fraction = cli["rate"] / limit
            line += (f", {fraction:.3f} of the OpenSSL limit (at least {CLI_FRACTION}: "
                     f"{'met' if fraction >= CLI_FRACTION else 'MISSED'})")
        lines.append(line)
    if "peak" in f:
        peak = f["peak"]
        base = peak.get(SAMPLE)
        parts = [f"{records:,}: {mb:,.0f} MB" + (f" (+{mb - base:,.0f})" if base and
                                                records != SAMPLE else "")
                 for records, mb in sorted(peak.items())]
        lines.append("(e) peak RSS of unioncard settle, first days into a new ledger (growth "
                     f"over the {SAMPLE:,}-record run): " + ", ".join(parts))
        if CLI_DAY in peak and BIG in peak:
            slope = (peak[BIG] - peak[CLI_DAY]) / ((BIG - CLI_DAY) / 1e6)
            lines.append(f"    {slope:,.0f} MB more per million records from {CLI_DAY:,} to "
                         f"{BIG:,}, with a card for every 20 records: the index learns "
                         f"{(BIG - CLI_DAY) // 20:,} more cards; the {BIG:,}-record command "
                         f"ran at {f.get('cli_big', 0):,.0f} records/s")
    if "second_day" in f:
        lines.append(f"    the next {BIG:,}-record day over the same cards, on the ledger "
                     f"of the first: {f['second_day']:,.0f} MB")
    if len(f.get("third_day", {})) == 2:
        quiet, busy = f["third_day"][CLI_DAY], f["third_day"][BIG]
        growth = busy / quiet - 1
        lines.append(f"    the third day, on the ledger of the first two (the city's cards "
                     f"known): {CLI_DAY:,} records {quiet:,.0f} MB, {BIG:,} records "
                     f"{busy:,.0f} MB: {growth:+.1%} for 5x the records (target flat, "
                     f"within {FLAT:.0%}: {'met' if abs(growth) <= FLAT else 'MISSED'})")
    if "run_start" in f:
        every, written, snapshot = f["run_start"]
        lines.append(f"(f) a run's start on the ledger of the {BIG:,}-record day: reading every "
                     f"batch {every:.2f} s, the same writing the index snapshot {written:.2f} "
                     f"s, from the snapshot {snapshot:.2f} s")
    for line in lines:
        report.add(line)
    report.emit(request.config)


# ---- (a) the OpenSSL limit ----


def test_openssl_limit(benchmark):
    """OpenSSL DES through `cryptography`: one key, ECB, a large buffer (the absolute upper
    limit of a TAC check, as benchmarks/test_bench_tac.py measures it)."""
    benchmark.group = "settlement"
    figures["openssl_blocks"] = openssl_block_rate(benchmark, report, "openssl")


# ---- (b) the fast path on the big day ----


def test_fast_path_big_day(benchmark, big_day, warm, tmp_path_factory):
    """Files → ledger → report, each round into a new ledger."""
    benchmark.group = "settlement"
    files = _files(big_day)
    where = tmp_path_factory.mktemp("fast")
    for path in files:  # in the page cache, as right after a terminal's upload
        path.read_bytes()
    result = benchmark.pedantic(lambda: _settle(files, where, name="fast"),
                                setup=lambda: _fresh(where), rounds=FAST_ROUNDS, iterations=1)
    summary = result.summary()
    assert summary["accepted"] == BIG and not summary["rejected"]
    figures["fast"] = BIG / report.median("fast", benchmark)
    shutil.rmtree(where, ignore_errors=True)


def test_fast_path_big_day_threads(benchmark, big_day, warm, tmp_path_factory):
    """(b) again with ``jobs`` threads: the same ledger and report, sooner."""
    benchmark.group = "settlement"
    files = _files(big_day)
    where = tmp_path_factory.mktemp("threads")
    result = benchmark.pedantic(lambda: _settle(files, where, name="threads", jobs=JOBS),
                                setup=lambda: _fresh(where), rounds=FAST_ROUNDS, iterations=1)
    assert result.summary()["accepted"] == BIG
    figures["threads"] = BIG / report.median("threads", benchmark)
    shutil.rmtree(where, ignore_errors=True)


# ---- (c) the reference path, and the fast path on the same sample ----


def test_fast_path_sample(benchmark, sample_day, warm, tmp_path_factory):
    benchmark.group = "settlement"
    where = tmp_path_factory.mktemp("fast-sample")
    result = benchmark.pedantic(lambda: _settle(_files(sample_day), where, name="fast_sample"),
                                setup=lambda: _fresh(where), rounds=5, iterations=1)
    assert result.document == warm.document
    figures["fast_sample"] = SAMPLE / report.median("fast_sample", benchmark)


def test_reference_path_sample(benchmark, sample_day, warm, tmp_path_factory):
    benchmark.group = "settlement"
    where = tmp_path_factory.mktemp("reference")
    result = benchmark.pedantic(lambda: _settle(_files(sample_day), where, "reference",
                                                         "reference"),
                                setup=lambda: _fresh(where), rounds=3, iterations=1)
    assert result.document == warm.document  # the same report as the fast path
    figures["reference"] = SAMPLE / report.median("reference", benchmark)


# ---- (d) the command on the 1M day, (e) peak memory by day size ----


def test_cli_day(benchmark, sample_day, cli_day, tmp_path_factory):
    benchmark.group = "settlement command"
    where = tmp_path_factory.mktemp("cli")
    figures.setdefault("peak", {})[SAMPLE] = _cli(sample_day, where)["peak_mb"]  # baseline
    runs: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: runs.append(_cli(cli_day, where)), rounds=CLI_ROUNDS,
                       iterations=1)
    best = min(runs, key=lambda run: run["seconds"])
    accepted = min(run["summary"]["accepted"] for run in runs) / CLI_DAY
    figures["cli"] = {"seconds": best["seconds"], "rate": CLI_DAY / best["seconds"],
                      "cpu_rate": CLI_DAY / min(run["cpu"] for run in runs),
                      "accepted_share": accepted}
    figures["peak"][CLI_DAY] = max(run["peak_mb"] for run in runs)
    shutil.rmtree(where, ignore_errors=True)
    assert accepted >= ACCEPTED_SHARE
    if "openssl_blocks" in figures:
        assert CLI_DAY / best["seconds"] >= CLI_FRACTION * figures["openssl_blocks"] / 3


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory) -> Any:
    """Where (e) keeps the ledger of the 5M-record day (its index snapshot written by
    (f)) and the ledger of that day and the next, for the runs after them."""
    where = tmp_path_factory.mktemp("ledgers")
    yield {"first": where / "first" / "ledger.sqlite", "second": where / "second" / "ledger.sqlite"}
    shutil.rmtree(where, ignore_errors=True)


def test_peak_memory_big_day(benchmark, big_day, ledgers):
    benchmark.group = "settlement command"
    run = benchmark.pedantic(lambda: _cli(big_day, ledgers["first"].parent), rounds=1,
                             iterations=1)
    assert run["summary"]["accepted"] == BIG
    figures.setdefault("peak", {})[BIG] = run["peak_mb"]
    figures["cli_big"] = BIG / run["seconds"]
    figures["run_start"] = _run_starts(ledgers["first"])


def _known(ledger: Path) -> Path:
    if not ledger.exists():
        pytest.skip(f"needs {ledger.parent.name} ledger of (e) (run the tests before)")
    return ledger


def test_peak_memory_second_day(benchmark, second_day, ledgers):
    """(e) The next 5M-record day, on (a copy of) the ledger of the first: nothing is
    replayed; the cards it adds to the index are the last few of the city's."""
    benchmark.group = "settlement command"
    first = _known(ledgers["first"])
    run = benchmark.pedantic(lambda: _cli(second_day, ledgers["second"].parent, first),
                             rounds=1, iterations=1)
    assert run["summary"]["accepted"] == BIG and not run["summary"]["rejected"]
    figures["second_day"] = run["peak_mb"]


def test_peak_memory_third_day(benchmark, third_day, ledgers, tmp_path_factory):
    """(e) The third day, of 1M and of 5M records, each on a copy of the ledger of the
    first two: the index knows the city's cards, and the day's records are streamed."""
    benchmark.group = "settlement command"
    records, directory = third_day
    second = _known(ledgers["second"])
    where = tmp_path_factory.mktemp("cli-third")
    run = benchmark.pedantic(lambda: _cli(directory, where, second), rounds=1, iterations=1)
    summary = run["summary"]
    assert summary["accepted"] == records and not summary["rejected"]
    figures.setdefault("third_day", {})[records] = run["peak_mb"]
    shutil.rmtree(where, ignore_errors=True)


def _run_starts(ledger_path: Path) -> list[float]:
    """(f) Seconds of `Settlement.begin` on a ledger with history: reading every batch,
    the same writing the snapshot, from the snapshot."""
    from unioncard.settlement import pipeline
    from unioncard.settlement.ledger import Ledger

    seconds, restored = [], []
    restore = pipeline.Settlement._restore

    def counted(self: Any, parts: Any) -> None:
        restore(self, parts)
        restored.append(name)

    for name, threshold in (("every batch", 2**62), ("snapshot written", 1),
                            ("from the snapshot", 1)):
        with Ledger(ledger_path) as ledger, pytest.MonkeyPatch.context() as patch:
            patch.setattr(pipeline, "SNAPSHOT_RECORDS", threshold)
            patch.setattr(pipeline.Settlement, "_restore", counted)
            started = time.perf_counter()
            pipeline.Settlement(ledger, INPUTS).begin(f"bench {name}")
            seconds.append(time.perf_counter() - started)
            ledger.mark_run(None)
    assert restored == ["from the snapshot"], f"runs that started from a snapshot: {restored}"
    return seconds
