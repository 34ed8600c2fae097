"""Settlement of real taps on a card and a PSAM that are not the project's simulator.

The terminal engine runs bus and metro fares, an ETC entry and exit, sales at partner
merchants, a fare completed by recovery after the card left the field, and loads onto
both purses, on `protocol_card`'s ProtocolCard and ProtocolPsam (written from
docs/protocol.md alone, in process), journaling on disk; the journal exports its batch
files; one record is forged (a TAC bit flipped, its CRC and the file CRC recomputed).
Settled with the published test keys, every record is accepted but the forged one, the
totals are the journal's to the fen, the rebates the capped subsidy owes are the
member's, and settling the same files again changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import protocol_card
import pytest
from batch_files import dump

from unioncard.crypto import Keystore
from unioncard.offline import Application, OfflineRecord, RecordFlags
from unioncard.settlement import RunInputs, settle
from unioncard.settlement.columns import decode_batch, record_crcs
from unioncard.tariffs import Mode
from unioncard.terminal import (
    CardRead,
    Decision,
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
from unioncard.terminal.purchase import MAC_REFUSAL_MEMORY
from unioncard.transport import Channel, InProcessTransport

KEYS = Keystore.test()
CITY_ONLY = Keystore.from_toml(  # the test keys for one issuer, not the protocol card's
    KEYS.to_toml().replace('key_version = 0x01\n', 'key_version = 0x01\nissuer = '
                           '"10000000FFFFFFFF"\n').replace(
        'key_version = 0x02\n', 'key_version = 0x02\nissuer = "10000000FFFFFFFF"\n'))
TOLLS = parse_toll_table('network = "1101"\n[[toll]]\nentry = "0203"\nexit = "0007"\n'
                         'fen = { 1 = 10000, 2 = 15000 }\n')
LOAD_POINT = bytes.fromhex("0000000000AA")
PSAM_TERMINAL = "000000000002"
START = dt.datetime(2026, 5, 1, 7, 0)


@dataclass
class Terminal:
    """A PSAM, a journal on disk and a clock; cards are presented to it one at a time."""

    psam: Channel
    journal: TransactionJournal
    when: dt.datetime = START
    outcomes: list[Outcome] = field(default_factory=list)

    def tap(self, card: Channel, make: Callable[..., Any], *args: Any, **options: Any
            ) -> Outcome:
        self.when += dt.timedelta(minutes=7)
        session = make(*args, now=self.when, pending=self.journal.pending(),
                       mac_refusals=self.journal.mac_refusals(self.when - MAC_REFUSAL_MEMORY),
                       **options)
        outcome = run(session, card=card, psam=self.psam, journal=self.journal,
                      host=KeystoreLoadHost(KEYS))
        self.outcomes.append(outcome)
        return outcome


def powered(device: Any) -> tuple[Channel, InProcessTransport]:
    transport = InProcessTransport(device)
    transport.power_on()
    return Channel(transport), transport


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A member card and an ordinary card tapped through a day; the journal's batch files,
    one record in them forged; the journal's completed records."""
    root = tmp_path_factory.mktemp("taps")
    member = protocol_card.ProtocolCard(transit_balance=50000, etc_balance=20000,
                                        protocol="T=0", seed=3)
    ordinary = protocol_card.ProtocolCard(
        card_type=0x01, transit_balance=3000, etc=False, seed=4,
        app_serial="31000000000020269999")
    psam, _ = powered(protocol_card.ProtocolPsam(
        terminal_id=PSAM_TERMINAL, purchase_keys=KEYS.purchase_master_keys()))
    member_link, _ = powered(member)
    ordinary_link, ordinary_transport = powered(ordinary)
    with TransactionJournal(root / "journal.sqlite") as journal:
        lane = Terminal(psam, journal)
        lane.tap(member_link, TransitPurchase, Mode.BUS, 200, route="42")
        lane.tap(member_link, TransitPurchase, Mode.METRO, 400, route="M1", station=0x0105)
        lane.tap(member_link, EtcEntry, network=0x1101, station=0x0203, vehicle_class=1)
        lane.tap(member_link, EtcExit, network=0x1101, station=0x0007, tolls=TOLLS)
        lane.tap(member_link, PosPurchase, 12000, merchant="EXAMPLE-PARTNER-0001", mcc=5411)
        lane.tap(member_link, PosPurchase, 10000, merchant="CANTEEN-7", mcc=5812)
        lane.tap(member_link, Load, Application.TRANSIT, 3000, terminal_id=LOAD_POINT)
        lane.tap(member_link, Load, Application.ETC, 2000, terminal_id=LOAD_POINT)
        lane.tap(ordinary_link, TransitPurchase, Mode.BUS, 200, route="42")
        ordinary.pull_at(0x54, when="after")  # DEBIT done, its answer lost
        torn = lane.tap(ordinary_link, TransitPurchase, Mode.BUS, 200, route="42")
        ordinary_transport.power_on()  # presented again: completed by recovery
        recovered = lane.tap(ordinary_link, TransitPurchase, Mode.BUS, 200, route="42")
        assert torn.decision is Decision.INTERRUPTED, torn.reason
        assert recovered.recovered and recovered.record is not None
        assert recovered.record.flags == RecordFlags.RECOVERED  # with the proof's TAC
        assert [o.decision for o in lane.outcomes].count(Decision.APPROVED) == 10, [
            o.reason for o in lane.outcomes]
        issuers = {p["application"]: p["issuer"] for p in run(
            CardRead(), card=member_link).details["purses"]}
        exported = journal.export(root / "batches", now=lane.when + dt.timedelta(hours=1))
        records = [e.record for e in journal.entries(state="completed", newest_first=False)]
    assert {e.terminal_id.hex().upper() for e in exported} == {PSAM_TERMINAL, "0000000000AA"}
    paths = [e.path for e in exported]
    purchases = next(p for p in paths if p.name.startswith(PSAM_TERMINAL))
    forged = forge(purchases, row=1)  # the metro fare
    return {"paths": paths, "records": records, "forged": forged, "issuers": issuers,
            "root": root}


def forge(path: Path, *, row: int) -> OfflineRecord:
    """Flip a bit of record ``row``'s TAC, recompute its CRC and the file's: a well-formed
    file whose record only the TAC check can catch.  The record as it was."""
    data = bytearray(path.read_bytes())
    at = 32 + 256 * row
    original = OfflineRecord.from_bytes(bytes(data[at:at + 256]))
    data[at + 170] ^= 0x01
    raw = np.frombuffer(bytes(data[at:at + 256]), np.uint8).reshape(1, 256)
    data[at + 252:at + 256] = int(record_crcs(raw)[0]).to_bytes(4, "big")
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    assert decode_batch(bytes(data)).count == 8  # still a well-formed file
    return original


def inputs(keys: Keystore = KEYS) -> RunInputs:
    return RunInputs(keys)


def test_the_protocol_cards_issuers_are_covered_by_the_test_keys(day):
    """The records carry the issuer ids of the card's EF 0015 (not the generated day's), and
    the published test keys are entries for any issuer."""
    assert day["issuers"] == {"transit": "0200310000000000", "etc": "B1B1BEA911010001"}
    assert {r.issuer.hex().upper() for r in day["records"]} == set(day["issuers"].values())
    assert all(keys.issuer is None for keys in KEYS.purse)


def test_everything_is_accepted_but_the_forged_record(day, tmp_path):
    """Eight fares, tolls and sales (one completed by recovery) and two loads: all accepted
    but the forged metro fare, in rejects.csv as ``bad_tac`` and as the one gap in its
    card's seqs; the sales and loads add up, to the fen, to the journal's completed
    records less the forged one; the capped consumption subsidy owes the member 20 % of
    the first sale and what is left of the 30-yuan month on the second.  The reference
    path reports the same, byte for byte."""
    report = settle(day["paths"], ledger_path=tmp_path / "ledger.sqlite", inputs=inputs(),
                    out=tmp_path / "report")
    records = day["records"]
    assert len(records) == 10
    summary = report.summary()
    assert (summary["accepted"], summary["rejected"]) == (9, {"bad_tac": 1})
    forged = day["forged"]
    assert forged.mode == Mode.METRO and forged in records
    kept = [r for r in records if r != forged]
    sales = [r for r in kept if not r.is_load]
    loads = [r for r in kept if r.is_load]
    totals = summary["totals"]
    assert totals["sales"]["count"] == len(sales) == 7
    assert totals["sales"]["list_amount"] == sum(r.list_amount for r in sales)
    assert totals["sales"]["charged_amount"] == sum(r.charged_amount for r in sales)
    assert totals["sales"]["discount"] == sum(r.discount for r in sales) == 20 + 500 + 1000
    assert totals["loads"] == {"count": len(loads),
                               "amount": sum(r.charged_amount for r in loads)}
    assert totals["loads"] == {"count": 2, "amount": 5000}
    by_merchant = report.document["by"]["merchant"]
    assert by_merchant["EXAMPLE-PARTNER-0001"]["rebate"] == 2200  # 20 % of 110.00 yuan
    assert by_merchant["CANTEEN-7"]["rebate"] == 800  # the month's cap of 30.00 yuan reached
    assert totals["sales"]["rebate"] == 3000
    with (tmp_path / "report" / "rejects.csv").open() as stream:
        (reject,) = list(csv.DictReader(stream))
    assert reject["reason"] == "bad_tac"
    assert (int(reject["terminal_seq"]), int(reject["card_seq"]), int(reject["amount"])) == (
        forged.terminal_seq, forged.card_seq, forged.charged_amount)
    card = f"{forged.issuer.hex().upper()}/{forged.diversifier.hex().upper()}"
    assert reject["card"] == card
    assert report.document["gaps"] == [  # the card's seqs settled around the forged one
        {"card": card, "kind": "purchase", "first_seq": forged.card_seq,
         "last_seq": forged.card_seq}]
    settle(day["paths"], ledger_path=tmp_path / "reference.sqlite", inputs=inputs(),
           out=tmp_path / "reference", engine="reference")
    for name in ("clearing.csv", "clearing.json", "rejects.csv"):
        assert (tmp_path / "reference" / name).read_bytes() == (
            tmp_path / "report" / name).read_bytes(), name


def test_settling_the_same_batches_again_changes_nothing(day, tmp_path):
    """A second settlement of the same files: every batch already settled, the ledger and
    the report unchanged."""
    ledger = tmp_path / "ledger.sqlite"
    first = settle(day["paths"], ledger_path=ledger, inputs=inputs(), out=tmp_path / "first")
    before = dump(ledger, sources=False)
    again = settle(day["paths"], ledger_path=ledger, inputs=inputs(), out=tmp_path / "again")
    assert again.summary()["batches"] == {"already_settled": 2}
    assert dump(ledger, sources=False) == before
    assert again.document == first.document
    for name in ("clearing.csv", "clearing.json", "rejects.csv"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "again" /
                                                            name).read_bytes()


def test_keys_for_another_issuer_only_leave_every_record_unknown(day, tmp_path):
    """With keys that name another issuer, no record has a key: all are rejected as
    ``unknown_issuer`` (the forged one too: no key, no TAC check)."""
    report = settle(day["paths"], ledger_path=tmp_path / "ledger.sqlite",
                    inputs=inputs(CITY_ONLY))
    assert report.summary()["rejected"] == {"unknown_issuer": 10}
    assert report.summary()["accepted"] == 0
