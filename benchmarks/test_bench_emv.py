"""EMV POS transactions per second in process (the card's CPU included).

A contactless qPBOC sale approved offline from electronic cash with fDDA (the
card signs, the kernel recovers the issuer and ICC keys and verifies the
signature), a contact EC sale with CDA, and a contact sale authorized online by
the simulated issuer host (ARQC verified, ARPC checked by the card in the second
GENERATE AC).  Each round is a whole transaction from the member application and
PPSE/PSE selection to the decision; the unpredictable number changes each round.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from bench_report import Report

from unioncard.applet_sim import MemberData, issue_member_card
from unioncard.crypto import Keystore
from unioncard.terminal import Decision, run
from unioncard.terminal.emv import CapkStore, EmvPurchase
from unioncard.terminal.issuer_host import SimulatedIssuer
from unioncard.transport import Channel, InProcessTransport

KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x02)
CAPKS = CapkStore([KEYS.ca_rsa(bytes.fromhex("A000000333"), 0xF1).capk])
START = dt.datetime(2026, 12, 2, 8, 0)
ROUNDS = 200

report = Report("EMV POS transactions per second in process")


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    for name, seconds in report.medians.items():
        report.add(f"{name:22s} {seconds * 1e3:7.3f} ms  {1 / seconds:8,.0f} tx/s")
    report.emit(request.config)


class Pos:
    """A member card with its debit application (EC balance for every round), the issuer."""

    def __init__(self) -> None:
        card = issue_member_card(MEMBER, KEYS, card_no=7, ec_balance=100_000, random_source=1)
        transport = InProcessTransport(card)
        transport.power_on()
        self.card = Channel(transport)
        self.host = SimulatedIssuer.from_keystore(KEYS)
        self.clock = (START + dt.timedelta(seconds=s) for s in itertools.count())
        self.numbers = (n.to_bytes(4, "big") for n in itertools.count(1))

    def sale(self, amount: int, **options: Any) -> Decision:
        session = EmvPurchase(amount, now=next(self.clock), capks=CAPKS,
                              unpredictable_number=next(self.numbers), **options)
        outcome = run(session, card=self.card, host=self.host)
        return outcome.decision


FLOWS: dict[str, Callable[[Pos], Decision]] = {
    "qpboc_offline_fdda": lambda pos: pos.sale(100, contactless=True),
    "contact_ec_cda_pin": lambda pos: pos.sale(100, pins=["123456"]),
    "contact_online_cda_pin": lambda pos: pos.sale(150_000, pins=["123456"]),
}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_emv_flow(benchmark, flow):
    benchmark.group = "EMV transactions in process"
    pos = Pos()
    assert benchmark.pedantic(FLOWS[flow], args=(pos,), rounds=ROUNDS,
                              warmup_rounds=3) is Decision.APPROVED
    report.median(flow, benchmark)
