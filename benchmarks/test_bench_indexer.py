"""Bulk indexing of a >= 100 MB binary trace: ``unioncard trace stats`` against a pyemv loop.

The trace is generated into a temporary directory (``trace_gen``; size from
``UNIONCARD_BENCH_MB``, default 105 MiB).  Compared in the same session:

- ``unioncard trace stats --json FILE``: the whole command (streaming read in
  chunks, frame indexing, pairing, BER-TLV indexing of every response that
  should hold BER-TLV, counts per command/SW/tag);
- a Python loop of ``pyemv.tlv.decode`` over the same responses' data,
  extracted beforehand (so the loop gets frame splitting and I/O for free).

Both are reported in MB/s of the trace file and in TLV records/s; the ratio is
of medians.  The numba first-call costs (compile into an empty cache, load from
a warm cache) and the peak memory of ``trace stats`` are measured in fresh
processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_report import Report
from click.testing import CliRunner
from pyemv import tlv as pyemv_tlv
from trace_gen import write_trace

from unioncard.apdu.indexer import TlvClass, index_buffer
from unioncard.cli import root

SIZE = int(float(os.environ.get("UNIONCARD_BENCH_MB", "105")) * (1 << 20))
report = Report("bulk indexing: unioncard trace stats vs a pyemv.tlv.decode loop")
facts: dict[str, float] = {}


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bulk") / "bulk.uct"
    write_trace(path, SIZE)
    return path


@pytest.fixture(scope="module")
def responses(trace) -> list[bytes]:
    """The data of every response the indexer decodes as BER-TLV (OK or malformed)."""
    buf = np.memmap(trace, dtype=np.uint8, mode="r")
    index = index_buffer(buf)
    chosen = np.flatnonzero((index.frame_tlv == TlvClass.OK)
                            | (index.frame_tlv == TlvClass.MALFORMED))
    raw = trace.read_bytes()
    starts = index.frame_offset[chosen] + 3
    ends = starts + index.frame_length[chosen] - 2
    facts["frames"] = index.frames
    facts["objects"] = index.objects
    facts["tlv_bytes"] = float((ends - starts).sum())
    return [raw[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    size = facts.get("size")
    ours, theirs = report.medians.get("stats"), report.medians.get("pyemv")
    if size and ours and theirs:
        records = facts["records"]
        report.add(f"trace {size / 1e6:.1f} MB, {facts['frames']:,.0f} frames,"
                   f" {records:,.0f} TLV responses ({facts['tlv_bytes'] / 1e6:.1f} MB of TLV data),"
                   f" {facts['objects']:,.0f} TLV objects")
        report.add(f"unioncard trace stats: median {ours:.3f} s  {size / ours / 1e6:8.1f} MB/s"
                   f"  {records / ours:>12,.0f} TLV records/s")
        report.add(f"pyemv.tlv.decode loop: median {theirs:.3f} s  {size / theirs / 1e6:8.1f} MB/s"
                   f"  {records / theirs:>12,.0f} TLV records/s")
        report.add(f"ratio (MB/s, ours / pyemv): {theirs / ours:.1f}x")
    if "index_only" in report.medians and size:
        t = report.medians["index_only"]
        report.add(f"index_buffer, whole-trace arrays in memory (memmap input):"
                   f" {size / t / 1e6:.1f} MB/s")
    for key in ("compile_s", "cached_s", "import_s", "peak_rss_tiny_mb", "peak_rss_mb"):
        if key in facts:
            unit = "MB" if key.endswith("mb") else "s"
            report.add(f"{key.replace('_', ' ')}: {facts[key]:.3f} {unit}")
    report.emit(request.config)


def test_stats_command(benchmark, trace, responses):
    benchmark.group = "bulk trace"
    facts["size"] = trace.stat().st_size
    facts["records"] = len(responses)
    runner = CliRunner()

    def run() -> dict:
        result = runner.invoke(root, ["trace", "stats", "--json", str(trace)],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    doc = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    tlv = doc["tlv"]
    assert tlv["responses_tlv"] + tlv["responses_malformed_tlv"] == len(responses)
    assert tlv["objects"] == facts["objects"]
    assert doc["bytes"] == facts["size"]
    report.median("stats", benchmark)


def test_pyemv_loop(benchmark, trace, responses):
    benchmark.group = "bulk trace"

    def loop() -> int:
        bad = 0
        for data in responses:
            try:
                pyemv_tlv.decode(data)
            except pyemv_tlv.DecodeError:
                bad += 1
        return bad

    benchmark.pedantic(loop, rounds=3, iterations=1, warmup_rounds=0)
    report.median("pyemv", benchmark)


def test_index_buffer_alone(benchmark, trace):
    benchmark.group = "bulk trace"
    buf = np.memmap(trace, dtype=np.uint8, mode="r")
    index = benchmark.pedantic(index_buffer, args=(buf,), rounds=3, iterations=1,
                               warmup_rounds=1)
    assert index.end == trace.stat().st_size
    report.median("index_only", benchmark)


FIRST_CALL = """
import json, time
t0 = time.perf_counter()
from unioncard.apdu.indexer import index_buffer
from unioncard.apdu.trace_stats import TraceStats
t1 = time.perf_counter()
stats = TraceStats()
stats.add(index_buffer(bytes.fromhex("55435431010005 00B2010C00 0200077003 5A0112 9000"
                                     .replace(" ", ""))))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_call": t2 - t1}))
"""


def _first_call(cache: Path) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True,
                          text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_first_call_cost(benchmark, tmp_path):
    """numba: compile into an empty cache, then load from the warm cache (fresh processes)."""
    benchmark.group = "numba first call"
    cold: list[float] = []
    counter = iter(range(100))

    def compile_cold() -> None:
        cold.append(_first_call(tmp_path / f"cold{next(counter)}")["first_call"])

    benchmark.pedantic(compile_cold, rounds=3, iterations=1)
    warm_dir = tmp_path / "warm"
    _first_call(warm_dir)
    warm = [_first_call(warm_dir) for _ in range(3)]
    facts["compile_s"] = float(np.median(cold))
    facts["cached_s"] = float(np.median([w["first_call"] for w in warm]))
    facts["import_s"] = float(np.median([w["import"] for w in warm]))


def test_stats_peak_memory(benchmark, trace, tmp_path):
    """Peak RSS of ``trace stats`` in fresh processes: a tiny trace, then the bulk one."""
    benchmark.group = "memory"
    tiny = tmp_path / "tiny.uct"
    tiny.write_bytes(bytes.fromhex("55435431010005 00B2010C00 0200077003 5A0112 9000"
                                   .replace(" ", "")))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across execve
    script = ("import sys; from unioncard.cli import main\n"
              "try:\n    main(['trace', 'stats', '--json', sys.argv[1]])\n"
              "except SystemExit:\n    pass\n"
              "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
              "print(hwm.split()[1], file=sys.stderr)")

    def peak(path: Path) -> float:
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                              text=True, check=True, timeout=600)
        return int(done.stderr.strip().splitlines()[-1]) / 1024

    baseline = peak(tiny)
    bulk = benchmark.pedantic(peak, args=(trace,), rounds=1, iterations=1)
    facts["peak_rss_tiny_mb"] = baseline
    facts["peak_rss_mb"] = bulk
    assert bulk - baseline < 100, "stats memory grows with the trace"
