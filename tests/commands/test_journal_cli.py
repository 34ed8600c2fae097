"""`unioncard journal` and `unioncard batch export`, end to end, after taps and loads."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.cli import main, root
from unioncard.crypto import Keystore
from unioncard.offline import read_batch

TERMINAL_ID = "000000000001"
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Never the user's journal, never an inherited terminal id."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("UNIONCARD_TERMINAL_ID", raising=False)


def invoke(*args):
    return CliRunner().invoke(root, [str(a) for a in args], catch_exceptions=False)


def document(result) -> dict:
    assert result.stdout.count("\n") == 1, result.stdout
    return json.loads(result.stdout)


@pytest.fixture
def lane(tmp_path):
    """A card, a PSAM and a journal; ``lane.tap(mode, amount, at)`` returns tap's JSON."""

    class Lane:
        journal = tmp_path / "journal.sqlite"
        card = tmp_path / "card.json"
        psam = tmp_path / "psam.json"

        def tap(self, mode: str, amount: int, at: str, *extra: str) -> dict:
            result = invoke("tap", "--mode", mode, "--amount", amount, "--card", self.card,
                            "--psam", self.psam, "--journal", self.journal, "--at", at,
                            "--json", *extra)
            assert result.exit_code in (0, 1), result.output
            return document(result)

        def load(self, amount: int, at: str) -> dict:
            result = invoke("load", "--card", self.card, "--amount", amount, "--journal",
                            self.journal, "--at", at, "--json", "--terminal-id", "31010000ABCD")
            assert result.exit_code == 0, result.output
            return document(result)

        def journal_json(self, *extra: str) -> dict:
            result = invoke("journal", "--journal", self.journal, "--json", *extra)
            assert result.exit_code == 0, result.output
            return document(result)

        def export(self, out: Path) -> dict:
            result = invoke("batch", "export", "--journal", self.journal, "--out", out,
                            "--json")
            assert result.exit_code == 0, result.output
            return document(result)

    keys = Keystore.test()
    issue_member_card(MEMBER, keys, card_no=1, transit_balance=1000).save(Lane.card)
    issue_psam(keys, TERMINAL_ID).save(Lane.psam)
    return Lane()


def test_journal_counts_states_and_limits(lane):
    taps = [lane.tap("bus", 200, "2026-05-01T08:30:00"),
            lane.tap("metro", 400, "2026-05-01T09:00:00"),
            lane.tap("bus", 200_000, "2026-05-01T09:30:00")]  # declined: never journaled
    assert [t["decision"] for t in taps] == ["approved", "approved", "declined"]
    doc = lane.journal_json()
    assert doc["journal"] == str(lane.journal)
    assert doc["counts"] == {"pending": 0, "completed": 2, "voided": 0, "unexported": 2}
    entries = doc["transactions"]
    assert [(e["flow"], e["state"], e["amount"]) for e in entries] == [
        ("metro", "completed", 360), ("bus", "completed", 180)]  # newest first
    assert [e["record"]["tac"] for e in entries] == [taps[1]["tac"], taps[0]["tac"]]
    assert entries[1]["started_at"] == "2026-05-01T08:30:00"
    assert entries[1]["terminal_id"] == TERMINAL_ID and entries[1]["application"] == "transit"
    assert entries[1]["batch_id"] is None
    assert lane.journal_json("--state", "pending")["transactions"] == []
    assert len(lane.journal_json("--limit", "1")["transactions"]) == 1
    assert lane.journal_json("--state", "completed", "--limit", "1")["transactions"][0][
        "flow"] == "metro"


def test_journal_human_output(lane):
    lane.tap("bus", 200, "2026-05-01T08:30:00")
    result = invoke("journal", "--journal", lane.journal)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"{lane.journal}: 0 pending, 1 completed (1 not exported), 0 voided"
    assert lines[1].split() == ["#1", "2026-05-01T08:30:00", "bus", "completed", "terminal",
                                TERMINAL_ID, "transit", "card", "5500000000000001", "seq",
                                "0:", "1.80", "yuan"]


def test_batch_export_writes_the_taps_once(lane, tmp_path):
    taps = [lane.tap("bus", 200, "2026-05-01T08:30:00"),
            lane.tap("metro", 400, "2026-05-01T09:00:00")]
    loaded = lane.load(5000, "2026-05-01T10:00:00")
    out = tmp_path / "batches"
    doc = lane.export(out)
    assert doc["out"] == str(out)
    batches = {b["terminal_id"]: b for b in doc["batches"]}
    # one batch per terminal id: the load point's (31010000ABCD) and the validator's
    assert set(batches) == {"31010000ABCD", TERMINAL_ID}
    assert batches[TERMINAL_ID]["records"] == 2 and batches["31010000ABCD"]["records"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        Path(b["file"]).name for b in doc["batches"])
    assert all(p.suffix == ".ucb" for p in out.iterdir())  # nothing else in DIR
    validator = read_batch(Path(batches[TERMINAL_ID]["file"]))
    assert validator.terminal_id.hex().upper() == TERMINAL_ID
    assert [r.tac.hex().upper() for r in validator.records] == [t["tac"] for t in taps]
    assert [r.charged_amount for r in validator.records] == [180, 360]
    assert [r.when.isoformat() for r in validator.records] == [t["record"]["when"]
                                                               for t in taps]
    load_point = read_batch(Path(batches["31010000ABCD"]["file"]))
    assert [r.tac.hex().upper() for r in load_point.records] == [loaded["tac"]]
    # the journal knows; a second export exports nothing and leaves DIR alone
    journal = lane.journal_json()
    assert journal["counts"]["unexported"] == 0
    assert all(e["batch_id"] is not None for e in journal["transactions"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert lane.export(out)["batches"] == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    again = invoke("batch", "export", "--journal", lane.journal, "--out", out)
    assert again.stdout == "nothing to export: every completed record is in a batch already\n"
    # a later tap lands in a new batch, alone
    third = lane.tap("bus", 200, "2026-05-01T11:00:00")
    [new] = lane.export(out)["batches"]
    assert new["records"] == 1 and new["batch_id"] not in {b["batch_id"] for b in batches.values()}
    assert [r.tac.hex().upper() for r in read_batch(Path(new["file"])).records] == [third["tac"]]


def test_batch_export_human_output(lane, tmp_path):
    lane.tap("bus", 200, "2026-05-01T08:30:00")
    out = tmp_path / "out"
    result = invoke("batch", "export", "--journal", lane.journal, "--out", out)
    assert result.exit_code == 0
    assert result.stdout == (f"{out / '000000000001-00000001.ucb'}: 1 record(s), terminal "
                             f"{TERMINAL_ID}, batch 1\n")


def test_pending_transactions_are_not_exported(lane, tmp_path):
    """A pending transaction waits for its card; export takes only completed records."""
    from unioncard.applet_sim import SimulatedCard
    from unioncard.tariffs import Mode
    from unioncard.terminal import TransactionJournal, TransitPurchase, run
    from unioncard.transport import Channel, InProcessTransport

    card = SimulatedCard.load(lane.card, write_through=True)
    card.faults.cut_after("nvm.commit")
    links = []
    for device in (card, SimulatedCard.load(lane.psam, write_through=True)):
        transport = InProcessTransport(device)
        transport.power_on()
        links.append(Channel(transport))
    with TransactionJournal(lane.journal) as journal:
        outcome = run(TransitPurchase(Mode.BUS, 200, now=dt.datetime(2026, 5, 1, 8, 30),
                                      pending=journal.pending()),
                      card=links[0], psam=links[1], journal=journal)
    assert outcome.decision.value == "interrupted"
    assert lane.journal_json()["counts"]["pending"] == 1
    text = invoke("journal", "--journal", lane.journal).stdout
    assert "1 pending" in text and " pending " in text.splitlines()[1]
    assert lane.export(tmp_path / "out")["batches"] == []
    done = lane.tap("bus", 200, "2026-05-01T08:31:00")
    assert done["recovered"] is True
    [batch] = lane.export(tmp_path / "out")["batches"]
    [record] = read_batch(Path(batch["file"])).records
    assert record.tac.hex().upper() == done["tac"] and record.charged_amount == 180


@pytest.mark.parametrize("command", [["journal"], ["batch", "export", "--out", "OUT"]])
def test_a_missing_journal_is_a_clear_error_and_is_not_created(tmp_path, command):
    missing = tmp_path / "nowhere" / "journal.sqlite"
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else a for a in command]
    result = CliRunner().invoke(root, [*argv, "--journal", str(missing)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: no journal at {missing} (give --journal FILE)\n"
    assert not missing.exists() and not missing.parent.exists() and not out.exists()


def test_a_missing_journal_with_json_through_the_entry_point(tmp_path):
    missing = tmp_path / "journal.sqlite"
    script = Path(sys.executable).with_name("unioncard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "unioncard"]
    done = subprocess.run([*command, "journal", "--journal", str(missing), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"error": f"no journal at {missing} (give --journal FILE)",
                                       "exit_status": 1}
    assert "Traceback" not in done.stderr


def test_a_file_that_is_not_a_journal_is_one_line(tmp_path, capsys):
    bogus = tmp_path / "journal.sqlite"
    bogus.write_text("this is not SQLite\n" * 10)
    with pytest.raises(SystemExit) as stop:
        main(["journal", "--journal", str(bogus), "--json"])
    out, err = capsys.readouterr()
    assert stop.value.code == 1
    assert err == f"Error: {bogus} is not a unioncard journal: file is not a database\n"
    assert json.loads(out)["exit_status"] == 1
    assert bogus.read_text() == "this is not SQLite\n" * 10
