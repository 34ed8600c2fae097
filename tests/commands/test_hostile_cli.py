"""Hostile and careless use of every command, beyond the issue "Reliability" 1-11: files of
unioncard's own kinds under --force, pipes and FIFOs as named inputs, JSON documents on bad
input, transaction times at and past the edges, bad journals, strict numbers and codes, and
messages in one plain line.  Each test names the defect it guards."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.crypto import Keystore
from unioncard.file_lock import FileLock, lock_path

KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(1970, 1, 1), dt.date(2106, 12, 31), category_flags=0x03)
SAMPLE = Path(__file__).parent.parent.parent / "unioncard" / "data" / "sample_trace.txt"
ENTRY = [sys.executable, "-c", "from unioncard.cli import main; main()"]
AT = "2026-05-01T08:30:00"


def cli(capsys, *args):
    """The entry point in process: (exit status, stdout, stderr)."""
    from unioncard.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        status = 0
    except SystemExit as stop:
        status = 0 if stop.code is None else stop.code
    out = capsys.readouterr()
    return status, out.out, out.err


def run(*args, input=None, timeout=60, env=None):
    """The entry point in a process of its own (a FIFO that hung would time out)."""
    return subprocess.run([*ENTRY, *map(str, args)], input=input, capture_output=True,
                          timeout=timeout, env=env)


def one_line(err: str | bytes) -> str:
    text = err.decode() if isinstance(err, bytes) else err
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(
        ("Usage:", "Try '", "WARNING: the load host uses the PUBLISHED TEST KEYS"))]
    assert len(lines) == 1, text
    assert "Traceback" not in text and "Errno" not in text, text
    return lines[0]


@pytest.fixture
def lane(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    card = tmp_path / "card.json"
    psam = tmp_path / "psam.json"
    issue_member_card(MEMBER, KEYS, card_no=7, transit_balance=10_000, etc_balance=10_000,
                      random_source=1).save(card)
    issue_psam(KEYS, "001122334455", random_source=2).save(psam)
    return {"card": card, "psam": psam, "journal": tmp_path / "journal.sqlite",
            "dir": tmp_path}


def tap(lane, *args, journal=None):
    return ["tap", "--card", lane["card"], "--psam", lane["psam"], "--journal",
            journal or lane["journal"], *args]


# --- 2: --force never replaces unioncard's own files of another kind, nor a locked one ------


def _own_files(directory: Path) -> dict[str, Path]:
    """One file of each of unioncard's own kinds."""
    from unioncard.applet_sim.registry import CardRegistry
    from unioncard.offline.batch import write_batch
    from unioncard.terminal.journal import TransactionJournal

    files = {"keystore": directory / "keys.toml", "registry": directory / "issued.json",
             "journal": directory / "journal.sqlite", "batch": directory / "batch.ucb",
             "hotlist": directory / "hotlist.csv", "card image": directory / "card.json"}
    files["keystore"].write_text(KEYS.to_toml())
    registry = CardRegistry()
    registry.assign("20260001", first=1)
    registry.save(files["registry"])
    TransactionJournal(files["journal"]).close()
    write_batch(files["batch"], bytes(6), 1, dt.datetime(2026, 5, 1), [])
    files["hotlist"].write_text("issuer,card,listed_at\n")
    issue_psam(KEYS, "001122334455", random_source=2).save(files["card image"])
    return files


@pytest.mark.parametrize("kind", ["keystore", "registry", "journal", "batch", "hotlist",
                                  "card image"])
def test_trace_convert_force_never_replaces_an_own_file_of_another_kind(tmp_path, capsys,
                                                                        kind):
    target = _own_files(tmp_path)[kind]
    before = target.read_bytes()
    status, _, err = cli(capsys, "trace", "convert", "--force", "--to", "binary", SAMPLE,
                         target)
    assert status == 1 and "--force never replaces one of unioncard's own files" in \
        one_line(err)
    assert target.read_bytes() == before


@pytest.mark.parametrize("kind", ["keystore", "journal"])
def test_sim_serve_trace_force_never_replaces_an_own_file(lane, capsys, kind):
    own = lane["dir"] / "own"
    own.mkdir()
    target = _own_files(own)[kind]
    before = target.read_bytes()
    # in a process of its own: a serve that started would serve until stopped
    done = run("sim", "serve", lane["card"], "--trace", target, "--force", "--port", "1",
               timeout=30)
    assert done.returncode == 2 and "--force never replaces" in one_line(done.stderr)
    assert target.read_bytes() == before


def test_card_issue_force_replaces_card_images_only(tmp_path, capsys):
    sheet = tmp_path / "members.csv"
    sheet.write_text("name,member_no,organization,category,id_number\n"
                     "张三,20260001,市总工会,hardship,11010519491231002X\n")
    out = tmp_path / "cards"
    status, _, _ = cli(capsys, "card", "issue", "--members", sheet, "--out", out)
    assert status == 0
    keystore = out / "20260001-card.json"
    keystore.write_text(KEYS.to_toml())  # a keystore where the member's card image was
    status, _, err = cli(capsys, "card", "issue", "--members", sheet, "--out", out, "--force")
    assert status == 1 and "is a keystore, not a card image" in err
    assert keystore.read_text() == KEYS.to_toml()


def test_a_locked_out_is_never_replaced(tmp_path, capsys):
    target = tmp_path / "out.txt"
    target.write_text("a trace being written\n")
    with FileLock(target, "unioncard sim serve --trace"):
        status, _, err = cli(capsys, "trace", "convert", "--force", SAMPLE, target)
    assert status == 1 and "in use" in one_line(err)
    assert target.read_text() == "a trace being written\n"


# --- 6, 8: pipes are read once; FIFOs never hang ------------------------------------------


@pytest.mark.parametrize("command", [["trace", "decode"], ["trace", "stats"],
                                     ["trace", "convert"]])
def test_a_trace_on_a_pipe_is_read_once(tmp_path, command):
    argv = [*command, "/dev/stdin"] + ([tmp_path / "out.uct"] if "convert" in command else [])
    done = run(*argv, input=SAMPLE.read_bytes())
    assert done.returncode == 0, done.stderr
    text = (done.stdout + done.stderr).decode()
    assert ("14 exchanges" in text or "28 frames" in text or "28 records" in text), text
    if "convert" in command:
        from unioncard.apdu.trace_binary import read_binary

        with open(tmp_path / "out.uct", "rb") as out:
            assert len(list(read_binary(out))) == 28


def test_tap_replays_a_recording_from_a_pipe(tmp_path):
    done = run("tap", "--replay", "/dev/stdin", "--mode", "bus", "--amount", "200",
               input=SAMPLE.read_bytes())
    assert "Traceback" not in done.stderr.decode()
    # read whole: the sample's 28 records are compared with the session's commands
    assert done.returncode == 0 or b"of /dev/stdin" in done.stderr, done.stderr
    assert b"empty" not in done.stderr


@pytest.mark.parametrize("command", [["trace", "decode", "{f}"], ["trace", "stats", "{f}"],
                                     ["trace", "convert", "{f}", "{out}"],
                                     ["tap", "--replay", "{f}", "--mode", "bus", "--amount",
                                      "200"]])
def test_a_fifo_nobody_writes_to_never_hangs(tmp_path, command):
    fifo = tmp_path / "fifo.uct"
    os.mkfifo(fifo)
    argv = [part.format(f=fifo, out=tmp_path / "out.txt") for part in command]
    done = run(*argv, timeout=30)
    assert done.returncode != 0
    assert str(fifo) in one_line(done.stderr)
    assert not (tmp_path / "out.txt").exists()


def test_a_device_is_refused_as_a_trace(capsys):
    status, _, err = cli(capsys, "trace", "decode", "/dev/zero")
    assert status == 1
    assert one_line(err) == ("Error: /dev/zero: the trace is a character device, not a "
                             "regular file or a pipe")


def test_a_fifo_at_the_hotlist_index_path_is_not_opened(tmp_path, monkeypatch, capsys):
    from unioncard.offline.hotlist import index_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hotlist = tmp_path / "hotlist.csv"
    hotlist.write_text("issuer,card,listed_at\n3101000000000001,3101000000000001,2026-05-01\n")
    index = index_path(hotlist)
    index.parent.mkdir(parents=True)
    os.mkfifo(index)
    done = run("hotlist", "info", hotlist, timeout=30,
               env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert b"1 cards listed" in done.stdout


def test_a_fifo_as_the_export_lock_is_refused_in_one_line(lane, capsys):
    from unioncard.terminal.journal import TransactionJournal

    TransactionJournal(lane["journal"]).close()
    os.mkfifo(f"{lane['journal']}.export.lock")
    done = run("batch", "export", "--journal", lane["journal"], "--out", lane["dir"] / "out",
               timeout=30)
    assert done.returncode == 1
    assert "the export lock is not a regular file" in one_line(done.stderr)


# --- 7: the card registry is read with a bound ---------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "oversize", "empty", "digits"])
def test_the_card_registry_is_read_bounded(tmp_path, kind):
    from unioncard.applet_sim.registry import CardRegistry, RegistryError
    from unioncard.bounded_read import REGISTRY_LIMIT

    path = tmp_path / "issued.json"
    if kind == "fifo":  # in a process of its own: a reader that waited would hang the tests
        os.mkfifo(path)
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from unioncard.applet_sim.registry import "
             "CardRegistry, RegistryError\ntry: CardRegistry.load(sys.argv[1])\nexcept "
             "RegistryError as exc: print(exc)", str(path)],
            capture_output=True, text=True, timeout=30)
        assert done.stdout == f"{path}: the card registry is a FIFO, not a regular file\n"
        return
    if kind == "oversize":
        with path.open("wb") as file:
            file.truncate(REGISTRY_LIMIT + 1)
    elif kind == "digits":
        path.write_text('{"format": "unioncard-issued-cards", "version": 1, "cards": '
                        '[{"card_no": ' + "9" * 5000 + ', "member_no": "1"}]}')
    else:
        path.write_text("")
    with pytest.raises(RegistryError) as refused:
        CardRegistry.load(path)
    message = str(refused.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "Exceeds the limit" not in message and "set_int_max_str_digits" not in message


# --- 9: one JSON document whatever the exit status ----------------------------------------


@pytest.mark.parametrize("content", [b"> zz\n", b"UCT1\x03\x00\x01\x00", b""])
@pytest.mark.parametrize("command", ["decode", "stats"])
def test_trace_json_is_exactly_one_document_on_bad_input(tmp_path, capsys, command, content):
    bad = tmp_path / "bad.uct"
    bad.write_bytes(content)
    status, out, err = cli(capsys, "trace", command, "--json", bad)
    assert status == 1
    document = json.loads(out)  # raises on a second document
    assert document.get("exit_status") == 1 or document.get("error")
    assert str(bad) in one_line(err)


# --- 10: one range of transaction times for every --at ------------------------------------


AT_COMMANDS = {
    "tap": lambda lane: tap(lane, "--mode", "bus", "--amount", "100"),
    "tap etc-entry": lambda lane: tap(lane, "--mode", "etc-entry", "--station", "0203"),
    "load": lambda lane: ["load", "--card", lane["card"], "--journal", lane["journal"],
                          "--amount", "100", "--terminal-id", "001122334455"],
    "hotlist check": lambda lane: ["hotlist", "check", lane["hotlist"], "3101000000000001",
                                   "3101000000000001"],
}


@pytest.fixture
def at_lane(lane):
    lane["hotlist"] = lane["dir"] / "hotlist.csv"
    lane["hotlist"].write_text("issuer,card,listed_at\n")
    return lane


@pytest.mark.parametrize("command", list(AT_COMMANDS))
@pytest.mark.parametrize("at", ["0001-01-01T00:00:00", "0999-12-31T23:59:59",
                                "1900-01-01T00:00:00", "1970-01-01T23:59:59",
                                "2106-01-01T00:00:00", "9999-12-31T23:59:59",
                                "2026-02-30T08:00:00", "2026-05-01", "２０２６-05-01T08:00:00"])
def test_at_outside_the_range_is_one_line_for_every_command(at_lane, capsys, command, at):
    status, out, err = cli(capsys, *AT_COMMANDS[command](at_lane), "--at", at)
    assert status == 2, (out, err)
    line = one_line(err)
    assert "Invalid value for '--at'" in line
    assert "OverflowError" not in line and "fromhex" not in line


@pytest.mark.parametrize("command", list(AT_COMMANDS))
@pytest.mark.parametrize("at", ["1970-01-02T00:00:00", "2105-12-31T23:59:59"])
def test_the_edges_of_the_range_work_for_every_command(at_lane, capsys, command, at):
    status, out, err = cli(capsys, *AT_COMMANDS[command](at_lane), "--at", at)
    assert status == 0, (out, err)


def test_the_time_range_is_the_records_range():
    """The ETC toll record's 32-bit unsigned Unix time holds every time of the range."""
    from unioncard.commands.common import TIME_RANGE

    cst = dt.timezone(dt.timedelta(hours=8))
    low, high = (when.replace(tzinfo=cst).timestamp() for when in TIME_RANGE)
    assert low > 0 and high < 2**32


# --- 11: bad journals, one line each ----------------------------------------------------------


def test_a_fifo_as_the_journal_is_one_line_and_does_not_hang(lane):
    fifo = lane["dir"] / "journal.fifo"
    os.mkfifo(fifo)
    done = run(*tap(lane, "--mode", "bus", "--amount", "100", "--at", AT, journal=fifo),
               timeout=30)
    assert done.returncode == 2
    assert "the journal is a FIFO, not a regular file" in one_line(done.stderr)


def test_a_device_as_the_journal_leaves_nothing_beside_it(lane, capsys):
    leftover = Path("/dev/null-journal")
    existed = leftover.exists()
    try:
        status, _, err = cli(capsys, *tap(lane, "--mode", "bus", "--amount", "100",
                                          journal="/dev/null"))
        left = leftover.exists()
    finally:
        if not existed and leftover.exists():
            leftover.unlink()  # what SQLite leaves beside a device it was given
    assert status == 2
    assert "the journal is a character device, not a regular file" in one_line(err)
    assert left == existed
    status, _, err = cli(capsys, "journal", "--journal", "/dev/null")
    assert status == 1 and "character device" in one_line(err)


def test_a_busy_journal_is_said_to_be_busy(lane, capsys, monkeypatch):
    from unioncard.terminal import journal as module

    module.TransactionJournal(lane["journal"]).close()
    monkeypatch.setattr(module, "BUSY_TIMEOUT", 0.2)
    other = sqlite3.connect(lane["journal"], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer, in the middle of its commit
    try:
        status, _, err = cli(capsys, *tap(lane, "--mode", "bus", "--amount", "100",
                                          "--at", AT))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert status == 2
    line = one_line(err)
    assert "the journal is busy: another program has been writing to it" in line
    assert "not a unioncard journal" not in line


@pytest.mark.parametrize(("sql", "words"), [
    ("UPDATE meta SET value = 'two' WHERE key = 'schema'", "its schema 'two' is not a number"),
    ("UPDATE transactions SET started_at = 'yesterday'", "transaction 1 cannot be read"),
    ("UPDATE transactions SET draft = x'00'", "transaction 1 cannot be read"),
    ("INSERT OR REPLACE INTO meta VALUES ('load_terminal_id', 'zz')",
     "its load_terminal_id 'zz' is not 12 hex digits"),
])
def test_a_tampered_journal_is_one_line(lane, capsys, sql, words):
    status, _, _ = cli(capsys, *tap(lane, "--mode", "bus", "--amount", "100", "--at", AT))
    assert status == 0
    with sqlite3.connect(lane["journal"]) as db:
        db.execute(sql)
    command = (["load", "--card", lane["card"], "--journal", lane["journal"], "--amount",
                "100", "--at", AT] if "load_terminal_id" in sql
               else ["journal", "--journal", lane["journal"]])
    status, _, err = cli(capsys, *command)
    assert status in (1, 2)
    assert words in one_line(err)


# --- 12: a load binds the terminal id only when it starts -----------------------------------


def test_a_load_that_never_starts_binds_no_terminal_id(lane, capsys):
    broken = lane["dir"] / "broken.json"
    broken.write_text("{}")
    status, _, err = cli(capsys, "load", "--card", broken, "--journal", lane["journal"],
                         "--amount", "100", "--terminal-id", "001122334455", "--at", AT)
    assert status == 2 and "broken.json" in one_line(err)
    status, out, err = cli(capsys, "load", "--card", lane["card"], "--journal",
                           lane["journal"], "--amount", "100", "--terminal-id",
                           "0011223344AA", "--at", AT, "--json")
    assert status == 0, err
    assert json.loads(out)["record"]["terminal_id"] == "0011223344AA"
    status, _, err = cli(capsys, "load", "--card", lane["card"], "--journal",
                         lane["journal"], "--amount", "100", "--terminal-id",
                         "001122334455", "--at", AT)
    assert status == 2 and "is the journal of load terminal 0011223344AA" in one_line(err)


# --- 13, 14: numbers, codes, members, hosts ----------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["journal", "--limit", "99999999999999999999"],
    ["journal", "--limit", "9" * 5000],
    ["journal", "--disbursements", "--member", "\udcff\udcfe"],
    ["journal", "--disbursements", "--member", "１２３"],
])
def test_journal_options_out_of_range_are_one_line(lane, capsys, argv):
    status, _, err = cli(capsys, *tap(lane, "--mode", "bus", "--amount", "100", "--at", AT))
    status, _, err = cli(capsys, *argv, "--journal", lane["journal"])
    assert status == 2
    line = one_line(err)
    assert "Invalid value" in line and "Exceeds the limit" not in line and len(line) < 200


@pytest.mark.parametrize("host", ["a" * 300, "\udcff", "a..b", ""])
def test_sim_serve_refuses_a_host_it_cannot_resolve_in_one_line(lane, host):
    # in a process of its own: a serve that started would serve until stopped
    done = run("sim", "serve", lane["card"], "--host", host, "--port", "1", timeout=30)
    assert done.returncode == 2 and "Invalid value for '--host'" in one_line(done.stderr)


@pytest.mark.parametrize("station", ["0x12", "+123", "1_23", "１２３４", " 123", "12345", "-001"])
@pytest.mark.parametrize("option", ["--station", "--network"])
def test_codes_are_four_ascii_hex_digits(lane, capsys, station, option):
    extra = [] if option == "--station" else ["--station", "0203"]
    status, _, err = cli(capsys, *tap(lane, "--mode", "etc-entry", *extra, option, station,
                                      "--at", AT))
    assert status == 2 and f"Invalid value for '{option}'" in one_line(err)


@pytest.mark.parametrize("value", ["+100", "1_00", "１００", "0x64", " 100"])
def test_amounts_are_ascii_decimal_digits(lane, capsys, value):
    status, _, err = cli(capsys, *tap(lane, "--mode", "bus", "--amount", value, "--at", AT))
    assert status == 2 and "Invalid value for '--amount'" in one_line(err)


def test_a_station_in_hex_digits_is_taken(lane, capsys):
    status, out, err = cli(capsys, *tap(lane, "--mode", "etc-entry", "--station", "02aF",
                                        "--at", AT, "--json"))
    assert status == 0, err
    assert json.loads(out)["record"]["station"] == "02AF"


# --- 15: messages in one plain line ------------------------------------------------------------


def test_no_errno_text(lane, capsys):
    status, _, _ = cli(capsys, *tap(lane, "--mode", "bus", "--amount", "100", "--at", AT))
    assert status == 0
    status, _, err = cli(capsys, "batch", "export", "--journal", lane["journal"], "--out",
                         "/dev/null/batches")
    assert status == 1
    assert one_line(err) == "unioncard: error: /dev/null/batches: not a directory"


def test_no_offset_on_an_empty_input(tmp_path, capsys):
    empty = tmp_path / "empty.uct"
    empty.write_bytes(b"")
    for argv in (["trace", "decode", empty], ["trace", "stats", empty],
                 ["card", "show", empty]):
        status, _, err = cli(capsys, *argv)
        line = one_line(err)
        assert status == 1 and "empty" in line and "(at offset 0)" not in line, argv


def test_no_int_digits_hint_from_python(tmp_path, capsys):
    image = tmp_path / "card.json"
    image.write_text('{"format": "unioncard-card-image", "version": ' + "9" * 5000 + "}")
    status, _, err = cli(capsys, "card", "show", image)
    assert status == 1
    line = one_line(err)
    assert "Exceeds the limit" not in line and "set_int_max_str_digits" not in line


@pytest.mark.parametrize("argv", [
    ["tap", "--mode", "pos", "--amount", "100", "--merchant", "--json", "--card", "none.json"],
    ["trace", "stats", "--", "--json"],
    ["hotlist", "check", "--at", "--json", "x.csv", "00", "00"],
])
def test_json_is_not_taken_from_another_options_value(capsys, argv):
    status, out, err = cli(capsys, *argv)
    assert status == 2 and out == ""
    one_line(err)


def test_json_given_as_the_flag_still_gets_its_document(capsys):
    status, out, _ = cli(capsys, "tap", "--mode", "pos", "--merchant", "M1", "--json",
                         "--card", "none.json")
    assert status == 2 and json.loads(out)["exit_status"] == 2


# --- 16: empty rules, swapped images, read-only journal -------------------------------------


@pytest.mark.parametrize("text", ["", "# no rules at all\n"])
def test_an_empty_rule_file_is_refused(lane, capsys, text):
    rules = lane["dir"] / "rules.toml"
    rules.write_text(text)
    status, _, err = cli(capsys, *tap(lane, "--mode", "bus", "--amount", "100", "--at", AT,
                                      "--rules", rules))
    assert status == 2 and "the rule file has no rules" in one_line(err)
    assert not lane["journal"].exists()


def test_swapped_images_are_refused(lane, capsys):
    # in a process of its own: a serve that started would serve until stopped
    done = run("sim", "serve", lane["psam"], "--psam", lane["card"], "--port", "1",
               timeout=30)
    assert done.returncode == 2 and "is a PSAM image, not a card" in one_line(done.stderr)
    done = run("sim", "serve", lane["card"], "--psam", lane["card"], "--port", "1",
               timeout=30)
    assert done.returncode == 2
    status, _, err = cli(capsys, "tap", "--mode", "bus", "--amount", "100", "--card",
                         lane["psam"], "--psam", lane["card"], "--journal", lane["journal"],
                         "--at", AT)
    assert status == 2 and "is a psam image, not a card" in one_line(err)
    assert not lock_path(lane["card"]).exists() and not lock_path(lane["psam"]).exists()


@pytest.mark.parametrize("kind", ["missing", "empty", "no tables"])
@pytest.mark.parametrize("command", [["journal"], ["journal", "--disbursements"],
                                     ["batch", "export", "--out", "OUT"]])
def test_read_only_commands_create_nothing(lane, capsys, kind, command):
    path = lane["dir"] / "journal.sqlite"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "no tables":
        sqlite3.connect(path).execute("PRAGMA user_version = 0").connection.close()
    before = sorted(p.name for p in lane["dir"].iterdir())
    size = path.stat().st_size if path.exists() else None
    argv = [str(lane["dir"] / "out") if part == "OUT" else part for part in command]
    status, _, err = cli(capsys, *argv, "--journal", path)
    assert status == 1
    assert str(path) in one_line(err)
    assert sorted(p.name for p in lane["dir"].iterdir()) == before
    assert (path.stat().st_size if path.exists() else None) == size
    if kind == "no tables":
        tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == []


@pytest.mark.parametrize("value", ["nan", "inf", "1e3", "-1", "+2", "1_0", "３"])
def test_wait_is_a_plain_number_of_seconds(capsys, value):
    status, _, err = cli(capsys, "card", "read", "--reader", "0", "--wait", value)
    assert status == 2 and "Invalid value for '--wait'" in one_line(err)
