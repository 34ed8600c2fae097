"""``unioncard demo``: the sample trace decoded, then a member card at work in the terminal engine.

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
"""

from __future__ import annotations

import datetime as dt
import tempfile
from importlib import resources
from pathlib import Path

import click

from unioncard.apdu.indexer import concat, iter_index_records
from unioncard.apdu.purse import bcd_datetime
from unioncard.apdu.trace_decode import describe, pair, render
from unioncard.apdu.trace_stats import TraceStats
from unioncard.apdu.trace_text import read_text
from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.commands.common import yuan
from unioncard.crypto import Keystore, derive_card_keys
from unioncard.crypto import purse as pc
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


@click.command(name="demo")
@click.option("--unmask", is_flag=True, help="Show the sample card's PAN in full.")
def group(unmask: bool) -> None:
    """Decode a sample trace, then run a member card through the terminal engine.

    The first part is ``unioncard trace decode`` on the sample file, followed by
    a summary from the bulk indexer.  The second issues a union member card and
    a PSAM in memory (published test keys) and runs, through the terminal
    engine, a bus fare, a highway entry and exit (composite purchases), a sale
    at a partner supermarket, a load, a union disbursement credited to the card
    and a card read, priced by the shipped member-benefit rules and journaled;
    the offline records are exported and every TAC is checked with the keys.
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
TOLL_TABLE = "data/toll-table-example.toml"
LOAD_TERMINAL = bytes.fromhex("000000000099")
DISBURSEMENTS = "会员编号,金额,事由\n20260001,5000,2026年互助金\n20260002,3000,困难补助\n"


def _tac_ok(record: OfflineRecord, keys: Keystore) -> bool:
    """The TAC checked with the issuer's TAC key, as settlement checks it (docs/protocol.md §2)."""
    dtk = derive_card_keys(keys.by_version(record.key_version), record.diversifier).tac
    date, time = bcd_datetime(record.when)
    if record.is_load:
        expected = pc.load_tac(dtk, record.balance_after, record.card_seq,
                               record.charged_amount, record.tx_type, record.terminal_id,
                               date, time)
    else:
        expected = pc.purchase_tac(dtk, record.charged_amount, record.tx_type,
                                   record.terminal_id, record.terminal_seq, date, time)
    return expected == record.tac


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
                             etc_balance=20000, plate="京A12345", random_source=1)
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
