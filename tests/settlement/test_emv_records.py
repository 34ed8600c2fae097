"""EMV card sales from the POS to settlement: journaled by ``tap --mode pos-emv``, exported
in a batch file beside purse records, the TC verified with the issuer's key, duplicates,
forgeries and unknown issuers rejected, the accepted sales cleared per merchant."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from unioncard.applet_sim import MemberData, issue_member_card
from unioncard.cli import root
from unioncard.crypto import Keystore, emv
from unioncard.crypto.keystore import EmvIssuerKeys
from unioncard.offline import EmvRecord, encode_batch, read_batch
from unioncard.settlement.emv import (
    EmvClearing,
    accepted_by_batch,
    check_cryptogram,
    split_batch,
)
from unioncard.settlement.errors import BatchRefused
from unioncard.settlement.inputs import RunInputs
from unioncard.settlement.ledger import SETTLED_DTYPE, Ledger
from unioncard.tariffs import default_rules

KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x03)
TERMINAL = "310100009999"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(root, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four approved sales on the simulated card, journaled and exported: EC offline at a
    partner merchant (member discount), online, qPBOC offline, and a declined one."""
    tmp = tmp_path_factory.mktemp("pos")
    card, journal = tmp / "card.json", tmp / "journal.sqlite"
    issue_member_card(MEMBER, KEYS, card_no=42, ec_balance=50_000, random_source=1).save(card)

    def tap(at: str, *args: object) -> dict:  # type: ignore[type-arg]
        status, out = invoke("tap", "--mode", "pos-emv", "--card", card, "--journal", journal,
                             "--at", at, "--json", *args)
        doc = json.loads(out)
        assert (status == 0) == (doc["decision"] == "approved"), doc
        return doc  # type: ignore[no-any-return]

    first = tap("2026-12-02T10:30:00", "--amount", 15000, "--pin", "123456", "--merchant",
                "EXAMPLE-PARTNER-0001", "--terminal-id", TERMINAL)
    assert (first["path"], first["charged_amount"], first["journal_id"]) == (
        "ec offline", 14000, 1)
    assert first["record"]["terminal_seq"] == 1 and first["record"]["pan"].count("*") == 9
    assert tap("2026-12-02T10:31:00", "--amount", 150000, "--pin", "123456")["path"] == "online"
    assert tap("2026-12-02T10:32:00", "--amount", 2000, "--contactless")["path"] == \
        "qpboc offline"
    declined = tap("2026-12-02T10:33:00", "--amount", 3000, "--pin", "000000", "--pin",
                   "111111", "--pin", "222222")
    assert declined["decision"] == "declined" and declined["journal_id"] is None
    status, out = invoke("batch", "export", "--journal", journal, "--out", tmp / "out")
    assert status == 0, out
    [path] = (tmp / "out").glob("*.ucb")
    return path


def settle(ledger: Ledger, data: bytes, keys: Keystore = KEYS) -> tuple[EmvClearing, object]:
    """Settle a batch file's EMV records in one ledger commit, as a run does (the purse
    part, here empty, would go through the purse pipeline)."""
    split = split_batch(data)
    batch = read_batch(split.purse)
    clearing = EmvClearing(ledger, RunInputs(keys))
    result = clearing.settle(batch.terminal_id, split.emv)
    with ledger.transaction() as db:
        row = ledger.record_batch(
            db, terminal_id=batch.terminal_id, batch_id=batch.batch_id, digest=split.digest,
            source="test", created=batch.created.isoformat(), records=len(split.emv),
            list_total=0, charged_total=0, settled=np.zeros(0, SETTLED_DTYPE),
            rejects=result.rejects, lines=result.lines, usage=[])
        clearing.commit(db, row, result)
    return clearing, result


def test_a_pos_emv_sale_is_journaled_exported_and_settled(exported: Path):
    batch = read_batch(exported, emv=True)
    assert batch.terminal_id.hex().upper() == TERMINAL and batch.count == 3
    assert all(isinstance(r, EmvRecord) for r in batch.records)
    assert [r.path.label for r in batch.records] == [  # type: ignore[union-attr]
        "ec offline", "online", "qpboc offline"]
    with Ledger(":memory:") as ledger:
        _, result = settle(ledger, exported.read_bytes())
        assert result.counts == {"accepted": 3}  # type: ignore[attr-defined]
        assert result.lines == [  # type: ignore[attr-defined]
            ("sale", "2026-12-02", TERMINAL, 7, "", "", "市总工会", 2, 152000, 152000, 0, 0),
            ("sale", "2026-12-02", TERMINAL, 7, "", "EXAMPLE-PARTNER-0001", "市总工会", 1,
             15000, 14000, 1000, 0)]
        [stored] = ledger.batches()
        assert accepted_by_batch(ledger, [stored.row]) == {stored.row: 3}
        # the same records in another batch, in a later run: every one is a replay
        copy = encode_batch(batch.terminal_id, 2, batch.created, batch.records)
        _, again = settle(ledger, copy)
        assert again.counts == {"replay": 3}  # type: ignore[attr-defined]


def test_a_forged_tc_is_rejected_as_bad_tc(exported: Path):
    data = bytearray(exported.read_bytes())
    at = 32 + 256  # the second record: its AC at bytes 40..47
    data[at + 45] ^= 0x01
    data[at + 252:at + 256] = zlib.crc32(data[at:at + 252]).to_bytes(4, "big")
    data[-4:] = zlib.crc32(data[:-4]).to_bytes(4, "big")
    with Ledger(":memory:") as ledger:
        _, result = settle(ledger, bytes(data))
    assert result.reasons == [(0, "accepted"), (1, "bad_tc"), (2, "accepted")]  # type: ignore[attr-defined]
    [reject] = result.rejects  # type: ignore[attr-defined]
    assert reject[:2] == (1, "bad_tc") and reject[4].startswith("623012********")
    assert reject[5:7] == (0, 2)  # EMV, ATC 2


def test_a_duplicate_sale_is_rejected(exported: Path):
    batch = read_batch(exported, emv=True)
    first, second, third = batch.records
    copy = dataclasses.replace(first, terminal_seq=99)  # same card, PSN and ATC
    data = encode_batch(batch.terminal_id, batch.batch_id, batch.created,
                        [first, second, copy, third])
    with Ledger(":memory:") as ledger:
        _, result = settle(ledger, data)
    assert result.reasons == [(0, "accepted"), (1, "accepted"), (2, "duplicate"),  # type: ignore[attr-defined]
                              (3, "accepted")]


def test_an_issuer_without_a_key_is_unknown(exported: Path):
    keys = dataclasses.replace(KEYS, emv=())
    with Ledger(":memory:") as ledger:
        _, result = settle(ledger, exported.read_bytes(), keys)
    assert result.counts == {"unknown_issuer": 3}  # type: ignore[attr-defined]


def test_expired_cards_and_amounts_the_rules_do_not_give(exported: Path):
    record = read_batch(exported, emv=True).records[0]
    assert isinstance(record, EmvRecord)
    expired = _signed(dataclasses.replace(record, card_expiry=dt.date(2026, 12, 1)))
    wrong = _signed(dataclasses.replace(record, list_amount=20000))  # the rule gives 19000
    unknown = _signed(dataclasses.replace(record, ruleset_version=b"\x01" * 32))
    data = encode_batch(record.terminal_id, 5, dt.datetime(2026, 12, 3),
                        [expired, dataclasses.replace(wrong, atc=wrong.atc), unknown])
    with Ledger(":memory:") as ledger:
        _, result = settle(ledger, data)
    assert [r for _, r in result.reasons] == [  # type: ignore[attr-defined]
        "expired", "duplicate", "duplicate"]  # the same ATC: only the first takes it
    data = encode_batch(record.terminal_id, 6, dt.datetime(2026, 12, 3), [
        _signed(dataclasses.replace(wrong, atc=60, terminal_seq=60)),
        _signed(dataclasses.replace(unknown, atc=61, terminal_seq=61))])
    with Ledger(":memory:") as ledger:
        _, result = settle(ledger, data)
    assert [r for _, r in result.reasons] == ["amount_mismatch", "unknown_rules"]  # type: ignore[attr-defined]


def test_the_documented_record_verifies_with_the_public_issuer_key():
    """docs/records.md's known-answer record, under the issuer master key of the public
    vector of docs/protocol.md §5 (option A: UDK 73AD5468...)."""
    text = (DOCS / "records.md").read_text(encoding="utf-8")
    [code] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
              if b.startswith("# known-answer EMV record")]
    scope: dict[str, object] = {}
    exec(code, scope)
    record = scope["record"]
    assert isinstance(record, EmvRecord)
    imk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    keys = dataclasses.replace(KEYS, emv=(EmvIssuerKeys(record.aid, 1, imk, imk, imk),))
    assert check_cryptogram(record, keys) is None
    assert check_cryptogram(dataclasses.replace(record, atc=29), keys) == "bad_tc"
    assert check_cryptogram(dataclasses.replace(record, iad=b"\x07\x02" + record.iad[2:]),
                            keys) == "unknown_issuer"  # no key at DKI 02


def test_a_purse_only_batch_passes_through_unchanged_and_a_damaged_mixed_one_is_refused(
        exported: Path):
    from unioncard.offline import Application, OfflineRecord

    purse = OfflineRecord(
        terminal_id=bytes.fromhex(TERMINAL), terminal_seq=42,
        issuer=bytes.fromhex("10000000FFFFFFFF"), diversifier=bytes.fromhex("5500000000000042"),
        application=Application.TRANSIT, card_seq=5, key_version=1, tx_type=6, mode=1,
        card_type=0x55, list_amount=200, charged_amount=180, balance_after=1820,
        when=dt.datetime(2026, 5, 1, 8, 30, 15), tac=bytes.fromhex("1A2B3C4D"))
    old = encode_batch(bytes.fromhex(TERMINAL), 1, dt.datetime(2026, 1, 1), [purse])
    split = split_batch(old)
    assert split.purse == old and split.emv == () and list(split.purse_indexes) == [0]
    batch = read_batch(exported, emv=True)
    mixed = encode_batch(batch.terminal_id, 2, batch.created, [batch.records[0], purse])
    split = split_batch(mixed)
    assert read_batch(split.purse).records == (purse,) and split.purse_indexes == (1,)
    assert [i for i, _ in split.emv] == [0]
    damaged = bytearray(mixed)
    damaged[-1] ^= 1
    with pytest.raises(BatchRefused, match="file CRC-32 mismatch"):
        split_batch(bytes(damaged))


def _signed(record: EmvRecord) -> EmvRecord:
    """The record with the cryptogram the simulated card's keys give over its values."""
    master = KEYS.emv_issuer_keys(record.aid, record.dki).ac_mk
    key = emv.session_key(emv.derive_udk(master, record.pan, record.psn), record.atc)
    return dataclasses.replace(record, ac=emv.application_cryptogram(
        key, emv.ac_data(record.ac_values(), record.cvr)))


def test_default_rules_price_the_partner_sale():
    assert "partner-example-100-10" in {rule.id for rule in default_rules().rules}


def test_unioncard_settle_on_a_batch_with_emv_sales(exported: Path, tmp_path: Path):
    """`unioncard settle` settles a batch file's EMV sales with its purse records: the
    sales accepted and cleared per merchant, and settling the file again changes nothing."""
    status, out = invoke("settle", exported, "--ledger", tmp_path / "l.sqlite", "--out",
                         tmp_path / "report", "--json")
    doc = json.loads(out[out.index("{"):])
    assert status == 0 and doc["accepted"] == 3 and doc["rejected"] == {}, doc
    clearing = (tmp_path / "report" / "clearing.csv").read_text(encoding="utf-8")
    assert ",EXAMPLE-PARTNER-0001,市总工会,1,15000,14000,1000,0" in clearing
    status, out = invoke("settle", exported, "--ledger", tmp_path / "l.sqlite", "--out",
                         tmp_path / "again", "--json")
    again = json.loads(out[out.index("{"):])
    assert status == 0 and again["batches"] == {"already_settled": 1}, again
    assert (again["accepted"], again["totals"]) == (doc["accepted"], doc["totals"])
    assert (tmp_path / "again" / "clearing.csv").read_text(encoding="utf-8") == clearing


def test_a_run_started_again_finds_duplicates_not_replays(exported: Path):
    """A run killed after committing a batch and started again (the ledger's run marker)
    calls a later copy of its records duplicates, as an uninterrupted run would."""
    batch = read_batch(exported, emv=True)
    copy = encode_batch(batch.terminal_id, 2, batch.created, batch.records)
    with Ledger(":memory:") as ledger:
        ledger.mark_run("run-1")
        settle(ledger, exported.read_bytes())  # committed, then the run is killed
        _, again = settle(ledger, copy)  # the same run, started again
        assert again.counts == {"duplicate": 3}  # type: ignore[attr-defined]
        ledger.mark_run(None)
        copy = encode_batch(batch.terminal_id, 3, batch.created, batch.records)
        _, later = settle(ledger, copy)  # a later run
        assert later.counts == {"replay": 3}  # type: ignore[attr-defined]


def test_a_run_asks_the_ledger_for_the_identities_of_its_batches_only(exported: Path):
    """A new run holds no identity of earlier runs: it asks the ledger for those of each
    batch's records, by the card's (PAN, PSN, ATC) and by the terminal's (id, seq),
    each found on its own."""
    batch = read_batch(exported, emv=True)
    with Ledger(":memory:") as ledger:
        settle(ledger, exported.read_bytes())
        [stored] = ledger.batches()
        clearing = EmvClearing(ledger, RunInputs(KEYS))
        records = [r for r in batch.records if isinstance(r, EmvRecord)]
        cards = [(r.pan, r.psn, r.atc) for r in records]
        terminals = [(r.terminal_id, r.terminal_seq) for r in records]
        assert clearing._held(cards, terminals) == (dict.fromkeys(cards, stored.row),
                                                     dict.fromkeys(terminals, stored.row))
        other = [(pan, psn, atc + 1000) for pan, psn, atc in cards]
        shifted = [(terminal, seq + 1000) for terminal, seq in terminals]
        assert clearing._held(other, shifted) == ({}, {})
        assert clearing._held(cards[:1], shifted) == ({cards[0]: stored.row}, {})
        assert clearing._held(other, terminals[1:]) == ({}, dict.fromkeys(terminals[1:],
                                                                          stored.row))
