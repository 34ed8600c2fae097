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
    assert names == ["ETC application", "T-Union transit purse", "member identity"]


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
