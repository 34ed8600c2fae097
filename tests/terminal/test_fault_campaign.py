"""The fault campaign: the card leaves at every command of every flow, its power is cut inside
its NVM writes, the terminal is killed with SIGKILL at random moments — and when the card is
presented again nothing is charged twice, nothing is lost, the journal and the cards agree.

Flows (`campaign.FLOWS`): bus fare, metro fare with a station, ETC entry, ETC exit after an
entry, load on the transit and on the ETC purse, POS purchase.  For each, a clean tap counts
the card's commands (N, GET RESPONSE included) and the simulator's physical NVM writes (W);
then, one case per fault, on a fresh card: the card pulled before its k-th command (not
executed) or after it (executed, the answer lost), k = 1..N, or its power cut before or
after its k-th NVM write, k = 1..W (simulator only); the card presented again and tapped
again; then the checks of `campaign.run_case` and `campaign.disagreements`.  When a pull
left a transaction pending, the re-tap that settles it is itself pulled at each of its
commands (then a last tap comes clean); with ``-m campaign`` also after a cut, and that
re-tap's NVM writes and the card's power-up (its NVM recovery) are cut too.

What runs when:

- in process, with the simulator and with `protocol_card`: every first fault and the pulls
  of the re-taps, every run (about 7 s of CPU); the deeper re-tap faults with
  ``-m campaign`` (about 40 s);
- through pcscd + vpcd (a pull is a card torn out of the virtual reader, which pcscd sees):
  a sample of `PCSC_SAMPLE` first faults per card kind, drawn with a fixed seed, every run;
  every first fault of every flow with ``-m campaign``;
- SIGKILL of a terminal process tapping card images on disk: `SIGKILL_SAMPLE` transactions
  every run, `SIGKILL_FULL` with ``-m campaign``.

The whole campaign, with its figures::

    UNIONCARD_CAMPAIGN_REPORT=campaign.txt \\
        .venv/bin/python -m pytest -m campaign tests/terminal/test_fault_campaign.py -n 2

``UNIONCARD_CAMPAIGN_SEED`` sets the seed of the SIGKILL campaign's delays and flows in
that run (the default run always uses `SEED`, so its failures reproduce).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from unioncard.terminal import Decision
from unioncard.terminal.session import Journal, PendingTransaction
from unioncard.testing.purse_rig import prepare_debit


def _load_campaign() -> ModuleType:
    """tests/terminal is not a package: the campaign's helpers are loaded by path."""
    name = "terminal_campaign"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(
            "campaign.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


campaign: Any = _load_campaign()

SEED = "20260501"
PCSC_SAMPLE = 6
SIGKILL_SAMPLE = 60
SIGKILL_FULL = 500
CASES = [(kind, flow) for kind in campaign.CARD_KINDS for flow in campaign.FLOWS]


def _full(config: pytest.Config) -> bool:
    """Whether ``-m`` asks for the campaign (``-m campaign``, not ``-m "not campaign"``)."""
    expression = str(config.getoption("markexpr") or "")
    return re.search(r"(?<!not )\bcampaign\b", expression) is not None


@pytest.fixture
def full_campaign(request: pytest.FixtureRequest) -> None:
    if not _full(request.config):
        pytest.skip("the whole campaign runs with -m campaign")


def _report(title: str, text: str) -> None:
    """Figures on stdout (seen with -s), and appended to the file ``UNIONCARD_CAMPAIGN_REPORT``
    names, if any (pytest-xdist workers' stdout is not shown)."""
    block = f"\n== {title}\n{text}\n"
    print(block, end="")
    path = os.environ.get("UNIONCARD_CAMPAIGN_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as report:
            report.write(block)


# --- in process: every fault, every run -------------------------------------------------------


@pytest.mark.campaign
@pytest.mark.parametrize(("kind", "flow"), CASES)
def test_every_fault_in_process(request: pytest.FixtureRequest, kind: str, flow: str) -> None:
    """The card pulled before and after each of its commands, its power cut before and after
    each NVM write (simulator), and each command of the re-tap that settles a pending
    transaction pulled (with ``-m campaign``, also after a cut, and with a cut at each NVM
    write of that re-tap and of the card's power-up before it): the card is charged (or
    loaded) at most once, exactly once when the last tap is approved, and the journal agrees
    with it."""
    started = time.process_time()
    results = campaign.flow_campaign(campaign.InProcessBench(kind), flow,
                                     deep=_full(request.config))
    _report(f"in process, {kind}, {flow}: {len(results)} cases, "
            f"{time.process_time() - started:.2f} s CPU", campaign.figures(results))
    assert len(results) > 2 * results[0].taps[0].exchanges  # clean + every pull
    assert not any(r.problems for r in results), campaign.problem_report(results)
    assert all(r.last.decision is Decision.APPROVED for r in results)
    # a pull after the value command was sent leaves the transaction pending; the re-tap
    # settles it: recovered when the card committed it, voided (and charged anew) when not
    interrupted = [r for r in results if r.first.decision is Decision.INTERRUPTED]
    assert interrupted
    assert any(r.last.recovered for r in interrupted)
    assert any(not r.last.recovered and r.voided for r in interrupted)


# --- through pcscd + vpcd ---------------------------------------------------------------------


def _clean_cases(kind: str) -> dict[str, Any]:
    """The clean case of every flow, in process: what to pull at, and the amounts."""
    bench = campaign.InProcessBench(kind)
    return {flow: campaign.run_case(bench, flow, None) for flow in campaign.FLOWS}


def _pcsc_campaign(kind: str, serve: Any, faults: list[Any],
                   clean: dict[str, Any]) -> list[Any]:
    bench = campaign.PcscBench(kind, serve)
    results = []
    for flow in sorted({f.flow for f in faults}):
        over_pcsc = campaign.run_case(bench, flow, None)
        assert not over_pcsc.problems, over_pcsc.problems
        # pcscd passes the commands through: the same places to pull at as in process
        assert over_pcsc.taps[0].exchanges == clean[flow].taps[0].exchanges
        results.append(over_pcsc)
    for fault in faults:
        results.append(campaign.run_case(bench, fault.flow, fault,
                                         amount=clean[fault.flow].last.charged_amount))
    return results


def _sample(faults: list[Any], n: int, chance: random.Random) -> list[Any]:
    """``n`` faults drawn with ``chance``: one of each kind first (pull before, pull after,
    cuts), then more, each from a flow not drawn yet while there is one."""
    pool = list(faults)
    chance.shuffle(pool)
    chosen: list[Any] = []
    for kind in sorted({f.kind for f in pool}):
        flows = {f.flow for f in chosen}
        chosen.append(next(f for f in pool if f.kind == kind and f.flow not in flows))
    while len(chosen) < n:
        flows = {f.flow for f in chosen}
        rest = [f for f in pool if f not in chosen]
        chosen.append(next((f for f in rest if f.flow not in flows), rest[0]))
    return chosen


@pytest.mark.parametrize("kind", list(campaign.CARD_KINDS))
def test_a_sample_of_faults_over_pcsc(pcsc_serve: Any, kind: str) -> None:
    """A fixed sample of first faults (pulls, and cuts on the simulator) with the card torn
    out of pcscd's virtual reader and put back: charged at most once, exactly once when the
    re-tap is approved, and the journal agrees with the card."""
    clean = _clean_cases(kind)
    every = [f for flow in campaign.FLOWS
             for f in campaign.first_faults(clean[flow], cuts=kind == "simulator")]
    sample = _sample(every, PCSC_SAMPLE, random.Random(f"{SEED}/{kind}"))
    started = time.monotonic()
    results = _pcsc_campaign(kind, pcsc_serve, sample, clean)
    _report(f"PC/SC sample, {kind}: {', '.join(map(str, sample))} "
            f"({time.monotonic() - started:.1f} s)", campaign.figures(results))
    assert not any(r.problems for r in results), campaign.problem_report(results)
    assert all(r.taps[0].fired for r in results if r.fault is not None)


@pytest.mark.campaign
@pytest.mark.parametrize(("kind", "flow"), CASES)
def test_every_fault_over_pcsc(full_campaign: None, pcsc_serve: Any, kind: str,
                               flow: str) -> None:
    """Every first fault of the flow through pcscd + vpcd (the re-tap's pulls run in
    process only: two tears a case)."""
    clean = _clean_cases(kind)
    faults = campaign.first_faults(clean[flow], cuts=kind == "simulator")
    started = time.monotonic()
    results = _pcsc_campaign(kind, pcsc_serve, faults, clean)
    _report(f"PC/SC, {kind}, {flow}: {len(faults)} faults, "
            f"{time.monotonic() - started:.1f} s", campaign.figures(results))
    assert not any(r.problems for r in results), campaign.problem_report(results)


# --- SIGKILL ----------------------------------------------------------------------------------


def _sigkill(tmp_path: Path, transactions: int, seed: str) -> None:
    started = time.monotonic()
    figures = campaign.sigkill_campaign(tmp_path, transactions=transactions, seed=seed)
    _report(f"SIGKILL, seed {seed}, {time.monotonic() - started:.1f} s", str(figures))
    assert not figures.problems, "\n".join(figures.problems[:40])
    assert figures.attempted >= transactions
    assert figures.kills >= 2
    assert figures.completed + figures.voided > 0


def test_sigkill_sample(tmp_path: Path) -> None:
    """A terminal process tapping card images on disk, killed with SIGKILL at random moments
    and restarted over ≥ 60 transactions: after every kill each card's committed
    transactions are completed or pending in the journal (never completed without the card),
    and once every card is presented again they are all completed, exactly once each."""
    _sigkill(tmp_path, SIGKILL_SAMPLE, SEED)


@pytest.mark.campaign
def test_sigkill_full(full_campaign: None, tmp_path: Path) -> None:
    """The same over ≥ 500 transactions."""
    _sigkill(tmp_path, SIGKILL_FULL, os.environ.get("UNIONCARD_CAMPAIGN_SEED", SEED))


# --- the checks themselves --------------------------------------------------------------------


def test_the_checks_see_a_lost_record_a_phantom_a_pending_and_a_wrong_toll_record() -> None:
    """`disagreements` is not blind: a debit the journal does not have, a completed
    transaction the card never committed (whose TAC cannot verify), a pending transaction
    and an EF 0019 record the journal does not account for are each reported."""
    bench = campaign.InProcessBench("simulator")
    bench.fresh()
    initial = bench.state()
    entry = bench.tap(campaign.FLOWS["etc-entry"])
    assert entry.decision is Decision.APPROVED
    assert campaign.disagreements(bench.journal, initial, bench.state()) == []

    debit = prepare_debit(bench.card_link, bench.psam_link, "transit", 100, when=bench.when)
    assert bench.card_link.transmit(debit.command).sw == 0x9000  # charged behind its back
    lost = campaign.disagreements(bench.journal, initial, bench.state())
    assert any("committed by the card, not in the journal: seqs [0]" in p for p in lost)
    assert any("the balance went from 5000 to 4900" in p for p in lost)

    record = entry.record
    assert record is not None
    phantom = dataclasses.replace(record, card_seq=record.card_seq + 1)
    receipt = bench.journal.write(Journal(begin=PendingTransaction("etc-entry", phantom, 0)))
    left = PendingTransaction("etc-entry", phantom, 0, id=receipt.transaction_id)
    left_pending = campaign.disagreements(bench.journal, initial, bench.state())
    assert any("left pending" in p for p in left_pending)
    bench.journal.resolve([left.completed(bytes.fromhex("0BAD7AC0"))])
    phantoms = campaign.disagreements(bench.journal, initial, bench.state())
    assert any("never committed by the card: seqs [1]" in p for p in phantoms)
    assert any("does not verify" in p for p in phantoms)

    state = bench.state()
    wrong = dataclasses.replace(state, toll_record=initial.toll_record)
    assert any("EF 0019 holds" in p for p in campaign.disagreements(bench.journal, initial,
                                                                     wrong))
