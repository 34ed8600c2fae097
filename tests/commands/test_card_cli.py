"""`unioncard card issue|show`: the member sheet to card images, end to end."""

import datetime as dt
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from unioncard.applet_sim import PowerLoss, SimulatedCard
from unioncard.cli import root
from unioncard.crypto import Keystore
from unioncard.terminal import Decision
from unioncard.testing.purse_rig import PurseRig

HEADER = "name,member_no,organization,category,id_number\n"
GOOD = [
    "张三,20260001,市总工会,hardship,11010519491231002X",
    "李四,20260002,区总工会,model_worker;mutual_aid,440524198001010013",
]
BAD = "王五,20260003,市总工会,,110105194912310021"  # wrong check digit


def run(*args: str):
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


@pytest.fixture
def sheet(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text(HEADER + "\n".join([GOOD[0], BAD, GOOD[1]]) + "\n", encoding="utf-8")
    return path


def test_issue_writes_one_image_per_valid_member_and_a_psam(sheet, tmp_path):
    out = tmp_path / "cards"
    result = run("card", "issue", "--members", str(sheet), "--out", str(out),
                 "--transit-balance", "5000", "--valid-from", "2026-01-01")
    assert result.exit_code == 1  # one row refused
    assert "PUBLISHED TEST KEYS" in result.stderr
    assert f"{sheet}: refused line 3 (member 20260003): identity number check digit" \
        in result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["20260001-card.json", "20260002-card.json", "issued.json",
                     "psam-000000000001.json"]
    card = SimulatedCard.load(out / "20260002-card.json")
    assert card.purse("transit").balance == 5000
    assert card.purse("etc").balance == 0
    # the card works: select the T-Union purse and read the member card type from EF 0015
    card.power_on()
    assert card.transmit(bytes.fromhex("00A4040008A000000632010105"))[-2:] == b"\x90\x00"
    ef15 = card.transmit(bytes.fromhex("00B095001E"))
    assert ef15[-2:] == b"\x90\x00" and ef15[28] == 0x55 and ef15[29] == 0x05


def test_issue_json_and_no_overwrite_without_force(sheet, tmp_path):
    out = tmp_path / "cards"
    first = json.loads(run("card", "issue", "--members", str(sheet), "--out", str(out),
                           "--first-card-no", "100", "--json").stdout)
    assert first["test_keys"] is True and first["psam"]["kept"] is False
    assert [(c["member_no"], c["card_no"]) for c in first["issued"]] == [
        ("20260001", 100), ("20260002", 101)]
    assert [(e["line"], e["member_no"]) for e in first["refused"]] == [(3, "20260003")]
    # spend on a card, then issue again: nothing is overwritten, the PSAM is kept
    path = out / "20260001-card.json"
    before = path.read_bytes()
    again = run("card", "issue", "--members", str(sheet), "--out", str(out), "--json")
    doc = json.loads(again.stdout)
    assert again.exit_code == 1 and doc["issued"] == [] and doc["psam"]["kept"] is True
    assert "exists" in doc["refused"][0]["reason"]
    assert path.read_bytes() == before
    forced = json.loads(run("card", "issue", "--members", str(sheet), "--out", str(out),
                            "--force", "--json").stdout)
    assert len(forced["issued"]) == 2


def test_issue_with_a_keystore_of_own_keys_is_quiet_and_uses_them(sheet, tmp_path):
    text = Keystore.test().to_toml().replace("test_keys = true", "test_keys = false")
    own = text.replace("404142434445464748494A4B4C4D4E4F", "0123456789ABCDEF0123456789ABCDEF")
    keystore = tmp_path / "keys.toml"
    keystore.write_text(own)
    out = tmp_path / "cards"
    result = run("card", "issue", "--members", str(sheet), "--out", str(out), "--keys",
                 str(keystore))
    assert "TEST KEYS" not in result.stderr
    psam = SimulatedCard.load(out / "psam-000000000001.json")
    assert psam.psam().config.master_keys[1] == bytes.fromhex("0123456789ABCDEF" * 2)


def test_issue_gbk_sheet_all_good_exits_zero(tmp_path):
    sheet = tmp_path / "gbk.csv"
    sheet.write_bytes(("姓名,会员编号,工会组织,类别,身份证号\r\n" + GOOD[0] + "\r\n")
                      .encode("gbk"))
    result = run("card", "issue", "--members", str(sheet), "--out", str(tmp_path / "c"))
    assert result.exit_code == 0
    assert "sheet read as gbk" in result.stdout


NEW_MEMBER = "王五,20260009,市总工会,,110105198001010016"


def _numbers(path):
    """A card's transit serial and ETC card number (they give its keys)."""
    doc = json.loads(run("card", "show", "--json", str(path)).stdout)
    purses = {p["application"]: p for p in doc["purses"]}
    return purses["transit"]["app_serial"], purses["etc"]["card_no"]


def test_a_reordered_sheet_never_gives_a_member_another_members_number(tmp_path):
    # Reliability item 5: numbers followed the row, so a new member first in the second
    # sheet got the card number, serial and keys of the first sheet's first member.
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(HEADER + "\n".join(GOOD) + "\n", encoding="utf-8")
    b.write_text(HEADER + "\n".join([NEW_MEMBER, *GOOD]) + "\n", encoding="utf-8")
    out = tmp_path / "cards"
    first = json.loads(run("card", "issue", "--members", str(a), "--out", str(out),
                           "--json").stdout)
    assert [(c["member_no"], c["card_no"]) for c in first["issued"]] == [
        ("20260001", 1), ("20260002", 2)]
    second = json.loads(run("card", "issue", "--members", str(b), "--out", str(out),
                            "--json").stdout)
    assert [(c["member_no"], c["card_no"]) for c in second["issued"]] == [("20260009", 3)]
    numbers = {m: _numbers(out / f"{m}-card.json") for m in ("20260001", "20260002", "20260009")}
    assert len({serial for serial, _ in numbers.values()}) == 3
    assert len({etc for _, etc in numbers.values()}) == 3
    # a forced reissue, in any order and from any first number, keeps every member's number
    forced = json.loads(run("card", "issue", "--members", str(b), "--out", str(out), "--force",
                            "--first-card-no", "1", "--json").stdout)
    assert sorted((c["member_no"], c["card_no"]) for c in forced["issued"]) == [
        ("20260001", 1), ("20260002", 2), ("20260009", 3)]
    registry = json.loads((out / "issued.json").read_text())
    assert registry["cards"][2] == {"card_no": 3, "member_no": "20260009",
                                    "transit_serial": numbers["20260009"][0],
                                    "etc_card_no": numbers["20260009"][1]}


def _legacy_cards(out, *members):
    """A directory issued before the registry: images only, numbered as given."""
    from unioncard.applet_sim import MemberData, issue_member_card

    out.mkdir()
    for card_no, member_no in members:
        member = MemberData("张三", member_no, "市总工会", "11010519491231002X",
                            dt.date(2026, 1, 1), dt.date(2030, 12, 31))
        issue_member_card(member, Keystore.test(), card_no=card_no).save(
            out / f"{member_no}-card.json")


def test_a_directory_without_registry_gets_one_from_its_images(tmp_path):
    out = tmp_path / "cards"
    _legacy_cards(out, (1, "20260001"), (2, "20260002"))
    b = tmp_path / "b.csv"
    b.write_text(HEADER + "\n".join([NEW_MEMBER, *GOOD]) + "\n", encoding="utf-8")
    doc = json.loads(run("card", "issue", "--members", str(b), "--out", str(out),
                         "--json").stdout)
    assert [(c["member_no"], c["card_no"]) for c in doc["issued"]] == [("20260009", 3)]
    registry = json.loads((out / "issued.json").read_text())
    assert [(c["card_no"], c["member_no"]) for c in registry["cards"]] == [
        (1, "20260001"), (2, "20260002"), (3, "20260009")]


def test_a_directory_whose_images_share_a_number_is_refused(tmp_path):
    out = tmp_path / "cards"
    _legacy_cards(out, (1, "20260001"), (1, "20260009"))
    sheet = tmp_path / "a.csv"
    sheet.write_text(HEADER + GOOD[1] + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "unioncard.cli", "card", "issue",
                             "--members", str(sheet), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"unioncard: error: {out}: 20260001-card.json and 20260009-card.json hold "
                    "the same card number 1 (the same serial and keys); move the card issued "
                    "by mistake out of the directory, then issue its member again")
    assert sorted(p.name for p in out.iterdir()) == ["20260001-card.json",
                                                     "20260009-card.json"]


def test_issue_never_replaces_an_image_in_use(sheet, tmp_path):
    # Reliability item 4 (the lock side; tests/pcsc/test_sim_serve.py runs a real serve).
    from unioncard.file_lock import FileLock

    out = tmp_path / "cards"
    run("card", "issue", "--members", str(sheet), "--out", str(out))
    path = out / "20260001-card.json"
    before = path.read_bytes()
    with FileLock(path, "unioncard sim serve"):
        doc = json.loads(run("card", "issue", "--members", str(sheet), "--out", str(out),
                             "--force", "--json").stdout)
    assert [c["member_no"] for c in doc["issued"]] == ["20260002"]
    reason = next(e["reason"] for e in doc["refused"] if e["member_no"] == "20260001")
    assert reason.startswith(f"{path}: in use by this process (unioncard sim serve)")
    assert reason.endswith("it was not replaced")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--terminal-id", "0011"], "12 hex digits"),
        (["--valid-from", "2026-05-01", "--valid-until", "2026-04-01"], "ends before it starts"),
        (["--transit-balance", "100001"], "100001"),
    ],
)
def test_issue_refuses_bad_options(sheet, tmp_path, args, message):
    result = CliRunner().invoke(root, ["card", "issue", "--members", str(sheet), "--out",
                                       str(tmp_path / "c"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "c").exists()


def test_unreadable_sheet_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,member_no\n")
    result = subprocess.run([sys.executable, "-m", "unioncard.cli", "card", "issue", "--members",
                             str(bad), "--out", str(tmp_path / "c")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {bad}: line 1: header lacks")


def test_show_member_card_and_psam(sheet, tmp_path):
    out = tmp_path / "cards"
    run("card", "issue", "--members", str(sheet), "--out", str(out), "--etc-balance", "2000")
    text = run("card", "show", str(out / "20260001-card.json")).stdout
    assert "member 20260001 张三 (市总工会), active, categories: hardship" in text
    assert "etc purse (3F00/1001, key version 02): active, balance 20.00 yuan (2000 fen)" in text
    assert "transit purse (A000000632010105, key version 01)" in text
    assert "card type 55 (union member)" in text
    doc = json.loads(run("card", "show", "--json", str(out / "20260001-card.json")).stdout)
    etc = next(p for p in doc["purses"] if p["application"] == "etc")
    assert etc["holder"]["id_number"] == "110105********002X"
    assert etc["capp_records"][0]["record"] == 1
    unmasked = json.loads(run("card", "show", "--json", "--unmask",
                              str(out / "20260001-card.json")).stdout)
    assert "11010519491231002X" in json.dumps(unmasked)
    psam = json.loads(run("card", "show", "--json", str(out / "psam-000000000001.json")).stdout)
    assert psam["psam"] == {"terminal_id": "000000000001", "terminal_seq": 0,
                            "key_versions": ["01", "02"]}


def test_show_reports_an_interrupted_transaction(tmp_path, sheet):
    out = tmp_path / "cards"
    run("card", "issue", "--members", str(sheet), "--out", str(out), "--transit-balance", "900")
    path = out / "20260001-card.json"
    card = SimulatedCard.load(path, write_through=True)
    psam = SimulatedCard.load(out / "psam-000000000001.json")
    # the cards were issued valid from today: the terminal engine's clock starts today
    rig = PurseRig.in_process(card, psam, Keystore.test(),
                              start=dt.datetime.combine(dt.date.today(), dt.time(12)))
    # CREDIT FOR LOAD loses power after journaling the new balance, before the commit
    card.faults.cut_after("purse.balance")
    outcome = rig.load("transit", 100)
    assert outcome.decision is Decision.INTERRUPTED, outcome.reason
    assert isinstance(card.faults.fired, PowerLoss)
    assert rig.answer_to(0x52).response is None  # CREDIT FOR LOAD got no answer
    doc = json.loads(run("card", "show", "--json", str(path)).stdout)
    assert doc["interrupted_transaction"] == "not committed, discarded at power-up"
    transit = next(p for p in doc["purses"] if p["application"] == "transit")
    assert transit["balance"] == 900 and transit["online_seq"] == 0


def test_show_of_a_non_image_fails_in_one_line(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    result = subprocess.run([sys.executable, "-m", "unioncard.cli", "card", "show", str(junk)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"unioncard: error: card image {junk} is not a JSON object"
