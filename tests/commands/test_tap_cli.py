"""`unioncard tap`, `load` and `card read`, end to end: card and PSAM images, a journal file.

Most tests run in process with click's CliRunner against `unioncard.cli.root`.  The
JSON-on-every-exit-status contract is a property of `unioncard.cli.main` (it turns usage
errors into a JSON document), so those tests call `main` in process or run the real
entry point in a subprocess.  Every test uses a journal under ``tmp_path``, and
``XDG_DATA_HOME`` points into ``tmp_path`` as a safety net.
"""

import datetime as dt
import json
import os
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from unioncard.applet_sim import MemberData, SimulatedCard, issue_member_card, issue_psam
from unioncard.cli import main, root
from unioncard.crypto import Keystore
from unioncard.tariffs import Mode
from unioncard.terminal import TransactionJournal, TransitPurchase, run
from unioncard.transport import Channel, InProcessTransport

AT = "2026-05-01T08:30:00"
AT_DT = dt.datetime.fromisoformat(AT)
TERMINAL_ID = "000000000001"
CONTRACT_KEYS = {"decision", "reason", "list_amount", "charged_amount", "balance_after",
                 "rules", "tac", "recovered"}
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x02)
TOLLS = """\
network = "1101"
name = "Example expressway"

[[toll]]
entry = "0203"
exit = "0007"
fen = { 1 = 10000, 2 = 15000 }

[[toll]]
entry = "0301"
exit = "0007"
fen = { 1 = 12000 }
"""
FLAT_BUS_RULES = """\
[ruleset]
name = "flat member bus fare"

[[rule]]
id = "bus-flat-100"
mode = "bus"
[rule.when]
card_types = ["union-member"]
member_status = ["active"]
[rule.effect]
kind = "price"
price = 100
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Never the user's journal, never an inherited terminal id."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("UNIONCARD_TERMINAL_ID", raising=False)


class Lane:
    """A card image, a PSAM image and a journal under one directory."""

    def __init__(self, root_dir: Path) -> None:
        self.dir = root_dir
        self.journal = root_dir / "journal.sqlite"
        self.psam = root_dir / "psam.json"
        self.card = root_dir / "card.json"
        issue_psam(Keystore.test(), TERMINAL_ID).save(self.psam)

    def issue(self, name: str = "card.json", *, card_no: int = 1, **options) -> Path:
        options.setdefault("transit_balance", 1000)
        options.setdefault("etc_balance", 20000)
        path = self.dir / name
        issue_member_card(MEMBER, Keystore.test(), card_no=card_no, **options).save(path)
        return path

    def tap(self, *args: str, card: Path | None = None, psam: Path | None = None,
            at: str = AT, as_json: bool = True):
        """Run ``unioncard tap`` in process; the result and its JSON document (or None)."""
        argv = ["tap", *args, "--card", str(card or self.card), "--psam", str(psam or self.psam),
                "--journal", str(self.journal), *([] if "--at" in args else ["--at", at])]
        result = invoke(*argv, *(["--json"] if as_json else []))
        return result, (one_document(result.stdout) if as_json else None)


def invoke(*args: str):
    return CliRunner().invoke(root, [str(a) for a in args], catch_exceptions=False)


def one_document(stdout: str) -> dict:
    """stdout holds exactly one JSON document, on one line."""
    assert stdout.count("\n") == 1 and stdout.endswith("\n"), stdout
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    return doc


def via_main(capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point function, in process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code: int | str | None = 0
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return (0 if code is None else code), out, err


def balance(image: Path, purse: str = "transit") -> int:
    return SimulatedCard.load(image).purse(purse).balance


def journal_doc(path: Path, *extra: str) -> dict:
    result = invoke("journal", "--journal", str(path), "--json", *extra)
    assert result.exit_code == 0, result.output
    return one_document(result.stdout)


@pytest.fixture
def lane(tmp_path) -> Lane:
    lane = Lane(tmp_path)
    lane.issue()
    return lane


def other_keys(**replace: str) -> Keystore:
    text = Keystore.test().to_toml().replace("test_keys = true", "test_keys = false")
    for old, new in replace.items():
        text = text.replace(old, new)
    return Keystore.from_toml(text)


TRANSIT_PURCHASE_MK = "404142434445464748494A4B4C4D4E4F"


# --- 1. fares ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_member_bus_fare_json_and_the_image_balance(tmp_path, protocol):
    lane = Lane(tmp_path)
    lane.issue(protocol=protocol)
    result, doc = lane.tap("--mode", "bus", "--amount", "200")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert doc.keys() >= CONTRACT_KEYS
    assert doc["decision"] == "approved"
    assert (doc["list_amount"], doc["charged_amount"]) == (200, 180)
    assert doc["balance_before"] == 1000 and doc["balance_after"] == 820
    assert doc["rules"] == ["bus-member-10"]
    assert re.fullmatch(r"[0-9A-F]{8}", doc["tac"])
    assert doc["recovered"] is False
    for key in ("list_amount", "charged_amount", "balance_after"):
        assert type(doc[key]) is int
    record = doc["record"]
    assert record["when"] == AT and record["terminal_id"] == TERMINAL_ID
    assert record["tac"] == doc["tac"] and record["charged_amount"] == 180
    assert record["card_expiry"] == "2030-12-31"
    assert doc["member"]["member_no"] == "20260001"
    # the image is written through: the card's balance is on disk
    assert balance(lane.card) == 820
    shown = json.loads(invoke("card", "show", "--json", str(lane.card)).stdout)
    transit = next(p for p in shown["purses"] if p["application"] == "transit")
    assert transit["balance"] == 820 and transit["offline_seq"] == 1
    psam = json.loads(invoke("card", "show", "--json", str(lane.psam)).stdout)
    assert psam["psam"]["terminal_seq"] == 1


def test_member_bus_fare_human_output(lane):
    result, _ = lane.tap("--mode", "bus", "--amount", "200", as_json=False)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "approved: bus-member-10: 10% off, -20 fen"
    assert lines[1] == "  list 2.00 yuan, charged 1.80 yuan (bus-member-10)"
    assert lines[2] == "  balance 10.00 yuan -> 8.20 yuan"
    assert re.fullmatch(r"  terminal 000000000001 seq 1, card seq 0, TAC [0-9A-F]{8}", lines[3])
    assert len(lines) == 4


def test_ordinary_card_pays_the_list_fare(tmp_path):
    lane = Lane(tmp_path)
    lane.issue(card_type=0x01)
    result, doc = lane.tap("--mode", "bus", "--amount", "200")
    assert result.exit_code == 0
    assert (doc["list_amount"], doc["charged_amount"], doc["rules"]) == (200, 200, [])
    assert "member" not in doc
    assert balance(lane.card) == 800


def test_metro_fare_with_a_route_and_station(lane):
    result, doc = lane.tap("--mode", "metro", "--amount", "400", "--route", "L2",
                           "--station", "0102")
    assert result.exit_code == 0
    assert (doc["flow"], doc["charged_amount"], doc["rules"]) == ("metro", 360,
                                                                   ["metro-member-10"])
    assert doc["record"]["route"] == "L2"
    assert doc["record"]["station"] == "0102"
    assert balance(lane.card) == 640


def test_a_rules_file_changes_the_price(lane, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(FLAT_BUS_RULES)
    result, doc = lane.tap("--mode", "bus", "--amount", "200", "--rules", str(rules))
    assert result.exit_code == 0
    assert (doc["list_amount"], doc["charged_amount"], doc["rules"]) == (200, 100,
                                                                          ["bus-flat-100"])
    assert balance(lane.card) == 900
    # the record names the rule set it was priced with, not the shipped one
    _, default = lane.tap("--mode", "bus", "--amount", "200", at="2026-05-01T08:40:00")
    assert doc["record"]["ruleset_version"] != default["record"]["ruleset_version"]


# --- 2. ETC -----------------------------------------------------------------------------------


@pytest.fixture
def tolls(tmp_path) -> Path:
    path = tmp_path / "tolls.toml"
    path.write_text(TOLLS)
    return path


def test_etc_entry_then_exit_charges_the_member_toll(lane, tolls):
    result, entry = lane.tap("--mode", "etc-entry", "--station", "0203")
    assert result.exit_code == 0
    assert entry["decision"] == "approved" and entry["reason"] == "entry recorded on the card"
    assert entry["charged_amount"] == 0 and entry["toll"]["station"] == "0203"
    result, exit_ = lane.tap("--mode", "etc-exit", "--station", "0007", "--toll-table",
                             str(tolls), at="2026-05-01T09:45:00")
    assert result.exit_code == 0
    assert (exit_["list_amount"], exit_["charged_amount"]) == (10000, 9500)
    assert exit_["rules"] == ["etc-member-5"]
    assert exit_["balance_after"] == 10500
    toll = exit_["toll"]
    assert (toll["entry_station"], toll["station"], toll["entry_time"]) == ("0203", "0007", AT)
    assert toll["toll_fen"] == 10000 and toll["vehicle_class"] == 1
    assert balance(lane.card, "etc") == 10500
    assert balance(lane.card) == 1000  # the transit purse is another purse


def test_etc_exit_with_the_entry_vehicle_class(lane, tolls):
    lane.tap("--mode", "etc-entry", "--station", "0203", "--vehicle-class", "2")
    _, doc = lane.tap("--mode", "etc-exit", "--station", "0007", "--toll-table", str(tolls),
                      at="2026-05-01T09:45:00")
    assert (doc["list_amount"], doc["charged_amount"]) == (15000, 14250)


def test_etc_exit_without_entry_charges_the_longest_toll_and_says_so(lane, tolls):
    result, doc = lane.tap("--mode", "etc-exit", "--station", "0007", "--toll-table",
                           str(tolls))
    assert result.exit_code == 0
    assert (doc["list_amount"], doc["charged_amount"]) == (12000, 11400)
    assert doc["reason"].startswith("no entry on the card: charged the longest toll into "
                                    "this exit; ")
    assert doc["toll"]["entry_station"] is None
    other = lane.issue("other.json", card_no=2)
    human, _ = lane.tap("--mode", "etc-exit", "--station", "0007", "--toll-table", str(tolls),
                        card=other, as_json=False)
    assert human.stdout.startswith("approved: no entry on the card: charged the longest toll")


def test_etc_exit_amount_overrides_the_table(lane, tolls):
    lane.tap("--mode", "etc-entry", "--station", "0203")
    result, doc = lane.tap("--mode", "etc-exit", "--station", "0007", "--toll-table",
                           str(tolls), "--amount", "3000", at="2026-05-01T09:00:00")
    assert result.exit_code == 0
    assert (doc["list_amount"], doc["charged_amount"]) == (3000, 2850)
    assert doc["reason"].startswith("toll given by the lane")
    assert balance(lane.card, "etc") == 20000 - 2850


USAGE_ERRORS = [
    (["--mode", "etc-entry"], "an ETC lane needs --station HEX"),
    (["--mode", "etc-exit", "--amount", "3000"], "an ETC lane needs --station HEX"),
    (["--mode", "etc-exit", "--station", "0007"],
     "an ETC exit needs --toll-table FILE or --amount FEN"),
    (["--mode", "bus"], "a bus fare needs --amount FEN"),
    (["--mode", "etc-entry", "--station", "23"], "4 hex digits"),
    (["--mode", "bus", "--amount", "200", "--at", "2026-05-01"],
     "is not an ISO 8601 date and time"),
    (["--mode", "pos", "--amount", "500"], "a sale needs --amount FEN and --merchant ID"),
    (["--mode", "bus", "--amount", "200", "--merchant", "M-1"],
     "--merchant has no meaning for --mode bus"),
    (["--mode", "pos", "--amount", "500", "--merchant", "M-1", "--route", "42"],
     "--route has no meaning for --mode pos"),
    (["--mode", "pos", "--amount", "500", "--merchant", "M-1", "--mcc", "10000"],
     "10000 is not in the range 0<=x<=9999"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_tap_usage_errors_exit_2(lane, args, message):
    result, _ = lane.tap(*args, as_json=False)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert balance(lane.card) == 1000 and balance(lane.card, "etc") == 20000


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_tap_usage_errors_with_json_give_one_document(lane, capsys, args, message):
    code, out, err = via_main(capsys, "tap", *args, "--card", lane.card, "--psam", lane.psam,
                              "--journal", lane.journal, "--json")
    assert code == 2
    doc = one_document(out)
    assert doc["decision"] == "error" and message in doc["reason"]
    assert doc["exit_status"] == 2
    assert message in err and "Traceback" not in err


def test_pos_sale_at_a_partner_merchant(lane):
    lane.issue(transit_balance=20000)
    result, doc = lane.tap("--mode", "pos", "--amount", "12000", "--merchant",
                           "EXAMPLE-PARTNER-0001", "--mcc", "5411")
    assert result.exit_code == 0, doc
    assert (doc["list_amount"], doc["charged_amount"]) == (12000, 11000)
    assert doc["rules"] == ["partner-example-100-10"]
    assert doc["deferred_to_settlement"] == ["consumption-subsidy"]  # a capped rebate
    assert (doc["record"]["merchant"], doc["record"]["mcc"], doc["record"]["mode"]) == (
        "EXAMPLE-PARTNER-0001", 5411, 7)
    assert balance(lane.card) == 20000 - 11000
    result, _ = lane.tap("--mode", "pos", "--amount", "12000", "--merchant",
                         "EXAMPLE-PARTNER-0001", "--mcc", "5411", as_json=False)
    assert result.exit_code == 1 and "insufficient balance" in result.stdout


def test_pos_merchant_id_must_fit_the_record(lane):
    result, doc = lane.tap("--mode", "pos", "--amount", "500", "--merchant", "超市")
    assert result.exit_code == 2 and doc["decision"] == "error"
    assert "1 to 24 printable ASCII characters" in doc["reason"]
    assert balance(lane.card) == 1000


def test_a_tap_recorded_with_trace_replays_to_the_same_decision(lane, tmp_path):
    trace = tmp_path / "bus.txt"
    result, recorded = lane.tap("--mode", "bus", "--amount", "200", "--trace", trace)
    assert result.exit_code == 0 and trace.read_text().count(" > ") >= 10
    replayed = one_document(invoke("tap", "--mode", "bus", "--amount", "200", "--replay", trace,
                                   "--json").stdout)
    assert replayed.pop("replayed") == str(trace)
    assert replayed | {"journal_id": None} == recorded | {"journal_id": None}
    assert balance(lane.card) == 1000 - 180  # replaying charges nothing
    other = invoke("tap", "--mode", "bus", "--amount", "300", "--replay", trace, "--json")
    assert other.exit_code == 2
    doc = one_document(other.stdout)
    assert doc["decision"] == "error" and doc["reason"].startswith("replay mismatch at card")
    assert "INITIALIZE FOR PURCHASE" in doc["reason"]


def test_a_hotlisted_card_is_declined_and_with_the_key_blocked(lane, tmp_path):
    hotlist = tmp_path / "hotlist.csv"
    hotlist.write_text("issuer,card,listed_at\n10000000FFFFFFFF,5500000000000001,"
                       "2026-05-01T08:00:00+08:00\n")
    result, doc = lane.tap("--mode", "bus", "--amount", "200", "--hotlist", hotlist)
    assert result.exit_code == 1 and doc["decision"] == "declined"
    assert doc["reason"] == ("the card is hotlisted (reported lost or cancelled, listed "
                             "2026-05-01T08:00:00)")
    assert doc["hotlisted"] == {"listed_at": "2026-05-01T08:00:00", "blocked": False}
    keys = tmp_path / "keys.toml"
    keys.write_text(Keystore.test().to_toml())
    result, doc = lane.tap("--mode", "bus", "--amount", "200", "--hotlist", hotlist,
                           "--block-keys", keys)
    assert result.exit_code == 1 and doc["hotlisted"]["blocked"] is True
    assert SimulatedCard.load(lane.card).purse("transit").state.name == "BLOCKED"
    assert balance(lane.card) == 1000
    result, _ = lane.tap("--mode", "bus", "--amount", "200", "--block-keys", keys,
                         as_json=False)
    assert result.exit_code == 2 and "give --hotlist FILE too" in result.stderr


def test_trace_never_overwrites_and_replay_takes_no_card(lane, tmp_path):
    trace = tmp_path / "kept.txt"
    trace.write_text("precious\n")
    result, _ = lane.tap("--mode", "bus", "--amount", "200", "--trace", trace, as_json=False)
    assert result.exit_code == 2 and "the file exists" in result.stderr
    assert trace.read_text() == "precious\n" and balance(lane.card) == 1000
    result = invoke("tap", "--mode", "bus", "--amount", "200", "--replay", trace, "--card",
                    lane.card)
    assert result.exit_code == 2 and "--card cannot go with it" in result.stderr


# --- 3. declines and a wrong PSAM -------------------------------------------------------------


def test_insufficient_balance_is_declined_and_nothing_journaled(tmp_path):
    lane = Lane(tmp_path)
    lane.issue(transit_balance=100)
    result, doc = lane.tap("--mode", "bus", "--amount", "200")
    assert result.exit_code == 1
    assert doc["decision"] == "declined"
    assert doc["reason"] == "insufficient balance: 1.00 yuan on the card, 1.80 yuan to pay"
    assert doc["charged_amount"] is None and doc["tac"] is None
    assert doc["balance_after"] == 100
    assert balance(lane.card) == 100
    assert journal_doc(lane.journal)["transactions"] == []
    human, _ = lane.tap("--mode", "bus", "--amount", "200", as_json=False)
    assert human.exit_code == 1
    assert human.stdout.startswith("declined: insufficient balance")


def test_expired_card_is_declined(tmp_path):
    lane = Lane(tmp_path)
    lane.issue(expiry=dt.date(2026, 4, 30))
    result, doc = lane.tap("--mode", "bus", "--amount", "200")
    assert result.exit_code == 1
    assert (doc["decision"], doc["reason"]) == ("declined", "card expired on 2026-04-30")
    assert balance(lane.card) == 1000
    # the day it expires it still works
    result, doc = lane.tap("--mode", "bus", "--amount", "200", at="2026-04-30T23:59:59")
    assert result.exit_code == 0 and doc["charged_amount"] == 180


def test_psam_without_the_cards_key_version_is_an_error(lane, tmp_path):
    keys = other_keys(**{"key_version = 0x01": "key_version = 0x03"})
    psam = tmp_path / "psam-v3.json"
    issue_psam(keys, "000000000009").save(psam)
    result, doc = lane.tap("--mode", "bus", "--amount", "200", psam=psam)
    assert result.exit_code == 2
    assert doc["decision"] == "error"
    assert "the PSAM has no purchase key of key version 01" in doc["reason"]
    assert balance(lane.card) == 1000


@pytest.fixture
def foreign_psam(tmp_path) -> Path:
    """A PSAM issued from a keystore whose purchase master keys are not the cards'."""
    keys = other_keys(**{TRANSIT_PURCHASE_MK: "0123456789ABCDEF0123456789ABCDEF"})
    path = tmp_path / "psam-foreign.json"
    issue_psam(keys, "000000000009").save(path)
    return path


def test_psam_with_other_keys_charges_nothing_and_names_the_psam_keys(lane, foreign_psam):
    result, doc = lane.tap("--mode", "bus", "--amount", "200", psam=foreign_psam)
    assert result.exit_code != 0
    assert doc["decision"] != "approved"
    assert "PSAM does not hold the card's keys" in doc["reason"]
    assert doc["charged_amount"] is None and doc["tac"] is None
    assert balance(lane.card) == 1000
    journal = journal_doc(lane.journal)
    assert journal["counts"] == {"pending": 0, "completed": 0, "voided": 1, "unexported": 0}


def test_psam_with_other_keys_is_an_error_exit_2(lane, foreign_psam):
    # The card is fine; the terminal's PSAM is wrong. purchase.py raises the 9302 at DEBIT
    # as Decision.DECLINED, so the passenger is turned away as if the card were at fault.
    result, doc = lane.tap("--mode", "bus", "--amount", "200", psam=foreign_psam)
    assert (result.exit_code, doc["decision"]) == (2, "error")


# --- 4. an interrupted purchase, settled by the next tap --------------------------------------


def interrupted_bus_fare(lane: Lane, arm) -> object:
    """Run a 2.00 yuan bus fare in process with the card's power cut as ``arm`` says."""
    card = SimulatedCard.load(lane.card, write_through=True)
    arm(card.faults)
    psam = SimulatedCard.load(lane.psam, write_through=True)
    with ExitStack() as stack:
        links = []
        for device in (card, psam):
            transport = InProcessTransport(device)
            transport.power_on()
            stack.callback(transport.power_off)
            links.append(Channel(transport))
        journal = stack.enter_context(TransactionJournal(lane.journal))
        return run(TransitPurchase(Mode.BUS, 200, now=AT_DT, pending=journal.pending()),
                   card=links[0], psam=links[1], journal=journal)


def assert_pending_bus_fare(lane: Lane) -> None:
    before = journal_doc(lane.journal)
    assert before["counts"]["pending"] == 1
    [pending] = before["transactions"]
    assert (pending["state"], pending["flow"], pending["amount"]) == ("pending", "bus", 180)
    assert pending["record"] is None and pending["started_at"] == AT
    only = journal_doc(lane.journal, "--state", "pending")
    assert [t["id"] for t in only["transactions"]] == [pending["id"]]


def test_retap_completes_a_debit_the_card_committed(lane):
    outcome = interrupted_bus_fare(lane, lambda faults: faults.cut_after("nvm.commit"))
    assert outcome.decision.value == "interrupted"
    assert_pending_bus_fare(lane)
    result, doc = lane.tap("--mode", "bus", "--amount", "200", at="2026-05-01T08:31:00")
    assert result.exit_code == 0
    assert doc["decision"] == "approved" and doc["recovered"] is True
    assert doc["charged_amount"] == 180 and doc["balance_after"] == 820
    assert re.fullmatch(r"[0-9A-F]{8}", doc["tac"])
    assert "nothing more was charged" in doc["reason"]
    assert balance(lane.card) == 820  # charged once
    after = journal_doc(lane.journal)
    assert after["counts"] == {"pending": 0, "completed": 1, "voided": 0, "unexported": 1}
    [done] = after["transactions"]
    assert done["state"] == "completed" and done["record"]["tac"] == doc["tac"]
    assert done["reason"] == ("the card proved the debit (GET TRANSACTION PROVE) and its log "
                              "(EF 0018) shows it")
    assert done["resolved_at"] is not None
    assert "RECOVERED" in done["record"]["flags"]
    # a third tap is a new ride
    _, again = lane.tap("--mode", "bus", "--amount", "200", at="2026-05-01T08:32:00")
    assert again["recovered"] is False and balance(lane.card) == 640


def test_retap_voids_a_debit_that_never_happened_and_charges_once(lane):
    outcome = interrupted_bus_fare(lane, lambda faults: faults.cut_before("purse.balance"))
    assert outcome.decision.value == "interrupted"
    assert balance(lane.card) == 1000
    assert_pending_bus_fare(lane)
    result, _ = lane.tap("--mode", "bus", "--amount", "200", at="2026-05-01T08:31:00",
                         as_json=False)
    assert result.exit_code == 0
    assert "warning: interrupted bus #1 of 2026-05-01T08:30:00 (180 fen): voided" \
        in result.stdout
    assert balance(lane.card) == 820  # charged once, by the re-tap
    after = journal_doc(lane.journal)
    assert after["counts"] == {"pending": 0, "completed": 1, "voided": 1, "unexported": 1}
    states = {t["id"]: (t["state"], t["reason"]) for t in after["transactions"]}
    assert states == {1: ("voided", "the card's offline seq did not move: the debit never "
                                    "happened"), 2: ("completed", "")}


def test_retap_in_another_mode_settles_the_pending_fare_and_charges_its_own(lane):
    interrupted_bus_fare(lane, lambda faults: faults.cut_after("nvm.commit"))
    result, doc = lane.tap("--mode", "metro", "--amount", "400", at="2026-05-01T08:31:00")
    assert result.exit_code == 0
    assert doc["recovered"] is False and doc["charged_amount"] == 360
    assert any("completed" in w for w in doc["warnings"])
    assert balance(lane.card) == 1000 - 180 - 360


# --- 5. load ----------------------------------------------------------------------------------


LOAD_POINT = "31010000ABCD"


def load(lane: Lane, *args: str, at: str = AT, terminal: str | None = LOAD_POINT):
    where = ["--terminal-id", terminal] if terminal else []
    result = invoke("load", "--card", lane.card, "--journal", lane.journal, "--at", at,
                    "--json", *where, *args)
    return result, one_document(result.stdout)


def test_load_transit_and_etc(lane):
    result, doc = load(lane, "--amount", "5000")
    assert result.exit_code == 0
    assert (doc["decision"], doc["charged_amount"], doc["balance_after"]) == ("approved", 5000,
                                                                              6000)
    assert re.fullmatch(r"[0-9A-F]{8}", doc["tac"])
    assert doc["record"]["terminal_id"] == LOAD_POINT
    assert balance(lane.card) == 6000
    result, doc = load(lane, "--amount", "2500", "--purse", "etc", terminal=None)
    assert result.exit_code == 0 and doc["balance_after"] == 22500
    assert doc["record"]["terminal_id"] == LOAD_POINT  # the journal remembers its load point
    assert balance(lane.card, "etc") == 22500 and balance(lane.card) == 6000


def test_a_journal_is_one_load_point(lane):
    result, doc = load(lane, "--amount", "100", terminal=None)
    assert result.exit_code == 2 and "needs this load point's terminal id" in doc["reason"]
    assert load(lane, "--amount", "100")[0].exit_code == 0
    result, doc = load(lane, "--amount", "100", terminal="000000000099")
    assert result.exit_code == 2
    assert f"is the journal of load terminal {LOAD_POINT}, not 000000000099" in doc["reason"]
    assert balance(lane.card) == 1100  # one load only


def test_load_test_keys_warning_is_on_stderr_only(lane):
    result, doc = load(lane, "--amount", "100")
    assert "PUBLISHED TEST KEYS" in result.stderr
    assert "PUBLISHED TEST KEYS" not in result.stdout
    assert doc["decision"] == "approved"
    human = invoke("load", "--card", lane.card, "--journal", lane.journal, "--amount", "100",
                   "--terminal-id", LOAD_POINT)
    assert human.exit_code == 0
    assert "PUBLISHED TEST KEYS" in human.stderr and "TEST KEYS" not in human.stdout
    assert human.stdout.startswith("approved: loaded 100 fen onto the transit purse")


def test_load_with_own_keystore_is_quiet(lane, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(other_keys().to_toml())  # the same keys, not marked as test keys
    result, doc = load(lane, "--amount", "100", "--keys", str(keys))
    assert result.exit_code == 0 and doc["balance_after"] == 1100
    assert result.stderr == ""


def test_load_above_the_purse_maximum_is_declined(lane):
    result, doc = load(lane, "--amount", "99001")
    assert result.exit_code == 1
    assert doc["decision"] == "declined" and "purse maximum" in doc["reason"]
    assert balance(lane.card) == 1000
    result, doc = load(lane, "--amount", "99000")
    assert result.exit_code == 0 and balance(lane.card) == 100_000


def test_load_amount_beyond_the_option_range_is_a_usage_error(lane, capsys):
    code, out, err = via_main(capsys, "load", "--card", lane.card, "--journal", lane.journal,
                              "--amount", "100001", "--json")
    assert code == 2
    assert one_document(out)["decision"] == "error"
    assert "100001" in err


# --- 6. card read -----------------------------------------------------------------------------


def test_card_read_json_after_a_tap(lane):
    lane.tap("--mode", "bus", "--amount", "200")
    image = lane.card.read_bytes()
    result = invoke("card", "read", "--card", lane.card, "--json")
    assert result.exit_code == 0
    doc = one_document(result.stdout)
    assert doc["decision"] == "approved"
    assert doc["balances"] == {"transit": 820, "etc": 20000}
    assert doc["member"]["member_no"] == "20260001" and doc["member"]["name"] == "张三"
    purses = {p["application"]: p for p in doc["purses"]}
    assert set(purses) == {"transit", "etc"}
    assert all(p["present"] for p in purses.values())
    assert purses["transit"]["log"] == [{"seq": 0, "type": "purchase", "amount": 180,
                                        "terminal_id": TERMINAL_ID, "date": "2026-05-01",
                                        "time": "08:30:00"}]
    assert purses["etc"]["log"] == []
    for purse in purses.values():
        assert purse["holder"] == {"name": "张三", "id_number": "110105********002X"}
    assert "11010519491231002X" not in result.stdout
    unmasked = invoke("card", "read", "--card", lane.card, "--json", "--unmask")
    assert "11010519491231002X" in unmasked.stdout
    assert lane.card.read_bytes() == image  # a read changes nothing


def test_card_read_human_output(lane):
    lane.tap("--mode", "bus", "--amount", "200")
    result = invoke("card", "read", "--card", lane.card)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == ("member 20260001 张三 (市总工会), active, valid 2026-01-01 to "
                        "2030-12-31")
    assert lines[1].startswith("transit purse: balance 8.20 yuan, card 10005500000000000001, "
                               "card type 55")
    assert "  holder 张三 110105********002X" in lines
    assert "  log: seq 0 purchase 1.80 yuan terminal 000000000001 2026-05-01 08:30:00" in lines
    assert any(line.startswith("etc purse: balance 200.00 yuan") for line in lines)


def test_card_read_of_an_ordinary_card_has_no_member(tmp_path):
    lane = Lane(tmp_path)
    lane.issue(card_type=0x01)
    doc = one_document(invoke("card", "read", "--card", lane.card, "--json").stdout)
    assert doc["member"] is None
    assert {p["card_type"] for p in doc["purses"]} == {"01"}


# --- 8. bad inputs ----------------------------------------------------------------------------


@pytest.fixture
def junk(tmp_path) -> Path:
    path = tmp_path / "junk.json"
    path.write_text("not json\n")
    return path


def bad_inputs(lane: Lane, junk: Path) -> dict[str, tuple[list, str]]:
    missing = lane.dir / "missing.json"
    return {
        "missing image": (["--card", missing], "does not exist"),
        "not json": (["--card", junk], f"card image {junk} is not JSON"),
        "both": (["--card", lane.card, "--reader", "0"], "not both"),
        "neither": ([], "which card? give --card IMAGE or --reader NAME"),
        "both psams": (["--card", lane.card, "--psam-reader", "x", "--psam", lane.psam],
                    "give the PSAM as an image or a reader, not both"),
        "psam not json": (["--card", lane.card, "--psam", junk], "is not JSON"),
    }


@pytest.mark.parametrize("case", ["missing image", "not json", "both", "neither", "both psams",
                                  "psam not json"])
def test_bad_card_inputs_exit_2_with_one_json_document(lane, junk, capsys, case):
    args, message = bad_inputs(lane, junk)[case]
    psam = [] if "--psam" in args else ["--psam", lane.psam]
    code, out, err = via_main(capsys, "tap", "--mode", "bus", "--amount", "200", *args, *psam,
                              "--journal", lane.journal, "--json")
    assert code == 2
    doc = one_document(out)
    assert doc["decision"] == "error" and message in doc["reason"]
    assert "\n" not in doc["reason"]
    assert "Traceback" not in err


@pytest.mark.parametrize(("command", "extra"), [
    ("tap", ["--mode", "bus", "--amount", "200", "--psam", "PSAM"]),
    ("load", ["--amount", "100", "--terminal-id", "31010000ABCD"]),
    ("card read", []),
])
def test_an_image_that_is_not_json_is_one_line(lane, junk, capsys, command, extra):
    extra = [str(lane.psam) if a == "PSAM" else a for a in extra]
    journal = ["--journal", lane.journal] if command != "card read" else []
    code, out, err = via_main(capsys, *command.split(), "--card", junk, *extra, *journal)
    assert code == 2
    assert f"card image {junk} is not JSON" in out + err
    assert len((out + err).strip().splitlines()) <= 2  # the error (and a test-keys warning)
    assert "Traceback" not in err


def test_an_error_without_json_goes_to_stderr(lane, junk, capsys):
    code, out, err = via_main(capsys, "tap", "--mode", "bus", "--amount", "200", "--card", junk,
                              "--psam", lane.psam, "--journal", lane.journal)
    assert code == 2
    assert "is not JSON" in err and out == ""


def test_bad_toll_table_and_rules_file_are_errors(lane, tmp_path):
    table = tmp_path / "bad-tolls.toml"
    table.write_text('network = "1101"\n[[toll]]\nentry = "0203"\nexit = "0007"\n'
                     'fen = { 1 = -5 }\n')
    result, doc = lane.tap("--mode", "etc-exit", "--station", "0007", "--toll-table",
                           str(table))
    assert result.exit_code == 2
    assert doc["decision"] == "error"
    assert f"{table}:5: [[toll]] #1: toll for class 1" in doc["reason"]
    rules = tmp_path / "bad-rules.toml"
    rules.write_text("[[rule]]\nid = 'x'\n")
    result, doc = lane.tap("--mode", "bus", "--amount", "200", "--rules", str(rules))
    assert result.exit_code == 2 and doc["decision"] == "error"
    assert balance(lane.card) == 1000 and balance(lane.card, "etc") == 20000


# --- the JSON contract, through the entry point -----------------------------------------------


def contract_cases(lane: Lane, junk: Path) -> dict[str, list]:
    common = ["--psam", lane.psam, "--journal", lane.journal, "--at", AT, "--json"]
    return {
        "approved": ["tap", "--mode", "bus", "--amount", "200", "--card", lane.card, *common],
        "declined": ["tap", "--mode", "bus", "--amount", "200000", "--card", lane.card, *common],
        "usage error": ["tap", "--mode", "etc-exit", "--card", lane.card, *common],
        "runtime error": ["tap", "--mode", "bus", "--amount", "200", "--card", junk, *common],
    }


def _entry_point() -> list[str]:
    script = Path(sys.executable).with_name("unioncard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "unioncard"]


def test_the_entry_point_prints_one_json_document_for_every_exit_status(lane, junk, tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("UNIONCARD_TERMINAL_ID", None)
    expected = {"approved": 0, "declined": 1, "usage error": 2, "runtime error": 2}
    for case, argv in contract_cases(lane, junk).items():
        done = subprocess.run([*_entry_point(), *map(str, argv)], capture_output=True,
                              text=True, env=env, timeout=60)
        assert done.returncode == expected[case], (case, done.stderr)
        doc = one_document(done.stdout)
        assert doc["decision"] == case.split()[-1], case
        assert "Traceback" not in done.stderr
    assert balance(lane.card) == 820


def test_no_reader_is_an_error_with_a_json_document(lane, tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd" / "pcscd.comm")}
    for argv in (["tap", "--mode", "bus", "--amount", "200", "--psam", str(lane.psam),
                  "--journal", str(lane.journal)], ["card", "read"]):
        done = subprocess.run([*_entry_point(), *argv, "--reader", "0", "--wait", "0",
                               "--json"], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2, done.stderr
        doc = one_document(done.stdout)
        assert doc["decision"] == "error"
        assert "pcscd is not running" in doc["reason"]
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case", [
    "approved",
    "declined",
    "usage error",
    "runtime error",
])
def test_every_tap_json_document_carries_the_contract_keys(lane, junk, capsys, case):
    argv = contract_cases(lane, junk)[case]
    _, out, _ = via_main(capsys, *argv)
    doc = one_document(out)
    assert doc.keys() >= CONTRACT_KEYS, sorted(CONTRACT_KEYS - doc.keys())
    assert isinstance(doc["rules"], list) and isinstance(doc["recovered"], bool)


def test_ctrl_c_during_a_tap_still_gives_one_json_document(lane, capsys, monkeypatch):
    import unioncard.terminal.driver

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(unioncard.terminal.driver, "run", interrupted)
    code, out, _ = via_main(capsys, "tap", "--mode", "bus", "--amount", "200", "--card",
                            lane.card, "--psam", lane.psam, "--journal", lane.journal, "--json")
    assert code == 2
    assert one_document(out)["decision"] == "interrupted"


def test_ids_in_the_tap_record_are_hex(lane, tolls):
    _, doc = lane.tap("--mode", "etc-exit", "--station", "0007", "--toll-table", str(tolls))
    assert doc["card"]["card_type"] == "55" and doc["toll"]["station"] == "0007"
    assert doc["record"]["card_type"] == "55"
    assert doc["record"]["station"] == "0007"


# --- 9. version and help ----------------------------------------------------------------------


def test_version(capsys):
    code, out, _ = via_main(capsys, "--version")
    assert code == 0
    assert re.fullmatch(r"unioncard, version \S+\n", out)


def test_version_through_the_installed_script():
    done = subprocess.run([*_entry_point(), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("unioncard, version ")


NEW_COMMANDS = [("tap",), ("load",), ("card", "read"), ("journal",), ("batch", "export")]


@pytest.mark.parametrize("path", NEW_COMMANDS, ids=" ".join)
def test_help_explains_every_option(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    ctx = click.Context(root)
    command: click.Command = root
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(ctx, name)
        assert found is not None
        command = found
    assert command.help and len(command.help) > 40
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts} has no help"
            assert param.opts[0] in result.stdout


def test_tap_help_names_the_exit_statuses_and_modes():
    text = " ".join(invoke("tap", "--help").stdout.split())
    assert "Exit status: 0 approved, 1 declined, 2 error or interrupted." in text
    assert "[bus|metro|coach|ferry|taxi|etc-entry|etc-exit|pos|pos-emv]" in text
    assert "--toll-table FILE" in text and "--amount FEN" in text
