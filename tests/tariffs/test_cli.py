"""``unioncard tariffs``: check, quote and show."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import unioncard.tariffs
from unioncard.cli import root
from unioncard.tariffs import default_rules

BAD = """\
[[rule]]
id = "a"
mode = "bus"
[rule.when]
card_types = [0x55]
[rule.effect]
kind = "percent"
percent = 10.0

[[rule]]
id = "a"
mode = "tram"
[rule.effect]
kind = "fixed"
amount = 5
"""

SHADOWED = """\
[[rule]]
id = "wide"
mode = "bus"
[rule.when]
card_types = [0x55]
[rule.effect]
kind = "percent"
percent = "10"

[[rule]]
id = "narrow"
mode = "bus"
[rule.when]
card_types = [0x55]
routes = ["8"]
[rule.effect]
kind = "percent"
percent = "5"
"""


def run(*args):
    return CliRunner().invoke(root, ["tariffs", *args])


def quote_json(*args):
    result = run("quote", "--json", "--at", "2026-05-01T08:30", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("args", "charged", "rules"),
    [
        (["--mode", "bus", "--amount", "200", "--card-type", "0x55"], 180, ["bus-member-10"]),
        (["--mode", "bus", "--amount", "150", "--card-type", "0x55"], 135, ["bus-member-10"]),
        (["--mode", "etc", "--amount", "10000", "--card-type", "union-member",
          "--vehicle-class", "1"], 9500, ["etc-member-5"]),
        (["--mode", "bus", "--amount", "200", "--card-type", "0x01"], 200, []),
        (["--mode", "bus", "--amount", "200", "--card-type", "85", "--member-status", "lost"],
         200, []),
        (["--mode", "pos", "--amount", "12000", "--card-type", "0x55", "--merchant",
          "EXAMPLE-PARTNER-0001", "--mcc", "5411"], 11_000, ["partner-example-100-10"]),
    ],
)
def test_quote_json(args, charged, rules):
    document = quote_json(*args)
    assert document["charged_amount"] == charged
    assert document["list_amount"] == document["charged_amount"] + document["discount"]
    assert document["rules"] == rules
    assert document["rebate"] == 0
    assert isinstance(document["reason"], str) and document["reason"]
    assert document["version"] == default_rules().version
    assert document["rounding"] == "half-up"


def test_quote_json_names_capped_rules_left_to_settlement():
    document = quote_json("--mode", "pos", "--amount", "5000", "--card-type", "0x55",
                          "--mcc", "5812")
    assert document["deferred_to_settlement"] == ["consumption-subsidy"]
    assert "left to settlement" in document["reason"]


def test_quote_human_table():
    result = run("quote", "--mode", "bus", "--amount", "200", "--card-type", "0x55",
                 "--at", "2026-05-01T08:30")
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) if " " in line else (line, "")
                 for line in result.stdout.replace("list amount", "list_amount")
                 .replace("rule set", "rule_set").splitlines())
    assert lines["charged"].startswith("180 fen (1.80 yuan)")
    assert lines["rules"].strip() == "bus-member-10"
    assert default_rules().short_version in lines["rule_set"]


def test_quote_with_a_rules_file_and_categories(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(SHADOWED.replace('routes = ["8"]', 'member_categories = ["hardship"]')
                    .replace('percent = "5"', 'percent = "50"'), encoding="utf-8")
    common = ["--mode", "bus", "--amount", "200", "--card-type", "0x55", "--rules", str(path)]
    assert quote_json(*common)["charged_amount"] == 180
    assert quote_json(*common, "--member-category", "hardship")["charged_amount"] == 100
    assert quote_json(*common, "--member-category", "0x03")["rules"] == ["narrow"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "tram", "--amount", "1", "--card-type", "0x55"], "--mode"),
        (["--mode", "bus", "--amount", "-1", "--card-type", "0x55"], "--amount"),
        (["--mode", "bus", "--amount", "1", "--card-type", "0x155"], "--card-type"),
        (["--mode", "bus", "--amount", "1", "--card-type", "gold"], "--card-type"),
        (["--mode", "bus", "--amount", "1", "--card-type", "1", "--member-category", "vip"],
         "--member-category"),
        (["--mode", "bus", "--amount", "1", "--card-type", "1", "--member-status", "0"],
         "--member-status"),
        (["--mode", "bus", "--amount", "1", "--card-type", "1", "--at", "yesterday"], "--at"),
        (["--mode", "bus", "--amount", "1", "--card-type", "1", "--at", "2026-05-01"],
         "is not an ISO 8601 date and time"),
        (["--mode", "bus", "--amount", "1", "--card-type", "1", "--at", "1900-01-01T00:00"],
         "is not a transaction time"),
        (["--mode", "bus", "--amount", "1"], "--card-type"),
    ],
)
def test_quote_refuses_bad_options(args, message):
    result = run("quote", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_quote_with_an_invalid_rules_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD, encoding="utf-8")
    result = run("quote", "--mode", "bus", "--amount", "1", "--card-type", "1",
                 "--rules", str(path))
    assert result.exit_code == 1
    assert f"{path}:8: rule 'a'" in result.output and "unioncard tariffs check" in result.output


def test_check_reports_errors_with_file_line_and_rule(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD, encoding="utf-8")
    result = run("check", str(path))
    assert result.exit_code == 1
    assert f"{path}:8: error: rule 'a': effect.percent: 10.0 is a float" in result.stdout
    assert f"{path}:11: error: rule 'a': duplicate rule id (first defined at line 1)" \
        in result.stdout
    assert f"{path}:12: error: rule 'a': unknown mode 'tram'" in result.stdout
    assert "3 error(s), nothing loaded" in result.output


def test_check_warns_about_shadowed_rules(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(SHADOWED, encoding="utf-8")
    result = run("check", str(path))
    assert result.exit_code == 0
    assert f"{path}:10: warning: rule 'narrow': never applies: rule 'wide' (line 1)" \
        in result.stdout
    assert "2 rules" in result.stdout and "1 warning(s)" in result.stdout
    assert run("check", "--strict", str(path)).exit_code == 1


def test_check_json(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(SHADOWED, encoding="utf-8")
    document = json.loads(run("check", "--json", str(path)).stdout)
    assert document["ok"] is True and document["rules"] == 2 and document["errors"] == []
    assert [w["rule"] for w in document["warnings"]] == ["narrow"]
    path.write_text(BAD, encoding="utf-8")
    result = run("check", "--json", str(path))
    document = json.loads(result.stdout)
    assert result.exit_code == 1 and document["ok"] is False and document["version"] is None
    assert [(e["line"], e["rule"]) for e in document["errors"]] == [(8, "a"), (11, "a"), (12, "a")]


def test_check_missing_and_binary_files(tmp_path):
    assert "none.toml: cannot read the rule file: no such file or directory" \
        in run("check", str(tmp_path / "none.toml")).output
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\x00")
    assert "not UTF-8" in run("check", str(path)).output


def test_check_the_shipped_rules_is_clean():
    shipped = Path(unioncard.tariffs.__file__).with_name("default.toml")
    result = run("check", str(shipped))
    assert result.exit_code == 0 and "0 warning(s)" in result.stdout


def test_show_lists_rules_and_prints_normalized_toml(tmp_path):
    result = run("show")
    assert result.exit_code == 0
    for rule in default_rules().rules:
        assert rule.id in result.stdout
    toml = run("show", "--toml").stdout
    path = tmp_path / "copy.toml"
    path.write_text(toml, encoding="utf-8")
    assert json.loads(run("show", "--json", "--rules", str(path)).stdout)["version"] == \
        default_rules().version


def test_the_installed_command_prints_one_json_document():
    process = subprocess.run(
        [sys.executable, "-c", "from unioncard.cli import main; main()", "tariffs", "quote",
         "--mode", "bus", "--amount", "200", "--card-type", "0x55", "--json"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(process.stdout)["charged_amount"] == 180


def main(capsys, *args):
    """Run the installed command's entry point: (exit status, stdout, stderr)."""
    from unioncard.cli import main as entry_point

    try:
        entry_point(list(args))
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_a_rule_file_nested_too_deeply_is_one_error(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text("[[rule]]\nid = \"a\"\nwhen.routes = " + "[" * 10_000 + "]" * 10_000 + "\n")
    status, out, err = main(capsys, "tariffs", "check", str(path))
    assert status == 1 and "nested too deeply" in out and "Traceback" not in out + err
    status, out, err = main(capsys, "tariffs", "quote", "--mode", "bus", "--amount", "200",
                            "--card-type", "0x55", "--rules", str(path))
    assert status == 1 and out == ""
    assert err.splitlines() == [f"Error: {path}: not valid TOML: arrays or tables nested too "
                                f"deeply (run 'unioncard tariffs check {path}')"]


def test_check_json_is_one_document_whatever_the_exit_status(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    status, out, err = main(capsys, "tariffs", "check", str(path), "--json")
    assert status == 1 and json.loads(out)["ok"] is False  # one document, nothing after it
    assert err == f"Error: {path}: 3 error(s), nothing loaded\n"
    status, out, err = main(capsys, "tariffs", "check", "/dev/zero", "--json")
    assert status == 1 and json.loads(out)["error"].startswith("/dev/zero: the rule file is a")


def test_text_from_a_rule_file_is_printed_escaped(tmp_path, capsys):
    path = tmp_path / "rules.toml"
    path.write_text('[ruleset]\nname = "city\\u001b[2J"\n')
    status, out, _ = main(capsys, "tariffs", "show", "--rules", str(path))
    assert status == 0 and "\x1b" not in out and "city\\x1b[2J: 0 rules" in out
