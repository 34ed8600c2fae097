"""A settlement killed with SIGKILL and started again settles as an uninterrupted one.

The real command (``python -m unioncard settle``; ``--jobs 3`` too) settles a generated
day of 60-odd small batch files, committing every one to three batches, and is killed
with SIGKILL: inside a ledger transaction (before its COMMIT), after a number of batches
were committed (the ledger polled read-only), and after seeded random delays (during
start-up, the analysis, the commits or the report).  It is started again until it
completes.  After every kill each batch in the ledger is whole; at the end the ledger's
contents and the three report files are those of an uninterrupted run, byte for byte.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from batch_files import dump, records_of, rewrite

from unioncard.settlement.generate import DayPlan, generate_day
from unioncard.settlement.pipeline import batch_order

REPORT_FILES = ("clearing.csv", "clearing.json", "rejects.csv")

WRAPPER = '''
"""unioncard settle with small commit groups, a little time spent inside each ledger
transaction, a SIGKILL of its own when asked, and a word on stderr once the first batch
is settled."""
import os
import signal
import sys
import time

from unioncard.settlement import ledger, pipeline

pipeline.COMMIT_BATCHES = int(os.environ["COMMIT_BATCHES"])
kill_at = int(os.environ.get("KILL_IN_BATCH", "0"))  # the n-th batch written by this process
delay = float(os.environ.get("COMMIT_DELAY", "0"))
written = 0
record_batch = ledger.Ledger.record_batch


def slow_record_batch(self, db, **entry):
    """Write the batch, then take a little time inside the transaction, or die there."""
    global written
    row = record_batch(self, db, **entry)
    written += 1
    if written == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(delay)
    return row


def announced_settle(self, analysis):
    """Say on stderr when the first batch is settled (start-up and compilation are over)."""
    global announced
    if not announced:
        print("SETTLING", file=sys.stderr, flush=True)
        announced = True
    return settle(self, analysis)


announced = False
ledger.Ledger.record_batch = slow_record_batch
settle = pipeline.Settlement.settle
pipeline.Settlement.settle = announced_settle
from unioncard.cli import main  # noqa: E402

main(sys.argv[1:])
'''


# --- helpers ---------------------------------------------------------------------------------


def settled_batches(ledger: Path) -> int:
    """How many batches the ledger holds, read without writing anything (-1: no ledger yet)."""
    try:
        with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)) as db:
            return int(db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    except sqlite3.Error:
        return -1


def assert_whole(ledger: Path) -> None:
    """Every batch in the ledger is there whole: its rejected records and its lines add up to
    its count of records and of accepted records."""
    if not ledger.exists():
        return
    with closing(sqlite3.connect(ledger)) as db:
        for row, records, accepted in db.execute("SELECT id, records, accepted FROM batches"):
            rejected = db.execute("SELECT COUNT(*) FROM rejects WHERE batch = ?",
                                  (row,)).fetchone()[0]
            counted = db.execute("SELECT COALESCE(SUM(count), 0) FROM lines WHERE batch = ?",
                                 (row,)).fetchone()[0]
            assert (rejected + accepted, counted) == (records, accepted), row


# --- the day and the command ------------------------------------------------------------------


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 65 batch files of at most 50 records, with tampered records (each within its
    own batch) and a damaged file."""
    directory = tmp_path_factory.mktemp("crash") / "batches"
    paths = generate_day(directory, DayPlan(3000, terminals=10, batch_records=50))
    victims = [p for p in paths if (records_of(p)["tx_type"] == 0x06).sum() > 20][:3]
    for n, victim in enumerate(victims):
        r = records_of(victim)
        purchases = np.flatnonzero(r["tx_type"] == 0x06)
        r["tac"][purchases[n], 1] ^= 0x10                          # forged TAC
        r["card_expiry"][purchases[n + 1]] = [0x20, 0x26, 0x01, 0x01]  # expired
        r["ruleset_version"][purchases[n + 2], 3] ^= 0x01          # unknown rule set
        rewrite(victim, np.concatenate([r, r[purchases[n + 3:n + 4]]]))  # a duplicate
    damaged = paths[len(paths) // 2]
    data = bytearray(damaged.read_bytes())
    data[-5] ^= 0x01  # the trailer's reserved bytes: the file CRC fails
    damaged.write_bytes(bytes(data))
    (directory.parent / "settle.py").write_text(WRAPPER)
    return directory


def start(day: Path, out: Path, *, commit_batches: int, kill_in_batch: int = 0,
          delay: float = 0.002, jobs: int = 1) -> subprocess.Popen[bytes]:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "COMMIT_BATCHES": str(commit_batches),
           "KILL_IN_BATCH": str(kill_in_batch), "COMMIT_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, str(day.parent / "settle.py"), "settle", str(day), "--ledger",
         str(out / "ledger.sqlite"), "--out", str(out / "report"), "--json", "--jobs",
         str(jobs)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes], ok: int = 1) -> int:
    """The exit status of a run: ``ok`` (1 when the damaged file was refused), or killed."""
    _, stderr = process.communicate(timeout=120)
    if process.returncode not in (ok, -signal.SIGKILL):
        raise AssertionError(stderr.decode(errors="replace")[-3000:])
    return process.returncode


@pytest.fixture(scope="module")
def uninterrupted(day: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert finish(start(day, out, commit_batches=2, delay=0)) == 1
    return out


def assert_same(out: Path, reference: Path) -> None:
    assert dump(out / "ledger.sqlite") == dump(reference / "ledger.sqlite")
    for name in REPORT_FILES:
        assert (out / "report" / name).read_bytes() == (
            reference / "report" / name).read_bytes(), name


# --- the kills ---------------------------------------------------------------------------------


def kill_when(process: subprocess.Popen[bytes], ledger: Path, batches: int,
              rng: random.Random) -> None:
    """SIGKILL once the ledger holds ``batches`` batches, a few milliseconds later."""
    while process.poll() is None and settled_batches(ledger) < batches:
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.008))
    process.kill()


def test_the_uninterrupted_run_has_every_kind_of_record(uninterrupted, day):
    """The reference run settles the day with rejects of each kind and one refused file."""
    import json

    document = json.loads((uninterrupted / "report" / "clearing.json").read_text())
    assert document["rejected"] == {"bad_tac": 3, "duplicate": 3, "expired": 3,
                                    "unknown_rules": 3}
    states = [b["state"] for b in document["batches"]]
    assert states.count("refused") == 1 and len(states) == len(list(day.glob("*.ucb")))
    assert settled_batches(uninterrupted / "ledger.sqlite") == len(states) - 1 > 55


def test_killed_inside_transactions_and_after_commits(day, uninterrupted, tmp_path):
    """Three batches a commit: killed inside the very first transaction, then once 30
    batches are committed (a few milliseconds later: in a transaction or between two),
    then inside the third transaction of the restarted run, after the first of its three
    batches was written; the last start completes."""
    commit_batches = 3
    ledger = tmp_path / "ledger.sqlite"
    rng = random.Random(3)
    assert finish(start(day, tmp_path, commit_batches=commit_batches, kill_in_batch=1)) == (
        -signal.SIGKILL)
    assert settled_batches(ledger) == 0  # the first commit never happened
    process = start(day, tmp_path, commit_batches=commit_batches, delay=0.005)
    kill_when(process, ledger, 30, rng)  # 34 batches of 5 ms or more left: it is killed
    assert finish(process) == -signal.SIGKILL
    assert_whole(ledger)
    assert settled_batches(ledger) >= 30
    before = settled_batches(ledger)
    process = start(day, tmp_path, commit_batches=commit_batches,
                    kill_in_batch=2 * commit_batches + 1)
    assert finish(process) == -signal.SIGKILL
    assert settled_batches(ledger) == before + 2 * commit_batches  # the third commit is lost
    assert_whole(ledger)
    assert finish(start(day, tmp_path, commit_batches=commit_batches)) == 1
    assert_same(tmp_path, uninterrupted)


@pytest.mark.parametrize("jobs", [1, 3])
def test_killed_after_random_delays(day, uninterrupted, tmp_path, jobs):
    """Killed four times after seeded random delays once the first batch is settled
    (while batches are analyzed, settled, committed, or the report written), started
    again after each kill; the fifth start runs to its end.  With ``--jobs 3`` too (two
    threads analyzing ahead when the kill comes): the same ledger and report as the
    uninterrupted single-thread run."""
    rng = random.Random(20260501)
    ledger = tmp_path / "ledger.sqlite"
    progress = []
    for _kill in range(4):
        process = start(day, tmp_path, commit_batches=2, jobs=jobs)
        assert process.stderr is not None
        while (line := process.stderr.readline()) and line != b"SETTLING\n":
            pass
        try:
            process.wait(timeout=rng.uniform(0, 0.4))
        except subprocess.TimeoutExpired:
            process.kill()
        if finish(process) != -signal.SIGKILL:
            break  # it finished first
        assert_whole(ledger)
        progress.append(settled_batches(ledger))
    else:
        assert finish(start(day, tmp_path, commit_batches=2, jobs=jobs)) == 1
    assert progress  # the first delay, 37 ms, is shorter than 64 commits of 2 ms or more
    assert progress == sorted(progress)
    assert_same(tmp_path, uninterrupted)


def test_a_duplicate_across_batches_stays_a_duplicate(tmp_path):
    """A record copied into a later batch of its terminal is a duplicate in an uninterrupted
    run; killed once the original's batch is committed and started again, the run must
    still call it a duplicate (the same rejects.csv and ledger)."""
    directory = tmp_path / "batches"
    paths = batch_order(generate_day(directory, DayPlan(600, batch_records=50)))
    (tmp_path / "settle.py").write_text(WRAPPER)
    first, second = next((a, b) for a, b in itertools.pairwise(paths)
                         if a.name[:12] == b.name[:12])
    rewrite(second, np.concatenate([records_of(second), records_of(first)[:1]]))
    reference = tmp_path / "reference"
    assert finish(start(directory, reference, commit_batches=1), ok=0) == 0
    assert "duplicate" in (reference / "report" / "rejects.csv").read_text()
    killed = tmp_path / "killed"
    process = start(directory, killed, commit_batches=1, kill_in_batch=paths.index(second) + 1)
    assert finish(process, ok=0) == -signal.SIGKILL
    assert settled_batches(killed / "ledger.sqlite") == paths.index(second)  # first is in
    assert finish(start(directory, killed, commit_batches=1), ok=0) == 0
    assert_same(killed, reference)
