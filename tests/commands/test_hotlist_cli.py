"""`unioncard hotlist check|update|replace|info`: answers, exit statuses, one JSON document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from unioncard.cli import main, root
from unioncard.offline.hotlist import index_path, read_hotlist

ISSUER = "3101000000000001"
CARD = "3101000000000001"
OTHER = "3101000000000002"
LIST = (f"issuer,card,listed_at\n{ISSUER},{CARD},2026-05-01T09:00:00\n"
        f"{ISSUER},{OTHER},2026-05-01T01:00:00Z\n{ISSUER},{CARD},2026-06-01T00:00:00\n")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Never the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def listed(tmp_path) -> Path:
    path = tmp_path / "hotlist.csv"
    path.write_text(LIST)
    return path


def invoke(*args):
    return CliRunner().invoke(root, [str(a) for a in args], catch_exceptions=False)


def document(stdout: str) -> dict:
    """stdout holds exactly one JSON document, on one line."""
    assert stdout.count("\n") == 1 and stdout.endswith("\n"), stdout
    return json.loads(stdout)


def via_main(capsys, *args) -> tuple[int, str, str]:
    """The real entry point, in process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code: int | str | None = 0
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return (0 if code is None else code), out, err


# --- check ---------------------------------------------------------------------------------


def test_check_a_listed_card(listed):
    result = invoke("hotlist", "check", listed, ISSUER, CARD)
    assert result.exit_code == 1
    assert result.stdout == (f"card {ISSUER} {CARD}: listed since 2026-05-01 09:00:00 "
                             "(China time)\n")
    doc = document(invoke("hotlist", "check", listed, ISSUER.lower(), CARD, "--json").stdout)
    assert doc == {"file": str(listed), "issuer": ISSUER, "card": CARD, "listed": True,
                   "listed_at": "2026-05-01T09:00:00+08:00", "at": None, "refused": True,
                   "warnings": [], "exit_status": 1}


def test_check_a_card_that_is_not_listed(listed):
    result = invoke("hotlist", "check", listed, ISSUER, "3101000000000003")
    assert result.exit_code == 0
    assert result.stdout == f"card {ISSUER} 3101000000000003: not listed\n"
    doc = document(invoke("hotlist", "check", listed, ISSUER, "3101000000000003",
                          "--json").stdout)
    assert (doc["listed"], doc["listed_at"], doc["refused"], doc["exit_status"]) == (
        False, None, False, 0)


@pytest.mark.parametrize(("at", "status", "words"), [
    ("2026-05-01T08:59:59", 0, "not yet listed at 2026-05-01 08:59:59"),
    ("2026-05-01T09:00:00", 1, "refused at 2026-05-01 09:00:00"),
    ("2026-05-01T01:00:00+00:00", 1, "refused at 2026-05-01 09:00:00"),
    ("2026-05-01T00:59:59Z", 0, "not yet listed at 2026-05-01 08:59:59"),
])
def test_check_at_a_transaction_time(listed, at, status, words):
    result = invoke("hotlist", "check", listed, ISSUER, CARD, "--at", at)
    assert result.exit_code == status
    assert words in result.stdout
    doc = document(invoke("hotlist", "check", listed, ISSUER, CARD, "--at", at,
                          "--json").stdout)
    assert doc["listed"] is True and doc["refused"] is (status == 1)


@pytest.mark.parametrize(("args", "words"), [
    (("31010000000000", CARD), "'31010000000000' is not 16 hex digits"),
    ((ISSUER, "31010000000000GG"), "'31010000000000GG' is not 16 hex digits"),
    ((ISSUER, CARD, "--at", "tomorrow"), "'tomorrow' is not an ISO 8601 date and time"),
])
def test_check_usage_errors_give_one_json_document(listed, capsys, args, words):
    code, out, err = via_main(capsys, "hotlist", "check", listed, *args, "--json")
    assert code == 2
    assert words in document(out)["error"] and words in err
    assert document(out)["exit_status"] == 2


def test_check_a_list_with_bad_rows(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(LIST + "nonsense\nx,y,z\n")
    code, out, err = via_main(capsys, "hotlist", "check", bad, ISSUER, CARD, "--json")
    assert code == 2
    doc = document(out)
    assert doc["error"].startswith(f"{bad}:5: 1 fields")
    assert doc["problems"] == [f"{bad}:5: 1 fields; a hotlist row is issuer,card,listed_at",
                               f"{bad}:6: issuer 'x' is not 16 hex digits (8 bytes)"]
    assert doc["exit_status"] == 2 and "Traceback" not in err
    code, out, err = via_main(capsys, "hotlist", "check", bad, ISSUER, CARD)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"unioncard: error: {doc['error']}"]  # one line
    assert "(and 1 more bad row)" in doc["error"]


def test_a_missing_list_through_the_entry_point(tmp_path):
    script = Path(sys.executable).with_name("unioncard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "unioncard"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([*command, "hotlist", "check", str(tmp_path / "none.csv"), ISSUER,
                           CARD, "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    doc = document(done.stdout)
    assert "does not exist" in doc["error"] and doc["exit_status"] == 2
    assert "Traceback" not in done.stderr


# --- update --------------------------------------------------------------------------------


def test_update_applies_a_delta_and_rebuilds_the_index(listed, tmp_path):
    delta = tmp_path / "delta.csv"
    delta.write_text(f"{ISSUER},3101000000000009,2026-05-02T10:00:00\n"
                     f"{ISSUER},{OTHER},,remove\n{ISSUER},3101000000000008,,remove\n")
    result = invoke("hotlist", "update", listed, "--delta", delta)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (f"{listed}: 1 added, 0 already listed, 1 removed, 1 not listed; "
                        "2 cards listed")
    assert lines[1].startswith(f"index: {index_path(listed)} (")
    doc = document(invoke("hotlist", "update", listed, "--delta", delta, "--json").stdout)
    assert {k: doc[k] for k in ("added", "already_listed", "removed", "not_listed",
                                "entries", "exit_status")} == {
        "added": 0, "already_listed": 1, "removed": 0, "not_listed": 2, "entries": 2,
        "exit_status": 0}
    assert doc["index"]["path"] == str(index_path(listed)) and doc["index"]["slots"] == 16
    assert len(read_hotlist(listed)) == 2
    assert document(invoke("hotlist", "check", listed, ISSUER, "3101000000000009",
                           "--json").stdout)["refused"] is True


def test_update_with_a_bad_delta_changes_nothing(listed, tmp_path, capsys):
    delta = tmp_path / "delta.csv"
    delta.write_text(f"{ISSUER},3101000000000009,2026-05-02T10:00:00\n"
                     f"{ISSUER},{OTHER},,forget\n")
    before = listed.read_bytes()
    code, out, _ = via_main(capsys, "hotlist", "update", listed, "--delta", delta, "--json")
    assert code == 2
    assert document(out)["error"] == (f"{delta}:2: action 'forget' is neither add nor remove; "
                                      "nothing was read")
    assert listed.read_bytes() == before


# --- replace -------------------------------------------------------------------------------


def test_replace_with_a_valid_list(listed, tmp_path):
    new = tmp_path / "new.csv"
    new.write_text(f"{ISSUER},3101000000000007,2026-07-01\n" * 2)
    assert invoke("hotlist", "info", listed).exit_code == 0
    doc = document(invoke("hotlist", "replace", listed, "--full", new, "--json").stdout)
    assert (doc["entries"], doc["rows"], doc["duplicates"]) == (1, 2, 1)
    assert doc["index"]["state"] == "rebuilt"
    assert listed.read_bytes() == new.read_bytes()
    fresh = tmp_path / "fresh.csv"
    result = invoke("hotlist", "replace", fresh, "--full", new)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"{fresh}: replaced by {new}: 1 cards listed"
    assert "(built: there was no index;" in result.stdout


def test_replace_with_a_bad_list_keeps_the_old_one(listed, tmp_path, capsys):
    new = tmp_path / "new.csv"
    new.write_text(f"{ISSUER},3101000000000007,2026-07-01\n{ISSUER},310100000000007,x\n")
    before = listed.read_bytes()
    code, out, err = via_main(capsys, "hotlist", "replace", listed, "--full", new)
    assert code == 2 and out == ""
    assert err == (f"unioncard: error: {new}:2: card '310100000000007' is not 16 hex digits "
                   "(8 bytes); nothing was read\n")
    code, out, _ = via_main(capsys, "hotlist", "replace", listed, "--full", new, "--json")
    assert code == 2 and document(out)["exit_status"] == 2
    assert listed.read_bytes() == before


# --- info ----------------------------------------------------------------------------------


def test_info(listed):
    result = invoke("hotlist", "info", listed)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == (
        f"{listed}: 2 cards listed (1 listed twice), listed from 2026-05-01 09:00:00 to "
        "2026-05-01 09:00:00 (China time)")
    assert "(built: there was no index; 16 slots, 12% full, 608 bytes)" in result.stdout
    doc = document(invoke("hotlist", "info", listed, "--json").stdout)
    assert {k: doc[k] for k in ("entries", "rows", "duplicates", "oldest", "newest")} == {
        "entries": 2, "rows": 3, "duplicates": 1, "oldest": "2026-05-01T09:00:00+08:00",
        "newest": "2026-05-01T09:00:00+08:00"}
    assert doc["index"]["state"] in ("verified", "fresh")
    assert doc["index"]["load_factor"] == 0.125 and doc["index"]["bytes"] == 608


def test_info_without_a_writable_cache(listed, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    result = invoke("hotlist", "info", listed)
    assert result.exit_code == 0
    assert "index: none, the list is held in memory (cannot create" in result.stdout
    assert result.stderr.startswith(f"warning: hotlist {listed}: no index (cannot create")
    doc = document(invoke("hotlist", "info", listed, "--json").stdout)
    assert doc["index"]["state"] == "memory" and doc["index"]["path"] is None
    assert len(doc["warnings"]) == 1 and "held in memory" in doc["warnings"][0]


# --- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["check", "update", "replace", "info"])
def test_help_explains_every_option(name):
    result = invoke("hotlist", name, "--help")
    assert result.exit_code == 0
    group = root.get_command(click.Context(root), "hotlist")
    assert isinstance(group, click.Group)
    command = group.get_command(click.Context(group), name)
    assert command is not None and command.help and len(command.help) > 80
    assert "Exit status" in command.help
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"hotlist {name} {param.opts} has no help"
            assert param.opts[0] in result.stdout


def test_the_group_is_listed():
    assert "hotlist" in invoke("--help").stdout
    assert "lost and cancelled cards" in invoke("hotlist", "--help").stdout


# --- hostile lists and targets ---------------------------------------------------------------


@pytest.mark.parametrize("command", [["info"], ["check", "{f}", ISSUER, CARD]])
def test_a_listing_time_beyond_year_9999_in_china_time_is_one_line(tmp_path, capsys, command):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"issuer,card,listed_at\n{ISSUER},{CARD},9999-12-31T23:00:00-01:00\n")
    argv = ["hotlist", *[part.format(f=bad) for part in command]]
    if command == ["info"]:
        argv.append(bad)
    code, out, err = via_main(capsys, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "outside the years 1 to 9999 in China time" in err and "Traceback" not in err


def test_replace_never_overwrites_a_card_image_or_a_locked_list(listed, tmp_path, capsys):
    from unioncard.file_lock import FileLock

    new = tmp_path / "new.csv"
    new.write_text(f"{ISSUER},3101000000000007,2026-07-01\n")
    image = tmp_path / "card.json"
    image.write_text('{"format": "unioncard-card-image", "version": 1, "kind": "member"}\n')
    code, out, err = via_main(capsys, "hotlist", "replace", image, "--full", new, "--json")
    assert code == 2 and "is a card image, not a hotlist; not replacing it" in \
        document(out)["error"]
    assert image.read_text().startswith('{"format": "unioncard-card-image"')
    before = listed.read_bytes()
    with FileLock(listed, "unioncard sim serve"):  # held by this process: refused at once
        code, out, err = via_main(capsys, "hotlist", "replace", listed, "--full", new)
    assert code == 2 and "in use" in err and len(err.splitlines()) == 1
    assert listed.read_bytes() == before
