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


# --- the PBOC debit application and the PSE / PPSE ------------------------------------------

DEBIT = "A000000333010101"
ADF = f"3F00/{DEBIT}"
PSE_AID = b"1PAY.SYS.DDF01".hex().upper()
PPSE_AID = b"2PAY.SYS.DDF01".hex().upper()


def _df(doc, aid):
    return next(c for c in doc["mf"]["children"] if c.get("aid") == aid)


def _pboc(doc):
    return _df(doc, DEBIT)["app"]


def _entries(doc, aid=PSE_AID):
    return _df(doc, aid)["app"]["entries"]


def _other_key(bits=None, exponent=65537):
    """A PEM RSA key of ``bits``, or of exponent ``exponent`` (1024 bits)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from unioncard.crypto.oda import PrivateKey

    if bits is not None:
        return PrivateKey.generate(bits, 3).to_pem()
    while True:  # the primes of a fresh key, with another public exponent
        p = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_numbers()
        phi = (p.p - 1) * (p.q - 1)
        try:
            d = pow(exponent, -1, phi)
        except ValueError:
            continue
        public = rsa.RSAPublicNumbers(exponent, p.p * p.q)
        key = rsa.RSAPrivateNumbers(p.p, p.q, d, d % (p.p - 1), d % (p.q - 1),
                                    pow(p.q, -1, p.p), public).private_key()
        return PrivateKey(key).to_pem()


def _ec_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()).decode("ascii")


RECORD_11 = f"{ADF}:rec.01.1"

PBOC_DAMAGE = [
    # the application's fields
    (lambda d: _pboc(d).update(log_fid="0"), r"app\.log_fid must be a string of hex digit"),
    (lambda d: _pboc(d).update(log_fid="0015"), "has no transaction log EF 0015: cyclic, SFI 0B"),
    (lambda d: _df(d, DEBIT)["children"][0].update(records=5), "no transaction log EF 000B"),
    (lambda d: _df(d, DEBIT)["children"][0].update(size=44), "10 records of 45 bytes"),
    (lambda d: _df(d, DEBIT)["children"][0].update(kind="linear"), "no transaction log EF"),
    (lambda d: _df(d, DEBIT)["children"][0].update(sfi="0C"), "no transaction log EF"),
    (lambda d: _pboc(d).update(label=""), r"app\.label must not be empty"),
    (lambda d: _pboc(d).update(label="PBOC\x07DEBIT"), r"app\.label must be printable ASCII"),
    (lambda d: _pboc(d).update(priority=256), r"app\.priority must be an integer 0\.\.255"),
    (lambda d: _pboc(d).update(pan="6230120000000000425"), "pan fails its Luhn check digit"),
    (lambda d: _pboc(d).update(pan="６２３０１２００００００００００４２４"),
     "pan must be a string of 12 to 19 digits"),
    (lambda d: _pboc(d).update(pan=6230120000000000424), "pan must be a string of 12 to 19"),
    (lambda d: _pboc(d).update(psn="1"), "psn must be a string of 2 digits"),
    (lambda d: _pboc(d).update(dki="01"), r"app\.dki must be an integer 0\.\.255"),
    (lambda d: _pboc(d)["keys"].pop("smc"), r"app\.keys must hold exactly ac, smi, smc"),
    (lambda d: _pboc(d)["keys"].update(ac="00" * 15), r"app\.keys\.ac must be 16 bytes, not 15"),
    (lambda d: _pboc(d).update(icc_key="-----BEGIN RSA PRIVATE KEY-----\nAAAA\n"),
     "icc_key is refused: the ICC key is not an unencrypted PEM RSA private key"),
    (lambda d: _pboc(d).update(icc_key=_ec_key()), "not an unencrypted PEM RSA private key"),
    (lambda d: _pboc(d).update(icc_key=_other_key(bits=2048)),
     "the ICC key has 2048 bits, not a multiple of 8 from 512 to 1984"),
    (lambda d: _pboc(d).update(icc_key=_other_key(exponent=5)),
     "the ICC key's exponent is 5, not 3 or 65537"),
    (lambda d: _pboc(d).update(icc_key="x" * 5000), "icc_key is longer than 4096"),
    (lambda d: _pboc(d).update(pin="12a456"), r"app\.pin must be a string of 4 to 12 digits"),
    (lambda d: _pboc(d).update(pin_max_tries=16), r"pin_max_tries must be an integer 1\.\.15"),
    (lambda d: _pboc(d).update(afl="080102"), "afl must be 4 to 252 bytes, not 3"),
    (lambda d: _pboc(d).update(afl="08010202100103"), "afl must be 1 to 63 entries of 4 bytes"),
    (lambda d: _pboc(d).update(afl="08010100" * 64), "afl must be 4 to 252 bytes, not 256"),
    (lambda d: _pboc(d).update(afl="0802010010010300"), "afl entry 08020100 is not valid"),
    (lambda d: _pboc(d).update(afl="0801020258010100"), "afl names SFI 0B, the transaction"),
    (lambda d: _pboc(d).update(afl="0801020008020200"), "afl names record 2 of SFI 01 twice"),
    (lambda d: _pboc(d).update(afl="0802020010010300"), "does not name record 1 of SFI 01"),
    (lambda d: _pboc(d).update(currency="015A"), "currency must be a numeric currency code"),
    (lambda d: _pboc(d).update(currency="1156"), "currency must be a numeric currency code"),
    (lambda d: _pboc(d).update(qpboc_cid="yes"), r"app\.qpboc_cid must be true or false"),
    # its NVM cells
    (lambda d: _cells(d).update({f"{ADF}:atc": "000001"}), ":atc' has 3 bytes, not 2"),
    (lambda d: _cells(d).update({f"{ADF}:last_online_atc": "0005"}),
     ":last_online_atc' holds 5, above the ATC 0"),
    (lambda d: _cells(d).update({f"{ADF}:pin_tries": "04"}), "holds 4, above the PIN's tries 3"),
    (lambda d: _cells(d).update({f"{ADF}:state": "08"}), "holds 08, a bit other than 07"),
    (lambda d: _cells(d).update({f"{ADF}:ec_balance": "00000000ABCD"}),
     ":ec_balance' is not 6 bytes of BCD digits"),
    (lambda d: _cells(d).update({f"{ADF}:ec_balance": "000000100001"}),
     ":ec_balance' holds 100001, above the EC balance limit 100000"),
    (lambda d: _cells(d).update({f"{ADF}:ec_limits": "000000100000"}),
     ":ec_limits' is not 18 bytes of BCD digits"),
    (lambda d: _cells(d).pop(f"{ADF}:ec_limits"), ":ec_limits' is missing"),
    (lambda d: _cells(d).update({RECORD_11: "70035A01"}), "is not a BER-TLV record template 70"),
    (lambda d: _cells(d).update({RECORD_11: "6A00"}), "is not one record template 70 alone"),
    (lambda d: _cells(d).update({RECORD_11: _cells(d)[RECORD_11] + "00"}),
     "is not one record template 70 alone"),
    (lambda d: _cells(d).update({RECORD_11: "7081FC" + "00" * 252}), "more than 254"),
    (lambda d: _pboc(d).update(afl="0801030210010300"), r"rec\.01\.3' is missing"),
    (lambda d: _cells(d).update({f"{ADF}:rec.03.1": "7000"}), "names no file or value"),
    (lambda d: d["nvm"]["journal"].update(committed=True, entries=[
        {"step": "emv.state", "address": f"{ADF}:state", "value": "80"}]),
     "journal entry 0 .* a bit other than 07"),
    # the PSE and PPSE
    (lambda d: _df(d, PSE_AID)["app"].update(kind="sse"), "kind must be one of pse, ppse"),
    (lambda d: _df(d, PSE_AID)["app"].update(kind="ppse"),
     "is a ppse, but its DF is not named 2PAY.SYS.DDF01"),
    (lambda d: _df(d, PSE_AID)["app"].update(entries=[]), "must be an array of at least one"),
    (lambda d: _df(d, PSE_AID)["app"].update(entries={}), "must be an array of at least one"),
    (lambda d: _entries(d).append(dict(_entries(d)[0])), "lists A000000333010101 a second"),
    (lambda d: _entries(d)[0].update(aid="A000000632010105"),
     "lists A000000632010105, which is no EMV application of this card"),
    (lambda d: _entries(d, PPSE_AID)[0].update(aid="A0000003330101"),
     "lists A0000003330101, which is no EMV application"),
    (lambda d: _entries(d)[0].update(aid="A0"), r"entries\[0\]\.aid must be 5 to 16 bytes"),
    (lambda d: _entries(d)[0].update(label=""), r"entries\[0\]\.label must not be empty"),
    (lambda d: _entries(d)[0].update(label="\x1b[2J"), "printable ASCII"),
    (lambda d: _entries(d)[0].update(priority=-1), r"priority must be an integer 0\.\.255"),
    (lambda d: _entries(d)[0].pop("priority"), r"priority must be an integer 0\.\.255"),
    (lambda d: _df(d, PSE_AID)["app"].update(label="PSE\x00"), "printable ASCII"),
    (lambda d: (_df(d, PSE_AID).update(children=[]),
                _cells(d).pop(f"3F00/{PSE_AID}/0001#1")),
     "has no directory record EF"),
]


@pytest.mark.parametrize(("change", "message"), PBOC_DAMAGE)
def test_a_damaged_debit_application_is_refused_whole(card, tmp_path, change, message):
    path = _saved(card, tmp_path, change)
    with pytest.raises(DecodeError, match=message) as caught:
        SimulatedCard.load(path)
    assert caught.value.message.startswith(f"{path}: malformed card image")
    assert "\n" not in caught.value.message


def test_a_debit_card_in_use_loads_and_keeps_its_state(card, tmp_path):
    app = card.apps[ADF]
    card.nvm.format(app.cell("atc"), bytes.fromhex("0102"))
    card.nvm.format(app.cell("last_online_atc"), bytes.fromhex("0100"))
    card.nvm.format(app.cell("state"), bytes([0x07]))
    card.nvm.format(app.cell("pin_tries"), b"\x00")
    card.nvm.format(app.cell("ec_balance"), bytes.fromhex("000000100000"))  # at its limit
    again = SimulatedCard.load(_saved(card, tmp_path))
    debit = again.apps[ADF]
    assert (debit.atc, debit.last_online_atc, int(debit.flags), debit.pin_tries,
            debit.ec_balance) == (0x102, 0x100, 7, 0, 100_000)


def test_an_image_without_the_debit_application_loads(keys, member, tmp_path):
    from unioncard.applet_sim import issue_member_card

    old = issue_member_card(member, keys, card_no=7, transit_balance=100, debit=False)
    path = _saved(old, tmp_path)
    assert "A000000333010101" not in path.read_text()
    again = SimulatedCard.load(path)
    assert again.purse("transit").balance == 100
    assert {a.config.type for a in again.apps.values()} == {"purse", "member"}


def test_an_issued_debit_card_loads_and_shows(tmp_path, capsys):
    from click.testing import CliRunner

    from unioncard.cli import main, root

    sheet = tmp_path / "members.csv"
    sheet.write_text("name,member_no,organization,category,id_number\n"
                     "张三,20260001,市总工会,hardship,11010519491231002X\n", encoding="utf-8")
    out = tmp_path / "cards"
    runner = CliRunner()
    issued = runner.invoke(root, ["card", "issue", "--members", str(sheet), "--out", str(out),
                                  "--valid-from", "2026-01-01"], catch_exceptions=False)
    assert issued.exit_code == 0, issued.output
    path = out / "20260001-card.json"
    card = SimulatedCard.load(path)
    assert any(a.config.type == "pboc" for a in card.apps.values())
    shown = runner.invoke(root, ["card", "show", str(path), "--json"], catch_exceptions=False)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["debit"]["ec_balance"] == 0
    doc = json.loads(path.read_text(encoding="utf-8"))
    _pboc(doc)["log_fid"] = "0"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(SystemExit) as refused:
        main(["card", "show", str(path)])
    assert refused.value.code != 0
    line, = capsys.readouterr().err.strip().splitlines()
    assert f"{path}: malformed card image: mf.children[5].app.log_fid must be" in line


def test_put_data_keeps_the_ec_balance_within_its_limit(keys, member):
    """PUT DATA of a balance limit below the EC balance is refused (6A80), so a card never
    writes an image the loader refuses."""
    from unioncard.apdu import dol
    from unioncard.apdu.tlv import decode, find
    from unioncard.applet_sim import issue_member_card
    from unioncard.applet_sim.pboc import CDOL1, PDOL, bcd_amount
    from unioncard.applet_sim.pboc_issue import debit_pan
    from unioncard.crypto import emv

    bank = issue_member_card(member, keys, card_no=42, ec_balance=50_00, random_source=7)
    bank.power_on()

    def send(header: str, data: bytes) -> int:
        response = bank.transmit(bytes.fromhex(header) + bytes([len(data)]) + data + b"\x00")
        if response[-2] == 0x61:
            response = bank.transmit(b"\x00\xC0\x00\x00" + response[-1:])
        return int.from_bytes(response[-2:], "big")

    values = {0x9F66: bytes(4), 0x9F02: bcd_amount(200_00), 0x9F03: bytes(6),
              0x9F1A: b"\x01\x56", 0x95: bytes(5), 0x5F2A: b"\x01\x56", 0x9A: b"\x26\x12\x02",
              0x9C: b"\x00", 0x9F37: bytes(4), 0xDF60: b"\x00", 0x9F7A: b"\x00",
              0x9F21: b"\x10\x30\x00", 0x9F4E: b"UNION SHOP"}
    assert send("00A40400", bytes.fromhex(DEBIT)) == 0x9000
    pdol = dol.build(dol.parse(PDOL), values)
    assert send("80A80000", b"\x83" + bytes([len(pdol)]) + pdol) == 0x9000
    cdol = dol.build(dol.parse(CDOL1), values)
    answer = bank.transmit(bytes.fromhex("80AE8000") + bytes([len(cdol)]) + cdol + b"\x00")
    arqc = find(decode(answer[:-2]), 0x9F26).value
    smi = emv.derive_udk(keys.emv_issuer_keys(bytes.fromhex(DEBIT)).smi_mk, debit_pan(42), "01")

    def put_limit(amount: int) -> int:
        value = bcd_amount(amount)
        mac = emv.command_mac(emv.session_key(smi, 1), bytes.fromhex("04DA9F770A"), 1, arqc,
                              value)
        return send("04DA9F77", value + mac)

    assert put_limit(49_99) == 0x6A80
    assert bank.apps[ADF].ec_limits[0] == 100_000
    assert put_limit(50_00) == 0x9000
    assert bank.apps[ADF].ec_limits[0] == 50_00
    SimulatedCard.from_image(bank.to_image())  # what the card wrote loads
