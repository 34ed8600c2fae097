"""The command starts fast: ``unioncard --version`` and ``unioncard tap`` spend at most
150 ms in imports, and a tap never loads numba (or numpy, pyscard, rich, dask, pyemv).

Measured with ``python -X importtime`` on the real command, in a process of its own:
the total is the sum of the top-level cumulative times.  Timings on a shared machine
are noisy (other test workers run at the same time), so the budget is checked on the
fastest of a few runs, the best estimate of the uncontended cost.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.crypto import Keystore

BUDGET_MS = 150.0
RUNS = 9
HEAVY = ("numba", "numpy", "llvmlite", "smartcard", "rich", "dask", "pyemv",
         "unioncard.apdu.indexer", "unioncard.tariffs.batch")


def imports(*args: str) -> tuple[float, set[str]]:
    """(milliseconds spent importing, modules imported) by ``unioncard ARGS``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "unioncard", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    total, modules = 0.0, set()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        modules.add(name.strip())
        if not name.startswith("  "):  # top level: its cumulative time counts once
            total += int(cumulative) / 1000
    return total, modules


def fastest(*args: str) -> tuple[float, set[str]]:
    best, modules = imports(*args)
    for _ in range(RUNS - 1):
        if best <= BUDGET_MS:
            break
        best = min(best, imports(*args)[0])
    return best, modules


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    keys = Keystore.test()
    member = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                        dt.date(2026, 1, 1), dt.date(2030, 12, 31))
    out = tmp_path_factory.mktemp("startup")
    paths = {"card": out / "card.json", "psam": out / "psam.json",
             "journal": out / "journal.sqlite"}
    issue_member_card(member, keys, card_no=1, transit_balance=50_000).save(paths["card"])
    issue_psam(keys, "000000000001").save(paths["psam"])
    return paths


def test_version_imports_no_command(images):
    milliseconds, modules = fastest("--version")
    assert not {m for m in modules if m.startswith("unioncard.commands")}
    assert milliseconds <= BUDGET_MS


def test_a_tap_spends_at_most_150_ms_in_imports_and_never_loads_numba(images):
    args = ("tap", "--mode", "bus", "--amount", "200", "--card", str(images["card"]),
            "--psam", str(images["psam"]), "--journal", str(images["journal"]),
            "--at", "2026-05-01T08:30:00")
    milliseconds, modules = fastest(*args)
    assert "unioncard.terminal.purchase" in modules  # the tap really ran
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
    assert loaded == []
    assert milliseconds <= BUDGET_MS, f"{milliseconds:.0f} ms of imports"
