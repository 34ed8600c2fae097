"""The PSAM: terminal id, MAC1 by key version for both purses, persisted terminal seq, MAC2."""

import pytest

from unioncard.applet_sim import PowerLoss, Step, issue_psam
from unioncard.applet_sim.personalize import CardNumbers
from unioncard.crypto import purse as pc
from unioncard.terminal import Decision
from unioncard.testing.purse_rig import PurseRig, expected_tac

TERMINAL_ID = "001122334455"
DIVERSIFIER = CardNumbers(42).transit_diversifier
DIVERSIFIER_HEX = DIVERSIFIER.hex()


def init_sam(random="11223344", seq="0005", amount="00000100", tx_type="06",
             when="20260315083000", version="01", alg="00", diversifier=DIVERSIFIER_HEX):
    return "80700000 1C".replace(" ", "") + random + seq + amount + tx_type + when + version \
        + alg + diversifier + "08"


def select_app(psam, tx):
    assert tx(psam, "00A40000021001")[1] == 0x9000


def test_terminal_id_and_info_files(psam, tx):
    assert tx(psam, "00B0960006") == (bytes.fromhex(TERMINAL_ID), 0x9000)
    info, status = tx(psam, "00B095000E")
    assert status == 0x9000 and info[:10] == bytes.fromhex("00000000000000000001")
    assert psam.psam().terminal_id == bytes.fromhex(TERMINAL_ID)


@pytest.mark.parametrize(("version", "app"), [("01", "transit"), ("02", "etc")])
def test_mac1_uses_the_master_key_of_the_key_version(psam, keys, tx, version, app):
    select_app(psam, tx)
    data, status = tx(psam, init_sam(version=version))
    assert status == 0x9000 and data[:4] == b"\x00\x00\x00\x01"
    dpk = pc.diversify(keys.purse_keys(app).purchase_mk, DIVERSIFIER)
    sespk = pc.purchase_session_key(dpk, bytes.fromhex("11223344"), 5, 1)
    assert data[4:] == pc.purchase_mac1(sespk, 0x100, 6, bytes.fromhex(TERMINAL_ID),
                                        bytes.fromhex("20260315"), bytes.fromhex("083000"))
    assert tx(psam, "8072000004" + pc.purchase_mac2(sespk, 0x100).hex()) == (b"", 0x9000)


def test_terminal_seq_increments_and_persists(psam, tx):
    select_app(psam, tx)
    seqs = [int.from_bytes(tx(psam, init_sam())[0][:4], "big") for _ in range(3)]
    assert seqs == [1, 2, 3]
    psam.power_off()
    psam.power_on()
    select_app(psam, tx)
    assert tx(psam, init_sam())[0][:4] == b"\x00\x00\x00\x04"
    assert psam.psam().terminal_seq == 4


def test_refusals(psam, tx):
    select_app(psam, tx)
    assert tx(psam, init_sam(version="03")) == (b"", 0x9403)
    assert tx(psam, init_sam(alg="04")) == (b"", 0x6A80)
    assert tx(psam, "8070000024" + "00" * 36 + "08") == (b"", 0x6700)  # two levels
    assert tx(psam, "8070010000")[1] == 0x6A86
    assert tx(psam, init_sam()[:-2] + "04") == (b"", 0x6C08)
    assert psam.psam().terminal_seq == 0  # nothing above used a seq
    assert tx(psam, "807200000411223344") == (b"", 0x6985)  # no MAC1 context
    assert tx(psam, init_sam())[1] == 0x9000
    assert tx(psam, "807200000411223344") == (b"", 0x9302)
    assert tx(psam, "807200000411223344") == (b"", 0x6985)  # the context is used up
    assert tx(psam, "8072000003112233")[1] == 0x6700
    assert tx(psam, "80720100041122334455")[1] == 0x6A86


def test_mac1_right_after_power_up_without_selecting_anything(psam, tx):
    """docs/protocol.md §3 names no PSAM selection: read the terminal id, then 80 70."""
    assert tx(psam, "00B0960006") == (bytes.fromhex(TERMINAL_ID), 0x9000)
    data, status = tx(psam, init_sam())
    assert status == 0x9000 and data[:4] == bytes.fromhex("00000001")
    select_app(psam, tx)  # selecting DF 1001, as many terminals do, reaches the same application
    data, status = tx(psam, init_sam())
    assert status == 0x9000 and data[:4] == bytes.fromhex("00000002")


def test_terminal_seq_overflow(keys, tx):
    psam = issue_psam(keys, TERMINAL_ID, terminal_seq=0xFFFFFFFF)
    psam.power_on()
    select_app(psam, tx)
    assert tx(psam, init_sam()) == (b"", 0x9402)


def test_t0_mac1_comes_as_6108(psam, tx):
    psam.protocol = "T=0"
    assert tx(psam, "00A40000021001")[1] >> 8 == 0x61  # the FCI waits for GET RESPONSE
    assert tx(psam, "00A4000C021001") == (b"", 0x9000)
    assert tx(psam, init_sam()[:-2]) == (b"", 0x6108)
    data, status = tx(psam, "00C0000008")
    assert status == 0x9000 and data[:4] == b"\x00\x00\x00\x01"


def test_power_cut_at_the_terminal_seq_write(psam, tx):
    select_app(psam, tx)
    assert tx(psam, init_sam())[1] == 0x9000
    psam.faults.cut_before(Step.PSAM_TERMINAL_SEQ)
    with pytest.raises(PowerLoss):
        psam.transmit(bytes.fromhex(init_sam()))
    psam.power_on()
    assert psam.psam().terminal_seq == 1
    select_app(psam, tx)
    psam.faults.cut_after(Step.COMMIT)
    with pytest.raises(PowerLoss):
        psam.transmit(bytes.fromhex(init_sam()))
    psam.power_on()
    assert psam.psam().terminal_seq == 2  # the seq was used: it never goes back
    select_app(psam, tx)
    assert tx(psam, init_sam())[0][:4] == b"\x00\x00\x00\x03"


@pytest.mark.parametrize("app", ["transit", "etc"])
def test_both_purses_through_the_psam(card, psam, keys, app):
    rig = PurseRig.in_process(card, psam, keys)
    before = rig.read().details["balances"][app]
    outcome = rig.purchase(app, 250)  # a bus fare; on the ETC purse a toll (composite)
    assert outcome.decision is Decision.APPROVED and outcome.record is not None
    assert rig.read().details["balances"][app] == before - 250
    assert outcome.record.terminal_seq == psam.psam().terminal_seq == 1
    assert rig.answer_to(0x72, device="PSAM").response.sw == 0x9000  # MAC2 checked
    assert outcome.record.tac == expected_tac(keys, outcome.record)


def test_bad_issue_arguments(keys):
    with pytest.raises(ValueError):
        issue_psam(keys, "0011")
    with pytest.raises(ValueError):
        issue_psam(keys, TERMINAL_ID, terminal_seq=-1)
    with pytest.raises(ValueError):
        issue_psam(keys, TERMINAL_ID, serial=0)
