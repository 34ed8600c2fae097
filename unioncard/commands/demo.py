"""``unioncard demo``: the sample trace decoded, then a member card at work.

First the sample trace that ships with unioncard (``unioncard/data/sample_trace.txt``):
one bus fare paid with a union member card: PPSE and UnionPay selection, GPO,
records with the PAN (masked), the T-Union purse with the member card type in
EF 0015, and an EP purchase with the PSAM (MAC1, MAC2, TAC computed with the
project's test keys).

Then the same kind of transactions live: a member card and a PSAM are issued
into the simulator with the test keys, the shipped tariff rules price a bus
fare (10% off) and a highway toll (5% off), and the purse commands run against
the simulated card, the PSAM verifying MAC2 and the TAC checked with the keys.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources

import click

from unioncard.apdu import records
from unioncard.apdu.indexer import concat, iter_index_records
from unioncard.apdu.trace_decode import describe, pair, render
from unioncard.apdu.trace_stats import TraceStats
from unioncard.apdu.trace_text import read_text
from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.applet_sim.scenarios import PurseTerminal, capp_entry_record
from unioncard.crypto import Keystore
from unioncard.tariffs import Mode, QuoteContext, quote

__all__ = ["SAMPLE", "group"]

SAMPLE = "data/sample_trace.txt"


@click.command(name="demo")
@click.option("--unmask", is_flag=True, help="Show the sample card's PAN in full.")
def group(unmask: bool) -> None:
    """Decode a sample trace, then pay a bus fare and a toll with a simulated member card.

    The first part is ``unioncard trace decode`` on the sample file, followed by
    a summary from the bulk indexer.  The second issues a union member card and
    a PSAM in memory (published test keys), prices a bus fare and a highway toll
    with the shipped member-benefit rules, and runs the purse purchase and the
    composite (CAPP) toll purchase against the simulated card.
    """
    _sample(unmask)
    click.echo()
    _live()


def _sample(unmask: bool) -> None:
    sample = resources.files("unioncard").joinpath(SAMPLE)
    click.echo(f"Sample trace: {sample}\n")
    with sample.open("rb") as stream:
        for exchange in pair(read_text(stream)):
            for line in render(describe(exchange, unmask)):
                click.echo(line)
            click.echo()
    with sample.open("rb") as stream:
        stats = TraceStats(offsets=False)
        stats.add(concat(iter_index_records(read_text(stream))))
    doc = stats.summary()
    ex = doc["exchanges"]["by_device"]
    click.echo(f"{doc['frames']['total']} frames, {doc['exchanges']['total']} exchanges "
               f"(card {ex['card']['exchanges']}, PSAM {ex['psam']['exchanges']}); "
               f"{doc['tlv']['objects']} TLV objects in {doc['tlv']['responses_tlv']} responses, "
               f"{doc['tlv']['responses_raw_data']} purse/raw responses")


DEMO_TIME = dt.datetime(2026, 5, 1, 8, 30)
DEMO_MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                         dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x02)


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d} yuan"


def _pay(terminal: PurseTerminal, what: str, context: QuoteContext,
         capp_record: bytes | None = None) -> None:
    """Quote, then purchase the charged amount; MAC2 and TAC are checked by `PurseTerminal`."""
    priced = quote(context)
    before = terminal.balance()
    purchase = terminal.purchase(priced.charged_amount, capp_record=capp_record)
    after = terminal.balance()
    click.echo(f"  {what}: list {_yuan(priced.list_amount)}, charged "
               f"{_yuan(priced.charged_amount)} ({priced.reason})")
    click.echo(f"    purse {_yuan(before)} -> {_yuan(after)}; terminal seq "
               f"{purchase.terminal_seq}, MAC2 verified by the PSAM, TAC "
               f"{purchase.tac.hex().upper()} verified")


def _live() -> None:
    keys = Keystore.test()
    click.echo("Live: a union member card in the simulator (published TEST keys)")
    card = issue_member_card(DEMO_MEMBER, keys, card_no=1, transit_balance=5000,
                             etc_balance=20000, plate="京A12345", random_source=1)
    psam = issue_psam(keys, "000000000001", random_source=2)
    card.power_on()
    psam.power_on()
    terminal = PurseTerminal(card.transmit, psam.transmit, keys, when=DEMO_TIME)
    transit = records.parse(records.TRANSIT_INFO, terminal.select("transit"))
    kind = ("union member" if transit.card_type == records.CardType.UNION_MEMBER
            else "not a member card")
    click.echo(f"  member {DEMO_MEMBER.member_no} {DEMO_MEMBER.name}, T-Union purse card type "
               f"{transit.card_type:02X} ({kind})")
    _pay(terminal, "bus fare", QuoteContext(
        mode=Mode.BUS, amount=200, card_type=transit.card_type, at=DEMO_TIME, route="K1",
        member_categories=transit.category_flags))
    etc = records.parse(records.ETC_INFO, terminal.select("etc"))
    exit_record = capp_entry_record(network=0x1101, station=0x0007, lane=3, when=DEMO_TIME,
                                    vehicle_class=1, status=0x04, plate=etc.plate)
    _pay(terminal, "highway toll (CAPP)", QuoteContext(
        mode=Mode.ETC, amount=10000, card_type=etc.user_type, at=DEMO_TIME, vehicle_class=1),
        capp_record=exit_record)
    written = terminal.card.expect("00B201CC2B", length=43)
    record = records.parse(records.CAPP_RECORD, written)
    click.echo(f"    EF 0019 record 1 read back: ETC exit, station {record.station.hex()}, "
               f"lane {record.lane}, plate {record.plate}")
