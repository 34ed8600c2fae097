"""Writes sample_trace.txt: one bus fare paid with a union member card, recorded from the engine.

Run from the repository root: ``python unioncard/data/make_sample_trace.py``.
The trace is a real session of the terminal engine (`TransitPurchase`)
against the simulator: a member card and a T=0 PSAM issued with the project's
test keys (docs/protocol.md §6), seeded randomness and a fixed time, so the output
is the same on every run and its MAC1, MAC2 and TAC verify with the test keys.
Every APDU is captured by the transports' observer hook, GET RESPONSE rounds
of the T=0 PSAM included.  Test keys only, never production keys.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path
from typing import IO

from unioncard.apdu import command_name
from unioncard.apdu.trace import Device, TraceRecord
from unioncard.apdu.trace_text import TextTraceWriter
from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.crypto import Keystore
from unioncard.tariffs import Mode
from unioncard.terminal import TransactionJournal, TransitPurchase, run
from unioncard.transport import Channel, InProcessTransport

OUT = Path(__file__).with_name("sample_trace.txt")

CST = dt.timezone(dt.timedelta(hours=8))
TAPPED = dt.datetime(2025, 3, 18, 7, 42, 12)
"""When the member taps (local time): the time the card and the PSAM are given."""
TRACE_START = dt.datetime(2025, 3, 18, 7, 42, 12, 120000, tzinfo=CST)
MEMBER = MemberData("王芳", "20250042", "市总工会", "110105198503180027",
                    dt.date(2024, 1, 1), dt.date(2034, 12, 31), category_flags=0x01)
TERMINAL_ID = "310100001234"
FARE = 200  # 2.00 yuan; members pay 10% less


def write(stream: IO[bytes]) -> None:
    """Run the fare and write its trace to ``stream``."""
    writer = TextTraceWriter(stream)
    writer.comment("unioncard sample trace: text format, see docs/traces.md")
    writer.comment("Recorded from the terminal engine and the simulator (make_sample_trace.py);")
    writer.comment("test keys of docs/protocol.md §6 (transit purse, key version 01)")
    writer.comment("")
    writer.comment("Bus validator, route 42: a union member taps; 2.00 fare, 10% member benefit")
    at = [TRACE_START]

    def recorder(device: Device) -> object:
        def on_apdu(command: bytes, response: bytes | None) -> None:
            writer.write(TraceRecord.command(command, device, at[0]), command_name(command))
            at[0] += dt.timedelta(milliseconds=9)
            if response is not None:
                writer.write(TraceRecord.response(response, device, at[0]))
            at[0] += dt.timedelta(milliseconds=14)
        return on_apdu

    keys = Keystore.test()
    card = issue_member_card(MEMBER, keys, card_no=42, transit_balance=2000,
                             city_code="3101", random_source=20250318)
    psam = issue_psam(keys, TERMINAL_ID, terminal_seq=290, protocol="T=0", random_source=7)
    links = []
    for device, simulated in ((Device.CARD, card), (Device.PSAM, psam)):
        transport = InProcessTransport(simulated, on_apdu=recorder(device))  # type: ignore[arg-type]
        transport.power_on()
        links.append(Channel(transport))
    with TransactionJournal(":memory:") as journal:
        outcome = run(TransitPurchase(Mode.BUS, FARE, route="42", now=TAPPED),
                      card=links[0], psam=links[1], journal=journal)
    if outcome.decision.value != "approved":
        raise RuntimeError(f"the sample fare was not approved: {outcome.reason}")
    writer.flush()


def main() -> None:
    buffer = io.BytesIO()
    write(buffer)
    OUT.write_bytes(buffer.getvalue())
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
