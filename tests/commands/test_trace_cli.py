"""`unioncard trace decode|stats|convert` and `unioncard demo`, end to end."""

import io
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from unioncard.apdu.trace_binary import read_binary
from unioncard.apdu.trace_text import read_text
from unioncard.cli import root

SHIPPED = Path(str(resources.files("unioncard").joinpath("data/sample_trace.txt")))
SAMPLE = Path(__file__).with_name("data") / "emv_bus_fare.txt"
"""A bus fare traced with the PBOC debit application read first (PPSE, GPO, records with
a PAN), so that decoding, PAN masking and TLV statistics have something to work on."""
SPY = Path(__file__).parents[1] / "apdu" / "data" / "pcsc_spy" / "spy_raw.log"
H = bytes.fromhex


def run(*args: str):
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


def frame(kind: int, payload: bytes) -> bytes:
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


@pytest.fixture
def binary(tmp_path) -> Path:
    out = tmp_path / "sample.uct"
    assert run("trace", "convert", str(SAMPLE), str(out)).exit_code == 0
    return out


def test_decode_text_output():
    result = run("trace", "decode", str(SAMPLE))
    assert result.exit_code == 0
    out = result.stdout
    for text in ("SELECT", "GET PROCESSING OPTIONS", "READ RECORD", "INITIALIZE FOR PURCHASE",
                 "DEBIT FOR PURCHASE", "Application Primary Account Number (PAN)",
                 "SW 9000: ok", "card type: 55 (union member card)", "623058*********6789"):
        assert text in out
    assert "62 30 58 00 00" not in out
    assert out.rstrip().endswith(f"16 exchanges, text trace {SAMPLE}")


def test_decode_json_is_one_document_and_masks_unless_asked():
    doc = json.loads(run("trace", "decode", "--json", str(SAMPLE)).stdout)
    assert doc["format"] == "text" and doc["count"] == 16 and len(doc["exchanges"]) == 16
    assert "0000123456789" not in json.dumps(doc)
    unmasked = json.loads(run("trace", "decode", "--json", "--unmask", str(SAMPLE)).stdout)
    assert "6230580000123456789" in json.dumps(unmasked)


def test_decode_of_a_damaged_file_fails_with_one_line_and_still_one_json_document(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(SAMPLE.read_bytes() + b"card > 00 A4 0\n")
    result = run("trace", "decode", "--json", str(bad))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["error"]["message"].startswith("line 39: odd number of hex digits")
    assert doc["count"] == 16
    (line,) = result.stderr.strip().splitlines()
    assert "bad.txt: line 39: odd number of hex digits (5) (at offset" in line
    plain = run("trace", "decode", str(bad))
    assert plain.exit_code == 1 and "line 39" in plain.stderr


def test_stats_json(binary):
    result = run("trace", "stats", "--json", str(binary))
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["format"] == "binary" and doc["bytes"] == binary.stat().st_size
    assert doc["frames"]["total"] == 32 and doc["exchanges"]["total"] == 16
    assert doc["exchanges"]["by_device"]["psam"]["exchanges"] == 4
    assert doc["commands"]["SELECT"] == 3 and doc["commands"]["GET BALANCE"] == 2
    assert doc["status_words"]["6108"]["count"] == 1
    assert doc["tlv"]["tags"]["5A"]["count"] == 1
    assert doc["tlv"]["responses_raw_data"] == 7
    assert doc["timing"]["seconds"] > 0


def test_stats_of_text_and_spy_sources_match_their_binary_forms(binary):
    from_text = json.loads(run("trace", "stats", "--json", str(SAMPLE)).stdout)
    from_binary = json.loads(run("trace", "stats", "--json", str(binary)).stdout)
    for key in ("frames", "exchanges", "commands", "status_words", "tlv"):
        assert from_text[key] == from_binary[key]
    spy = json.loads(run("trace", "stats", "--json", "--psam-reader", "PCD 00 01",
                         str(SPY)).stdout)
    assert spy["format"] == "pcsc-spy"
    assert spy["exchanges"]["by_device"]["psam"]["exchanges"] == 3
    assert spy["exchanges"]["unanswered_commands"] == 1  # the failed SCardTransmit


def test_stats_human_output(binary):
    result = run("trace", "stats", str(binary))
    assert result.exit_code == 0
    assert "32 frames (16 commands, 16 responses, 0 malformed)" in result.stdout
    assert "exchanges: 16 (card 12, psam 4)" in result.stdout


def test_stats_of_a_damaged_binary_reports_and_fails(tmp_path, binary):
    damaged = tmp_path / "damaged.uct"
    data = binary.read_bytes()
    damaged.write_bytes(data + frame(0x44, b"\x00") + H("020010AA"))
    result = run("trace", "stats", "--json", str(damaged))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [e["offset"] for e in doc["malformed_frames"]["examples"]] == [len(data), len(data) + 4]
    (line,) = result.stderr.strip().splitlines()
    assert f"damaged trace: frame 32: unknown frame kind (at offset {len(data)})" in line


def test_bad_magic_is_one_line(tmp_path):
    bad = tmp_path / "bad.uct"
    bad.write_bytes(b"UCT2")
    for command in ("stats", "decode"):
        result = run("trace", command, str(bad))
        assert result.exit_code == 1
        (line,) = result.stderr.strip().splitlines()
        assert "not a UCT1 binary trace" in line and "(at offset 0)" not in line


def test_progress_bar_goes_to_stderr(binary):
    result = run("trace", "stats", "--json", "--progress", str(binary))
    assert result.exit_code == 0
    json.loads(result.stdout)


def test_convert_round_trip_and_timestamp_warning(tmp_path):
    uct, txt = tmp_path / "a.uct", tmp_path / "b.txt"
    result = run("trace", "convert", str(SAMPLE), str(uct))
    assert result.exit_code == 0
    assert "warning: 32 timestamps dropped" in result.stderr
    assert run("trace", "convert", str(uct), str(txt)).exit_code == 0
    with open(SAMPLE, "rb") as a, open(txt, "rb") as b:
        assert [r.without_timestamp() for r in read_text(a)] == list(read_text(b))
    assert "# SELECT" in txt.read_text()
    plain = tmp_path / "c.txt"
    assert run("trace", "convert", "--no-annotate", str(uct), str(plain)).exit_code == 0
    assert "#" not in plain.read_text()
    assert run("trace", "convert", "--to", "binary", str(txt), str(tmp_path / "e")).exit_code == 0
    with open(tmp_path / "e", "rb") as e, open(uct, "rb") as a:
        assert list(read_binary(e)) == list(read_binary(a))


def test_convert_spy_log(tmp_path):
    out = tmp_path / "spy.txt"
    assert run("trace", "convert", "--psam-reader", "PCD 00 01", str(SPY), str(out)).exit_code == 0
    text = out.read_text()
    assert text.count("psam ") == 6 and "+00:00 > 00 B0 96 00 06" in text


def test_convert_refusals(tmp_path):
    result = run("trace", "convert", str(SAMPLE), str(tmp_path / "out.xyz"))
    assert result.exit_code == 2 and "use --to" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"> 00A4\nnonsense\n")
    target = tmp_path / "out.uct"
    result = run("trace", "convert", str(bad), str(target))
    assert result.exit_code == 1 and "line 2" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]  # no output, no temp
    same = run("trace", "convert", "--to", "text", "--force", str(SAMPLE), str(SAMPLE))
    assert same.exit_code == 1 and "OUT is the input file IN" in same.stderr


def test_convert_never_destroys_its_input_named_like_a_temporary(tmp_path):
    # Reliability item 1: IN named OUT + ".part" was truncated by the fixed temporary name.
    source = tmp_path / "s.uct.part"
    source.write_bytes(SHIPPED.read_bytes())
    result = run("trace", "convert", str(source), str(tmp_path / "s.uct"))
    assert result.exit_code == 0 and "28 records" in result.stderr
    assert source.read_bytes() == SHIPPED.read_bytes()
    with open(tmp_path / "s.uct", "rb") as out:
        assert len(list(read_binary(out))) == 28


def test_convert_leaves_alone_what_it_did_not_create(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    target = tmp_path / "out.uct"
    planted = tmp_path / "out.uct.part"
    planted.symlink_to(victim)  # a link where the old temporary name was: never followed
    assert run("trace", "convert", str(SHIPPED), str(target)).exit_code == 0
    assert victim.read_text() == "keep me\n" and planted.is_symlink()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"> 00A4\nnonsense\n")
    planted.unlink()
    planted.write_text("someone else's\n")  # and a damaged IN deletes nothing of others
    other = tmp_path / "other.uct"
    assert run("trace", "convert", str(bad), str(other)).exit_code == 1
    assert planted.read_text() == "someone else's\n" and not other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.txt", "out.uct", "out.uct.part", "victim.txt"]


def test_convert_replaces_out_only_when_forced_and_never_a_link_or_card_image(
        tmp_path, sim_card):
    target = tmp_path / "out.txt"
    target.write_text("an older trace\n")
    result = run("trace", "convert", str(SHIPPED), str(target))
    assert result.exit_code == 1
    assert f"{target}: the file exists; use --force" in result.stderr
    assert target.read_text() == "an older trace\n"
    target.chmod(0o640)
    assert run("trace", "convert", "--force", str(SHIPPED), str(target)).exit_code == 0
    assert "# SELECT" in target.read_text() and target.stat().st_mode & 0o777 == 0o640
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    result = run("trace", "convert", "--force", str(SHIPPED), str(link))
    assert result.exit_code == 1 and "symbolic link" in result.stderr
    image = tmp_path / "card.json"
    sim_card.save(image)
    before = image.read_bytes()
    result = run("trace", "convert", "--force", "--to", "text", str(SHIPPED), str(image))
    assert result.exit_code == 1 and "is a card image" in result.stderr
    assert image.read_bytes() == before
    hard = tmp_path / "hard.txt"
    hard.hardlink_to(target)
    same = run("trace", "convert", "--force", str(target), str(hard))
    assert same.exit_code == 1 and "OUT is the input file IN" in same.stderr


def test_two_converts_to_one_out_do_not_share_a_temporary(tmp_path):
    source = tmp_path / "big.txt"
    source.write_bytes(SHIPPED.read_bytes() * 400)
    target = tmp_path / "out.uct"
    convert = [sys.executable, "-c", "from unioncard.cli import main; main()", "trace",
               "convert", "--force", str(source), str(target)]
    runs = [subprocess.Popen(convert, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = 0
    for process in runs:
        _, err = process.communicate(timeout=120)
        # OUT is locked while written: the second convert waits for none, it is refused
        assert process.returncode == 0 or "in use by unioncard trace convert" in err, err
        done += process.returncode == 0
    assert done >= 1
    with open(target, "rb") as out:
        assert len(list(read_binary(out))) == 28 * 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt", "out.uct"]


def test_demo_decodes_the_shipped_sample():
    result = run("demo")
    assert result.exit_code == 0
    assert f"Sample trace: {SHIPPED}" in result.stdout
    assert "INIT SAM FOR PURCHASE" in result.stdout and "card type: 55 (union member card)" \
        in result.stdout
    assert "28 frames, 14 exchanges (card 6, PSAM 8)" in result.stdout


@pytest.mark.parametrize("args", [["trace"], ["trace", "decode"], ["trace", "stats"],
                                  ["trace", "convert"], ["demo"]])
def test_every_command_explains_itself(args):
    result = run(*args, "--help")
    assert result.exit_code == 0 and len(result.stdout) > 200


def test_the_installed_entry_point_prints_one_line_errors(tmp_path):
    bad = tmp_path / "bad.uct"
    bad.write_bytes(b"UCT1" + frame(1, H("00B2010C00")) + H("0200"))
    done = subprocess.run([sys.executable, "-c", "from unioncard.cli import main; main()",
                           "trace", "decode", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "frame 1: truncated header (2 of 3 bytes) at the end of the file (at offset 12)" in line
    assert io.StringIO(done.stdout).read().strip() == ""
