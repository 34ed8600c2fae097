"""The Dask engine, and a process analyzing with several threads, settle exactly as a
single thread does.

A local `distributed` cluster of two worker processes analyzes a generated day that
carries every kind of trouble settlement knows (forged and tampered records, records
without TAC, a hotlisted card, a duplicate, a replay of an earlier run, a damaged file, a
batch in conflict with a settled one); the same files settled by the single-process fast
path give the same clearing.csv, clearing.json and rejects.csv, byte for byte, and the
same ledger.  The `unioncard settle --engine dask --scheduler local:2` command does too,
and so does `unioncard settle --jobs 3` (two threads analyzing ahead of the settling one).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batch_files import dump, records_of, rewrite

from unioncard.crypto import Keystore
from unioncard.errors import SettlementError
from unioncard.settlement import RunInputs, settle
from unioncard.settlement.analyze import BatchAnalysis
from unioncard.settlement.engines import dask_analyses, local_analyses
from unioncard.settlement.errors import BatchRefused
from unioncard.settlement.generate import DayPlan, generate_day

distributed = pytest.importorskip("distributed")

KEYS = Keystore.test()
REPORT_FILES = ("clearing.csv", "clearing.json", "rejects.csv")


# --- the day ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def troubled_day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A generated day (3 000 records, batches of at most 300) made to carry every kind of
    trouble; ``first`` is settled before the rest (so ``replay`` and ``conflict`` have
    something to replay and to conflict with); ``hotlist`` lists one card from noon."""
    root = tmp_path_factory.mktemp("dask-day")
    day = generate_day(root / "batches", DayPlan(3000, batch_records=300))
    first = day[:3]
    victim = next(p for p in day[3:] if (records_of(p)["tx_type"] == 0x06).sum() > 50)
    r = records_of(victim)
    purchases = np.flatnonzero(r["tx_type"] == 0x06)
    r["tac"][purchases[0], 0] ^= 0x01                          # forged TAC
    r["charged_amount"][purchases[1]] -= 1                     # amount lowered
    r["list_amount"][purchases[1]] -= 1
    r["card_expiry"][purchases[2]] = [0x20, 0x26, 0x01, 0x01]  # expired
    r["ruleset_version"][purchases[3], 0] ^= 0xFF              # unknown rule set
    row = proven_in_batch(r, purchases)
    r["tac"][row], r["flags"][row] = 0, 0x03                   # recovered without TAC
    rewrite(victim, np.concatenate([r, r[purchases[4:5]]]))    # and a duplicate
    lonely, row = last_of_its_card(day, exclude=[*first, victim])
    r2 = records_of(lonely)
    r2["tac"][row], r2["flags"][row] = 0, 0x03                 # and nothing proves it
    rewrite(lonely, r2)
    damaged = next(p for p in day[3:] if p not in (victim, lonely))
    data = bytearray(damaged.read_bytes())
    data[40] ^= 0x01                                           # a record's CRC fails
    damaged.write_bytes(bytes(data))
    replay = rewrite(root / "batches" / "replay.ucb", records_of(first[0])[:5], batch_id=9999)
    settled_id = int.from_bytes(first[1].read_bytes()[14:18], "big")
    conflict = rewrite(root / "batches" / "conflict.ucb", records_of(first[1])[:-1],
                       batch_id=settled_id)
    card = records_of(day[-1])[0]
    hotlist = root / "hotlist.csv"
    hotlist.write_text("issuer,card,listed_at\n"
                       f"{bytes(card['issuer']).hex().upper()},"
                       f"{bytes(card['diversifier']).hex().upper()},2026-05-01T12:00:00\n")
    return {"root": root, "first": first, "all": [*day, replay, conflict], "hotlist": hotlist}


def last_of_its_card(day: list[Path], exclude: list[Path]) -> tuple[Path, int]:
    """A batch and a purchase in it whose card made no later purchase all day."""
    every = np.concatenate([records_of(p) for p in day])
    every = every[every["tx_type"] != 0x02]
    for path in reversed(day):
        r = records_of(path)
        if path in exclude:
            continue
        for row in np.flatnonzero(r["tx_type"] == 0x06)[::-1].tolist():
            same = ((every["issuer"] == r["issuer"][row]).all(axis=1)
                    & (every["diversifier"] == r["diversifier"][row]).all(axis=1))
            if not (every["card_seq"][same] > r["card_seq"][row]).any():
                return path, int(row)
    raise AssertionError("no card's last purchase of the day")


def proven_in_batch(r: np.ndarray, purchases: np.ndarray) -> int:
    """A purchase of ``r`` whose card purchases again later in the same batch."""
    for row in purchases[5:].tolist():
        same = ((r["diversifier"][purchases] == r["diversifier"][row]).all(axis=1)
                & (r["issuer"][purchases] == r["issuer"][row]).all(axis=1))
        if (r["card_seq"][purchases[same]] > r["card_seq"][row]).any():
            return int(row)
    raise AssertionError("no card purchases twice in this batch")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A local cluster of two worker processes, one thread each."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


def settle_twice(day: dict[str, Any], out: Path, hotlist: str, **engine: Any) -> Any:
    """The first batches, then the whole day again with the extras: the second report."""
    inputs = RunInputs(KEYS, hotlist_path=hotlist)
    settle(day["first"], ledger_path=out / "ledger.sqlite", inputs=inputs, **engine)
    return settle(day["all"], ledger_path=out / "ledger.sqlite", inputs=inputs,
                  out=out / "report", **engine)


def test_dask_and_a_single_process_settle_alike(troubled_day, client, tmp_path, monkeypatch):
    """Both engines, on the same troubled day: every reason occurs, two files are refused
    whole (the damaged file's refusal comes back from a worker like any result), and the
    reports and the ledgers are identical.  The Dask run names its hotlist by a path
    relative to a directory the workers were not started in: they still read that file."""
    single = settle_twice(troubled_day, tmp_path / "single", str(troubled_day["hotlist"]))
    monkeypatch.chdir(troubled_day["root"])
    dask = settle_twice(troubled_day, tmp_path / "dask", "hotlist.csv", engine="dask",
                        client=client)
    assert set(single.summary()["rejected"]) == {
        "bad_tac", "expired", "unknown_rules", "unproven", "duplicate", "replay", "hotlisted"}
    states = [b["state"] for b in single.document["batches"]]
    assert states.count("refused") == 2  # the damaged file and the conflict
    assert dask.summary() == single.summary()
    for name in REPORT_FILES:
        assert (tmp_path / "dask" / "report" / name).read_bytes() == (
            tmp_path / "single" / "report" / name).read_bytes(), name
    assert dump(tmp_path / "dask" / "ledger.sqlite") == dump(tmp_path / "single" /
                                                             "ledger.sqlite")


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_threads_analyzing_ahead_settle_as_one_thread(troubled_day, tmp_path, engine):
    """``jobs=3``: two threads analyze files ahead while the run settles them: the same
    troubled day gives the same report files, byte for byte, and the same ledger."""
    hotlist = str(troubled_day["hotlist"])
    one = settle_twice(troubled_day, tmp_path / "one", hotlist, engine=engine)
    three = settle_twice(troubled_day, tmp_path / "three", hotlist, engine=engine, jobs=3)
    assert three.summary() == one.summary() and one.summary()["rejected"]["replay"] == 5
    for name in REPORT_FILES:
        assert (tmp_path / "three" / "report" / name).read_bytes() == (
            tmp_path / "one" / "report" / name).read_bytes(), name
    assert dump(tmp_path / "three" / "ledger.sqlite") == dump(tmp_path / "one" /
                                                              "ledger.sqlite")


def test_threads_stop_with_the_run(troubled_day):
    """A run that takes one analysis and stops (an error, a closed generator) leaves no
    analysis thread behind; all of them, analyzed by threads, come in the run's order."""
    import threading

    inputs = RunInputs(KEYS)
    paths = sorted(troubled_day["all"])
    before = threading.active_count()
    analyses = local_analyses(paths, inputs, threads=2)
    path, first = next(analyses)
    assert path == paths[0] and isinstance(first, BatchAnalysis)
    analyses.close()
    assert threading.active_count() == before
    threaded = list(local_analyses(paths, inputs, threads=2))
    assert [p for p, _ in threaded] == paths
    assert [type(a) for _, a in threaded] == [type(a) for _, a in local_analyses(paths, inputs)]


def test_the_dask_engine_yields_what_the_local_one_does(troubled_day, client):
    """File by file, in the run's order: the same analyses (masks, verified TACs, rule sets,
    rebates, file names) and the same refusals with the same reasons, with a window of
    two files in flight."""
    inputs = RunInputs(KEYS, hotlist_path=str(troubled_day["hotlist"]))
    paths = sorted(troubled_day["all"])
    local = list(local_analyses(paths, inputs))
    remote = list(dask_analyses(paths, inputs, client, window=2))
    assert [p for p, _ in remote] == [p for p, _ in local] == paths
    for (path, mine), (_, theirs) in zip(local, remote, strict=True):
        assert type(mine) is type(theirs), path
        if isinstance(mine, BatchAnalysis):
            assert isinstance(theirs, BatchAnalysis)
            assert theirs.source == mine.source == str(path)
            assert theirs.batch.digest == mine.batch.digest
            for name in ("mask", "verified", "ruleset", "rebate"):
                assert np.array_equal(getattr(theirs, name), getattr(mine, name)), (path, name)
        else:
            assert isinstance(mine, BatchRefused) and isinstance(theirs, BatchRefused)
            assert theirs.reason == mine.reason, path


def test_the_cli_with_a_local_cluster(troubled_day, tmp_path):
    """``unioncard settle DIR --engine dask --scheduler local:2 --json``: the report files,
    the JSON document and the exit status (1: a file was refused) of a single process."""
    batches = troubled_day["root"] / "batches"
    files = sorted(batches.glob("*.ucb"))
    single = settle(files, ledger_path=tmp_path / "single.sqlite",
                    inputs=RunInputs(KEYS, hotlist_path=str(troubled_day["hotlist"])),
                    out=tmp_path / "single")
    done = subprocess.run(
        [sys.executable, "-m", "unioncard", "settle", str(batches), "--engine", "dask",
         "--scheduler", "local:2", "--hotlist", "hotlist.csv", "--ledger",
         str(tmp_path / "dask.sqlite"), "--out", str(tmp_path / "dask"), "--json"],
        cwd=troubled_day["root"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr[-3000:]
    document = json.loads(done.stdout)
    assert {k: document[k] for k in ("accepted", "rejected", "totals", "batches")} == (
        single.summary())
    assert [b["reason"] for b in document["refused_files"]] == [
        b["reason"] for b in single.document["batches"] if b["state"] == "refused"]
    for name in REPORT_FILES:
        assert (tmp_path / "dask" / name).read_bytes() == (
            tmp_path / "single" / name).read_bytes(), name
    assert dump(tmp_path / "dask.sqlite") == dump(tmp_path / "single.sqlite")


# --- workers that do not see the files --------------------------------------------------------


class ElsewhereClient:
    """A stand-in for `distributed.Client` whose one worker runs tasks in this process but
    sees the filesystem under another root: no batch file is where the client sees it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def nthreads(self) -> dict[str, int]:
        return {"tcp://elsewhere:1": 1}

    def scatter(self, value: Any, broadcast: bool = False) -> Any:
        return value

    def submit(self, function: Any, path: str, *args: Any, pure: bool = True) -> Any:
        result = function(str(self.root) + path, *args)

        class Done:
            def result(self) -> Any:
                return result

        return Done()


def test_workers_that_cannot_see_the_files_stop_the_run(troubled_day, tmp_path):
    """A file the client reads but a worker cannot is not refused (a single process would
    settle it): the run stops with an error saying the workers must see the files, and
    the ledger holds nothing of it.  A file nobody can read is refused as a single
    process refuses it."""
    paths = troubled_day["first"]
    with pytest.raises(SettlementError, match="workers must see the batch files at the same"):
        settle(paths, ledger_path=tmp_path / "l.sqlite", inputs=RunInputs(KEYS),
               engine="dask", client=ElsewhereClient(tmp_path / "nowhere"))
    with closing(sqlite3.connect(tmp_path / "l.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM batches").fetchone() == (0,)
    gone = [tmp_path / "gone.ucb"]
    ((_, mine),) = local_analyses(gone, RunInputs(KEYS))
    ((_, theirs),) = dask_analyses(gone, RunInputs(KEYS), ElsewhereClient(tmp_path))
    assert isinstance(mine, BatchRefused) and isinstance(theirs, BatchRefused)
    assert theirs.reason == mine.reason
    assert mine.reason.startswith("cannot read the batch file")
