"""Purse keys and cryptograms: the docs/protocol.md §2 vector, and every algorithm recomputed
from pyemv primitives (an independent implementation of DES, 3DES and key derivation)."""

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.crypto import purse
from unioncard.crypto.purse import TransactionType
from unioncard.errors import CryptoError

DPK = bytes.fromhex("11223344556677888877665544332211")
keys16 = st.binary(min_size=16, max_size=16)
keys8 = st.binary(min_size=8, max_size=8)
rand4 = st.binary(min_size=4, max_size=4)
term_ids = st.binary(min_size=6, max_size=6)
dates = st.binary(min_size=4, max_size=4)
times = st.binary(min_size=3, max_size=3)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def o_tdes(key, data):
    from pyemv.tools import encrypt_tdes_ecb

    return _quiet(encrypt_tdes_ecb, key, data)


def o_mac(key8, data):
    """Single-DES CBC-MAC with 80 padding, from pyemv pieces."""
    from pyemv.mac import pad_iso9797_2
    from pyemv.tools import encrypt_tdes_cbc

    return _quiet(encrypt_tdes_cbc, key8, bytes(8), pad_iso9797_2(data, 8))[-8:][:4]


def strip_parity(key: bytes) -> bytes:
    return bytes(b & 0xFE for b in key)


# --- docs/protocol.md §2 public purchase vector -------------------------------------------


def test_purchase_vector_sespk():
    sespk = purse.purchase_session_key(DPK, bytes.fromhex("11223344"), 0x0000, 0x00000001)
    assert sespk.hex().upper() == "003238ABC57659DD"


def test_purchase_vector_mac1_and_mac2():
    sespk = bytes.fromhex("003238ABC57659DD")
    mac1 = purse.purchase_mac1(
        sespk, 0x1000, TransactionType.EP_PURCHASE, bytes.fromhex("001122334455"),
        bytes.fromhex("20120229"), bytes.fromhex("135100"),
    )
    assert mac1.hex().upper() == "F15CAB75"
    assert purse.purchase_mac2(sespk, 0x1000).hex().upper() == "56988A13"


# --- algorithms against independent computations --------------------------------------


@given(keys16, keys8)
def test_diversify_matches_pyemv_option_a(mk, f):
    from pyemv.kd import derive_icc_mk_a

    # Option A with a 16-digit "PAN" and no PSN derives 3DES(MK, F) ‖ 3DES(MK, ~F); pyemv
    # then sets odd parity, which does not change DES results.
    expected = _quiet(derive_icc_mk_a, mk, f.hex(), "")
    got = purse.diversify(mk, f)
    assert strip_parity(got) == strip_parity(expected)
    assert got[:8] == o_tdes(mk, f)


def test_diversify_test_key_known_card():
    # The transit MPK of docs/protocol.md §6 and a fixed diversifier, pinned so a regression shows.
    mpk = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
    f = bytes.fromhex("5500000000000001")
    dpk = purse.diversify(mpk, f)
    assert dpk == o_tdes(mpk, f) + o_tdes(mpk, bytes(b ^ 0xFF for b in f))


@given(keys16, rand4, u16, u32)
def test_purchase_session_key_layout(dpk, random, offline_seq, terminal_seq):
    expected = o_tdes(dpk, random + offline_seq.to_bytes(2, "big") +
                      terminal_seq.to_bytes(4, "big")[2:])
    assert purse.purchase_session_key(dpk, random, offline_seq, terminal_seq) == expected


@given(keys16, rand4, u16)
def test_load_session_key_layout(dlk, random, online_seq):
    expected = o_tdes(dlk, random + online_seq.to_bytes(2, "big") + b"\x80\x00")
    assert purse.load_session_key(dlk, random, online_seq) == expected


@given(keys16)
def test_tac_key_is_xor_of_halves(dtk):
    assert purse.tac_key(dtk) == bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:], strict=True))


@given(keys8, u32, term_ids, dates, times, st.sampled_from([0x06, 0x09]))
def test_purchase_macs_layout(sespk, amount, tid, date, time, tx_type):
    amt = amount.to_bytes(4, "big")
    assert purse.purchase_mac1(sespk, amount, tx_type, tid, date, time) == o_mac(
        sespk, amt + bytes([tx_type]) + tid + date + time)
    assert purse.purchase_mac2(sespk, amount) == o_mac(sespk, amt)


@given(keys16, u32, term_ids, u32, dates, times)
def test_purchase_tac_layout(dtk, amount, tid, tseq, date, time):
    key = bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:], strict=True))
    expected = o_mac(key, amount.to_bytes(4, "big") + b"\x09" + tid + tseq.to_bytes(4, "big")
                     + date + time)
    assert purse.purchase_tac(dtk, amount, 9, tid, tseq, date, time) == expected


@given(keys8, u32, u32, term_ids, dates, times)
def test_load_macs_layout(seslk, balance, amount, tid, date, time):
    amt = amount.to_bytes(4, "big")
    assert purse.load_mac1(seslk, balance, amount, 2, tid) == o_mac(
        seslk, balance.to_bytes(4, "big") + amt + b"\x02" + tid)
    assert purse.load_mac2(seslk, amount, 2, tid, date, time) == o_mac(
        seslk, amt + b"\x02" + tid + date + time)


@given(keys16, u32, u16, u32, term_ids, dates, times)
def test_load_tac_layout(dtk, balance, online_seq, amount, tid, date, time):
    key = bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:], strict=True))
    expected = o_mac(key, balance.to_bytes(4, "big") + online_seq.to_bytes(2, "big")
                     + amount.to_bytes(4, "big") + b"\x02" + tid + date + time)
    assert purse.load_tac(dtk, balance, online_seq, amount, 2, tid, date, time) == expected


@given(keys16, rand4, st.sampled_from([bytes.fromhex("841E000004"), bytes.fromhex("8418000004")]))
def test_maintenance_mac_against_pyemv(key, challenge, header):
    from pyemv.mac import mac_iso9797_3, pad_iso9797_2

    iv = challenge + bytes(4)
    block = bytes(a ^ b for a, b in zip(pad_iso9797_2(header, 8), iv, strict=True))
    expected = _quiet(mac_iso9797_3, key[:8], key[8:], block, 1)[:4]
    assert purse.maintenance_mac(key, challenge, header) == expected


def test_maintenance_mac_iv_is_the_4_byte_random_and_zeros():
    """docs/protocol.md §2: IV = the 4-byte GET CHALLENGE random ‖ 00000000; after an
    8-byte GET CHALLENGE its first 4 bytes are that random."""
    from unioncard.crypto.mac import retail_mac

    key, challenge = bytes(range(16)), bytes(range(8, 16))
    header = bytes.fromhex("841E000004")
    expected = retail_mac(key, header, iv=challenge[:4] + bytes(4))
    assert purse.maintenance_mac(key, challenge[:4], header) == expected
    assert purse.maintenance_mac(key, challenge, header) == expected
    with pytest.raises(CryptoError):
        purse.maintenance_mac(key, challenge[:6], header)


def test_full_purchase_chain_with_test_keys():
    """PSAM side and card side derive the same SESPK from the master key and the diversifier."""
    mpk = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
    f = bytes.fromhex("1234567890ABCDEF")
    dpk = purse.diversify(mpk, f)
    card_key = purse.purchase_session_key(dpk, b"\x01\x02\x03\x04", 7, 0x00010203)
    again = o_tdes(dpk, b"\x01\x02\x03\x04" + b"\x00\x07" + b"\x02\x03")
    assert card_key == again


@pytest.mark.parametrize(
    "call",
    [
        lambda: purse.diversify(bytes(8), bytes(8)),
        lambda: purse.diversify(bytes(16), bytes(7)),
        lambda: purse.purchase_session_key(DPK, bytes(3), 0, 0),
        lambda: purse.purchase_session_key(DPK, bytes(4), 0x10000, 0),
        lambda: purse.purchase_mac1(bytes(8), -1, 6, bytes(6), bytes(4), bytes(3)),
        lambda: purse.purchase_mac1(bytes(8), 1, 6, bytes(5), bytes(4), bytes(3)),
        lambda: purse.purchase_mac1(bytes(8), 1, 256, bytes(6), bytes(4), bytes(3)),
        lambda: purse.load_mac2(bytes(8), 1, 2, bytes(6), bytes(3), bytes(3)),
        lambda: purse.maintenance_mac(bytes(16), bytes(6), bytes(5)),
        lambda: purse.purchase_mac2(bytes(8), 1 << 32),
    ],
)
def test_bad_fields_raise_crypto_error(call):
    with pytest.raises(CryptoError):
        call()
