"""``unioncard demo``: a sample trace decoded, a member card at work, then a day settled.

First the sample trace that ships with unioncard (``unioncard/data/sample_trace.txt``):
one bus fare paid with a union member card, recorded from the terminal engine
and the simulator: the member application, the T-Union purse with the member
card type in EF 0015, and an EP purchase with a T=0 PSAM (MAC1, MAC2, TAC).

Then the engine live: a member card and a PSAM are issued into the simulator
with the test keys, and the terminal engine runs a bus fare (10% off), a
highway trip (entry, then exit at 5% off through composite purchases), a sale at
a partner supermarket, a load, a union mutual-aid payment credited at a service
point and a card read, journaling every transaction in a SQLite journal, and
exports the offline records; each TAC is verified with the keystore as
settlement does.

Then a day (`_day`): cards issued for the sample member sheet
(``unioncard/data/sample-members.csv``, docs/issuance.md), a day of bus and metro
fares, highway trips, sales and loads on them at several terminals, each with its
PSAM, journaled and exported, the batches settled (docs/settlement.md) and the
clearing report shown.  Seeds and times are fixed: the output is the same every run.

``unioncard demo generate`` writes only batch files: a large generated day
(`unioncard.settlement.generate`) for benchmarks and trials.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import click

from unioncard.apdu.indexer import concat, iter_index_records
from unioncard.apdu.records import MemberCategory
from unioncard.apdu.trace_decode import describe, pair, render
from unioncard.apdu.trace_stats import TraceStats
from unioncard.apdu.trace_text import read_text
from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.commands.common import JSON_OPTION, progress_bar, yuan
from unioncard.crypto import Keystore, derive_card_keys
from unioncard.offline import Application, OfflineRecord, read_batch
from unioncard.tariffs import Mode
from unioncard.terminal import (
    CardRead,
    EtcEntry,
    EtcExit,
    KeystoreLoadHost,
    Load,
    Outcome,
    PosPurchase,
    TransactionJournal,
    TransitPurchase,
    parse_toll_table,
    run,
)
from unioncard.terminal.disbursements import credit_pending, read_disbursements
from unioncard.transport import Channel, InProcessTransport

__all__ = ["SAMPLE", "group"]

SAMPLE = "data/sample_trace.txt"


@click.group(name="demo", invoke_without_command=True)
@click.option("--unmask", is_flag=True, help="Show the sample card's PAN in full.")
@click.pass_context
def group(ctx: click.Context, unmask: bool) -> None:
    """Decode a sample trace, run a member card through the terminal engine, settle a day.

    The first part is ``unioncard trace decode`` on the sample file, followed by
    a summary from the bulk indexer.  The second issues a union member card and
    a PSAM in memory (published test keys) and runs, through the terminal
    engine, a bus fare, a highway entry and exit (composite purchases), a sale
    at a partner supermarket, a load, a union disbursement credited to the card
    and a card read, priced by the shipped member-benefit rules and journaled;
    the offline records are exported and every TAC is checked with the keys.
    The third is a day: cards issued for a sample member sheet, bus and metro
    fares, highway trips, sales and loads at several terminals, the batches
    exported and settled, and the clearing report.

    ``unioncard demo generate`` writes a large generated day of batch files instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    _sample(unmask)
    click.echo()
    _live()
    click.echo()
    _day()


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
TOLL_TABLE = "data/toll-table-example.toml"
LOAD_TERMINAL = bytes.fromhex("000000000099")
DISBURSEMENTS = "会员编号,金额,事由\n20260001,5000,2026年互助金\n20260002,3000,困难补助\n"


def _tac_ok(record: OfflineRecord, keys: Keystore) -> bool:
    """The TAC checked with the issuer's TAC key, as settlement checks it (docs/protocol.md §2)."""
    dtk = derive_card_keys(keys.by_version(record.key_version), record.diversifier).tac
    return record.computed_tac(dtk) == record.tac


def _report(what: str, outcome: Outcome, keys: Keystore) -> None:
    if outcome.decision.value != "approved":
        click.echo(f"  {what}: {outcome.decision.value}: {outcome.reason}")
        return
    record = outcome.record
    assert record is not None
    rules = f" ({outcome.reason})" if outcome.rules else ""
    if outcome.list_amount != outcome.charged_amount or outcome.rules:
        click.echo(f"  {what}: list {yuan(outcome.list_amount)}, charged "
                   f"{yuan(outcome.charged_amount)}{rules}")
    else:
        click.echo(f"  {what}: {outcome.reason}")
    verified = "verified" if _tac_ok(record, keys) else "DOES NOT VERIFY"
    click.echo(f"    purse {yuan(outcome.balance_before)} -> {yuan(outcome.balance_after)}; "
               f"terminal seq {record.terminal_seq}, TAC {record.tac.hex().upper()} {verified}")


def _live() -> None:
    keys = Keystore.test()
    click.echo("Live: a union member card and a PSAM in the simulator (published TEST keys), "
               "through the terminal engine")
    card = issue_member_card(DEMO_MEMBER, keys, card_no=1, transit_balance=5000,
                             etc_balance=20000, plate="京A12345", ec_balance=50_000,
                             random_source=1)
    psam = issue_psam(keys, "000000000001", random_source=2, protocol="T=0")
    links = []
    for device in (card, psam):
        transport = InProcessTransport(device)
        transport.power_on()
        links.append(Channel(transport))
    card_link, psam_link = links
    tolls = parse_toll_table(resources.files("unioncard").joinpath(TOLL_TABLE)
                             .read_text(encoding="utf-8"), TOLL_TABLE)
    with tempfile.TemporaryDirectory(prefix="unioncard-demo-") as tmp, \
            TransactionJournal(Path(tmp) / "journal.sqlite") as journal:
        def tap(session_type: type, *args: object, minutes: int = 0, **options: object) -> Outcome:
            session = session_type(*args, now=DEMO_TIME + dt.timedelta(minutes=minutes),
                                   pending=journal.pending(), **options)
            return run(session, card=card_link, psam=psam_link, journal=journal,
                       host=KeystoreLoadHost(keys))

        fare = tap(TransitPurchase, Mode.BUS, 200, route="K1")
        member = fare.details.get("member", {})
        click.echo(f"  member {member.get('member_no')} ({member.get('organization')}), "
                   f"T-Union purse card type {fare.details['card']['card_type']} "
                   "(union member)")
        _report("bus fare, route K1", fare, keys)
        entry = tap(EtcEntry, network=tolls.network, station=0x0203, lane=2, vehicle_class=1,
                    minutes=20)
        _report("highway entry, station 0203", entry, keys)
        exit_ = tap(EtcExit, network=tolls.network, station=0x0007, lane=3, tolls=tolls,
                    minutes=95)
        _report("highway exit, station 0007 (toll table: 0203 -> 0007, class 1)", exit_, keys)
        sale = tap(PosPurchase, 3000, merchant="SUPERMARKET-0042", mcc=5411, minutes=110)
        _report("supermarket, 30.00 yuan (MCC 5411)", sale, keys)
        if sale.details.get("deferred_to_settlement"):
            click.echo(f"    rebate left to settlement: "
                       f"{', '.join(sale.details['deferred_to_settlement'])}")
        load = tap(Load, Application.TRANSIT, 2000, terminal_id=LOAD_TERMINAL, minutes=120)
        _report("load onto the transit purse", load, keys)
        sheet = read_disbursements(DISBURSEMENTS.encode("gbk"))
        journal.import_disbursements(sheet.items, source="disbursements.csv",
                                     now=DEMO_TIME + dt.timedelta(minutes=125))
        visit = credit_pending(card_link, journal=journal, host=KeystoreLoadHost(keys),
                               terminal_id=LOAD_TERMINAL,
                               now=DEMO_TIME + dt.timedelta(minutes=130))
        for payment, outcome in visit.loads:
            _report(f"union payment '{payment.reason}' ({sheet.encoding} sheet)", outcome, keys)
        waiting = journal.disbursement_counts()["pending"]
        click.echo(f"    {waiting['count']} payment of another member waits for that member's "
                   "card")
        _emv_sales(card_link, keys)
        read = run(CardRead(), card=card_link)
        etc = next(p for p in read.details["purses"] if p["application"] == "etc")
        toll = etc["toll_record"]
        click.echo(f"  card read: transit {yuan(read.details['balances']['transit'])}, ETC "
                   f"{yuan(read.details['balances']['etc'])}; EF 0019 record 1: ETC exit, "
                   f"station {toll['station']}, lane {toll['lane']}, plate {toll['plate']}")
        counts = journal.counts()
        batches = journal.export(Path(tmp) / "batches", now=DEMO_TIME + dt.timedelta(hours=12))
        exported = [r for b in batches for r in read_batch(b.path).records]
        good = sum(_tac_ok(r, keys) for r in exported)
        click.echo(f"  journal: {counts['completed']} completed, {counts['pending']} pending; "
                   f"exported {len(exported)} offline records in {len(batches)} batch files, "
                   f"{good} of {len(exported)} TACs verified")


def _emv_sales(card: Channel, keys: Keystore) -> None:
    """Two sales on the card's PBOC debit application through the EMV kernel: contactless
    electronic cash at the partner shop (member discount, fDDA), and a contact sale with
    PIN authorized online by the simulated issuer host (CDA, ARQC and ARPC)."""
    from unioncard.terminal.emv import CapkStore, EmvPurchase
    from unioncard.terminal.issuer_host import SimulatedIssuer

    capks = CapkStore([keys.ca_rsa(bytes.fromhex("A000000333"), 0xF1).capk])
    host = SimulatedIssuer.from_keystore(keys)
    sales = ((15_000, "contactless qPBOC at the partner shop",
              dict(contactless=True, merchant="EXAMPLE-PARTNER-0001")),
             (150_000, "contact with PIN", dict(pins=["123456"])))
    click.echo("  PBOC debit application, EMV kernel (test CA A000000333 F1, simulated issuer):")
    for n, (amount, what, options) in enumerate(sales):
        session = EmvPurchase(amount, now=DEMO_TIME + dt.timedelta(minutes=115 + n),
                              unpredictable_number=bytes([0x5A, 0, 0, n]), capks=capks,
                              **options)  # type: ignore[arg-type]
        sale = run(session, card=card, host=host)
        d = sale.details
        charged = f", charged {yuan(sale.charged_amount)}" if (
            sale.charged_amount != sale.list_amount) else ""
        ec = f"; EC balance now {yuan(d['ec_balance'])}" if "ec_balance" in d else ""
        click.echo(f"    {what}, {yuan(amount)}: {sale.decision.value} ({d['path']}){charged}; "
                   f"ODA {d['oda']}, TVR {d['tvr']}, TSI {d['tsi']}, cryptogram {d['ac']}{ec}")


# --- a day: cards issued from a member sheet, transactions, export, settlement ----------------

DAY = dt.date(2026, 5, 1)
DAY_SEED = 20260501
MEMBER_SHEET = "data/sample-members.csv"
DAY_TERMINALS = {
    # name: (terminal id, what it is)
    "bus-1": ("310100000001", "bus route 1 validator"),
    "bus-42": ("310100000042", "bus route 42 validator"),
    "metro-0105": ("310200000105", "metro gate, station 0105"),
    "metro-0112": ("310200000112", "metro gate, station 0112"),
    "toll-0203": ("110100000203", "toll station 0203"),
    "toll-0007": ("110100000007", "toll station 0007"),
    "toll-0011": ("110100000011", "toll station 0011"),
    "supermarket": ("580000000042", "supermarket POS"),
    "canteen": ("580000000007", "canteen POS"),
    "partner": ("580000000001", "partner shop POS"),
}
SERVICE_POINT = bytes.fromhex("000000000088")
"""The union service point where members load their cards (no PSAM: the load host)."""
DAY_OPERATORS = {
    "3101": "City Bus Co.", "3102": "Metro Co.", "1101": "Expressway Co.",
    "580000000042": "Supermarket 0042", "580000000007": "Canteen 7",
    "580000000001": "Partner shop 0001", "000000000088": "Union service point",
}
"""Operators by terminal id prefix, as ``unioncard settle --operators`` takes them."""
MERCHANTS = {"supermarket": ("SUPERMARKET-0042", 5411), "canteen": ("CANTEEN-7", 5812),
             "partner": ("EXAMPLE-PARTNER-0001", 5311)}
FLOW_WORDS = {"bus": "bus fares", "metro": "metro fares", "etc-entry": "highway entries",
              "etc-exit": "highway exits", "pos": "sales", "load": "loads"}
MODE_ORDER = ("bus", "metro", "coach", "ferry", "taxi", "etc", "pos")
DAY_TRANSIT_BALANCE, DAY_ETC_BALANCE = 10_000, 50_000
"""The purses' balances at issuance, in fen."""


@dataclass(frozen=True, slots=True)
class _Event:
    """One transaction of the day: ``member`` (index in the sheet) at ``terminal``."""

    when: dt.datetime
    member: int
    flow: str  # a key of FLOW_WORDS
    terminal: str  # a key of DAY_TERMINALS ("" for loads at the service point)
    amount: int = 0
    station: int = 0


def _at(minutes: int, rng: random.Random) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time()) + dt.timedelta(minutes=minutes,
                                                             seconds=rng.randrange(60))


def _plan_day(members: int, rng: random.Random) -> list[_Event]:
    """The day's transactions, in time order: commutes by bus, metro or car (highway
    trips), canteen lunches, evening shopping (supermarket, the partner shop), and loads at
    the service point for members whose day would empty their transit purse."""
    events: list[_Event] = []
    for m in range(members):
        plan: list[_Event] = []
        morning, evening = 7 * 60 + rng.randrange(90), 17 * 60 + 30 + rng.randrange(90)
        if m % 4 == 3:  # drives to work: a highway trip each way
            there = ("toll-0011", 0x0011) if m == 11 else ("toll-0203", 0x0203)
            for start, (entry, exit_) in ((morning, (there, ("toll-0007", 0x0007))),
                                          (evening, (("toll-0007", 0x0007), there))):
                plan.append(_Event(_at(start, rng), m, "etc-entry", entry[0],
                                   station=entry[1]))
                plan.append(_Event(_at(start + 45 + rng.randrange(40), rng), m, "etc-exit",
                                   exit_[0], station=exit_[1]))
        else:
            route = ("bus-1", "bus-42", "metro-0105")[m % 3]
            for start in (morning, evening):
                if route.startswith("bus"):
                    plan.append(_Event(_at(start, rng), m, "bus", route, rng.choice((200, 200,
                                                                                   300))))
                if route.startswith("metro") or m % 4 == 0:  # metro, or a transfer to it
                    gate = ("metro-0105", 0x0105) if start == morning else ("metro-0112", 0x0112)
                    plan.append(_Event(_at(start + 30, rng), m, "metro", gate[0],
                                       rng.choice((300, 400, 500)), gate[1]))
        if m % 2 == 0:
            plan.append(_Event(_at(11 * 60 + 45 + rng.randrange(60), rng), m, "pos", "canteen",
                               rng.choice((1200, 1500, 1800, 2200))))
        if rng.random() < 0.6:
            plan.append(_Event(_at(19 * 60 + 30 + rng.randrange(120), rng), m, "pos",
                               "supermarket", rng.choice((3580, 6420, 8850, 12800, 16800))))
        if m in (2, 9):
            plan.append(_Event(_at(19 * 60 + rng.randrange(60), rng), m, "pos", "partner",
                               (12880, 25600)[m == 9]))
        spend = sum(e.amount for e in plan if e.flow in ("bus", "metro", "pos"))
        if spend > DAY_TRANSIT_BALANCE - 2000:  # tops the purse up at lunchtime
            need = spend - DAY_TRANSIT_BALANCE + 4000
            plan.append(_Event(_at(12 * 60 + 30 + rng.randrange(60), rng), m, "load", "",
                               -(-need // 10000) * 10000))
        events += plan
    return sorted(events, key=lambda e: (e.when, e.member))


def _issue_day_cards(keys: Keystore, out: Path) -> tuple[Any, list[Any]]:
    """The sample sheet read and issued as ``card issue`` does (docs/issuance.md); the sheet
    and the issued cards, in sheet order."""
    from unioncard.applet_sim.issuance import IssueOptions, issue_sheet
    from unioncard.applet_sim.member_sheet import read_sheet

    raw = resources.files("unioncard").joinpath(MEMBER_SHEET).read_bytes()
    sheet = read_sheet(raw, today=DAY)
    options = IssueOptions(dt.date(2026, 1, 1), dt.date(2030, 12, 31),
                           transit_balance=DAY_TRANSIT_BALANCE, etc_balance=DAY_ETC_BALANCE,
                           first_card_no=101)
    report = issue_sheet(sheet, keys, out, options)
    if report.refused or sheet.errors:
        raise click.ClickException(f"{MEMBER_SHEET}: refused rows: {report.refused}")
    return sheet, report.issued


def _powered(device: Any) -> Channel:
    transport = InProcessTransport(device)
    transport.power_on()
    return Channel(transport)


def _day() -> None:
    from unioncard.applet_sim import SimulatedCard
    from unioncard.settlement import RunInputs, settle

    keys = Keystore.test()
    tolls = parse_toll_table(resources.files("unioncard").joinpath(TOLL_TABLE)
                             .read_text(encoding="utf-8"), TOLL_TABLE)
    click.echo(f"A day, {DAY}: the sample member sheet, {len(DAY_TERMINALS)} terminals and a "
               "service point (published TEST keys)")
    with tempfile.TemporaryDirectory(prefix="unioncard-day-") as tmp:
        root = Path(tmp)
        sheet, issued = _issue_day_cards(keys, root / "cards")
        cards = [_powered(SimulatedCard.load(card.path, random_source=DAY_SEED + i))
                 for i, card in enumerate(issued)]
        psams = {name: _powered(issue_psam(keys, tid, random_source=DAY_SEED + 100 + i))
                 for i, (name, (tid, _)) in enumerate(DAY_TERMINALS.items())}
        categories = Counter(c for m in sheet.members for c in MemberCategory
                             if m.category_flags & c)
        click.echo(f"  issued {len(issued)} member cards from {Path(MEMBER_SHEET).name} "
                   f"({sheet.encoding}), {len({m.organization for m in sheet.members})} union "
                   "organizations")
        click.echo("    categories: " + ", ".join(
                       f"{categories[c]} {str(c.name).lower().replace('_', ' ')}"
                       for c in MemberCategory))
        events = _plan_day(len(issued), random.Random(DAY_SEED))
        with TransactionJournal(root / "journal.sqlite") as journal:
            outcomes = [_run_event(e, cards[e.member], psams.get(e.terminal), journal, keys,
                                   tolls) for e in events]
            approved = Counter(o.flow for o in outcomes if o.decision.value == "approved")
            declined = [o for o in outcomes if o.decision.value != "approved"]
            click.echo(f"  terminal engine: {len(outcomes)} transactions, "
                       f"{sum(approved.values())} approved, {len(declined)} declined")
            click.echo("    " + ", ".join(f"{approved[flow]} {word}"
                                          for flow, word in FLOW_WORDS.items() if approved[flow]))
            for outcome in declined:
                click.echo(f"    declined {outcome.flow}: {outcome.reason}")
            counts = journal.counts()
            batches = journal.export(root / "batches",
                                     now=dt.datetime.combine(DAY, dt.time(23, 30)))
        click.echo(f"  journal: {counts['completed']} completed, {counts['pending']} pending; "
                   f"exported {sum(b.count for b in batches)} offline records in {len(batches)} "
                   "batch files")
        report = settle([b.path for b in batches], ledger_path=root / "ledger.sqlite",
                        inputs=RunInputs(keys, operators=DAY_OPERATORS), out=root / "report")
    _clearing(report.summary(), report.lines)


def _run_event(event: _Event, card: Channel, psam: Channel | None,
               journal: TransactionJournal, keys: Keystore, tolls: Any) -> Outcome:
    """Run one transaction of the day through the terminal engine."""
    options: dict[str, Any] = {"now": event.when, "pending": journal.pending()}
    session: Any
    if event.flow in ("bus", "metro"):
        mode = Mode.BUS if event.flow == "bus" else Mode.METRO
        route = event.terminal.split("-")[1] if event.flow == "bus" else "M1"
        session = TransitPurchase(mode, event.amount, route=route, station=event.station,
                                  **options)
    elif event.flow == "etc-entry":
        session = EtcEntry(network=tolls.network, station=event.station, lane=2,
                           vehicle_class=1, **options)
    elif event.flow == "etc-exit":
        session = EtcExit(network=tolls.network, station=event.station, lane=3, tolls=tolls,
                          **options)
    elif event.flow == "pos":
        merchant, mcc = MERCHANTS[event.terminal]
        session = PosPurchase(event.amount, merchant=merchant, mcc=mcc, **options)
    else:
        session = Load(Application.TRANSIT, event.amount, terminal_id=SERVICE_POINT, **options)
    return run(session, card=card, psam=psam, journal=journal, host=KeystoreLoadHost(keys))


def _clearing(summary: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    """The clearing report as the settlement's ledger gives it: counts, then the sales per
    mode and operator (docs/settlement.md, "Clearing")."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from unioncard.commands.settle import REASON_WORDS

    rejected = summary["rejected"]
    states = ", ".join(f"{n} {state.replace('_', ' ')}"
                       for state, n in summary["batches"].items())
    click.echo(f"  settlement: batch files {states}; accepted {summary['accepted']} records, "
               f"rejected {sum(rejected.values())}")
    for reason, count in rejected.items():
        click.echo(f"    rejected {count}: {REASON_WORDS.get(reason, reason)}")
    amounts = ("count", "list_amount", "charged_amount", "discount", "rebate")
    rows: dict[tuple[str, str], list[int]] = {}
    for line in lines:
        if line["kind"] == "sale":
            row = rows.setdefault((line["mode"], line["operator"]), [0] * len(amounts))
            for i, key in enumerate(amounts):
                row[i] += line[key]
    sales, loads = summary["totals"]["sales"], summary["totals"]["loads"]
    table = Table(box=box.SIMPLE, show_edge=False, show_footer=True, pad_edge=False)
    table.add_column("mode", "total")
    table.add_column("operator")
    for key, name in zip(amounts, ("sales", "list", "charged", "discount", "rebate"),
                         strict=True):
        table.add_column(name, _amount(key, sales[key]), justify="right")
    order = {mode: i for i, mode in enumerate(MODE_ORDER)}
    for (mode, operator), row in sorted(rows.items(),
                                        key=lambda kv: (order.get(kv[0][0], 99), kv[0])):
        table.add_row(mode, operator, *(_amount(k, v) for k, v in zip(amounts, row,
                                                                     strict=True)))
    console = Console(file=io.StringIO(), width=100, color_system=None, highlight=False)
    console.print(table)
    click.echo("  clearing report, sales in yuan (highway entries are etc sales of 0.00):")
    for text in console.file.getvalue().splitlines():  # type: ignore[attr-defined]
        click.echo(f"    {text}".rstrip())
    click.echo(f"  the union owes the operators {yuan(sales['discount'])} of member discounts, "
               f"the members {yuan(sales['rebate'])} of rebates")
    where = sorted({line["operator"] for line in lines if line["kind"] == "load"})
    click.echo(f"  loads: {loads['count']}, {yuan(loads['amount'])} paid in by the members at "
               f"{', '.join(where) or '-'} (not sales)")


def _amount(key: str, value: int) -> str:
    return str(value) if key == "count" else f"{value // 100}.{value % 100:02d}"


# --- demo generate: a large day of batch files ------------------------------------------------

BATCH_RECORDS_MAX = 8_000_000
"""A batch file of this many records stays under settlement's 2 GiB limit."""


@group.command("generate")
@click.option("--records", type=click.IntRange(1), required=True,
              help="How many records the day holds.")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the batch files (created; refused when not empty).")
@click.option("--force", is_flag=True,
              help="Write into a directory that is not empty; its batch files (*.ucb) are "
                   "removed first, so it holds this day only.")
@click.option("--seed", type=int, default=None,
              help="Random seed; the same seed gives the same files. Default: the day's "
                   "date as a number (20260501 for the first day).")
@click.option("--batch-records", type=click.IntRange(1, BATCH_RECORDS_MAX), default=None,
              help="Records per batch file at most (default 20000); each terminal's records "
                   "fill its files in turn.")
@click.option("--cards", type=click.IntRange(1, 1_000_000_000), default=None,
              help="Cards the records are spread over (default: one card for every 20 "
                   "records, at least 10; after earlier days, the cards their records "
                   "number: the highest card number seen, plus one); a day of more "
                   "records over the same cards is the same city on a busier day.")
@click.option("--after", "after_dirs", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The directory of a generated day this day follows (repeat it for every "
                   "earlier day: a card that did not tap the day before goes on from the "
                   "day it last did): the next date, the same cards, the terminals numbered as "
                   "before (those seen go on from there), every "
                   "card's and terminal's seqs, balances and batch ids going on, so it "
                   "settles after those days with nothing replayed.")
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False),
              help="Keystore whose TAC master keys sign the records (docs/keystore.md). "
                   "Default: the published test keys (said on stderr).")
@JSON_OPTION
def generate(records: int, out_dir: Path, force: bool, seed: int | None,
             batch_records: int | None, cards: int | None, after_dirs: tuple[Path, ...],
             keys_file: str | None, as_json: bool) -> None:
    """Write a generated day of offline record batches (docs/records.md) into OUT.

    Several city unions (issuers), bus, metro and toll operators, partner merchants,
    members of every category; fares priced by the shipped rules and real TACs, so every
    record settles as accepted with the same keys (``unioncard settle OUT``).  Only batch
    files are written.
    """
    from unioncard.settlement.generate import DayPlan, day_before, generate_day

    if out_dir.exists() and not out_dir.is_dir():
        raise click.UsageError(f"--out {out_dir}: not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise click.UsageError(f"--out {out_dir}: the directory is not empty (--force "
                               "writes into it, replacing its batch files)")
    if out_dir.is_dir() and any(out_dir.samefile(after) for after in after_dirs):
        raise click.UsageError("--out and --after are the same directory: the next day "
                               "goes into a directory of its own")
    before = None
    if after_dirs:
        try:
            before = day_before([path for after in after_dirs
                                 for path in sorted(after.glob("*.ucb"))])
        except ValueError as exc:
            raise click.UsageError(f"--after {' '.join(map(str, after_dirs))}: {exc}"
                                   ) from None
    if out_dir.is_dir() and force:
        for stale in out_dir.glob("*.ucb"):
            stale.unlink()
    keys = Keystore.load(keys_file) if keys_file else Keystore.test()
    if keys.test_keys:
        click.echo("WARNING: signing with the PUBLISHED TEST KEYS; for testing only.", err=True)
    given: dict[str, int] = {}
    if seed is not None:
        given["seed"] = seed
    if batch_records is not None:
        given["batch_records"] = batch_records
    if cards is not None:
        given["cards"] = cards
    plan = DayPlan(records, **given).resolved(before)  # type: ignore[arg-type]
    with ExitStack() as stack:
        advance = (progress_bar(stack, records, "writing batch files")
                   if not as_json and sys.stderr.isatty() else None)
        try:
            paths = generate_day(out_dir, plan, keys, after=before, progress=advance)
        except ValueError as exc:  # a keystore without the generated issuers' keys
            raise click.ClickException(str(exc)) from None
    totals = _day_totals(paths)
    document = {"out": str(out_dir), "files": len(paths), "records": records,
                "day": plan.day.isoformat(), "cards": plan.cards, "seed": plan.seed,
                "test_keys": keys.test_keys,
                "totals": totals}
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
        return
    sales, loads = totals["sales"], totals["loads"]
    click.echo(f"wrote {records:,} records of {plan.day} over {plan.cards:,} cards in "
               f"{len(paths)} batch files into {out_dir} (seed {plan.seed})")
    click.echo(f"  sales {sales['count']:>12,}  list {yuan(sales['list_amount'])}, charged "
               f"{yuan(sales['charged_amount'])}")
    click.echo(f"  loads {loads['count']:>12,}  amount {yuan(loads['amount'])}")


def _day_totals(paths: Sequence[Path]) -> dict[str, Any]:
    """Sales and loads of the files written (read back: they are what settlement reads)."""
    import numpy as np

    from unioncard.offline.batch import HEADER_SIZE, TRAILER_SIZE
    from unioncard.settlement.columns import RECORD_DTYPE

    sales = {"count": 0, "list_amount": 0, "charged_amount": 0}
    loads = {"count": 0, "amount": 0}
    for path in paths:
        count = (path.stat().st_size - HEADER_SIZE - TRAILER_SIZE) // RECORD_DTYPE.itemsize
        r = np.memmap(path, RECORD_DTYPE, "r", HEADER_SIZE, (count,))
        load = r["tx_type"] == 0x02
        sales["count"] += int(count - load.sum())
        sales["list_amount"] += int(r["list_amount"][~load].sum(dtype=np.int64))
        sales["charged_amount"] += int(r["charged_amount"][~load].sum(dtype=np.int64))
        loads["count"] += int(load.sum())
        loads["amount"] += int(r["charged_amount"][load].sum(dtype=np.int64))
        del r
    return {"sales": sales, "loads": loads}
