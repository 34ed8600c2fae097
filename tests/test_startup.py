"""The command starts fast: ``unioncard --version`` and ``unioncard tap`` on PC/SC
readers spend at most 150 ms in imports, and a tap never loads numba (or numpy, rich,
dask, pyemv; nor pyscard when its cards are images).

``python -X importtime`` on the real command says which modules it imports.  Its
figures are wall-clock time, which a shared machine inflates, so the cost is measured
as CPU time: a fresh interpreter imports exactly those modules, in that order, under
`time.process_time`.  Even CPU time grows when the other test workers share the
cores, so the same interpreter also times a fixed reference loop, which takes
`REFERENCE_MS` on this kind of machine when it is quiet: the imports are judged at
that speed (imports / reference × `REFERENCE_MS`), on the fastest of a few runs.

The package is measured as installed: ``pip install`` compiles every module to
bytecode, so the tests do the same first (under ``PYTHONDONTWRITEBYTECODE`` an
editable checkout would otherwise time Python's compiler, not the imports).
"""

from __future__ import annotations

import compileall
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

import unioncard
from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.crypto import Keystore

BUDGET_MS = 150.0
"""The terminal's own start-up: ``--version`` and a tap on PC/SC readers."""
SIMULATOR_BUDGET_MS = 200.0
"""A tap on card images: the terminal and, on top, the simulated card OS with every
application of a member card (purses, PSAM, member identity, the PBOC debit application
whose RSA key is checked when the image loads)."""
REFERENCE_MS = 54.0
"""The reference loop's CPU time on a quiet machine of the project's kind (2 cores):
measured 50-56 ms."""
RUNS = 5
HEAVY = ("numba", "numpy", "llvmlite", "rich", "dask", "pyemv", "unioncard.apdu.indexer",
         "unioncard.tariffs.batch")
"""Never imported by a tap (nor by ``--version``)."""


def heavy(modules: list[str], also: tuple[str, ...] = ()) -> list[str]:
    """The modules of ``modules`` that are (or are inside) one of HEAVY + ``also``."""
    names = HEAVY + also
    return sorted(m for m in modules if m in names or m.split(".")[0] in names)

MEASURE = """
import importlib, sys, time

def reference():
    start, total = time.process_time(), 0
    for i in range(1_000_000):
        total += i * i % 7
    return time.process_time() - start

before = reference()
start = time.process_time()
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:  # a module that only imports in its own context costs nothing here
        pass
imports = time.process_time() - start
print(imports * 1000, min(before, reference()) * 1000)
"""


def imported(*args: str) -> list[str]:
    """The modules ``unioncard ARGS`` imports, in the order their imports finish."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "unioncard", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    names = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "imported package" not in line:
            names.append(line.rsplit("|", 1)[1].strip())
    assert names, done.stderr[-2000:]
    return names


def import_milliseconds(modules: list[str], budget: float = BUDGET_MS) -> float:
    """CPU milliseconds a fresh interpreter spends importing ``modules``, at the speed of
    a quiet machine (fastest run)."""
    wanted = [m for m in modules if m != "unioncard.__main__"]
    best = float("inf")
    for _ in range(RUNS):
        done = subprocess.run([sys.executable, "-c", MEASURE, *wanted], capture_output=True,
                              text=True, timeout=120, check=True)
        imports, reference = map(float, done.stdout.split())
        best = min(best, imports * REFERENCE_MS / reference)
        if best <= budget:
            break
    return best


@pytest.fixture(scope="module", autouse=True)
def installed_bytecode() -> None:
    """The package's modules compiled to bytecode, as ``pip install`` leaves them."""
    assert compileall.compile_dir(Path(unioncard.__file__).parent, quiet=1)


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


def test_version_imports_no_command():
    modules = imported("--version")
    assert not [m for m in modules if m.startswith("unioncard.commands")]
    assert heavy(modules, also=("smartcard",)) == []
    assert import_milliseconds(modules) <= BUDGET_MS


def test_a_tap_on_a_reader_spends_at_most_150_ms_in_imports(tmp_path, monkeypatch):
    """The terminal as deployed: card and PSAM in PC/SC readers, a hotlist.  No pcscd
    answers here, so the tap ends at connecting, after every import a tap makes (pyscard
    and the hotlist included)."""
    monkeypatch.setenv("PCSCLITE_CSOCK_NAME", str(tmp_path / "no-pcscd.comm"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hotlist = tmp_path / "hotlist.csv"
    hotlist.write_text("issuer,card,listed_at\n10000000FFFFFFFF,5500000000000009,2026-04-01\n")
    modules = imported("tap", "--mode", "bus", "--amount", "200", "--reader", "0",
                       "--psam-reader", "1", "--wait", "0", "--hotlist", str(hotlist),
                       "--journal", str(tmp_path / "journal.sqlite"))
    assert {"unioncard.terminal.purchase", "smartcard.scard",
            "unioncard.offline.hotlist"} <= set(modules)
    assert heavy(modules) == []
    milliseconds = import_milliseconds(modules)
    assert milliseconds <= BUDGET_MS, f"{milliseconds:.0f} ms of imports"


def test_a_tap_on_a_card_image_spends_at_most_200_ms_in_imports(images):
    """With ``--card IMAGE`` the simulated card runs in the same process: its code (and
    the cryptography it computes MACs and RSA signatures with) comes on top of the
    terminal's, within `SIMULATOR_BUDGET_MS`, and numba never does."""
    modules = imported("tap", "--mode", "bus", "--amount", "200", "--card", str(images["card"]),
                       "--psam", str(images["psam"]), "--journal", str(images["journal"]),
                       "--at", "2026-05-01T08:30:00")
    assert "unioncard.terminal.purchase" in modules  # the tap really ran
    assert "unioncard.applet_sim.pboc" in modules  # a member card with its debit application
    assert heavy(modules, also=("smartcard",)) == []
    milliseconds = import_milliseconds(modules, SIMULATOR_BUDGET_MS)
    assert milliseconds <= SIMULATOR_BUDGET_MS, f"{milliseconds:.0f} ms of imports"


def test_the_measure_sees_a_heavy_import():
    """The CPU measure is not blind: importing numba costs far more than a tap's imports."""
    assert import_milliseconds(["numba"]) > BUDGET_MS
