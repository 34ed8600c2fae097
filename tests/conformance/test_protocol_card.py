"""The independent card and PSAM of ``protocol_card.py`` checked against docs/protocol.md.

No ``unioncard`` import here either: the expected values are recomputed from the
§2 algorithms and the §6 test master keys.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# Loaded by path: tests/conformance is not a package and not on sys.path.
_NAME = "conformance_protocol_card"
if _NAME in sys.modules:
    pc = sys.modules[_NAME]
else:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).with_name("protocol_card.py")
    )
    assert _spec is not None and _spec.loader is not None
    pc = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = pc
    _spec.loader.exec_module(pc)

TID = bytes.fromhex("A1B2C3D4E5F6")
DATE, TIME = bytes.fromhex("20260315"), bytes.fromhex("101500")
SERIAL = bytes.fromhex("31000000000020260001")
CARD_NO = bytes.fromhex("1101260000000001")
MPK_T = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
MLK_T = bytes.fromhex("505152535455565758595A5B5C5D5E5F")
MTK_T = bytes.fromhex("606162636465666768696A6B6C6D6E6F")
MTK_E = bytes.fromhex("909192939495969798999A9B9C9D9E9F")
MMK_T = bytes.fromhex("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF")
SELECT_TRANSIT = "00A4040008A00000063201010500"
SELECT_MEMBER = "00A404000AF0554E494F4E4341524400"


def raw(card, apdu: str | bytes) -> tuple[bytes, int]:
    """One exchange, no 61xx/6Cxx handling."""
    answer = card.transmit(bytes.fromhex(apdu) if isinstance(apdu, str) else apdu)
    return answer[:-2], int.from_bytes(answer[-2:], "big")


def send(card, apdu: str | bytes) -> tuple[bytes, int]:
    """One command with the §1 transport rules: 6Cxx re-sends, 61xx fetches."""
    cmd = bytes.fromhex(apdu) if isinstance(apdu, str) else apdu
    data, sw = raw(card, cmd)
    if sw >> 8 == 0x6C:
        cmd = (cmd[:-1] if len(cmd) in (5, 6 + cmd[4]) else cmd) + bytes([sw & 0xFF])
        data, sw = raw(card, cmd)
    while sw >> 8 == 0x61:
        more, sw = raw(card, bytes([0, 0xC0, 0, 0, sw & 0xFF]))
        data += more
    return data, sw


def ok(card, apdu: str | bytes) -> bytes:
    data, sw = send(card, apdu)
    assert sw == 0x9000, f"{apdu!r}: SW {sw:04X}"
    return data


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def init_purchase(card, amount: int, p1: int = 0x01) -> bytes:
    return ok(card, bytes([0x80, 0x50, p1, 0x02, 0x0B, 0x01]) + u32(amount) + TID + b"\x0f")


def psam_mac1(psam, init: bytes, amount: int, kind: int, diversifier: bytes) -> bytes:
    data = init[11:15] + init[4:6] + u32(amount) + bytes([kind]) + DATE + TIME
    data += init[9:11] + diversifier
    return ok(psam, bytes([0x80, 0x70, 0x00, 0x00, 0x1C]) + data + b"\x08")


def debit(card, tseq_mac1: bytes) -> bytes:
    return ok(
        card, bytes.fromhex("805401000F") + tseq_mac1[:4] + DATE + TIME + tseq_mac1[4:] + b"\x08"
    )


@pytest.fixture
def card():
    c = pc.ProtocolCard(transit_balance=5000, etc_balance=2000, seed=7)
    c.power_on()
    return c


@pytest.fixture
def psam():
    p = pc.ProtocolPsam(terminal_id=TID, terminal_seq=0x10)
    p.power_on()
    return p


# -- §2 crypto -------------------------------------------------------------


def test_public_known_answer_vector():
    dpk = bytes.fromhex("11223344556677888877665544332211")
    sespk = pc.purchase_session_key(dpk, bytes.fromhex("11223344"), b"\x00\x00", u32(1))
    assert sespk == bytes.fromhex("003238ABC57659DD")
    mac1 = pc.pboc_mac(sespk, bytes.fromhex("00001000 06 001122334455 20120229 135100"))
    assert mac1 == bytes.fromhex("F15CAB75")
    assert pc.pboc_mac(sespk, bytes.fromhex("00001000")) == bytes.fromhex("56988A13")


def test_retail_mac_one_block_is_3des_of_iv_xor_block():
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    iv = bytes.fromhex("1122334400000000")
    block = bytes.fromhex("841E000004800000")
    expected = pc.tdes_encrypt(key, bytes(a ^ b for a, b in zip(iv, block, strict=True)))
    assert pc.retail_mac(key, block[:5], iv) == expected[:4]


# -- power, ATR, files -------------------------------------------------------


def test_power_and_atr():
    c = pc.ProtocolCard()
    with pytest.raises(pc.CardNotPowered):
        c.transmit(bytes.fromhex("00A40000023F00"))
    atr1 = c.power_on()
    assert atr1 == c.atr and atr1[0] == 0x3B and atr1[2:4] == b"\x80\x01"
    tck = 0
    for byte in atr1[1:]:
        tck ^= byte
    assert tck == 0  # T=1 ATR: TCK makes T0..TCK xor to zero
    c.protocol = "T=0"
    assert c.reset()[:4] == bytes.fromhex("3B6D0000")
    c.power_off()
    with pytest.raises(pc.CardNotPowered):
        c.transmit(bytes.fromhex("00A40000023F00"))
    with pytest.raises(ValueError):
        c.protocol = "T=CL"


def test_minimal_fci_files_and_member_template(card):
    assert ok(card, "00A40000023F00") == bytes.fromhex("6F1084 0E") + b"1PAY.SYS.DDF01"
    assert ok(card, SELECT_TRANSIT) == bytes.fromhex("6F0A8408A000000632010105")
    ef15 = ok(card, "00B095001E")
    assert len(ef15) == 30 and ef15[10:20] == SERIAL and ef15[28:] == b"\x55\x00"
    assert send(card, "00B0960037")[1] == 0x6A82  # EF 0016 absent
    assert send(card, "00B201C400")[1] == 0x6A83  # empty log
    rec = ok(card, "00B201F400")
    assert len(rec) == 48 and rec[0] == 0x04 and int.from_bytes(rec[21:25], "big") == 5000
    assert send(card, "00B203F400")[1] == 0x6A83
    ok(card, "00A40000023F00")
    assert ok(card, "00A40000021001") == bytes.fromhex("6F0484021001")
    etc15 = ok(card, "00B095002B")
    assert len(etc15) == 43 and etc15[12:20] == CARD_NO and etc15[40] == 0x55
    assert ok(card, "00B201CC2B") == b"\xaa\x29" + bytes(41)
    assert send(card, "00B0960037")[1] == 0x6A82
    fci = ok(card, SELECT_MEMBER)
    assert fci == bytes.fromhex("6F0C840AF0554E494F4E43415244")
    tlv = ok(card, "00B0810000")
    assert tlv[0] == 0x70 and tlv[1] == len(tlv) - 2
    assert b"\xdf\x41\x08" + b"20260001" in tlv
    assert bytes.fromhex("DF450101") in tlv and bytes.fromhex("DF460420260101") in tlv
    assert send(card, "00A4040008A00000000386980701")[1] == 0x6A82


def test_ordinary_card_without_member_or_etc_app():
    c = pc.ProtocolCard(card_type=0x01, etc=False, ef_001e=False)
    c.power_on()
    assert send(c, SELECT_MEMBER)[1] == 0x6A82
    assert send(c, "00A40000021001")[1] == 0x6A82
    ok(c, SELECT_TRANSIT)
    assert ok(c, "00B095001E")[28] == 0x01
    assert send(c, "00B201F400")[1] == 0x6A82


# -- purse transactions (§1, §2, §3) -----------------------------------------


def test_purchase_mac1_from_psam_mac2_verified_by_psam(card, psam):
    assert ok(psam, "00B0960006") == TID
    ok(card, SELECT_TRANSIT)
    init = init_purchase(card, 250)
    assert init[:4] == u32(5000) and init[4:6] == b"\x00\x00" and init[9:11] == b"\x01\x00"
    tseq_mac1 = psam_mac1(psam, init, 250, 0x06, SERIAL[-8:])
    assert tseq_mac1[:4] == u32(0x10) and psam.terminal_seq == 0x11
    answer = debit(card, tseq_mac1)
    tac, mac2 = answer[:4], answer[4:]
    assert send(psam, b"\x80\x72\x00\x00\x04" + mac2) == (b"", 0x9000)
    dtk = pc.diversify(MTK_T, SERIAL[-8:])
    expected_tac = pc.pboc_mac(pc.tac_key(dtk), u32(250) + b"\x06" + TID + u32(0x10) + DATE + TIME)
    assert tac == expected_tac
    assert card.balance("transit") == 4750 and card.offline_seq("transit") == 1
    assert card.log("transit")[0] == b"\x00\x00" + bytes(3) + u32(250) + b"\x06" + TID + DATE + TIME
    assert ok(card, "805C000204") == u32(4750)
    assert ok(card, "00B201C417") == card.log("transit")[0]
    assert ok(card, "805A000602" + "0001") == mac2 + tac
    assert send(card, "805A000602" + "0000")[1] == 0x9406
    assert send(card, "805A000902" + "0001")[1] == 0x9406
    # A wrong MAC2 at the PSAM: 9302.
    init = init_purchase(card, 1)
    psam_mac1(psam, init, 1, 0x06, SERIAL[-8:])
    assert send(psam, "8072000004" + "00000000") == (b"", 0x9302)


def test_load_mac1_mac2_tac(card):
    ok(card, SELECT_TRANSIT)
    init = ok(card, bytes.fromhex("805000020B01") + u32(1000) + TID + b"\x10")
    assert len(init) == 16 and init[:4] == u32(5000) and init[6:8] == b"\x01\x00"
    dlk = pc.diversify(MLK_T, SERIAL[-8:])
    seslk = pc.load_session_key(dlk, init[8:12], init[4:6])
    assert init[12:] == pc.pboc_mac(seslk, u32(5000) + u32(1000) + b"\x02" + TID)
    mac2 = pc.pboc_mac(seslk, u32(1000) + b"\x02" + TID + DATE + TIME)
    tac = ok(card, bytes.fromhex("805200000B") + DATE + TIME + mac2 + b"\x04")
    dtk = pc.diversify(MTK_T, SERIAL[-8:])
    assert tac == pc.pboc_mac(
        pc.tac_key(dtk), u32(6000) + b"\x00\x00" + u32(1000) + b"\x02" + TID + DATE + TIME
    )
    assert card.balance() == 6000 and card.online_seq() == 1
    # Above the 100000 fen maximum: 9402; CREDIT without INITIALIZE: 6985.
    assert send(card, bytes.fromhex("805000020B01") + u32(94001) + TID + b"\x10")[1] == 0x9402
    assert send(card, bytes.fromhex("805200000B") + DATE + TIME + mac2)[1] == 0x6985
    # Wrong MAC2: 9302, nothing loaded.
    ok(card, bytes.fromhex("805000020B01") + u32(5) + TID + b"\x10")
    assert send(card, bytes.fromhex("805200000B") + DATE + TIME + bytes(4))[1] == 0x9302
    assert card.balance() == 6000 and card.online_seq() == 1


def test_capp_purchase_writes_ef0019(card, psam):
    ok(card, "00A40000023F00")
    ok(card, "00A40000021001")
    init = init_purchase(card, 1550, p1=0x03)
    assert init[:4] == u32(2000) and init[9] == 0x02
    tseq_mac1 = psam_mac1(psam, init, 1550, 0x09, CARD_NO)
    record = b"\xaa\x29\x00" + bytes.fromhex("1101 0203 04") + bytes(35)
    assert send(card, "80DCAAC82B" + record.hex())[1] == 0x9000
    assert card.capp_record() == b"\xaa\x29" + bytes(41)  # cached, not yet written
    answer = debit(card, tseq_mac1)
    assert send(psam, b"\x80\x72\x00\x00\x04" + answer[4:])[1] == 0x9000
    assert card.capp_record() == record and ok(card, "00B201CC2B") == record
    assert card.balance("etc") == 450 and card.log("etc")[0][9] == 0x09
    assert ok(card, "805A000902" + "0001") == answer[4:] + answer[:4]
    dtk = pc.diversify(MTK_E, CARD_NO)
    assert answer[:4] == pc.pboc_mac(
        pc.tac_key(dtk), u32(1550) + b"\x09" + TID + tseq_mac1[:4] + DATE + TIME
    )
    # UPDATE CAPP DATA CACHE outside a CAPP purchase, or with an unknown id.
    assert send(card, "80DCAAC82B" + record.hex())[1] == 0x6985
    init_purchase(card, 1, p1=0x03)
    assert send(card, "80DCABC82B" + ("ab" + record.hex()[2:]))[1] == 0x6A83


def test_capp_interrupted_before_debit_commits_nothing(card, psam):
    ok(card, "00A40000021001")
    init = init_purchase(card, 100, p1=0x03)
    tseq_mac1 = psam_mac1(psam, init, 100, 0x09, CARD_NO)
    ok(card, "80DCAAC82B" + ("aa29" + "11" * 41))
    card.pull_at(0x54, "before")
    with pytest.raises(pc.CardRemoved):
        debit(card, tseq_mac1)
    assert card.capp_record() == b"\xaa\x29" + bytes(41) and card.balance("etc") == 2000
    with pytest.raises(pc.CardNotPowered):
        raw(card, "805C000204")


def test_transaction_prove_after_lost_debit_answer(card, psam):
    ok(card, SELECT_TRANSIT)
    init = init_purchase(card, 300)
    tseq_mac1 = psam_mac1(psam, init, 300, 0x06, SERIAL[-8:])
    card.pull_at(0x54, "after")
    with pytest.raises(pc.CardRemoved):
        debit(card, tseq_mac1)
    assert card.balance() == 4700 and not card.powered
    card.power_on()
    ok(card, SELECT_TRANSIT)
    proof = ok(card, "805A000602" + "0001")
    mac2, tac = proof[:4], proof[4:]
    assert send(psam, b"\x80\x72\x00\x00\x04" + mac2)[1] == 0x9000
    dtk = pc.diversify(MTK_T, SERIAL[-8:])
    assert tac == pc.pboc_mac(
        pc.tac_key(dtk), u32(300) + b"\x06" + TID + tseq_mac1[:4] + DATE + TIME
    )


def test_pull_before_changes_nothing_and_prove_has_no_proof(card, psam):
    ok(card, SELECT_TRANSIT)
    init = init_purchase(card, 300)
    tseq_mac1 = psam_mac1(psam, init, 300, 0x06, SERIAL[-8:])
    card.pull_at(0x54, "before", error=ConnectionError)
    with pytest.raises(ConnectionError):
        debit(card, tseq_mac1)
    card.power_on()
    ok(card, SELECT_TRANSIT)
    assert card.balance() == 5000 and card.offline_seq() == 0 and card.log() == []
    assert send(card, "805A000602" + "0001")[1] == 0x9406
    # The pending INITIALIZE did not survive the power loss.
    assert (
        send(card, bytes.fromhex("805401000F") + tseq_mac1[:4] + DATE + TIME + tseq_mac1[4:])[1]
        == 0x6985
    )


def test_status_words(card, psam):
    assert send(card, "805C000204")[1] == 0x6985  # no purse selected (MF)
    ok(card, SELECT_TRANSIT)
    assert send(card, bytes.fromhex("805001020B01") + u32(5001) + TID)[1] == 0x9401
    assert send(card, bytes.fromhex("805001020B02") + u32(1) + TID)[1] == 0x9403
    assert send(card, bytes.fromhex("805401000F") + bytes(15))[1] == 0x6985
    assert send(card, bytes.fromhex("805001020A01") + u32(1) + TID[:5])[1] == 0x6700
    assert send(card, bytes.fromhex("805001010B01") + u32(1) + TID)[1] == 0x6A86
    assert send(card, "00B209C417")[1] == 0x6A83
    assert send(card, "00B201C517")[1] == 0x6A86
    assert send(card, "80CA9F7900")[1] == 0x6D00
    # Another command between INITIALIZE and DEBIT cancels the transaction.
    init = init_purchase(card, 10)
    tseq_mac1 = psam_mac1(psam, init, 10, 0x06, SERIAL[-8:])
    ok(card, "805C000204")
    assert (
        send(card, bytes.fromhex("805401000F") + tseq_mac1[:4] + DATE + TIME + tseq_mac1[4:])[1]
        == 0x6985
    )
    # PSAM: unknown key version, MAC2 without MAC1, unknown file.
    bad = bytes(18) + b"\x07\x00" + bytes(8)
    assert send(psam, b"\x80\x70\x00\x00\x1c" + bad)[1] == 0x9403
    assert send(psam, "807200000400000000")[1] == 0x6985
    assert send(psam, "00B0950006")[1] == 0x6A82


def test_t0_get_response_and_6c(card, psam):
    card.protocol = psam.protocol = "T=0"
    card.power_on()
    psam.power_on()
    assert raw(card, "00A4040008A000000632010105") == (b"", 0x610C)
    assert raw(card, "00C0000010") == (b"", 0x6C0C)
    fci, sw = raw(card, "00C000000C")
    assert sw == 0x9000 and fci[:2] == b"\x6f\x0a"
    assert raw(card, "00B0950000") == (b"", 0x6C1E)
    assert len(raw(card, "00B095001E")[0]) == 30
    assert raw(card, "805C000200") == (b"", 0x6C04)
    assert raw(card, "805C000204") == (u32(5000), 0x9000)
    assert raw(card, bytes.fromhex("805001020B01") + u32(100) + TID) == (b"", 0x610F)
    init, sw = raw(card, "00C000000F")
    assert sw == 0x9000 and init[:4] == u32(5000)
    data = init[11:15] + init[4:6] + u32(100) + b"\x06" + DATE + TIME + init[9:11] + SERIAL[-8:]
    assert raw(psam, b"\x80\x70\x00\x00\x1c" + data) == (b"", 0x6108)
    tseq_mac1, sw = raw(psam, "00C0000008")
    assert sw == 0x9000
    answer = raw(card, bytes.fromhex("805401000F") + tseq_mac1[:4] + DATE + TIME + tseq_mac1[4:])
    assert answer == (b"", 0x6108)
    mac2 = raw(card, "00C0000008")[0][4:]
    assert raw(psam, b"\x80\x72\x00\x00\x04" + mac2) == (b"", 0x9000)
    assert raw(card, "00B201C400") == (b"", 0x6C17)
    assert len(raw(card, "00B201C417")[0]) == 23
    assert raw(card, "00C0000008") == (b"", 0x6985)  # nothing pending
    assert raw(psam, "00B0960000") == (b"", 0x6C06)


def test_t1_short_le_gives_6c_without_executing(card):
    ok(card, SELECT_TRANSIT)
    init = bytes.fromhex("805001020B01") + u32(100) + TID
    assert raw(card, init + b"\x04") == (b"", 0x6C0F)
    first = raw(card, init + b"\x0f")[0]
    # The refused command consumed no random: a twin card draws the same one first.
    twin = pc.ProtocolCard(transit_balance=5000, etc_balance=2000, seed=7)
    twin.power_on()
    ok(twin, SELECT_TRANSIT)
    assert raw(twin, init + b"\x0f")[0] == first
    # Le 00 or longer than the answer is fine under T=1.
    assert len(raw(card, init + b"\x00")[0]) == 15
    assert len(raw(card, init + b"\xff")[0]) == 15
    assert raw(card, "00B201F410") == (b"", 0x6C30)
    assert len(raw(card, "00B201F400")[0]) == 48


def test_three_mac_errors_lock_the_application(card):
    ok(card, SELECT_TRANSIT)
    sws = []
    for _ in range(3):
        init_purchase(card, 1)
        sws.append(send(card, bytes.fromhex("805401000F") + bytes(15))[1])
    assert sws == [0x9302, 0x9302, 0x9303]
    assert card.locked("transit")
    assert send(card, bytes.fromhex("805001020B01") + u32(1) + TID)[1] == 0x9303
    assert send(card, SELECT_TRANSIT)[1] == 0x6283
    assert card.balance() == 5000


def test_block_and_unblock(card):
    dmk = pc.diversify(MMK_T, SERIAL[-8:])
    ok(card, SELECT_TRANSIT)
    assert send(card, "841E00000400000000")[1] == 0x6985  # no challenge
    challenge = ok(card, "0084000004")
    assert len(challenge) == 4
    assert send(card, "841E00000400000000")[1] == 0x9302
    challenge = ok(card, "0084000004")
    mac = pc.retail_mac(dmk, bytes.fromhex("841E000004"), challenge + bytes(4))
    assert send(card, b"\x84\x1e\x00\x00\x04" + mac) == (b"", 0x9000)
    assert card.blocked("transit")
    fci, sw = send(card, SELECT_TRANSIT)
    assert sw == 0x6283 and fci[:2] == b"\x6f\x0a"
    assert send(card, "805C000204")[1] == 0x6985
    assert send(card, bytes.fromhex("805001020B01") + u32(1) + TID)[1] == 0x6985
    challenge = ok(card, "0084000008")
    mac = pc.retail_mac(dmk, bytes.fromhex("8418000004"), challenge[:4] + bytes(4))
    assert send(card, b"\x84\x18\x00\x00\x04" + mac) == (b"", 0x9000)
    assert not card.blocked("transit") and ok(card, "805C000204") == u32(5000)
    # A block on T=0: the SELECT warning arrives with the FCI through GET RESPONSE.
    challenge = ok(card, "0084000004")
    mac = pc.retail_mac(dmk, bytes.fromhex("841E000004"), challenge + bytes(4))
    ok(card, b"\x84\x1e\x00\x00\x04" + mac)
    card.protocol = "T=0"
    card.power_on()
    assert raw(card, "00A4040008A000000632010105") == (b"", 0x610C)
    assert raw(card, "00C000000C")[1] == 0x6283


def test_seeded_randoms_and_pull_skip():
    a, b = pc.ProtocolCard(seed=3), pc.ProtocolCard(seed=3)
    for c in (a, b):
        c.power_on()
        ok(c, SELECT_TRANSIT)
    assert ok(a, "0084000008") == ok(b, "0084000008")
    a.pull_at(0x5C, "after", skip=1)
    ok(a, "805C000204")
    with pytest.raises(pc.CardRemoved):
        raw(a, "805C000204")
    assert not a.powered
