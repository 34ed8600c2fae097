"""`unioncard load --from SHEET` and `load --pending`: union disbursements at a service point."""

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from unioncard.applet_sim import MemberData, SimulatedCard, issue_member_card
from unioncard.cli import root
from unioncard.crypto import Keystore

MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31))
SHEET = ("会员编号,金额,事由\n20260001,5000,2026年互助金\n20260001,3000,困难补助\n"
         "20260002,2000,消费补贴\n2026x,100,坏行\n")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("UNIONCARD_TERMINAL_ID", raising=False)


def invoke(*args):
    return CliRunner().invoke(root, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def point(tmp_path):
    """A service point: a sheet in GBK, a member's card image, a journal path."""
    (tmp_path / "may.csv").write_bytes(SHEET.encode("gbk"))
    issue_member_card(MEMBER, Keystore.test(), card_no=1, transit_balance=1000).save(
        tmp_path / "card.json")
    return tmp_path


def test_import_says_what_it_added_and_refused(point):
    result = invoke("load", "--from", point / "may.csv", "--journal", point / "j.sqlite")
    assert result.exit_code == 1  # a row was refused
    assert "may.csv (gbk): 4 row(s)" in result.stdout
    assert "added 3 disbursement(s), 100.00 yuan" in result.stdout
    assert "line 5 (member 2026x): member number '2026x' must be 1 to 16 digits" in result.stdout


def test_import_again_adds_nothing_json(point):
    invoke("load", "--from", point / "may.csv", "--journal", point / "j.sqlite")
    result = invoke("load", "--from", point / "may.csv", "--journal", point / "j.sqlite",
                    "--json")
    doc = json.loads(result.stdout)
    assert (doc["added"], doc["already_pending"], doc["rows"]) == (0, 3, 4)
    assert doc["refused"] == [{"line": 5, "member_no": "2026x",
                               "reason": "member number '2026x' must be 1 to 16 digits"}]


def test_pending_loads_the_members_payments_once(point):
    journal = point / "j.sqlite"
    invoke("load", "--from", point / "may.csv", "--journal", journal)
    args = ["load", "--pending", "--card", point / "card.json", "--journal", journal,
            "--terminal-id", "0000000000AA", "--at", "2026-05-02T09:00:00", "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["decision"], doc["member_no"], doc["loaded_amount"]) == ("approved", "20260001",
                                                                        8000)
    assert [load["disbursement"]["reason"] for load in doc["loads"]] == ["2026年互助金", "困难补助"]
    assert all(load["tac"] for load in doc["loads"])
    assert SimulatedCard.load(point / "card.json").purse("transit").balance == 1000 + 8000
    again = json.loads(invoke(*args[:-3], "--at", "2026-05-02T09:05:00", "--json").stdout)
    assert again["loads"] == [] and again["reason"] == "no disbursement waits for member 20260001"
    assert SimulatedCard.load(point / "card.json").purse("transit").balance == 9000
    shown = json.loads(invoke("journal", "--journal", journal, "--disbursements",
                              "--json").stdout)
    assert shown["counts"]["loaded"] == {"count": 2, "amount": 8000}
    assert [d["member_no"] for d in shown["disbursements"]] == ["20260002"]


@pytest.mark.parametrize(("args", "message"), [
    (["--amount", "100", "--from", "may.csv"], "--amount and --from do not go together"),
    ([], "give one of --amount FEN, --from SHEET or --pending"),
    (["--from", "may.csv", "--card", "card.json"], "come later, with --pending"),
    (["--pending", "--card", "card.json", "--purse", "etc"], "--purse has no meaning"),
])
def test_usage_errors(point, args, message):
    argv = [point / a if a.endswith((".csv", ".json")) else a for a in args]
    result = invoke("load", *argv, "--journal", point / "j.sqlite", "--terminal-id",
                    "0000000000AA")
    assert result.exit_code == 2 and message in result.stderr


def test_an_unreadable_sheet_is_one_json_error(point):
    (point / "bad.csv").write_text("member,amount\n1,2\n")
    result = invoke("load", "--from", point / "bad.csv", "--journal", point / "j.sqlite",
                    "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["decision"] == "error" and "header lacks member_no, reason" in doc["reason"]
    assert not (point / "j.sqlite").exists() or json.loads(invoke(
        "journal", "--journal", point / "j.sqlite", "--disbursements", "--json").stdout
    )["disbursements"] == []


def test_a_large_sheet_imports_with_a_progress_bar_on_stderr_only(point):
    rows = "".join(f"2026{i:04d},100,补贴\n" for i in range(3000))
    (point / "big.csv").write_text("member_no,amount,reason\n" + rows, encoding="utf-8")
    result = invoke("load", "--from", point / "big.csv", "--journal", point / "j.sqlite")
    assert result.exit_code == 0
    assert "added 3000 disbursement(s), 3000.00 yuan" in result.stdout


def test_help_explains_the_three_ways():
    text = " ".join(invoke("load", "--help").stdout.split())
    for phrase in ("--from SHEET", "--pending", "each exactly once", "Exit status"):
        assert phrase in text


def test_a_sheet_path_that_does_not_exist_is_a_usage_error(tmp_path: Path):
    result = invoke("load", "--from", tmp_path / "none.csv")
    assert result.exit_code == 2 and "does not exist" in result.stderr
