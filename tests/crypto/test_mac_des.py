"""DES blocks and the two MACs, checked against pyemv as an independent oracle."""

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.crypto.des import (
    des_cbc_encrypt,
    des_decrypt,
    des_encrypt,
    pad80,
    tdes_cbc_encrypt,
    tdes_decrypt,
    tdes_encrypt,
    xor,
)
from unioncard.crypto.mac import pboc_mac, retail_mac
from unioncard.errors import CryptoError

keys8 = st.binary(min_size=8, max_size=8)
keys16 = st.binary(min_size=16, max_size=16)
blocks = st.integers(1, 6).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n))


def oracle_cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    from pyemv.tools import encrypt_tdes_cbc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encrypt_tdes_cbc(key, iv, data)


def oracle_retail(key: bytes, data: bytes, iv: bytes) -> bytes:
    """pyemv's ISO 9797-1 algorithm 3 has no IV: fold the IV into the first padded block."""
    from pyemv.mac import mac_iso9797_3, pad_iso9797_2

    padded = pad_iso9797_2(data, 8)
    folded = xor(padded[:8], iv) + padded[8:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mac_iso9797_3(key[:8], key[8:], folded, padding=1)


def test_des_fips_vector():
    # FIPS 81 / the classic "Now is the time for all " example
    key = bytes.fromhex("0123456789ABCDEF")
    plain = b"Now is the time for all "
    assert des_cbc_encrypt(key, plain, bytes.fromhex("1234567890ABCDEF")).hex().upper() == (
        "E5C7CDDE872BF27C43E934008C389C0F683788499A7C05F6"
    )


@given(keys8, blocks)
def test_des_round_trip_and_oracle(key, data):
    assert des_decrypt(key, des_encrypt(key, data)) == data
    assert des_encrypt(key, data[:8]) == oracle_cbc(key, bytes(8), data[:8])


@given(keys16, blocks, keys8)
def test_tdes_against_pyemv(key, data, iv):
    assert tdes_decrypt(key, tdes_encrypt(key, data)) == data
    assert tdes_cbc_encrypt(key, data, iv) == oracle_cbc(key, iv, data)


def test_two_key_tdes_with_equal_halves_is_single_des():
    key = bytes.fromhex("0123456789ABCDEF")
    assert tdes_encrypt(key * 2, bytes(8)) == des_encrypt(key, bytes(8))


@pytest.mark.parametrize(
    ("data", "padded"),
    [
        ("", "8000000000000000"),
        ("01", "0180000000000000"),
        ("01020304050607", "0102030405060780"),
        ("0102030405060708", "01020304050607088000000000000000"),
    ],
)
def test_pad80_always_pads(data, padded):
    assert pad80(bytes.fromhex(data)).hex() == padded


def test_pboc_mac_public_vector():
    sespk = bytes.fromhex("003238ABC57659DD")
    assert pboc_mac(sespk, bytes.fromhex("00001000")).hex().upper() == "56988A13"
    data = bytes.fromhex("0000100006001122334455201202291351 00".replace(" ", ""))
    assert pboc_mac(sespk, data).hex().upper() == "F15CAB75"


@given(keys8, st.binary(max_size=64), keys8)
def test_pboc_mac_is_single_des_cbc_mac(key, data, iv):
    from pyemv.mac import pad_iso9797_2

    expected = oracle_cbc(key, iv, pad_iso9797_2(data, 8))[-8:][:4]
    assert pboc_mac(key, data, iv=iv) == expected
    assert pboc_mac(key, data, iv=iv, length=8)[:4] == expected


def test_pboc_mac_pads_aligned_data_with_a_whole_block():
    key = bytes.fromhex("0123456789ABCDEF")
    data = bytes(range(8))
    assert pboc_mac(key, data) != des_encrypt(key, data)[:4]
    padded = data + bytes.fromhex("80") + bytes(7)
    assert pboc_mac(key, data) == des_cbc_encrypt(key, padded)[-8:][:4]


@given(keys16, st.binary(max_size=64), keys8)
def test_retail_mac_against_pyemv(key, data, iv):
    assert retail_mac(key, data, iv=iv, length=8) == oracle_retail(key, data, iv)


def test_retail_mac_with_equal_halves_is_pboc_mac():
    key = bytes.fromhex("0123456789ABCDEF")
    data = bytes.fromhex("841E000004")
    assert retail_mac(key * 2, data) == pboc_mac(key, data)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: des_encrypt(bytes(7), bytes(8)), "8 bytes"),
        (lambda: tdes_encrypt(bytes(8), bytes(8)), "16 bytes"),
        (lambda: des_encrypt(bytes(8), bytes(7)), "multiple of 8"),
        (lambda: des_cbc_encrypt(bytes(8), bytes(8), bytes(4)), "IV"),
        (lambda: pboc_mac(bytes(16), b""), "8 bytes"),
        (lambda: retail_mac(bytes(8), b""), "16 bytes"),
        (lambda: pboc_mac(bytes(8), b"", length=3), "4 to 8"),
        (lambda: xor(b"a", b"ab"), "xor"),
    ],
)
def test_misuse_raises_crypto_error(call, message):
    with pytest.raises(CryptoError, match=message):
        call()
