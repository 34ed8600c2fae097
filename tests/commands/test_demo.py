"""`unioncard demo`: the live part pays member-priced fares with a simulated card, the day is
settled and reported; `unioncard demo generate` writes a day of batch files."""

import datetime as dt
import json
import re
from typing import Any

import pytest
from click.testing import CliRunner

from unioncard.cli import root
from unioncard.crypto import Keystore
from unioncard.offline.batch import read_batch
from unioncard.settlement import RunInputs, settle


@pytest.fixture(scope="module")
def demo() -> str:
    result = CliRunner().invoke(root, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0
    return result.stdout


def test_demo_runs_a_member_card_through_the_engine(demo):
    live = demo.split("Live: a union member card and a PSAM in the simulator")[1]
    live = live.split("A day, ")[0]
    assert "T-Union purse card type 55 (union member)" in live
    assert "bus fare, route K1: list 2.00 yuan, charged 1.80 yuan (bus-member-10" in live
    assert "purse 50.00 yuan -> 48.20 yuan" in live
    assert "highway entry, station 0203: entry recorded on the card" in live
    assert "list 100.00 yuan, charged 95.00 yuan (etc-member-5" in live
    assert "purse 200.00 yuan -> 105.00 yuan" in live
    assert "supermarket, 30.00 yuan (MCC 5411)" in live
    assert "purse 48.20 yuan -> 18.20 yuan" in live  # the sale
    assert "rebate left to settlement: consumption-subsidy" in live
    assert "purse 18.20 yuan -> 38.20 yuan" in live  # the load
    assert "union payment '2026年互助金' (gbk sheet)" in live
    assert "purse 38.20 yuan -> 88.20 yuan" in live
    assert "1 payment of another member waits for that member's card" in live
    assert "EF 0019 record 1: ETC exit, station 0007, lane 3, plate 京A12345" in live
    # the debit application: electronic cash offline with the partner discount, then online
    assert ("contactless qPBOC at the partner shop, 150.00 yuan: approved (qpboc offline), "
            "charged 140.00 yuan; ODA fdda, TVR 0000000000, TSI E000") in live
    assert "EC balance now 360.00 yuan" in live
    assert ("contact with PIN, 1500.00 yuan: approved (online); ODA cda, TVR 0000008000, "
            "TSI F800") in live
    # every TAC verified with the keys; the PSAM's terminal seq advanced once per purchase,
    # and a load's is its number in the journal
    assert re.findall(r"terminal seq (\d+), TAC [0-9A-F]{8} verified", live) == \
        ["1", "2", "3", "4", "5", "6"]
    assert "exported 6 offline records in 2 batch files, 6 of 6 TACs verified" in live


def test_demo_day_issues_transacts_exports_and_settles(demo):
    day = demo.split("A day, 2026-05-01: ")[1]
    assert "issued 12 member cards from sample-members.csv (utf-8), 6 union organizations" in day
    assert "categories: 3 model worker, 2 hardship, 5 mutual aid" in day
    found = re.search(r"terminal engine: (\d+) transactions", day)
    assert found is not None
    count = int(found[1])
    assert f"terminal engine: {count} transactions, {count} approved, 0 declined" in day
    kinds = re.search(r"\n {4}(\d+) bus fares, (\d+) metro fares, (\d+) highway entries, (\d+) "
                      r"highway exits, (\d+) sales, (\d+) loads\n", day)
    assert kinds is not None and sum(map(int, kinds.groups())) == count
    assert kinds[3] == kinds[4]  # every trip that entered the highway left it
    assert f"journal: {count} completed, 0 pending; exported {count} offline records in 11 " \
           "batch files" in day
    assert f"settlement: batch files 11 settled; accepted {count} records, rejected 0" in day
    # the clearing table: one row per mode and operator, and the total of the rows
    rows = re.findall(r"^ {4}(bus|metro|etc|pos) +(.+?) +(\d+) +(\d+\.\d\d) +(\d+\.\d\d) +"
                      r"(\d+\.\d\d) +(\d+\.\d\d)$", day, re.M)
    assert [(mode, operator) for mode, operator, *_ in rows] == [
        ("bus", "City Bus Co."), ("metro", "Metro Co."), ("etc", "Expressway Co."),
        ("pos", "Canteen 7"), ("pos", "Partner shop 0001"), ("pos", "Supermarket 0042")]
    total = re.search(r"^ {4}total +(\d+) +(\d+\.\d\d) +(\d+\.\d\d) +(\d+\.\d\d) +(\d+\.\d\d)$",
                      day, re.M)
    assert total is not None

    def fen(text: str) -> int:
        return round(float(text) * 100)

    columns = list(zip(*(row[2:] for row in rows), strict=True))
    assert int(total[1]) == sum(map(int, columns[0])) == count - int(kinds[6])
    for i in range(1, 5):
        assert fen(total[i + 1]) == sum(map(fen, columns[i]))
    for _mode, _operator, _n, listed, charged, discount, _rebate in rows:
        assert fen(listed) == fen(charged) + fen(discount)
    by = {operator: row for _mode, operator, *row in rows}
    assert fen(by["City Bus Co."][3]) > 0 and fen(by["Expressway Co."][3]) > 0  # 10%, 5% off
    assert fen(by["Partner shop 0001"][3]) == 2000  # 10 yuan off each 100 yuan purchase
    assert fen(by["Supermarket 0042"][4]) > 0 and fen(by["Canteen 7"][4]) > 0  # subsidy
    assert fen(by["City Bus Co."][4]) == 0
    assert (f"the union owes the operators {total[4]} yuan of member discounts, the members "
            f"{total[5]} yuan of rebates") in day
    assert re.search(rf"loads: {kinds[6]}, \d+\.00 yuan paid in by the members at Union "
                     r"service point \(not sales\)", day)


def test_demo_is_reproducible(demo):
    assert CliRunner().invoke(root, ["demo"]).stdout == demo


def _generate(*args: str):
    return CliRunner().invoke(root, ["demo", "generate", *args], catch_exceptions=False)


def test_demo_generate_writes_a_day_that_settles(tmp_path):
    out = tmp_path / "day"
    result = _generate("--records", "2000", "--out", str(out), "--batch-records", "300",
                       "--json")
    assert result.exit_code == 0
    assert "PUBLISHED TEST KEYS" in result.stderr
    doc = json.loads(result.stdout)
    files = sorted(out.iterdir())
    assert doc["files"] == len(files) > 5 and doc["records"] == 2000 and doc["test_keys"]
    assert all(f.suffix == ".ucb" for f in files)  # batch files only
    report = settle(files, ledger_path=tmp_path / "ledger.sqlite",
                    inputs=RunInputs(Keystore.test()))
    summary = report.summary()
    assert summary["accepted"] == 2000 and not summary["rejected"]
    totals = summary["totals"]
    assert doc["totals"]["loads"] == totals["loads"]
    assert doc["totals"]["sales"] == {k: totals["sales"][k]
                                      for k in ("count", "list_amount", "charged_amount")}
    # the same seed gives the same files; another seed others
    again = _generate("--records", "2000", "--out", str(tmp_path / "again"),
                      "--batch-records", "300")
    assert again.exit_code == 0
    assert "wrote 2,000 records of 2026-05-01 over 100 cards in" in again.stdout
    assert [f.read_bytes() for f in files] == [
        f.read_bytes() for f in sorted((tmp_path / "again").iterdir())]
    other = _generate("--records", "2000", "--out", str(tmp_path / "other"), "--seed", "7")
    assert other.exit_code == 0
    assert b"".join(f.read_bytes() for f in sorted((tmp_path / "other").iterdir())) != \
        b"".join(f.read_bytes() for f in files)


def test_demo_generate_spreads_the_records_over_the_cards_asked(tmp_path):
    """``--cards``: the population the day's records are drawn from (a busier day of the
    same city has more records over the same cards)."""
    result = _generate("--records", "3000", "--cards", "40", "--out", str(tmp_path / "day"),
                       "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["cards"] == 40
    files = sorted((tmp_path / "day").iterdir())
    cards = {int.from_bytes(record.diversifier[-4:], "big")  # the card of either purse
             for path in files for record in read_batch(path).records}
    assert cards == set(range(40))
    default = _generate("--records", "3000", "--out", str(tmp_path / "default"), "--json")
    assert json.loads(default.stdout)["cards"] == 150  # one for every 20 records
    summary = settle(files, ledger_path=tmp_path / "ledger.sqlite",
                     inputs=RunInputs(Keystore.test())).summary()
    assert summary["accepted"] == 3000 and not summary["rejected"]
    refused = _generate("--records", "10", "--cards", "0", "--out", str(tmp_path / "none"))
    assert refused.exit_code == 2 and "--cards" in refused.stderr


def test_demo_generate_after_a_day_writes_the_next_one(tmp_path):
    """``--after``: the next date over the same cards and terminals; every seq, balance and
    batch id goes on from the days given, so the days settle one after the other with
    every record accepted, no replay and no gap in any card's seqs."""
    first = _generate("--records", "3000", "--cards", "60", "--out", str(tmp_path / "d1"),
                      "--batch-records", "400", "--json")
    assert first.exit_code == 0 and json.loads(first.stdout)["day"] == "2026-05-01"
    result = _generate("--records", "300", "--after", str(tmp_path / "d1"), "--out",
                       str(tmp_path / "d2"), "--batch-records", "400", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert (doc["day"], doc["cards"], doc["seed"]) == ("2026-05-02", 60, 20260502)
    # a quiet second day: the third goes on from the first for the purses it left alone
    third = _generate("--records", "3000", "--after", str(tmp_path / "d1"), "--after",
                      str(tmp_path / "d2"), "--out", str(tmp_path / "d3"))
    assert "wrote 3,000 records of 2026-05-03 over 60 cards" in third.stdout
    days = {name: [read_batch(p) for p in sorted((tmp_path / name).iterdir())]
            for name in ("d1", "d2", "d3")}

    def purses(*names: str) -> dict[tuple[bytes, int], list[tuple[Any, ...]]]:
        """Each purse's records: time, seq, is_load, balance after, amount."""
        seen: dict[tuple[bytes, int], list[tuple[Any, ...]]] = {}
        for batch in (b for name in names for b in days[name]):
            for r in batch.records:
                seen.setdefault((r.diversifier, r.application), []).append(
                    (r.when, r.card_seq, int(r.tx_type == 0x02), r.balance_after,
                     r.charged_amount))
        return seen

    for earlier, name, date in ((("d1",), "d2", dt.date(2026, 5, 2)),
                                (("d1", "d2"), "d3", dt.date(2026, 5, 3))):
        before, after = purses(*earlier), purses(name)
        assert set(after) <= set(before)  # the same cards
        assert {r.when.date() for b in days[name] for r in b.records} == {date}
        for purse, taps in after.items():
            for is_load in (0, 1):
                old = [tap[1] for tap in before[purse] if tap[2] == is_load]
                new = [tap[1] for tap in taps if tap[2] == is_load]
                if old and new:
                    assert min(new) == max(old) + 1  # the counter goes on
            last, first_tap = max(before[purse]), min(taps)  # the latest before, the first now
            moved = first_tap[4] if first_tap[2] else -first_tap[4]
            assert first_tap[3] == min(max(last[3] + moved, 0), 100_000)  # the balance too
    headers = {(b.terminal_id, b.batch_id) for name in days for b in days[name]}
    assert len(headers) == sum(len(d) for d in days.values())  # no batch id used twice
    ledger = tmp_path / "ledger.sqlite"
    for name, count in (("d1", 3000), ("d2", 300), ("d3", 3000)):
        report = settle(sorted((tmp_path / name).iterdir()), ledger_path=ledger,
                        inputs=RunInputs(Keystore.test()))
        assert report.summary()["accepted"] == count and not report.summary()["rejected"]
        assert report.document["gaps"] == []


def test_demo_generate_after_refuses_what_is_not_a_generated_day(tmp_path):
    (tmp_path / "empty").mkdir()
    refused = _generate("--records", "10", "--after", str(tmp_path / "empty"), "--out",
                        str(tmp_path / "next"))
    assert refused.exit_code == 2 and "no batch files" in refused.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x-00000001.ucb").write_bytes(b"UCOR" + bytes(60))
    refused = _generate("--records", "10", "--after", str(tmp_path / "bad"), "--out",
                        str(tmp_path / "next"))
    assert refused.exit_code == 2 and "--after" in refused.stderr
    day = tmp_path / "day"
    assert _generate("--records", "50", "--out", str(day)).exit_code == 0
    same = _generate("--records", "10", "--after", str(day), "--out", str(day), "--force")
    assert same.exit_code == 2 and "same directory" in same.stderr
    assert not (tmp_path / "next").exists()


def test_demo_generate_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "old-00000001.ucb").write_bytes(b"an older day")
    refused = _generate("--records", "100", "--out", str(tmp_path))
    assert refused.exit_code == 2 and "not empty" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "old-00000001.ucb"]
    forced = _generate("--records", "100", "--out", str(tmp_path), "--force")
    assert forced.exit_code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "notes.txt" in names and "old-00000001.ucb" not in names  # the older day is gone
    assert len(names) > 1


def test_plain_demo_help_lists_generate():
    result = CliRunner().invoke(root, ["demo", "--help"])
    assert result.exit_code == 0 and "generate" in result.stdout
