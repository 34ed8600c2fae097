"""Malformed, oversized, non-UTF-8 and hostile input files (the issue "Reliability", 6-10).

Two halves: Hypothesis drives the readers the commands use (card images, keystores,
member sheets, rule files, traces) with 1000 mutated files each and allows only their
documented errors out; then every command that reads a file is given the hostile ones
(too large, a device, a FIFO, not UTF-8, nested too deeply, control characters) and must
exit non-zero with one line naming the file (one JSON document with --json), never a
traceback, never printing a control character raw.
"""

import contextlib
import copy
import datetime as dt
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unioncard.apdu.trace import read_records
from unioncard.applet_sim import MemberData, SimulatedCard, issue_member_card, issue_psam
from unioncard.applet_sim.member_sheet import SheetError, read_sheet
from unioncard.applet_sim.summary import card_summary
from unioncard.bounded_read import (
    CARD_IMAGE_LIMIT,
    HOTLIST_LIMIT,
    KEYSTORE_LIMIT,
    RULE_FILE_LIMIT,
    SHEET_LIMIT,
    TOLL_TABLE_LIMIT,
    read_file,
)
from unioncard.crypto import Keystore
from unioncard.errors import CryptoError, DecodeError
from unioncard.sheet import control_character
from unioncard.tariffs.lint import lint
from unioncard.tariffs.loader import RuleFileError, loads, parse, read_rule_file

FUZZ = settings(max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""1000 examples each; every one is a file written and read as the command reads it."""

KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x03)
CARD = issue_member_card(MEMBER, KEYS, card_no=42, transit_balance=10_000, ec_balance=50_00,
                         random_source=1)
PSAM = issue_psam(KEYS, "001122334455", random_source=2)
TORN = CARD.to_image()
TORN["nvm"]["journal"] = {"committed": True, "entries": [
    {"step": "purse.balance", "address": "3F00/1002:balance", "value": "00002700"},
    {"step": "purse.offline_seq", "address": "3F00/1002:offline_seq", "value": "0001"}]}
TEMPLATES = [CARD.to_image(), PSAM.to_image(), TORN]
SHEET_HEADER = "name,member_no,organization,category,id_number\n"
SHEET_ROW = "张三,20260001,市总工会,hardship;mutual_aid,11010519491231002X\n"
RULES = (Path(__file__).parent.parent / "unioncard" / "tariffs" / "default.toml").read_text()
KEYSTORE = KEYS.to_toml()
TRACES = [p.read_bytes()[:4000] for p in (
    Path(__file__).parent / "apdu" / "data" / "pcsc_spy" / "spy_raw.log",
    Path(__file__).parent / "apdu" / "data" / "pcsc_spy" / "spy_display.txt",
    Path(__file__).parent / "commands" / "data" / "emv_bus_fare.txt")]
TRACES.append(b"UCT1\x01\x00\x05\x00\xa4\x04\x00\x00\x02\x00\x02\x90\x00")

READS = ["00A4040008A000000632010105", "805C000204", "00B095001E", "00B2011C00",
         "00A40000021001", "00B2010C00", "805C000204", "0020000003123456",
         "00A404000E325041592E5359532E444446303100", "00A4040008A00000033301010100",
         "80A80000258323260000000000000001000000000000000156000000000001562612020011223344"
         "000000", "00B2010C00", "00B2015C00", "80CA9F7900"]
"""Commands a terminal sends first: SELECT, GET BALANCE, READ BINARY/RECORD, VERIFY; then
an EMV reader's: SELECT PPSE and the debit application, a qPBOC GPO (an electronic cash
purchase of 1.00, signed with the ICC key), READ RECORD of track 2 and of the log, GET DATA
of the EC balance."""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One file per test, rewritten by every example."""
    return tmp_path_factory.mktemp("hostile")


# --- mutations ---------------------------------------------------------------------------------

INTERESTING_BYTES = [0x00, 0x07, 0x0A, 0x1B, 0x22, 0x2C, 0x5B, 0x5D, 0x7B, 0x7D, 0x7F, 0x80,
                     0xC3, 0xD6, 0xFF]


@st.composite
def mutated(draw, seeds):
    """A seed's bytes with a few bytes replaced, inserted or deleted, or a slice repeated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "repeat", "cut"]))
        byte = draw(st.one_of(st.sampled_from(INTERESTING_BYTES), st.integers(0, 255)))
        if kind == "replace" and at < len(data):
            data[at] = byte
        elif kind == "insert":
            data[at:at] = bytes([byte]) * draw(st.integers(1, 3))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 40))] * draw(st.integers(2, 30))
        else:
            del data[at:]
    return bytes(data)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


IMAGE_PATHS = [[p for p in _paths(doc) if p] for doc in TEMPLATES]
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["", "00", "0000", "00000000", "7FFFFFFF", "FFFFFFFF", "3F00", "1002",
                     "0015", "0018", "A000000632010105", "AA" * 43, "ef", "df", "cyclic",
                     "linear", "transparent", "purse", "psam", "member", "member-card",
                     "T=0", "pin", "never", 100_000, 100_001, 2**31, 254, 255, 0x7FFF,
                     "pboc", "directory", "pse", "ppse", "000B", "0B", "0156", "A000000333010101",
                     "0801020210010300", "000000100000", "7000", "07", "08"]),
    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=4),
                                                            st.integers(), max_size=2))


@st.composite
def image_files(draw):
    """A card or PSAM image with entries replaced, deleted or added (cells too), or with
    cells of other contents of their size (which load: the files' contents are data),
    written as JSON, sometimes then mutated byte by byte."""
    which = draw(st.integers(0, len(TEMPLATES) - 1))
    doc = copy.deepcopy(TEMPLATES[which])
    if draw(st.booleans()):
        cells = doc["nvm"]["cells"]
        for address in draw(st.lists(st.sampled_from(sorted(cells)), min_size=1, max_size=4)):
            size = len(cells[address]) // 2
            cells[address] = draw(st.binary(min_size=size, max_size=size)).hex().upper()
        return json.dumps(doc).encode()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(IMAGE_PATHS[which]))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]]  # the path may be gone after an earlier change
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "replace", "delete", "cell"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "cell" and isinstance(doc.get("nvm"), dict) \
                and isinstance(doc["nvm"].get("cells"), dict):
            cells = doc["nvm"]["cells"]
            address = draw(st.sampled_from(sorted(cells) or ["3F00"]))
            address = address[:draw(st.integers(0, len(address)))] + draw(
                st.sampled_from(["", "#1", "#2", "#11", "#ptr", ":balance", ":state", "0"]))
            cells[address] = draw(st.sampled_from(["", "00", "0101", "0A0A", "00000001",
                                                   "AA" * 23, "AA" * 43]))
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    if draw(st.integers(0, 4)) == 0:
        raw = draw(mutated([raw]))
    return raw


# --- readers under Hypothesis ------------------------------------------------------------------


@FUZZ
@given(raw=image_files())
def test_card_images_load_whole_or_not_at_all(scratch, raw):
    path = scratch / "card.json"
    path.write_bytes(raw)
    try:
        card = SimulatedCard.load(path, random_source=7)
    except DecodeError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    with contextlib.suppress(DecodeError):  # a content `card show` cannot parse: one line
        card_summary(card)
    card = SimulatedCard.load(path, random_source=7)
    card.power_on()
    for command in READS:
        card.transmit(bytes.fromhex(command))
    assert card.last_internal_error is None  # a card that loads never answers 6F00 on its own


@FUZZ
@given(raw=st.one_of(mutated([KEYSTORE.encode()]), st.binary(max_size=300)))
def test_keystores_load_or_raise_crypto_error(scratch, raw):
    path = scratch / "keys.toml"
    path.write_bytes(raw)
    try:
        Keystore.load(path)
    except CryptoError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


SHEET_SEEDS = [(SHEET_HEADER + SHEET_ROW * 3).encode(), (SHEET_HEADER + SHEET_ROW).encode("gbk"),
               ("姓名,会员编号,工会组织,类别,身份证号,备注\r\n"
                "李四,20260002,\"区总工会,一分会\",困难职工,440524198001010013,x\r\n").encode()]


@FUZZ
@given(raw=st.one_of(mutated(SHEET_SEEDS), st.binary(max_size=200)))
def test_member_sheets_give_rows_or_a_sheet_error(scratch, raw):
    path = scratch / "members.csv"
    path.write_bytes(raw)
    try:
        sheet = read_sheet(read_file(path, limit=SHEET_LIMIT, what="member sheet"),
                           today=dt.date(2026, 5, 1))
    except SheetError as exc:
        assert "\n" not in str(exc)
        return
    for row in sheet.members:
        assert control_character(row.name) is None
        assert control_character(row.organization) is None
        assert row.birth_date <= dt.date(2026, 5, 1)
        assert len(row.name.encode("gbk")) <= 20
        MemberData.from_row(row, valid_from=dt.date(2026, 5, 1), valid_until=dt.date(2031, 5, 1))


TOML_TOKENS = ["[[rule]]\n", "[rule.when]\n", "[rule.effect]\n", "[ruleset]\n", "id = ",
               "mode = ", "kind = ", "percent = ", "amount = ", "card_types = ", '"a"', '"bus"',
               '"fixed"', "5", "0x55", "1.5", "[", "]", "{", "}", ",", "\n", " = ", "x",
               "'''", '"""', "#", "2026-05-01", "\x1b", "\\u001b", "ＡＢ", "\xff"]


@FUZZ
@given(raw=st.one_of(mutated([RULES.encode()]),
                     st.lists(st.sampled_from(TOML_TOKENS), max_size=40).map(
                         lambda tokens: "".join(tokens).encode("utf-8", "surrogateescape"))))
def test_rule_files_load_or_list_their_problems(scratch, raw):
    path = scratch / "rules.toml"
    path.write_bytes(raw)
    try:
        text = read_rule_file(path)
    except RuleFileError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    ruleset, problems = parse(text, str(path))
    if ruleset is None:
        assert problems
        with pytest.raises(RuleFileError):
            loads(text, str(path))
    else:
        lint(ruleset, str(path))


@FUZZ
@given(raw=st.one_of(mutated(TRACES), st.binary(max_size=200)),
       name=st.sampled_from(["t.txt", "t.uct", "t.log", None]))
def test_trace_readers_read_records_or_raise_decode_error(raw, name):
    try:
        for record in read_records(io.BytesIO(raw), name=name):
            assert len(record.data) <= 0xFFFF
    except DecodeError as exc:
        assert "\n" not in str(exc)


# --- every command, every hostile file ---------------------------------------------------------


def cli(capsys, *args):
    """Run the installed entry point in process: (exit status, stdout, stderr)."""
    from unioncard.cli import main

    try:
        main([str(a) for a in args])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def lane(tmp_path, monkeypatch):
    """Good inputs every command needs besides the hostile one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    own = KEYS.to_toml().replace("test_keys = true", "test_keys = false")
    files = {"keys": tmp_path / "keys.toml", "sheet": tmp_path / "members.csv",
             "card": tmp_path / "card.json", "psam": tmp_path / "psam.json",
             "hotlist": tmp_path / "hotlist.csv", "journal": tmp_path / "journal.sqlite",
             "out": tmp_path / "cards"}
    files["keys"].write_text(own)
    files["sheet"].write_text(SHEET_HEADER + SHEET_ROW)
    CARD.save(files["card"])
    PSAM.save(files["psam"])
    files["hotlist"].write_text("issuer,card,listed_at\n")
    return files


def hostile(tmp_path, kind, limit):
    """A file of ``kind``: too large, a device, a FIFO, not UTF-8, nested too deeply."""
    path = tmp_path / f"hostile-{kind}"
    if kind == "oversize":
        with path.open("wb") as file:
            file.truncate(limit + 1)  # sparse: refused by its size, nothing is read
    elif kind == "device":
        return Path("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)  # no writer: a reader that opened it would wait for ever
    elif kind == "not-utf8":
        path.write_bytes(b"\xff\xfe" + "名".encode("gbk") * 40 + b"\n")
    elif kind == "deep-json":
        path.write_bytes(b"[" * 3000 + b"]" * 3000)
    elif kind == "deep-toml":
        path.write_bytes(b"x = " + b"[" * 10_000 + b"]" * 10_000 + b"\n")
    return path


WHOLE_FILE_KINDS = ["oversize", "device", "fifo", "not-utf8"]
COMMANDS = {
    "card show": (["card", "show", "{f}"], CARD_IMAGE_LIMIT, "deep-json"),
    "card issue --members": (["card", "issue", "--members", "{f}", "--out", "{out}", "--keys",
                              "{keys}"], SHEET_LIMIT, None),
    "card issue --keys": (["card", "issue", "--members", "{sheet}", "--out", "{out}", "--keys",
                           "{f}"], KEYSTORE_LIMIT, "deep-toml"),
    "tariffs check": (["tariffs", "check", "{f}"], RULE_FILE_LIMIT, "deep-toml"),
    "tariffs quote --rules": (["tariffs", "quote", "--mode", "bus", "--amount", "200",
                               "--card-type", "0x55", "--rules", "{f}"], RULE_FILE_LIMIT,
                              "deep-toml"),
    "tap --toll-table": (["tap", "--mode", "etc-exit", "--card", "{card}", "--psam", "{psam}",
                          "--station", "0102", "--journal", "{journal}", "--toll-table", "{f}"],
                         TOLL_TABLE_LIMIT, "deep-toml"),
    "tap --block-keys": (["tap", "--mode", "bus", "--amount", "200", "--card", "{card}",
                          "--psam", "{psam}", "--journal", "{journal}", "--hotlist",
                          "{hotlist}", "--block-keys", "{f}"], KEYSTORE_LIMIT, "deep-toml"),
    "tap --hotlist": (["tap", "--mode", "bus", "--amount", "200", "--card", "{card}", "--psam",
                       "{psam}", "--journal", "{journal}", "--hotlist", "{f}"], HOTLIST_LIMIT,
                      None),
    "load --from": (["load", "--from", "{f}", "--journal", "{journal}"], SHEET_LIMIT, None),
    "hotlist info": (["hotlist", "info", "{f}"], HOTLIST_LIMIT, None),
    "hotlist replace --full": (["hotlist", "replace", "{hotlist}", "--full", "{f}"],
                               HOTLIST_LIMIT, None),
    "hotlist update --delta": (["hotlist", "update", "{hotlist}", "--delta", "{f}"],
                               HOTLIST_LIMIT, None),
}
CASES = [(name, kind) for name, (_, _, deep) in COMMANDS.items()
         for kind in [*WHOLE_FILE_KINDS, *([deep] if deep else [])]]


def _argv(template, lane, f):
    return [part.format(f=f, **{k: str(v) for k, v in lane.items()}) for part in template]


def _one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("command", "kind"), CASES)
def test_every_command_refuses_a_hostile_file_in_one_line(command, kind, lane, tmp_path,
                                                          capsys):
    template, limit, _ = COMMANDS[command]
    path = hostile(tmp_path, kind, limit)
    status, out, err = cli(capsys, *_argv(template, lane, path))
    assert status != 0
    assert str(path) in _one_line(err)
    status, out, err = cli(capsys, *_argv(template, lane, path), "--json")
    assert status != 0 and len(err.splitlines()) <= 1 and "Traceback" not in err
    document = json.loads(out)  # one document, and only one
    assert str(path) in json.dumps(document)  # as "error", or a problem of "tariffs check"
    assert not (lane["out"] / "psam-000000000001.json").exists()  # nothing was issued


@pytest.mark.parametrize("command", [
    ["trace", "decode", "{f}"], ["trace", "stats", "{f}"],
    ["tap", "--replay", "{f}", "--mode", "bus", "--amount", "200"]])
@pytest.mark.parametrize("kind", ["device", "not-utf8"])
def test_streamed_traces_refuse_hostile_files_in_one_line(command, kind, lane, tmp_path,
                                                          capsys):
    path = hostile(tmp_path, kind, 0)
    status, _, err = cli(capsys, *_argv(command, lane, path))
    assert status != 0 and str(path) in _one_line(err)


def test_a_card_image_out_of_range_is_refused_by_every_command(lane, capsys):
    doc = json.loads(lane["card"].read_text())
    doc["nvm"]["cells"]["3F00/1002:balance"] = "7FFFFFFF"  # 21.4 million yuan
    lane["card"].write_text(json.dumps(doc))
    expected = (f"{lane['card']}: malformed card image: NVM cell '3F00/1002:balance' holds "
                "2147483647, above the purse maximum 100000")
    for argv in (["card", "show", lane["card"]],
                 ["card", "read", "--card", lane["card"]],
                 ["tap", "--mode", "bus", "--amount", "200", "--card", lane["card"], "--psam",
                  lane["psam"], "--journal", lane["journal"]]):
        status, _, err = cli(capsys, *argv)
        assert status != 0 and expected in _one_line(err), argv


def test_card_show_escapes_control_characters_an_image_holds(tmp_path, capsys):
    member = MemberData("张\x1b[2J\x07", "20260009", "市总\x1b]0;owned\x07工会",
                        "11010519491231002X", dt.date(2026, 1, 1), dt.date(2030, 12, 31))
    path = tmp_path / "card.json"
    issue_member_card(member, KEYS, card_no=9).save(path)
    status, out, _ = cli(capsys, "card", "show", path)
    assert status == 0 and "\x1b" not in out and "\x07" not in out
    assert "member 20260009 张\\x1b[2J\\x07 (市总\\x1b]0;owned\\x07工会)" in out
    status, out, _ = cli(capsys, "card", "show", "--json", path)  # JSON keeps the data
    assert json.loads(out)["member"]["name"] == "张\x1b[2J\x07"
    status, out, _ = cli(capsys, "card", "read", "--card", path)
    assert "\x1b" not in out and "holder 张\\x1b[2J\\x07" in out


def test_card_issue_refuses_hostile_rows_and_prints_them_escaped(lane, tmp_path, capsys):
    sheet = tmp_path / "hostile.csv"
    sheet.write_text(SHEET_HEADER
                     + "张三,20260001,市总工会,,110105210001010015\n"  # born 2100
                     + "李\x1b[2J四,20260002,区总工会,,440524198001010013\n"
                     + "王五,2026\x1b[31m,市总工会,,110101199003074477\n")
    status, _, err = cli(capsys, "card", "issue", "--members", sheet, "--out", lane["out"],
                         "--keys", lane["keys"])
    assert status == 1 and "\x1b" not in err and "Traceback" not in err
    assert err.splitlines() == [
        f"{sheet}: refused line 2 (member 20260001): identity number has a birth date in "
        "the future 21000101",
        f"{sheet}: refused line 3 (member 20260002): name holds the control character U+001B, "
        "which a card must not store",
        f"{sheet}: refused line 4 (member 2026\\x1b[31m): member number '2026\\x1b[31m' must "
        "be 1 to 16 digits"]


@pytest.mark.parametrize(("option", "value"), [("--valid-from", "0001-01-01"),
                                               ("--valid-until", "0999-12-31")])
def test_card_issue_refuses_validity_a_card_cannot_hold_before_writing(lane, capsys, option,
                                                                      value):
    status, _, err = cli(capsys, "card", "issue", "--members", lane["sheet"], "--out",
                         lane["out"], "--keys", lane["keys"], option, value)
    assert status == 2 and "Traceback" not in err
    assert f"Invalid value for {option}: {value} is not a date a card holds" in err
    assert not lane["out"].exists()  # not even the PSAM


def test_card_issue_near_the_last_date_ends_validity_there(lane, capsys):
    status, out, _ = cli(capsys, "card", "issue", "--members", lane["sheet"], "--out",
                         lane["out"], "--keys", lane["keys"], "--valid-from", "9998-06-01",
                         "--json")
    assert status == 0, out
    status, out, _ = cli(capsys, "card", "show", "--json", lane["out"] / "20260001-card.json")
    assert json.loads(out)["member"]["valid_until"] == "9999-12-31"


def test_a_disbursement_reason_with_a_control_character_is_refused():
    from unioncard.terminal.disbursements import read_disbursements

    read = read_disbursements("member_no,amount,reason\n20260001,5000,互助金\x1b[2J\n"
                              "20260002,5000,互助金\u3000春节\n".encode())
    assert [d.member_no for d in read.items] == ["20260002"]
    assert str(read.errors[0]) == ("line 2 (member 20260001): reason holds the control "
                                   "character U+001B")


def test_a_file_larger_than_its_size_said_is_read_whole_and_still_bounded():
    """A file read in one read of the size it has when opened: one that grows (here a
    /proc file, whose size says 0) is read on to its end, never past the limit."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no /proc")
    data = read_file(status, limit=1 << 20, what="status file")
    assert data.startswith(b"Name:") and data.endswith(b"\n") and len(data) > 100
    with pytest.raises(Exception, match="the status file is larger than 64 bytes"):
        read_file(status, limit=64, what="status file")
