"""Settlement end to end: every rejection reason, whole-file refusals, idempotence, both paths.

Batches come from `generate_day` (realistic, real TACs) and are tampered with the way a
forger would: a field changed and every CRC recomputed, so the file itself is well
formed and only the checks of settlement can catch it.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from batch_files import dump, records_of, rewrite

from unioncard.crypto import Keystore
from unioncard.settlement import RunInputs, settle
from unioncard.settlement.columns import RECORD_DTYPE
from unioncard.settlement.generate import DayPlan, generate_day

KEYS = Keystore.test()
CITY_ONLY = Keystore.from_toml(  # the test keys for one issuer only: others are unknown
    KEYS.to_toml().replace('key_version = 0x01\n', 'key_version = 0x01\nissuer = '
                           '"10000000FFFFFFFF"\n').replace(
        'key_version = 0x02\n', 'key_version = 0x02\nissuer = "10000000FFFFFFFF"\n'))


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> list[Path]:
    """A small generated day: 3 000 records in batch files of at most 400."""
    return generate_day(tmp_path_factory.mktemp("day"), DayPlan(3000, batch_records=400))


def run(paths, tmp_path: Path, name: str = "ledger", **options):
    inputs = options.pop("inputs", None) or RunInputs(KEYS)
    return settle(paths, ledger_path=tmp_path / f"{name}.sqlite", inputs=inputs,
                  out=tmp_path / f"{name}-report", **options)


def reasons_of(report) -> dict[str, int]:
    return report.summary()["rejected"]


# --- a clean day ----------------------------------------------------------------------------


def test_a_generated_day_is_accepted_whole_and_reconciles(day, tmp_path):
    report = run(day, tmp_path)
    summary = report.summary()
    assert summary["accepted"] == 3000 and summary["rejected"] == {}
    totals = summary["totals"]
    listed = sum(int(records_of(p)["list_amount"].sum()) for p in day)
    assert totals["sales"]["list_amount"] + totals["loads"]["amount"] == listed
    sales = totals["sales"]
    assert sales["list_amount"] == sales["charged_amount"] + sales["discount"]
    for line in report.lines:
        assert line["list_amount"] == line["charged_amount"] + line["discount"]


def test_the_fast_and_the_reference_paths_give_the_same_report(day, tmp_path):
    tampered = tamper_set(day, tmp_path)
    run(tampered, tmp_path, "fast")
    run(tampered, tmp_path, "reference", engine="reference")
    for name in ("clearing.csv", "clearing.json", "rejects.csv"):
        assert (tmp_path / "fast-report" / name).read_bytes() == (
            tmp_path / "reference-report" / name).read_bytes(), name


# --- every reason ----------------------------------------------------------------------------


def tamper_set(day: list[Path], tmp_path: Path) -> list[Path]:
    """Copies of the day with one tampered record of each kind in the first purchase batch."""
    out = tmp_path / "tampered"
    out.mkdir(exist_ok=True)
    paths = []
    for path in day:
        target = out / path.name
        target.write_bytes(path.read_bytes())
        paths.append(target)
    victim = next(p for p in paths if (records_of(p)["tx_type"] == 0x06).sum() > 50)
    r = records_of(victim)
    purchases = np.flatnonzero(r["tx_type"] == 0x06)
    r["tac"][purchases[0], 0] ^= 0x01                      # TAC flipped
    r["charged_amount"][purchases[1]] -= 1                 # amount lowered (TAC covers it)
    r["list_amount"][purchases[1]] -= 1
    r["diversifier"][purchases[2], 7] ^= 0x01              # another card
    r["terminal_seq"][purchases[3]] += 1000                # another terminal seq
    r["card_expiry"][purchases[4]] = [0x20, 0x26, 0x01, 0x01]  # expired before the ride
    r["ruleset_version"][purchases[5], 0] ^= 0xFF          # a rule set nobody has
    rewrite(victim, np.concatenate([r, r[purchases[6:7]]]))  # and a duplicate at the end
    return paths


def test_each_tampered_record_is_rejected_with_its_reason(day, tmp_path):
    report = run(tamper_set(day, tmp_path), tmp_path)
    assert reasons_of(report) == {"bad_tac": 4, "expired": 1, "unknown_rules": 1,
                                  "duplicate": 1}
    assert report.summary()["accepted"] == 3000 - 6
    rejects = (tmp_path / "ledger-report" / "rejects.csv").read_text().splitlines()
    assert len(rejects) == 1 + 7 and rejects[0].startswith("batch_file,terminal_id")


def test_no_accepted_record_has_a_bad_tac(day, tmp_path):
    """Each field a purchase TAC covers, changed to another valid value in one purchase
    each (TAC bytes, amount, type, terminal seq, date, time, the card): all rejected."""
    out = tmp_path / "flips"
    out.mkdir()
    victim = next(p for p in day if (records_of(p)["tx_type"] == 0x06).sum() > 20)
    r = records_of(victim)
    rows = iter(np.flatnonzero(r["tx_type"] == 0x06).tolist())
    for byte in range(4):
        r["tac"][next(rows), byte] ^= 0x01
    row = next(rows)
    r["charged_amount"][row] -= 1
    r["list_amount"][row] -= 1
    r["tx_type"][next(rows)] = 0x09
    r["terminal_seq"][next(rows)] += 1
    r["date"][next(rows), 3] = 0x02  # the 2nd instead of the 1st of the month
    row = next(rows)
    r["time"][row, 2] = 0x30 if r["time"][row, 2] != 0x30 else 0x31
    r["diversifier"][next(rows), 7] ^= 0x01
    target = rewrite(out / victim.name, r)
    report = run([target], tmp_path)
    assert reasons_of(report) == {"bad_tac": 10}
    assert report.summary()["accepted"] == len(r) - 10


def test_unknown_issuer_and_hotlisted_cards(day, tmp_path):
    hotlist = tmp_path / "hotlist.csv"
    r = records_of(day[0])
    card = (bytes(r["issuer"][0]).hex().upper(), bytes(r["diversifier"][0]).hex().upper())
    hotlist.write_text(f"issuer,card,listed_at\n{card[0]},{card[1]},2026-05-01T00:00:00\n")
    inputs = RunInputs(CITY_ONLY, hotlist_path=str(hotlist))
    report = run(day, tmp_path, inputs=inputs)
    rejected = reasons_of(report)
    issuers = np.concatenate([records_of(p)["issuer"] for p in day])
    others = int((issuers[:, 0] != 0x10).sum())
    assert rejected["unknown_issuer"] == others > 0
    cards = np.concatenate([records_of(p)[["issuer", "diversifier"]] for p in day])
    listed = int(((cards["issuer"] == r["issuer"][0]).all(axis=1)
                  & (cards["diversifier"] == r["diversifier"][0]).all(axis=1)).sum())
    expected_hot = listed if card[0].startswith("10") else 0
    assert rejected.get("hotlisted", 0) == expected_hot


# --- whole files, idempotence, replays -------------------------------------------------------


def test_a_damaged_file_is_refused_whole(day, tmp_path):
    damaged = tmp_path / day[0].name
    data = bytearray(day[0].read_bytes())
    data[40] ^= 0x01  # a record byte: its CRC no longer matches
    damaged.write_bytes(bytes(data))
    report = run([damaged, *day[1:]], tmp_path)
    refused = [b for b in report.document["batches"] if b["state"] == "refused"]
    assert len(refused) == 1 and "CRC-32 mismatch" in refused[0]["reason"]
    assert report.summary()["accepted"] == 3000 - len(records_of(day[0]))


def test_settling_again_changes_nothing_and_says_so(day, tmp_path):
    first = run(day, tmp_path)
    ledger = tmp_path / "ledger.sqlite"
    before = dump(ledger)
    again = run(day, tmp_path)
    assert again.summary()["batches"] == {"already_settled": len(day)}
    assert dump(ledger) == before
    assert again.document == first.document


def test_a_replay_across_batches_and_a_conflicting_batch(day, tmp_path):
    run(day[:2], tmp_path)
    replayed = rewrite(tmp_path / "replay.ucb", records_of(day[0])[:5], batch_id=999)
    conflict = tmp_path / "conflict.ucb"
    settled_id = int.from_bytes(day[1].read_bytes()[14:18], "big")
    rewrite(conflict, records_of(day[1])[:-1], batch_id=settled_id)  # settled header, new bytes
    report = run([replayed, conflict], tmp_path)
    assert reasons_of(report) == {"replay": 5}
    states = {b["file"]: b for b in report.document["batches"]}
    assert states[str(conflict)]["state"] == "refused"
    assert "conflict" in states[str(conflict)]["reason"]


def test_a_record_without_tac_needs_a_later_verified_seq(day, tmp_path):
    victim = next(p for p in day if (records_of(p)["tx_type"] == 0x06).sum() > 10)
    r = records_of(victim)
    purchases = np.flatnonzero(r["tx_type"] == 0x06)
    counter = (r["issuer"], r["diversifier"])
    seqs = r["card_seq"].astype(int)
    same_card = [i for i in purchases if (counter[1][i] == counter[1][purchases[0]]).all()]
    lonely = next(i for i in purchases
                  if not any((counter[1][j] == counter[1][i]).all() and seqs[j] > seqs[i]
                             for j in purchases if j != i))
    proven = same_card[0] if len(same_card) > 1 else None
    for i in (lonely, proven):
        if i is not None:
            r["tac"][i] = 0
            r["flags"][i] = 0x03  # RECOVERED | NO_TAC
    target = rewrite(tmp_path / victim.name, r)
    report = run([target], tmp_path)
    assert reasons_of(report).get("unproven", 0) == 1


def test_a_record_without_tac_after_a_batch_that_settled_nothing(day, tmp_path):
    """A card counter first seen in a batch whose only record is rejected (expired),
    then, in a later batch, on a record without TAC that no later seq proves: unproven,
    and the rest settles."""
    def counters(r):
        return [(bytes(r["issuer"][i]), bytes(r["diversifier"][i]), int(r["application"][i]),
                 int(r["tx_type"][i])) for i in range(len(r))]

    def highest(r):  # each purchase counter's record of highest seq
        last = {}
        for j, key in enumerate(counters(r)):
            if key[3] == 0x06 and (key not in last or r["card_seq"][j] > r["card_seq"][last[key]]):
                last[key] = j
        return last

    files = [records_of(p) for p in day]
    earlier, later, i, j = next(
        (files[a], files[b], i, last[key]) for a, b in itertools.permutations(range(len(day)), 2)
        for last in [highest(files[b])] for i, key in enumerate(counters(files[a]))
        if key in last)
    alone = earlier[i:i + 1].copy()
    alone["card_expiry"][0] = [0x20, 0x20, 0x01, 0x01]  # expired: the batch settles nothing
    later["tac"][j], later["flags"][j] = 0, 0x03  # RECOVERED | NO_TAC
    report = run([rewrite(tmp_path / "a.ucb", alone, batch_id=1),
                  rewrite(tmp_path / "b.ucb", later, batch_id=2)], tmp_path)
    assert reasons_of(report) == {"expired": 1, "unproven": 1}
    assert report.document["accepted"] == len(later) - 1


def test_the_cli_settles_and_the_ledger_answers(day, tmp_path):
    from click.testing import CliRunner

    from unioncard.cli import root

    runner = CliRunner()
    result = runner.invoke(root, ["settle", str(day[0].parent), "--ledger",
                                  str(tmp_path / "l.sqlite"), "--out", str(tmp_path / "o"),
                                  "--json", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["accepted"] == 3000 and doc["rejected"] == {}
    assert "PUBLISHED TEST KEYS" in result.stderr
    r = records_of(day[0])
    terminal = bytes(r["terminal_id"][0]).hex()
    asked = runner.invoke(root, ["ledger", "--ledger", str(tmp_path / "l.sqlite"),
                                 "--terminal", terminal, "--json"])
    found = json.loads(asked.stdout)
    on_terminal = sum(len(records_of(p)) for p in day
                      if bytes(records_of(p)["terminal_id"][0]).hex() == terminal)
    loads = sum(int((records_of(p)["tx_type"] == 2).sum()) for p in day
                if bytes(records_of(p)["terminal_id"][0]).hex() == terminal)
    assert found["sales"] == on_terminal - loads


@pytest.mark.parametrize(("options", "says"), [
    (["--jobs", "0"], "0 is not in the range x>=1"),
    (["--engine", "dask", "--scheduler", "local:2", "--jobs", "2"], "--jobs is for the fast"),
])
def test_the_cli_refuses_jobs_it_cannot_have(day, tmp_path, options, says):
    from click.testing import CliRunner

    from unioncard.cli import root

    result = CliRunner().invoke(root, ["settle", str(day[0]), "--ledger",
                                       str(tmp_path / "l.sqlite"), "--out", str(tmp_path / "o"),
                                       *options])
    assert result.exit_code == 2 and says in result.output
    assert not (tmp_path / "l.sqlite").exists()


def test_record_layout_matches_the_reference(day):
    """The numpy dtype reads the fields the construct declaration writes."""
    from unioncard.offline import read_batch

    reference = read_batch(day[0]).records[0]
    r = records_of(day[0])[0]
    assert RECORD_DTYPE.itemsize == 256
    assert int(r["charged_amount"]) == reference.charged_amount
    assert bytes(r["tac"]) == reference.tac and int(r["card_seq"]) == reference.card_seq


def _gaps_from_the_ledger(ledger, rows) -> list[tuple[str, str, int, int]]:
    """The gaps of the counters the batches ``rows`` hold, record by record: every seq
    missing between two seqs the ledger settled of one counter."""
    seqs: dict[tuple[str, str, int], set[int]] = {}
    for _row, records in ledger.settled_records():
        for r in records.tolist():
            seqs.setdefault((f"{r[0]:016X}/{r[1]:016X}", "load" if r[3] else "purchase",
                             r[2]), set()).add(r[4])
    touched = {(f"{r[0]:016X}/{r[1]:016X}", "load" if r[3] else "purchase", r[2])
               for _row, records in ledger.settled_records(rows) for r in records.tolist()}
    expected = []
    for (card, kind, purse), held in seqs.items():
        if (card, kind, purse) in touched:
            ordered = sorted(held)
            expected += [(card, kind, purse, a + 1, b - 1)
                         for a, b in itertools.pairwise(ordered) if b > a + 1]
    expected.sort(key=lambda g: (g[0], g[1] != "load", g[2], g[3]))  # by card, loads first
    return [(card, kind, first, last) for card, kind, _purse, first, last in expected]


def test_gaps_are_the_seqs_missing_between_settled_ones(day, tmp_path):
    """Every third batch file settled, then the next third in a second run: each run's
    report lists exactly the missing seqs of each counter its batches hold, over every
    seq the ledger settled (earlier runs' too), by card, kind (loads first), purse and seq,
    whether the run's counters or the ledger's records say which seqs those are; the first
    ``limit`` of them when limited; a run that settles the missing seqs closes their gaps."""
    from unioncard.settlement import pipeline
    from unioncard.settlement.ledger import Ledger

    found = []
    for part in (day[::3], day[1::3], day[2::3]):
        report = run(part, tmp_path)
        with Ledger(tmp_path / "ledger.sqlite") as ledger:
            rows = [b.row for b in ledger.batches() if b.source in {str(p) for p in part}]
            expected = _gaps_from_the_ledger(ledger, rows)
            assert pipeline.find_gaps(ledger, rows) == expected
            assert [tuple(g.values()) for g in report.document["gaps"]] == expected
            assert pipeline.find_gaps(ledger, rows, limit=3) == expected[:3]
        found.append(len(expected))
    assert found[0] and found[1] and found[2] < found[1]


def test_the_ledger_takes_more_batch_rows_than_sqlite_takes_parameters(day, tmp_path):
    """A run's batches are named by row in every query of the report: 300 000 rows (more
    than SQLite's limit on parameters, 32 766 or 250 000 by build) give what the real ones
    give."""
    from unioncard.settlement.ledger import Ledger

    run(day[:3], tmp_path)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        real = [b.row for b in ledger.batches()]
        many = [*range(1000, 301_000), *real]
        assert [b.row for b in ledger.batches(many)] == real
        assert ledger.lines(many) == ledger.lines(real) and ledger.lines(real)
        assert ledger.rejects(many) == ledger.rejects(real)
        assert [row for row, _ in ledger.settled_records(many)] == sorted(real)


def _long_history(day: list[Path], tmp_path: Path) -> list[list[Path]]:
    """Three runs' batch files: a third of the day, less the first purchase of one card's
    purse; the next third; the last third, with that purchase flagged as recovered without
    TAC (the card's later purchases, settled in the first run, prove it) and copies of
    eight records of the first run under a new batch id (three of them with another card
    seq: the TAC does not cover it, the terminal's seq finds them).  The card's purchases are
    taken out of the last two thirds."""
    def counters(r: np.ndarray) -> list[tuple[bytes, bytes, int, int]]:
        return [(bytes(r["issuer"][i]), bytes(r["diversifier"][i]), int(r["application"][i]),
                 int(r["tx_type"][i])) for i in range(len(r))]

    def rewritten(path: Path, records: np.ndarray) -> Path:
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())  # keeps the batch id
        return rewrite(copy, records)

    thirds = [day[::3], day[1::3], day[2::3]]
    files = [records_of(p) for p in thirds[0]]
    held = [(int(r["card_seq"][i]), f, i, key) for f, r in enumerate(files)
            for i, key in enumerate(counters(r)) if key[3] == 0x06]
    key = max({k for *_, k in held}, key=lambda k: sum(h[3] == k for h in held))
    _, f, withheld, _ = min(h for h in held if h[3] == key)
    late = files[f][withheld:withheld + 1].copy()
    late["tac"], late["flags"] = 0, 0x03  # RECOVERED | NO_TAC
    runs = [[rewritten(p, np.delete(files[f], withheld)) if i == f else p
             for i, p in enumerate(thirds[0])]]
    for third in thirds[1:]:
        runs.append([])
        for p in third:
            r = records_of(p)
            other = np.array([k != key for k in counters(r)])
            runs[-1].append(p if other.all() else rewritten(p, r[other]))
    copies = files[f - 1 if f else 1]
    moved = copies[-3:].copy()  # the TAC does not cover the card's seq: same terminal seq
    moved["card_seq"] += 1000
    runs[2].append(rewrite(tmp_path / "replay.ucb", np.concatenate([copies[:5], moved]),
                           batch_id=999_001))
    runs[2].append(rewrite(tmp_path / "late.ucb", late, batch_id=999_002))
    return runs


def _batches_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of the batches the ledger reads settled records of, from now on."""
    from unioncard.settlement.ledger import Ledger

    read: list[int] = []
    real = Ledger.settled_records

    def counted(self, rows=None, **bounds):
        for row, records in real(self, rows, **bounds):
            read.append(row)
            yield row, records
    monkeypatch.setattr(Ledger, "settled_records", counted)
    return read


def test_runs_over_a_ledger_with_an_index_snapshot_settle_as_without(day, tmp_path,
                                                                    monkeypatch):
    """Each run that reads settled records from the ledger keeps a snapshot of its index
    (the threshold lowered to one record); later runs start from it and read only the
    batches after it.  Replays of an earlier run, records proven by an earlier run's
    seqs and gaps over earlier seqs come out as they do when every run reads every batch:
    the same ledger and the same reports."""
    from unioncard.settlement import pipeline
    from unioncard.settlement.ledger import Ledger

    runs = _long_history(day, tmp_path)
    plain = [run(files, tmp_path, "plain").document for files in runs]
    monkeypatch.setattr(pipeline, "SNAPSHOT_RECORDS", 1)
    read = _batches_read(monkeypatch)
    snapshots = []
    for k, files in enumerate(runs):
        read.clear()
        snapshots.append(run(files, tmp_path, "snapshot").document)
        with Ledger(tmp_path / "snapshot.sqlite") as ledger:
            snapshot = ledger.index_snapshot()
        # the first run reads nothing; the others keep a snapshot up to their first batch
        assert (snapshot is None if k == 0 else
                snapshot[0] == sum(len(files) for files in runs[:k]))
    assert min(read) > len(runs[0])  # the last run read the first run's from the snapshot
    assert snapshots == plain
    assert plain[2]["rejected"] == {"replay": 8}
    assert plain[2]["accepted"] == sum(len(records_of(p)) for p in runs[2]) - 8
    assert dump(tmp_path / "snapshot.sqlite") == dump(tmp_path / "plain.sqlite")


@pytest.mark.parametrize("spoil", ["bytes off their digest", "a key twice", "a torn part",
                                   "a short part", "an older format"])
def test_an_index_snapshot_that_is_damaged_or_does_not_hold_together_is_set_aside(
        day, tmp_path, monkeypatch, spoil):
    """A snapshot whose bytes no longer match its digest, or that matches its digest but
    not itself (a card counter numbered twice, a part cut inside a row, parts of other
    lengths), or of an older format (home rows without spans), is not used: the run reads
    every batch again, and still finds the replays."""
    from unioncard.settlement import pipeline
    from unioncard.settlement.ledger import Ledger

    monkeypatch.setattr(pipeline, "SNAPSHOT_RECORDS", 1)
    run(day[:2], tmp_path)
    run(day[2:4], tmp_path)
    ledger_path = tmp_path / "ledger.sqlite"
    if spoil == "bytes off their digest":
        with sqlite3.connect(ledger_path) as db:
            data = db.execute(
                "SELECT data FROM index_snapshot WHERE part = 'card_home'").fetchone()
            db.execute("UPDATE index_snapshot SET data = ? WHERE part = 'card_home'",
                       (bytes(len(data[0])),))
        with Ledger(ledger_path) as ledger:
            assert ledger.index_snapshot() is None
    elif spoil == "an older format":
        with sqlite3.connect(ledger_path) as db:
            db.execute("UPDATE meta SET value = '1' || substr(value, 2) "
                       "WHERE key = 'index_snapshot'")
        with Ledger(ledger_path) as ledger:
            assert ledger.index_snapshot() is None
    else:
        with Ledger(ledger_path) as ledger:
            snapshot = ledger.index_snapshot()
            assert snapshot is not None
            through, parts = snapshot
            if spoil == "a key twice":
                parts["cards"] = parts["cards"][:24] + parts["cards"][:-24]
            elif spoil == "a torn part":
                parts["card_home"] = parts["card_home"][:-1]
            else:  # whole rows, but fewer highest verified seqs than card counters
                parts["max_verified"] = parts["max_verified"][:-4]
            ledger.write_index_snapshot(through, parts)
            assert ledger.index_snapshot() is not None  # its digest matches
    read = _batches_read(monkeypatch)
    replay = rewrite(tmp_path / "replay.ucb", records_of(day[0])[:3], batch_id=999_005)
    assert reasons_of(run([replay], tmp_path)) == {"replay": 3}
    assert min(read) == 1  # set aside: the first batch read again


def test_capped_benefits_count_the_usage_of_earlier_runs(tmp_path):
    """A day of few cards (members reach the month's cap of the consumption subsidy)
    settled in two runs (every other batch file, then the rest) owes the members what
    one run of the whole day owes, once the cap is reached: the second run reads the
    windows of capped benefits the first one used from the ledger (those of the days
    and months its batches reach).  Settled alone, the second run's files owe more."""
    from unioncard.settlement.pipeline import batch_order

    ordered = batch_order(generate_day(tmp_path / "day", DayPlan(2000, cards=10,
                                                                 batch_records=100)))
    whole = run(ordered, tmp_path, "whole").document
    split = [run(part, tmp_path, "split").document for part in (ordered[::2], ordered[1::2])]
    alone = run(ordered[1::2], tmp_path, "alone").document

    def rebate(document):
        return document["totals"]["sales"]["rebate"]
    assert rebate(whole) > 0 and rebate(split[0]) > 0
    assert rebate(split[0]) + rebate(split[1]) == rebate(whole) < rebate(split[0]) + rebate(alone)

    def amounts(ledger):
        return sorted((row[:4], row[5]) for row in dump(ledger)["usage"])
    assert amounts(tmp_path / "split.sqlite") == amounts(tmp_path / "whole.sqlite")


def test_a_ledger_of_schema_1_is_rekeyed_and_settles_on(day, tmp_path):
    """A ledger an earlier release wrote (schema 1: usage keyed by member first, no index
    snapshot) opens as schema 2 with its usage whole, keyed by window first, and a run
    over it finds its replays."""
    run(day[:2], tmp_path)
    ledger = tmp_path / "ledger.sqlite"
    with sqlite3.connect(ledger) as db:
        db.executescript("""
            CREATE TABLE old_usage (member_id TEXT NOT NULL, rule_id TEXT NOT NULL,
                period TEXT NOT NULL, key INTEGER NOT NULL, count INTEGER NOT NULL,
                amount INTEGER NOT NULL, PRIMARY KEY (member_id, rule_id, period, key))
                WITHOUT ROWID;
            INSERT INTO old_usage SELECT * FROM usage;
            INSERT INTO old_usage VALUES ('10000000FFFFFFFF/5500000000000001', 'cap', 'day',
                                          20000, 1, 50);
            DROP TABLE usage; ALTER TABLE old_usage RENAME TO usage;
            DROP TABLE index_snapshot; DELETE FROM meta WHERE key = 'index_snapshot';
            UPDATE meta SET value = '1' WHERE key = 'schema';""")
        before = sorted(db.execute("SELECT * FROM usage"))
    from unioncard.settlement.ledger import Ledger

    with Ledger(ledger):
        pass
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
        key = sorted((pk, name) for _, name, _, _, _, pk in db.execute("PRAGMA table_info(usage)")
                     if pk)
        assert [name for _, name in key] == ["period", "key", "member_id", "rule_id"]
        assert sorted(db.execute("SELECT * FROM usage")) == before
    replay = rewrite(tmp_path / "replay.ucb", records_of(day[0])[:2], batch_id=999_004)
    assert reasons_of(run([replay, *day[2:4]], tmp_path)) == {"replay": 2}
