"""PBOC CVN 01 keys, AC, ARPC and script MAC, checked against pyemv as an independent oracle
(docs/pboc.md; docs/protocol.md §5 known answers)."""

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.crypto import emv
from unioncard.errors import CryptoError

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
keys16 = st.binary(min_size=16, max_size=16)
pans = st.text("0123456789", min_size=12, max_size=19)
psns = st.integers(0, 99).map(lambda n: f"{n:02d}")


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def oracle_session_key(udk: bytes, atc: int) -> bytes:
    from pyemv.tools import encrypt_tdes_ecb

    data = bytes(6) + atc.to_bytes(2, "big") + bytes(6) + (atc ^ 0xFFFF).to_bytes(2, "big")
    return quiet(encrypt_tdes_ecb, udk, data)


def sample_values(atc: int = 1) -> dict[int, bytes]:
    return {
        0x9F02: bytes.fromhex("000000002000"), 0x9F03: bytes(6), 0x9F1A: bytes.fromhex("0156"),
        0x95: bytes.fromhex("0000008000"), 0x5F2A: bytes.fromhex("0156"),
        0x9A: bytes.fromhex("261202"), 0x9C: b"\x00", 0x9F37: bytes.fromhex("3804823E"),
        0x82: bytes.fromhex("7C00"), 0x9F36: atc.to_bytes(2, "big"),
    }


def test_option_a_known_answer():
    udk = emv.derive_udk(IMK, "12345678901234567", "01")
    assert emv.same_key(udk, bytes.fromhex("73AD54688CEF2934B0979857E3C719F1"))


@given(keys16, pans, psns)
def test_udk_agrees_with_pyemv(imk, pan, psn):
    from pyemv.kd import derive_icc_mk_a

    assert emv.same_key(emv.derive_udk(imk, pan, psn), quiet(derive_icc_mk_a, imk, pan, psn))


@given(keys16, st.integers(0, 0xFFFF))
def test_session_key(udk, atc):
    assert emv.session_key(udk, atc) == oracle_session_key(udk, atc)


def test_session_key_known_answer():
    # The two halves are 3DES(UDK, 0..0‖ATC) and 3DES(UDK, 0..0‖~ATC): here ATC 0001.
    udk = bytes.fromhex("73AD54688CEF2934B0979857E3C719F1")
    sk = emv.session_key(udk, 1)
    assert sk == oracle_session_key(udk, 1)
    assert emv.session_key(udk, 2) != sk


def test_pyemv_ac_example():
    """pyemv's own generate_ac docstring example, with our AC function."""
    data = bytes.fromhex("000000002000" "000000000000" "0124" "0000008000" "0124" "110309" "00"
                         "3804823E" "5800" "0001")
    sk = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    assert emv.application_cryptogram(sk, data).hex().upper() == "3B76CF10FECD8789"


@given(keys16, pans, psns, st.integers(0, 0xFFFF), st.binary(min_size=4, max_size=4))
def test_arqc_and_arpc_agree_with_pyemv(imk, pan, psn, atc, cvr):
    from pyemv.ac import generate_ac, generate_arpc_1
    from pyemv.kd import derive_icc_mk_a

    udk = quiet(derive_icc_mk_a, imk, pan, psn)
    sk = emv.session_key(emv.derive_udk(imk, pan, psn), atc)
    assert sk == oracle_session_key(udk, atc)  # parity does not change DES results
    data = emv.ac_data(sample_values(atc), cvr)
    arqc = emv.application_cryptogram(sk, data)
    assert arqc == quiet(generate_ac, sk, data)
    for arc in (b"00", b"05", b"Y3"):
        expected = quiet(generate_arpc_1, sk, arqc, arc)
        assert emv.arpc(sk, arqc, arc) == expected
        assert emv.verify_arpc(sk, arqc, arc, expected)
        assert not emv.verify_arpc(sk, arqc, b"51", expected)


def test_ac_data_layout():
    data = emv.ac_data(sample_values(7), bytes.fromhex("03A00000"))
    assert len(data) == 33 + 4
    assert data.endswith(bytes.fromhex("0007" "03A00000"))
    assert emv.AC_TAGS == (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x82,
                           0x9F36)


def test_command_mac_agrees_with_pyemv():
    from pyemv.sm import generate_command_mac

    sk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    header = bytes.fromhex("04DA9F790A")
    data = bytes.fromhex("000000010000")
    ac = bytes.fromhex("1234567890123456")
    expected = quiet(generate_command_mac, sk, header + bytes.fromhex("FFFF") + ac + data, 4)
    assert emv.command_mac(sk, header, 0xFFFF, ac, data) == expected
    # pyemv's docstring example, truncated to 4 bytes
    assert emv.command_mac(sk, bytes.fromhex("8424000008"), 0xFFFF, ac, b"").hex().upper() == (
        "E07B8DF1")


@pytest.mark.parametrize("call", [
    lambda: emv.derive_udk(bytes(8), "1234567890123"),
    lambda: emv.derive_udk(IMK, "12345X"),
    lambda: emv.derive_udk(IMK, "1234567890123", "1"),
    lambda: emv.session_key(IMK, 0x10000),
    lambda: emv.ac_data({}, bytes(4)),
    lambda: emv.ac_data(sample_values(), bytes(3)),
    lambda: emv.ac_data({**sample_values(), 0x9F02: bytes(5)}, bytes(4)),
    lambda: emv.arpc(IMK, bytes(8), b"0"),
    lambda: emv.application_cryptogram(bytes(8), b""),
])
def test_bad_input_is_a_crypto_error(call):
    with pytest.raises(CryptoError):
        call()
