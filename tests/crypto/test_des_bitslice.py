"""Bitsliced DES: its generated S-box circuits, its bit-matrix transpose, and CBC-MACs that
agree with the `cryptography`-based reference `unioncard.crypto.des` for every lane."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unioncard.crypto import _sbox_gates, des, sbox_circuits
from unioncard.crypto.des_bitslice import cbc_macs, tdes_slices, transpose64
from unioncard.crypto.des_tables import sbox
from unioncard.errors import CryptoError


def test_the_generated_circuits_are_the_generators_output():
    """`_sbox_gates.py` is what `python -m unioncard.crypto.sbox_circuits` writes now."""
    assert sbox_circuits.GENERATED.read_text() == sbox_circuits.render()


@pytest.mark.parametrize("box", range(8))
def test_each_compiled_sbox_is_its_table(box):
    """All 64 inputs at once: lane x of the input words holds the bits of input x."""
    inputs = tuple(np.uint64(sum(1 << x for x in range(64) if (x >> (5 - i)) & 1))
                   for i in range(6))
    outputs = getattr(_sbox_gates, f"s{box + 1}")(inputs)
    for x in range(64):
        got = sum(((int(word) >> x) & 1) << (3 - bit) for bit, word in enumerate(outputs))
        assert got == sbox(box, x) == sbox_circuits.evaluate(box, x)


def test_transpose_is_the_bit_matrix_transpose():
    rng = np.random.default_rng(7)
    matrix = rng.integers(0, 2**64, 64, dtype=np.uint64)
    bits = ((matrix[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(bool)
    flipped = matrix.copy()
    transpose64(flipped)
    assert np.array_equal(
        ((flipped[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(bool),
        bits.T)
    transpose64(flipped)
    assert np.array_equal(flipped, matrix)


def words(raw: bytes, rows: int) -> np.ndarray:
    return np.frombuffer(raw, ">u8").astype(np.uint64).reshape(rows, -1)


def test_known_answers_side_by_side():
    """The textbook example, FIPS 81 and NBS vectors, and the MAC1 chain of
    docs/protocol.md §2.6 (three blocks), in lanes of one call."""
    vectors = [("133457799BBCDFF1", "0123456789ABCDEF", "85E813540F0AB405"),
               ("0123456789ABCDEF", "4E6F772069732074", "3FA40E8A984D4815"),
               ("0101010101010101", "8000000000000000", "95F8A5E5DD31D900"),
               ("8001010101010101", "0000000000000000", "95A8D72813DAA94D"),
               ("7CA110454A1A6E57", "01A1D6D039776742", "690F5B0D9A26939B"),
               ("FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFF", "7359B2163E4EDC58")]
    keys = np.array([int(k, 16) for k, _, _ in vectors], np.uint64)
    blocks = np.array([[int(p, 16)] for _, p, _ in vectors], np.uint64)
    assert [f"{int(m):016X}" for m in cbc_macs(keys, blocks)] == [c for _, _, c in vectors]
    chain = words(bytes.fromhex("0000100006001122" "3344552012022913" "5100800000000000"), 1)
    mac = cbc_macs(np.array([0x003238ABC57659DD], np.uint64), chain)
    assert f"{int(mac[0]):016X}" == "F15CAB75D8277525"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 4), st.data())
def test_every_lane_agrees_with_the_reference(count, blocks, data):
    """Counts across several groups of 64 (and their tails), 1 to 4 blocks a message,
    random keys and messages."""
    raw_keys = data.draw(st.binary(min_size=8 * count, max_size=8 * count))
    raw = data.draw(st.binary(min_size=8 * blocks * count, max_size=8 * blocks * count))
    macs = cbc_macs(words(raw_keys, count)[:, 0].copy(), words(raw, count))
    for i, mac in enumerate(macs):
        key, message = raw_keys[8 * i:8 * i + 8], raw[8 * blocks * i:8 * blocks * (i + 1)]
        assert int(mac).to_bytes(8, "big") == des.des_cbc_encrypt(key, message)[-8:]


def test_lanes_do_not_leak_into_each_other():
    """One message's MAC is the same alone and among 127 others."""
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**64, 128, dtype=np.uint64)
    data = rng.integers(0, 2**64, (128, 3), dtype=np.uint64)
    together = cbc_macs(keys, data)
    assert all(cbc_macs(keys[i:i + 1], data[i:i + 1])[0] == together[i] for i in (0, 63, 64, 127))
    assert cbc_macs(keys[:0], data[:0]).shape == (0,)


@pytest.mark.parametrize(("keys", "data"), [
    (np.zeros(2, np.int64), np.zeros((2, 1), np.uint64)),
    (np.zeros((2, 1), np.uint64), np.zeros((2, 1), np.uint64)),
    (np.zeros(2, np.uint64), np.zeros((2, 0), np.uint64)),
    (np.zeros(2, np.uint64), np.zeros((3, 1), np.uint64)),
    (np.zeros(2, np.uint64), np.zeros((2, 8), np.uint8)),
])
def test_bad_shapes_are_refused(keys, data):
    with pytest.raises(CryptoError):
        cbc_macs(keys, data)


def test_triple_des_in_slices_agrees_with_the_reference():
    """`tdes_slices`: 64 blocks, each under its own two-key 3DES key (EDE), against
    `cryptography`."""
    rng = np.random.default_rng(11)
    k1, k2, blocks = (rng.integers(0, 2**64, 64, dtype=np.uint64) for _ in range(3))
    slices = [a.copy() for a in (k1, k2, blocks)]
    for a in slices:
        transpose64(a)
    tdes_slices(slices[2], slices[0], slices[1], np.empty(64, np.uint64))
    transpose64(slices[2])
    for j in range(64):
        key = int(k1[j]).to_bytes(8, "big") + int(k2[j]).to_bytes(8, "big")
        assert int(slices[2][j]).to_bytes(8, "big") == des.tdes_encrypt(
            key, int(blocks[j]).to_bytes(8, "big"))
