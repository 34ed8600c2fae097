"""The hotlist at 1M cards: opening its index at every tap, and a lookup, against a dict.

A module fixture writes a list of 1,000,000 cards (16 issuers, sequential
card numbers, listing times over five years), waits until the CSV is older
than the index's racy window (docs/hotlist.md), and builds the index once
(`Hotlist.load`).  Measured in the same run (medians):

- ``open``: `Hotlist.load` of a list whose index is up to date, then close:
  what a bus validator pays per tap for its hotlist;
- ``open_lookup``: the same plus one lookup;
- ``lookup_hit`` / ``lookup_miss``: `listed_at` on 1000 random listed
  (unlisted) cards, per lookup;
- reference ``dict_hit`` / ``dict_miss``: ``dict.get`` on the same keys in a
  dict of the same entries (tuple keys, datetime values), per lookup; and
  ``memory_hit`` / ``memory_miss``: the same `listed_at` on a
  `Hotlist.from_entries` (a dict behind the same API).

The report adds the one-off costs: writing the CSV, parsing it (what a tap would
pay without an index) and building the index.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path

import pytest
from bench_report import Report

from unioncard.offline.hotlist import (
    HEADER_SIZE,
    RACY_NS,
    SLOT_SIZE,
    Hotlist,
    IndexState,
    check_hotlist,
    parse_hotlist,
)

ENTRIES = 1_000_000
ISSUERS = [bytes.fromhex(f"{3101 + 100 * i:04d}000000000001") for i in range(16)]
BATCH = 1000
"""Lookups per timed call: a median of µs-scale calls is dominated by timer overhead."""

report = Report(f"Hotlist of {ENTRIES:,} cards (same run)")
once: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    m = report.medians
    for name, figure in once.items():
        report.add(f"{name:34s} {figure}")
    for name in ("open", "open_lookup"):
        if name in m:
            report.add(f"{name:34s} {m[name] * 1e3:8.3f} ms")
    for kind in ("hit", "miss"):
        ours, ref, mem = (m.get(f"{name}_{kind}") for name in ("lookup", "dict", "memory"))
        if ours is None:
            continue
        line = f"lookup {kind:4s}  index {ours / BATCH * 1e6:6.3f} us"
        if ref is not None:
            line += f"  dict {ref / BATCH * 1e6:6.3f} us  index/dict {ours / ref:5.1f}x"
        if mem is not None:
            line += f"  from_entries {mem / BATCH * 1e6:6.3f} us  index/from_entries " \
                    f"{ours / mem:4.1f}x"
        report.add(line)
    report.emit(request.config)


def _diversifier(issuer: int, n: int) -> bytes:
    return (0x3100000000000000 + (issuer << 40) + 1_000_000 + n).to_bytes(8, "big")


def _write_csv(path: Path) -> None:
    """1M rows quickly: the time strings come from a table of days and arithmetic."""
    first = dt.date(2021, 6, 1)
    days = [(first + dt.timedelta(days=d)).isoformat() for d in range(5 * 365)]
    issuers = [issuer.hex().upper() for issuer in ISSUERS]
    per_issuer = ENTRIES // len(issuers)
    lines = ["issuer,card,listed_at"]
    for i, issuer in enumerate(issuers):
        base = 0x3100000000000000 + (i << 40) + 1_000_000
        for n in range(per_issuer):
            k = i * per_issuer + n
            second = (k * 7919) % 86400
            lines.append(f"{issuer},{base + n:016X},{days[k % len(days)]}T"
                         f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The 1M-card list, its index built, and the same entries in a dict."""
    root = tmp_path_factory.mktemp("hotlist")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        path = root / "hotlist.csv"
        started = time.perf_counter()
        _write_csv(path)
        written = time.monotonic()
        once["CSV written"] = f"{time.perf_counter() - started:8.2f} s, " \
                              f"{path.stat().st_size / 1e6:.1f} MB"
        data = path.read_bytes()
        started = time.perf_counter()
        cards, _ = check_hotlist(data)
        once["CSV parsed (a tap without index)"] = f"{time.perf_counter() - started:8.2f} s"
        assert cards == ENTRIES
        reference = parse_hotlist(data)
        # The index trusts the stat stamp only once the CSV is older than the racy window.
        time.sleep(max(0.0, RACY_NS / 1e9 + 0.2 - (time.monotonic() - written)))
        started = time.perf_counter()
        hotlist = Hotlist.load(path)
        once["index built (first load)"] = f"{time.perf_counter() - started:8.2f} s, " \
            f"{(HEADER_SIZE + hotlist.slots * SLOT_SIZE) / 1e6:.1f} MB, {hotlist.slots:,} " \
            f"slots, {len(hotlist) / hotlist.slots:.0%} full"
        assert hotlist.index_state is IndexState.BUILT and len(hotlist) == ENTRIES
        hotlist.close()
        rng = random.Random(1)
        keys = list(reference)
        hits = rng.sample(keys, BATCH)
        misses = [(ISSUERS[rng.randrange(16)], _diversifier(rng.randrange(16),
                                                            ENTRIES + rng.randrange(10**6)))
                  for _ in range(BATCH)]
        yield path, reference, hits, misses


def test_open(benchmark, big):
    benchmark.group = "hotlist open"
    path = big[0]

    def open_close() -> IndexState:
        with Hotlist.load(path) as hotlist:
            return hotlist.index_state

    assert benchmark.pedantic(open_close, rounds=300, warmup_rounds=5) is IndexState.FRESH
    report.median("open", benchmark)


def test_open_lookup(benchmark, big):
    benchmark.group = "hotlist open"
    path, reference, hits, _ = big
    issuer, diversifier = hits[0]

    def tap() -> dt.datetime | None:
        with Hotlist.load(path) as hotlist:
            return hotlist.listed_at(issuer, diversifier)

    assert benchmark.pedantic(tap, rounds=300, warmup_rounds=5) == reference[hits[0]]
    report.median("open_lookup", benchmark)


@pytest.fixture(scope="module")
def loaded(big):
    with Hotlist.load(big[0]) as hotlist:
        yield hotlist


@pytest.fixture(scope="module")
def in_memory(big):
    return Hotlist.from_entries((i, d, when) for (i, d), when in big[1].items())


@pytest.mark.parametrize("kind", ["hit", "miss"])
def test_lookup(benchmark, big, loaded, kind):
    benchmark.group = f"hotlist lookup {kind}"
    _, reference, hits, misses = big
    keys = hits if kind == "hit" else misses
    expected = [reference.get(key) for key in keys]

    def lookups() -> list[dt.datetime | None]:
        return [loaded.listed_at(issuer, diversifier) for issuer, diversifier in keys]

    assert benchmark(lookups) == expected
    report.median(f"lookup_{kind}", benchmark)


@pytest.mark.parametrize("kind", ["hit", "miss"])
def test_dict(benchmark, big, kind):
    benchmark.group = f"hotlist lookup {kind}"
    _, reference, hits, misses = big
    keys = hits if kind == "hit" else misses
    get = reference.get

    def lookups() -> list[dt.datetime | None]:
        return [get((issuer, diversifier)) for issuer, diversifier in keys]

    assert sum(found is not None for found in benchmark(lookups)) == (
        BATCH if kind == "hit" else 0)
    report.median(f"dict_{kind}", benchmark)


@pytest.mark.parametrize("kind", ["hit", "miss"])
def test_memory(benchmark, big, in_memory, kind):
    benchmark.group = f"hotlist lookup {kind}"
    _, reference, hits, misses = big
    keys = hits if kind == "hit" else misses

    def lookups() -> list[dt.datetime | None]:
        return [in_memory.listed_at(issuer, diversifier) for issuer, diversifier in keys]

    assert benchmark(lookups) == [reference.get(key) for key in keys]
    report.median(f"memory_{kind}", benchmark)

