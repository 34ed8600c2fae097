"""Card images: round trip, atomic write-through, torn NVM across files, kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from unioncard.applet_sim import PowerLoss, SimulatedCard, Step
from unioncard.applet_sim.image import FileSink, read_image, write_image
from unioncard.errors import DecodeError
from unioncard.terminal import Decision
from unioncard.testing.purse_rig import PurseRig, expected_tac, prepare_credit


def test_round_trip_keeps_state(card, psam, keys, tmp_path):
    rig = PurseRig.in_process(card, psam, keys)
    exit_ = rig.purchase("etc", 300)  # an ETC exit: a composite purchase with its EF 0019 record
    load = rig.load("transit", 700)
    for outcome in (exit_, load):
        assert outcome.decision is Decision.APPROVED and not outcome.warnings, outcome.reason
        assert outcome.record.tac == expected_tac(keys, outcome.record)
    assert exit_.record.tx_type == 0x09
    path = tmp_path / "card.json"
    card.save(path)
    again = SimulatedCard.load(path, random_source=1)
    assert again.to_image() == card.to_image()
    assert not again.powered
    again.power_on()
    assert again.purse("etc").balance == 19_700 and again.purse("transit").balance == 10_700
    assert again.purse("etc").log() == card.purse("etc").log()
    assert again.atr == card.atr
    psam_path = tmp_path / "psam.json"
    psam.save(psam_path)
    assert SimulatedCard.load(psam_path).psam().terminal_seq == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_image_document_is_readable_json(card, tmp_path):
    path = tmp_path / "card.json"
    card.save(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "unioncard-card-image" and doc["version"] == 1
    assert doc["kind"] == "member-card" and doc["protocol"] == "T=1"
    assert doc["nvm"]["cells"]["3F00/1002:balance"] == "00002710"
    assert doc["nvm"]["journal"] == {"committed": False, "entries": []}
    names = [f["name"] for f in doc["mf"]["children"]]
    assert names == ["ETC application", "T-Union transit purse", "member identity",
                     "PSE 1PAY.SYS.DDF01", "PPSE 2PAY.SYS.DDF01", "PBOC debit"]


def test_protocol_override_on_load(card, tmp_path):
    path = tmp_path / "card.json"
    card.save(path)
    assert SimulatedCard.load(path, protocol="T=0").protocol == "T=0"
    with pytest.raises(ValueError):
        SimulatedCard.load(path, protocol="T=5")


def live_terminal(card, psam, keys, path):
    """``card`` saved at ``path`` and loaded back writing through to it, powered on, and the
    terminal engine's rig on it."""
    card.save(path)
    live = SimulatedCard.load(path, write_through=True, random_source=3)
    return live, PurseRig.in_process(live, psam, keys)


def test_write_through_saves_each_commit_before_the_response(card, psam, keys, tmp_path):
    path = tmp_path / "card.json"
    live, rig = live_terminal(card, psam, keys, path)
    sink = live._sink
    assert isinstance(sink, FileSink)
    assert rig.read().decision is Decision.APPROVED  # a whole card read...
    assert sink.saves == 0  # ...commits nothing
    outcome = rig.purchase("transit", 5)
    assert outcome.decision is Decision.APPROVED and not outcome.warnings, outcome.reason
    assert outcome.record.tac == expected_tac(keys, outcome.record)
    assert sink.saves == 1
    on_disk = SimulatedCard.load(path)
    on_disk.power_on()
    assert on_disk.purse("transit").balance == 9_995


def test_torn_state_travels_in_the_image(card, psam, keys, tmp_path):
    path = tmp_path / "card.json"
    live, rig = live_terminal(card, psam, keys, path)
    live.faults.cut_after(Step.PURSE_BALANCE, phase="apply")
    outcome = rig.purchase("transit", 40)
    assert outcome.decision is Decision.INTERRUPTED  # the card went silent during DEBIT
    assert isinstance(live.faults.fired, PowerLoss)
    assert rig.answer_to(0x54).response is None
    doc = read_image(path)
    assert doc["nvm"]["journal"]["committed"] is True
    assert doc["nvm"]["cells"]["3F00/1002:balance"] == f"{9_960:08X}"  # applied
    assert doc["nvm"]["cells"]["3F00/1002:offline_seq"] == "0000"  # not yet
    reborn = SimulatedCard.load(path, write_through=True)
    reborn.power_on()
    assert reborn.last_recovery.replayed == 5  # balance, seq, log, log pointer, proof
    assert (reborn.purse("transit").balance, reborn.purse("transit").offline_seq) == (9_960, 1)
    assert read_image(path)["nvm"]["journal"]["entries"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"format": "other"}', "not a card image"),
        ('{"format": "unioncard-card-image", "version": 2}', "unsupported card image version"),
        ('{"format": "unioncard-card-image", "version": 1, "kind": "x"}', "malformed"),
    ],
)
def test_bad_images(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DecodeError, match=message):
        SimulatedCard.load(path)


def test_bad_layout_and_nvm_sections(card, tmp_path):
    doc = card.to_image()
    doc["mf"]["children"][0]["app"]["type"] = "wallet"
    with pytest.raises(DecodeError, match="wallet"):
        SimulatedCard.from_image(doc)
    doc = card.to_image()
    doc["nvm"] = {"cells": []}
    with pytest.raises(DecodeError, match="NVM"):
        SimulatedCard.from_image(doc)
    doc = card.to_image()
    doc["protocol"] = "T=2"
    with pytest.raises(DecodeError, match="protocol"):
        SimulatedCard.from_image(doc)
    with pytest.raises(DecodeError, match="cannot read"):
        SimulatedCard.load(tmp_path / "missing.json")


def test_write_image_leaves_old_file_when_it_fails(tmp_path):
    path = tmp_path / "card.json"
    write_image(path, {"a": 1})
    with pytest.raises(TypeError):
        write_image(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


WORKER = r"""
import sys
from unioncard.applet_sim import SimulatedCard, issue_psam
from unioncard.crypto import Keystore
from unioncard.testing.purse_rig import PurseRig, expected_tac
keys = Keystore.test()
card = SimulatedCard.load(sys.argv[1], write_through=True)
rig = PurseRig.in_process(card, issue_psam(keys, "001122334455"), keys)
while True:
    outcome = rig.purchase("transit", 1)
    assert outcome.decision.value == "approved" and not outcome.warnings, outcome.reason
    assert outcome.record.tac == expected_tac(keys, outcome.record)
    print("ok", flush=True)
"""


def test_kill_9_never_leaves_a_broken_image(card, tmp_path):
    path = tmp_path / "card.json"
    card.save(path)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        assert proc.stdout is not None
        for _ in range(5):
            assert proc.stdout.readline() == "ok\n"
        time.sleep(0.013)  # somewhere in the middle of a purchase, or of an image write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    reborn = SimulatedCard.load(path)
    reborn.power_on()
    purse = reborn.purse("transit")
    assert purse.offline_seq >= 5
    assert purse.balance == 10_000 - purse.offline_seq  # every committed purchase, no other
    assert purse.log()[0].seq == purse.offline_seq - 1
    assert purse.proof is not None and purse.proof[0] == purse.offline_seq
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".json"] == ["card.json"]


def test_an_unwritable_image_raises_persistence_error(card, psam, keys, tmp_path):
    from unioncard.applet_sim import PersistenceError
    from unioncard.errors import TransportError

    live, rig = live_terminal(card, psam, keys, tmp_path / "card.json")
    live.set_persistence(FileSink(tmp_path / "no-such-dir" / "card.json"))
    load = prepare_credit(rig.card, keys, "transit", 10, when=rig.tick(),
                          terminal_id=rig.terminal_id)
    with pytest.raises(PersistenceError) as caught:
        live.transmit(load.command.to_bytes())
    assert isinstance(caught.value, TransportError)
    assert live.powered and live.purse("transit").balance == 10_010  # committed in memory


def test_new_images_are_private_and_replaced_ones_keep_their_mode(card, tmp_path):
    path = tmp_path / "card.json"
    card.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    card.save(path)
    assert path.stat().st_mode & 0o777 == 0o640


# --- an image is checked completely on load ------------------------------------------------


def _saved(card, tmp_path, change=None, name="card.json"):
    """``card``'s image, changed by ``change(doc)``, written to a file."""
    doc = card.to_image()
    if change is not None:
        change(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _cells(doc):
    return doc["nvm"]["cells"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: _cells(d).update({"3F00/1002:balance": "7FFFFFFF"}),
         "'3F00/1002:balance' holds 2147483647, above the purse maximum 100000"),
        (lambda d: _cells(d).update({"3F00/1002:balance": "00002710FF"}),
         "'3F00/1002:balance' has 5 bytes, not 4"),
        (lambda d: _cells(d).pop("3F00/1002:balance"), "'3F00/1002:balance' is missing"),
        (lambda d: _cells(d).update({"3F00/1002:state": "03"}), "above the last purse state"),
        (lambda d: _cells(d).update({"3F00/1002:mac_errors": "04"}), "MAC error limit 3"),
        (lambda d: _cells(d).update({"3F00:pin_tries": "09"}), "above the PIN's tries 3"),
        (lambda d: _cells(d).update({"3F00/1002:proof": "00"}), "not 0 or 11"),
        (lambda d: _cells(d).update({"3F00/1002/0015": "00"}), "the EF has 30"),
        (lambda d: _cells(d).update({"3F00/1002:bonus": "00"}), "names no file or value"),
        (lambda d: _cells(d).update({"3F00/1001/0019#4": "AA" * 43}), "no record of the EF"),
        (lambda d: _cells(d).update({"3F00/1001/0019#3": "AA" * 43}), "record 2 is missing"),
        (lambda d: _cells(d).update({"3F00/1002/0018#ptr": "0101"}), "record 1 is missing"),
        (lambda d: _cells(d).update({"3F00/1002/0018#ptr": "0B01"}), "do not fit 10 records"),
        (lambda d: d.update(kind="psam"), "kind is psam, but the card does not hold one PSAM"),
        (lambda d: d.update(kind="wallet"), "kind must be one of member-card, psam"),
        (lambda d: d["mf"]["children"][1]["app"].update(max_balance="100000"),
         r"mf.children\[1\].app.max_balance must be an integer"),
        (lambda d: d["mf"]["children"][1]["children"][0].update(size=True),
         r"mf.children\[1\].children\[0\].size must be an integer"),
        (lambda d: d["mf"]["children"][1]["app"].update(label="\x1b[2J"), "printable ASCII"),
        (lambda d: d["mf"]["children"][1]["app"].update(log_fid="0015"), "no cyclic log EF"),
        (lambda d: d["nvm"]["journal"]["entries"].append(
            {"step": "purse.balance", "address": "3F00/1002:balance", "value": "7FFFFFFF"}),
         "journal entry 0 .* above the purse maximum"),
        (lambda d: d["nvm"]["journal"]["entries"].append(
            {"step": "no.such.step", "address": "3F00/1002:balance", "value": "00000000"}),
         "must name an NVM write step"),
    ],
)
def test_an_image_is_validated_completely_on_load(card, tmp_path, change, message):
    path = _saved(card, tmp_path, change)
    with pytest.raises(DecodeError, match=message) as caught:
        SimulatedCard.load(path)
    assert caught.value.message.startswith(f"{path}: malformed card image")


def test_a_psam_image_and_a_psam_kind_on_a_member_card(card, psam, tmp_path):
    path = _saved(psam, tmp_path, name="psam.json")
    assert SimulatedCard.load(path).psam().terminal_seq == 0
    with pytest.raises(DecodeError, match="'3F00:terminal_seq' is missing"):
        SimulatedCard.load(_saved(psam, tmp_path, lambda d: _cells(d).pop("3F00:terminal_seq")))

    def member_card_with_a_psam(doc):
        doc["mf"]["children"][0]["app"] = psam.to_image()["mf"]["app"]

    with pytest.raises(DecodeError, match="kind is member-card, but the card holds a PSAM"):
        SimulatedCard.load(_saved(card, tmp_path, member_card_with_a_psam))


def test_a_committed_journal_is_checked_as_power_up_leaves_it(card, tmp_path):
    def torn(doc):
        doc["nvm"]["journal"] = {"committed": True, "entries": [
            {"step": "purse.log_pointer", "address": "3F00/1002/0018#ptr", "value": "0101"}]}

    with pytest.raises(DecodeError, match="3F00/1002/0018: record 1 is missing"):
        SimulatedCard.load(_saved(card, tmp_path, torn))
    torn_doc = card.to_image()
    torn(torn_doc)
    torn_doc["nvm"]["journal"]["committed"] = False  # discarded at power-up: fine
    assert SimulatedCard.from_image(torn_doc).nvm.journal


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"format": "unioncard-card-image", "label": "\xff"}', r"not UTF-8 text \(byte 0xFF"),
        (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
        (b'{"format": 1, "format": 2}', "the key 'format' appears twice"),
        (b'{"version": ' + b"9" * 5000 + b"}", "not JSON: a number of thousands of digits"),
    ],
)
def test_hostile_image_files(tmp_path, raw, message):
    path = tmp_path / "bad.json"
    path.write_bytes(raw)
    with pytest.raises(DecodeError, match=message):
        SimulatedCard.load(path)


def test_image_files_are_bounded_and_regular(tmp_path):
    from unioncard.applet_sim.image import CARD_IMAGE_LIMIT

    huge = tmp_path / "huge.json"
    with huge.open("wb") as file:
        file.truncate(CARD_IMAGE_LIMIT + 1)  # sparse: nothing is read
    with pytest.raises(DecodeError, match=r"huge\.json: the card image is larger than 4 MiB"):
        SimulatedCard.load(huge)
    with pytest.raises(DecodeError, match="a character device, not a regular file"):
        SimulatedCard.load("/dev/zero")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="a FIFO, not a regular file"):
        SimulatedCard.load(fifo)  # refused at once: it waits for no writer
