"""Transactions per second in process, per flow of the terminal engine (same run).

Each flow runs against the simulator in process (the card's and the PSAM's CPU
included) with a journal on disk whose commits do not wait for the disk, the
way `test_bench_terminal.py` measures a bus tap: bus and metro fares, a sale at
a partner merchant, ETC entry and exit (composite purchases), a load through
the keystore's load host, a card read, and a union disbursement credited at a
service point (a card read for the member, then the load).  The report gives
transactions per second from the medians and each flow's time relative to the
bus fare measured in the same run.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench_report import Report

from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.crypto import Keystore
from unioncard.offline import Application
from unioncard.tariffs import Mode, default_rules
from unioncard.terminal import (
    CardRead,
    Decision,
    EtcEntry,
    EtcExit,
    KeystoreLoadHost,
    Load,
    PosPurchase,
    TransactionJournal,
    TransitPurchase,
    run,
)
from unioncard.terminal.disbursements import Disbursement, credit_pending
from unioncard.transport import Channel, InProcessTransport

KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x02)
START = dt.datetime(2026, 5, 1, 8, 0)
LOAD_TERMINAL = bytes.fromhex("0000000000AA")
ROUNDS = 200

report = Report("Transactions per second in process, per flow (same run)")


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    m = report.medians
    for name, seconds in m.items():
        line = f"{name:14s} {seconds * 1e3:7.3f} ms  {1 / seconds:8,.0f} tx/s"
        if "bus" in m and name != "bus":
            line += f"   {seconds / m['bus']:.2f}x the bus fare"
        report.add(line)
    report.emit(request.config)


class Lane:
    """A member card (balances large enough for every round), a PSAM, a journal on disk."""

    def __init__(self, directory: Path) -> None:
        card = issue_member_card(MEMBER, KEYS, card_no=1, transit_balance=60_000,
                                 etc_balance=60_000, random_source=1)
        psam = issue_psam(KEYS, "000000000001", protocol="T=0", random_source=2)
        self.card, self.psam = (self._link(card), self._link(psam))
        self.journal = TransactionJournal(directory / "journal.sqlite", durable=False)
        self.rules = default_rules()
        self.clock = (START + dt.timedelta(seconds=s) for s in itertools.count())
        self.host = KeystoreLoadHost(KEYS)

    @staticmethod
    def _link(device: Any) -> Channel:
        transport = InProcessTransport(device)
        transport.power_on()
        return Channel(transport)

    def options(self) -> dict[str, Any]:
        return {"now": next(self.clock), "rules": self.rules, "pending": self.journal.pending()}

    def run(self, session: Any) -> Decision:
        return run(session, card=self.card, psam=self.psam, journal=self.journal,
                   host=self.host).decision


FLOWS: dict[str, Callable[[Lane], Decision]] = {
    "bus": lambda lane: lane.run(TransitPurchase(Mode.BUS, 200, route="42", **lane.options())),
    "metro": lambda lane: lane.run(TransitPurchase(Mode.METRO, 300, station=0x0107,
                                                   **lane.options())),
    "pos": lambda lane: lane.run(PosPurchase(150, merchant="EXAMPLE-PARTNER-0001", mcc=5411,
                                             **lane.options())),
    "etc_entry": lambda lane: lane.run(EtcEntry(network=0x1101, station=0x0203,
                                                **lane.options())),
    "etc_exit": lambda lane: lane.run(EtcExit(network=0x1101, station=0x0007, amount=300,
                                              **lane.options())),
    "load": lambda lane: lane.run(Load(Application.TRANSIT, 100, terminal_id=LOAD_TERMINAL,
                                       **lane.options())),
    "card_read": lambda lane: run(CardRead(), card=lane.card).decision,
}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_flow(benchmark, tmp_path, flow):
    benchmark.group = "transactions in process"
    lane = Lane(tmp_path)
    assert benchmark.pedantic(FLOWS[flow], args=(lane,), rounds=ROUNDS,
                              warmup_rounds=3) is Decision.APPROVED
    report.median(flow, benchmark)
    lane.journal.close()


def test_disbursement(benchmark, tmp_path):
    """A service point: one pending payment of the member credited per round."""
    benchmark.group = "transactions in process"
    lane = Lane(tmp_path)
    references = (f"R{n}" for n in itertools.count())

    def pending_payment() -> tuple[tuple[()], dict[str, Any]]:
        lane.journal.import_disbursements([Disbursement(next(references), "20260001", 100,
                                                        "subsidy")], source="bench", now=START)
        return (), {}

    def credit() -> Decision:
        visit = credit_pending(lane.card, journal=lane.journal, host=lane.host,
                               terminal_id=LOAD_TERMINAL, now=next(lane.clock))
        assert len(visit.loads) == 1
        return visit.decision

    assert benchmark.pedantic(credit, setup=pending_payment, rounds=ROUNDS,
                              warmup_rounds=3) is Decision.APPROVED
    report.median("disbursement", benchmark)
    lane.journal.close()
