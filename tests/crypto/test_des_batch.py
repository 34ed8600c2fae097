"""Batch DES and 3DES (numba): FIPS/NBS known answers, DES's algebraic properties, and
agreement with the `cryptography`-based reference `unioncard.crypto.des`."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unioncard.crypto import des
from unioncard.crypto.des_batch import (
    des_cbc_mac_blocks,
    des_decrypt_blocks,
    des_encrypt_blocks,
    des_key_schedule,
    tdes_decrypt_blocks,
    tdes_encrypt_blocks,
    tdes_key_schedule,
)
from unioncard.errors import CryptoError


def rows(*hexes: str) -> np.ndarray:
    return np.array([list(bytes.fromhex(h)) for h in hexes], np.uint8).reshape(len(hexes), -1)


def hexes(array: np.ndarray) -> list[str]:
    return [bytes(row).hex().upper() for row in array]


# key, plaintext, ciphertext
KNOWN_ANSWERS = [
    ("133457799BBCDFF1", "0123456789ABCDEF", "85E813540F0AB405"),  # the textbook worked example
    # FIPS 81, ECB example ("Now is the time for all ")
    ("0123456789ABCDEF", "4E6F772069732074", "3FA40E8A984D4815"),
    ("0123456789ABCDEF", "68652074696D6520", "6A271787AB8883F9"),
    ("0123456789ABCDEF", "666F7220616C6C20", "893D51EC4B563B53"),
    # NBS SP 500-20: variable plaintext, variable key, permutation and S-box tests
    ("0101010101010101", "8000000000000000", "95F8A5E5DD31D900"),
    ("0101010101010101", "4000000000000000", "DD7F121CA5015619"),
    ("0101010101010101", "2000000000000000", "2E8653104F3834EA"),
    ("8001010101010101", "0000000000000000", "95A8D72813DAA94D"),
    ("4001010101010101", "0000000000000000", "0EEC1487DD8C26D5"),
    ("1046913489980131", "0000000000000000", "88D55E54F54C97B4"),
    ("7CA110454A1A6E57", "01A1D6D039776742", "690F5B0D9A26939B"),
    # the classic library test set
    ("0000000000000000", "0000000000000000", "8CA64DE9C1B123A7"),
    ("FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFF", "7359B2163E4EDC58"),
    ("3000000000000000", "1000000000000001", "958E6E627A05557B"),
    ("1111111111111111", "1111111111111111", "F40379AB9E0EC533"),
    ("0123456789ABCDEF", "1111111111111111", "17668DFC7292532D"),
    ("1111111111111111", "0123456789ABCDEF", "8A5AE1F81AB8F2DD"),
    ("FEDCBA9876543210", "0123456789ABCDEF", "ED39D950FA74BCC4"),
]


def test_des_known_answers_in_one_batch():
    keys, plain, cipher = (rows(*column) for column in zip(*KNOWN_ANSWERS, strict=True))
    schedule = des_key_schedule(keys)
    assert schedule.dtype == np.uint32 and schedule.shape == (len(KNOWN_ANSWERS), 32)
    assert hexes(des_encrypt_blocks(schedule, plain)) == hexes(cipher)
    assert hexes(des_decrypt_blocks(schedule, cipher)) == hexes(plain)


@pytest.mark.parametrize(("key", "plain", "cipher"), KNOWN_ANSWERS[:3])
def test_one_key_over_many_blocks(key, plain, cipher):
    schedule = des_key_schedule(rows(key))
    blocks = np.repeat(rows(plain), 9, axis=0)
    assert hexes(des_encrypt_blocks(schedule, blocks)) == [cipher] * 9


def test_tdes_known_answers():
    """3DES(DPK, input) = SESPK of docs/protocol.md §2.6 and §2.7.2 (public and computed)."""
    keys = rows("11223344556677888877665544332211", "05CAB27B33A889A9B99ED48A7304AA1C")
    plain = rows("1122334400000001", "5A3C9E7100052345")
    cipher = ["003238ABC57659DD", "851032AF0FB93605"]
    schedule = tdes_key_schedule(keys)
    assert schedule.shape == (2, 96)
    assert hexes(tdes_encrypt_blocks(schedule, plain)) == cipher
    assert hexes(tdes_decrypt_blocks(schedule, rows(*cipher))) == hexes(plain)


def test_key_index_selects_the_schedule():
    keys = rows(*(k for k, _, _ in KNOWN_ANSWERS[:4]))
    index = np.array([3, 0, 0, 2, 1, 3, 3])
    blocks = np.repeat(rows("0123456789ABCDEF"), len(index), axis=0)
    expected = [des.des_encrypt(bytes(keys[k]), bytes(blocks[0])).hex().upper() for k in index]
    assert hexes(des_encrypt_blocks(des_key_schedule(keys), blocks, index)) == expected


def test_parity_bits_are_ignored():
    keys = rows("133457799BBCDFF1")
    assert np.array_equal(des_key_schedule(keys), des_key_schedule(keys ^ np.uint8(1)))


def test_complementation_property():
    """DES(~K, ~P) = ~DES(K, P) (FIPS 46-3 structure: E, xor, no other use of the key)."""
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 256, (33, 8), dtype=np.uint8)
    plain = rng.integers(0, 256, (33, 8), dtype=np.uint8)
    direct = des_encrypt_blocks(des_key_schedule(keys), plain)
    assert np.array_equal(des_encrypt_blocks(des_key_schedule(~keys), ~plain), ~direct)


def test_weak_keys_are_involutions():
    keys = rows("0101010101010101", "FEFEFEFEFEFEFEFE", "E0E0E0E0F1F1F1F1", "1F1F1F1F0E0E0E0E")
    plain = rows("0123456789ABCDEF", "FEDCBA9876543210", "0000000000000000", "A5A5A5A5A5A5A5A5")
    schedule = des_key_schedule(keys)
    assert np.array_equal(des_encrypt_blocks(schedule, des_encrypt_blocks(schedule, plain)), plain)


def test_tdes_with_equal_halves_is_single_des():
    rng = np.random.default_rng(8)
    key8 = rng.integers(0, 256, (13, 8), dtype=np.uint8)
    plain = rng.integers(0, 256, (13, 8), dtype=np.uint8)
    assert np.array_equal(tdes_encrypt_blocks(tdes_key_schedule(np.hstack([key8, key8])), plain),
                          des_encrypt_blocks(des_key_schedule(key8), plain))


def test_empty_batches():
    empty = np.zeros((0, 8), np.uint8)
    assert des_key_schedule(empty).shape == (0, 32)
    schedule = des_key_schedule(rows("133457799BBCDFF1"))
    assert des_encrypt_blocks(schedule, empty).shape == (0, 8)
    assert des_encrypt_blocks(schedule, empty, np.zeros(0, np.int64)).shape == (0, 8)
    assert des_cbc_mac_blocks(empty, np.zeros((0, 16), np.uint8)).shape == (0, 8)


def test_cbc_mac_chain_of_the_public_vector():
    """docs/protocol.md §2.6: the CBC chain of MAC1 under SESPK, block after block."""
    padded = "0000100006001122" "3344552012022913" "5100800000000000"
    chain = ["8ADAE351A147B5EB", "52A9BC5FAB3CB0A7", "F15CAB75D8277525"]
    key = rows("003238ABC57659DD")
    for blocks, last in enumerate(chain, 1):
        assert hexes(des_cbc_mac_blocks(key, rows(padded[:16 * blocks]))) == [last]


@pytest.mark.parametrize(("call", "args"), [
    (des_key_schedule, (np.zeros((2, 7), np.uint8),)),
    (des_key_schedule, (np.zeros((2, 8), np.int64),)),
    (tdes_key_schedule, (np.zeros((2, 8), np.uint8),)),
    (des_encrypt_blocks, (np.zeros((1, 96), np.uint32), np.zeros((1, 8), np.uint8))),
    (tdes_encrypt_blocks, (np.zeros((1, 32), np.uint32), np.zeros((1, 8), np.uint8))),
    (des_encrypt_blocks, (np.zeros((0, 32), np.uint32), np.zeros((1, 8), np.uint8))),
    (des_encrypt_blocks, (np.zeros((2, 32), np.uint32), np.zeros((3, 8), np.uint8))),
    (des_encrypt_blocks, (np.zeros((1, 32), np.uint32), np.zeros((3, 9), np.uint8))),
    (des_encrypt_blocks, (np.zeros((2, 32), np.uint32), np.zeros((3, 8), np.uint8), [0, 1, 2])),
    (des_encrypt_blocks, (np.zeros((2, 32), np.uint32), np.zeros((3, 8), np.uint8), [0, -1, 1])),
    (des_encrypt_blocks, (np.zeros((2, 32), np.uint32), np.zeros((3, 8), np.uint8), [0, 1])),
    (des_cbc_mac_blocks, (np.zeros((2, 8), np.uint8), np.zeros((2, 12), np.uint8))),
    (des_cbc_mac_blocks, (np.zeros((2, 8), np.uint8), np.zeros((3, 16), np.uint8))),
    (des_cbc_mac_blocks, (np.zeros((2, 8), np.uint8), np.zeros((2, 0), np.uint8))),
])
def test_bad_shapes_are_refused(call, args):
    with pytest.raises(CryptoError):
        call(*args)


def matrices(width: int, max_rows: int = 9) -> st.SearchStrategy[np.ndarray]:
    """uint8[n, width] with 1..max_rows rows: every tail length of the four-lane kernels."""
    return st.integers(1, max_rows).flatmap(
        lambda n: st.binary(min_size=n * width, max_size=n * width)).map(
        lambda b: np.frombuffer(b, np.uint8).reshape(-1, width))


@settings(max_examples=250)
@given(st.data())
def test_des_agrees_with_the_reference(data):
    keys = data.draw(matrices(8))
    raw = data.draw(st.binary(min_size=keys.size, max_size=keys.size))
    blocks = np.frombuffer(raw, np.uint8).reshape(keys.shape)
    schedule = des_key_schedule(keys)
    cipher = des_encrypt_blocks(schedule, blocks)
    for key, plain, out in zip(keys, blocks, cipher, strict=True):
        assert bytes(out) == des.des_encrypt(bytes(key), bytes(plain))
    assert np.array_equal(des_decrypt_blocks(schedule, cipher), blocks)
    plain = bytes(des_decrypt_blocks(schedule, blocks)[0])
    assert plain == des.des_decrypt(bytes(keys[0]), bytes(blocks[0]))


@settings(max_examples=250)
@given(matrices(16, max_rows=4), matrices(8))
def test_tdes_agrees_with_the_reference(keys, blocks):
    schedule = tdes_key_schedule(keys)
    index = np.arange(len(blocks)) % len(keys)
    cipher = tdes_encrypt_blocks(schedule, blocks, index)
    plain = tdes_decrypt_blocks(schedule, blocks, index)
    for k, block, enc, dec in zip(index, blocks, cipher, plain, strict=True):
        assert bytes(enc) == des.tdes_encrypt(bytes(keys[k]), bytes(block))
        assert bytes(dec) == des.tdes_decrypt(bytes(keys[k]), bytes(block))
    one = tdes_encrypt_blocks(schedule[:1], blocks)
    assert all(bytes(out) == des.tdes_encrypt(bytes(keys[0]), bytes(block))
               for block, out in zip(blocks, one, strict=True))


@settings(max_examples=250)
@given(matrices(8), st.integers(1, 5), st.data())
def test_cbc_mac_agrees_with_the_reference(keys, blocks, data):
    raw = data.draw(st.binary(min_size=len(keys) * 8 * blocks, max_size=len(keys) * 8 * blocks))
    message = np.frombuffer(raw, np.uint8).reshape(len(keys), 8 * blocks)
    macs = des_cbc_mac_blocks(keys, message)
    for key, row, mac in zip(keys, message, macs, strict=True):
        assert bytes(mac) == des.des_cbc_encrypt(bytes(key), bytes(row))[-8:]


def test_kernels_never_read_out_of_bounds(run_bounds_checked):
    """The kernels re-compiled with boundscheck (UNIONCARD_JIT_DEBUG=1, fresh cache) agree."""
    script = """
import numpy as np
from unioncard.crypto import des
from unioncard.crypto.des_batch import (des_cbc_mac_blocks, des_decrypt_blocks,
    des_encrypt_blocks, des_key_schedule, tdes_decrypt_blocks, tdes_encrypt_blocks,
    tdes_key_schedule)
from unioncard.jit import JIT_OPTIONS
assert JIT_OPTIONS["boundscheck"] is True
rng = np.random.default_rng(11)
for n in range(0, 11):
    k8 = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    k16 = rng.integers(0, 256, (max(n, 1), 16), dtype=np.uint8)
    blocks = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    index = rng.integers(0, max(n, 1), n)
    ref = lambda f, ks, bs: [f(bytes(k), bytes(b)) for k, b in zip(ks, bs)]
    s8, s16 = des_key_schedule(k8), tdes_key_schedule(k16)
    got = [bytes(r) for r in des_encrypt_blocks(s8, blocks)] if n else []
    assert got == ref(des.des_encrypt, k8, blocks)
    if n:
        assert [bytes(r) for r in des_decrypt_blocks(s8[:1], blocks)] == ref(
            des.des_decrypt, [k8[0]] * n, blocks)
    assert [bytes(r) for r in tdes_encrypt_blocks(s16, blocks, index)] == ref(
        des.tdes_encrypt, k16[index], blocks)
    assert [bytes(r) for r in tdes_decrypt_blocks(s16, blocks, index)] == ref(
        des.tdes_decrypt, k16[index], blocks)
    data = rng.integers(0, 256, (n, 24), dtype=np.uint8)
    assert [bytes(r) for r in des_cbc_mac_blocks(k8, data)] == [
        des.des_cbc_encrypt(bytes(k), bytes(d))[-8:] for k, d in zip(k8, data)]
print("agreed")
"""
    run_bounds_checked(script)
