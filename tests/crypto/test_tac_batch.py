"""Batch TACs (numba): every vector of docs/protocol.md §2.6-§2.7, and agreement with the
reference `unioncard.crypto.purse` on random keys and records."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unioncard.crypto import mac, purse
from unioncard.crypto.des_batch import (
    des_cbc_mac_blocks,
    des_decrypt_blocks,
    des_encrypt_blocks,
    des_key_schedule,
    tdes_encrypt_blocks,
    tdes_key_schedule,
)
from unioncard.crypto.tac_batch import (
    diversify_keys,
    load_tacs,
    pboc_macs,
    purchase_tacs,
    tac_keys,
    tac_keys_distinct,
    verify_card_tacs,
    verify_tacs,
)
from unioncard.errors import CryptoError


def rows(*hexes: str) -> np.ndarray:
    return np.array([list(bytes.fromhex(h)) for h in hexes], np.uint8).reshape(len(hexes), -1)


def hexes(array: np.ndarray) -> list[str]:
    return [bytes(row).hex().upper() for row in array]


TERMINAL = rows("310100001234")
TRANSIT_F, ETC_F = "5500000000000042", "1101000000000042"
TRANSIT_MTK, ETC_MTK = "606162636465666768696A6B6C6D6E6F", "909192939495969798999A9B9C9D9E9F"
TRANSIT_TAC_KEY, ETC_TAC_KEY = "B4A3FE0349C75A35", "6C5E328002DE3C11"

# docs/protocol.md §2.7.1: master key, diversifier, card key
CARD_KEYS = [
    ("404142434445464748494A4B4C4D4E4F", TRANSIT_F, "05CAB27B33A889A9B99ED48A7304AA1C"),
    ("505152535455565758595A5B5C5D5E5F", TRANSIT_F, "3C176B497ADD566D9C68A4261BA42715"),
    (TRANSIT_MTK, TRANSIT_F, "279330E8625171599330CEEB2B962B6C"),
    ("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF", TRANSIT_F, "04B194A8717CFA6416D572B237983231"),
    ("707172737475767778797A7B7C7D7E7F", ETC_F, "6E736007693F84953A17E1320B029809"),
    ("808182838485868788898A8B8C8D8E8F", ETC_F, "46516569D31B5C74E32F98A4CB6AE0AC"),
    (ETC_MTK, ETC_F, "DB5D3189BAC5B73AB7030309B81B8B2B"),
    ("B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF", ETC_F, "7FC3D82E3F36D99EE8A68F4016DCF263"),
]


def test_card_keys_of_the_worked_examples():
    """§2.7.1: all eight card keys in one call, each record naming its master key."""
    masters = rows(*(m for m, _, _ in CARD_KEYS))
    index = np.arange(len(CARD_KEYS))[::-1]
    divs = rows(*(CARD_KEYS[i][1] for i in index))
    assert hexes(diversify_keys(masters, index, divs)) == [CARD_KEYS[i][2] for i in index]


@pytest.mark.parametrize("derive", [tac_keys, tac_keys_distinct])
def test_tac_keys_of_the_worked_examples(derive):
    masters = rows(TRANSIT_MTK, ETC_MTK)
    index = np.array([0, 1, 1, 0, 0, 1, 0])
    divs = rows(*(TRANSIT_F if i == 0 else ETC_F for i in index))
    expected = [TRANSIT_TAC_KEY if i == 0 else ETC_TAC_KEY for i in index]
    assert hexes(derive(masters, index, divs)) == expected
    assert hexes(derive(masters[1:], 0, rows(ETC_F))) == [ETC_TAC_KEY]


def test_session_keys_of_the_vectors():
    """3DES(card key, input block): SESPK and SESLK of §2.6, §2.7.2, §2.7.3 and §2.7.4."""
    keys = rows("11223344556677888877665544332211", CARD_KEYS[0][2], CARD_KEYS[1][2],
                CARD_KEYS[4][2])
    blocks = rows("1122334400000001", "5A3C9E7100052345", "1A2B3C4D00038000", "0BADF00D00002346")
    expected = ["003238ABC57659DD", "851032AF0FB93605", "12650359C76BDBEC", "5723361A772D494C"]
    assert hexes(tdes_encrypt_blocks(tdes_key_schedule(keys), blocks)) == expected


# key, padded input, CBC chain after each block (the MAC is the last block's left half)
CHAINS = [
    ("003238ABC57659DD", "0000100006001122" "3344552012022913" "5100800000000000",
     ["8ADAE351A147B5EB", "52A9BC5FAB3CB0A7", "F15CAB75D8277525"]),  # §2.6 MAC1
    ("003238ABC57659DD", "0000100080000000", ["56988A13546AFDE2"]),  # §2.6 MAC2
    ("851032AF0FB93605", "000000B406310100" "0012342026031508" "3015800000000000",
     ["5464347DCE9D883A", "8847ED1E9BB8A614", "25E2DDF1FFF0322C"]),  # §2.7.2 MAC1
    (TRANSIT_TAC_KEY, "000000B406310100" "0012340001234520" "2603150830158000",
     ["C50E42D2BA09B008", "EC3AA9FAB4378F73", "CC970111E945BA7D"]),  # §2.7.2 TAC
    ("12650359C76BDBEC", "0000071C00002710" "0231010000123480",
     ["2DB2AC6C8CB71373", "57E79FF018242D7B"]),  # §2.7.3 load MAC1
    ("12650359C76BDBEC", "0000271002310100" "0012342026031508" "4500800000000000",
     ["79C4DDD0961566C3", "94176D5BB72F0242", "6EBD41E16F98C4A4"]),  # §2.7.3 load MAC2
    (TRANSIT_TAC_KEY, "00002E2C00030000" "2710023101000012" "3420260315084500"
     "8000000000000000",
     ["395F348D4854F1A7", "51D7BB0D1290B80A", "1487DCC13906FF37", "80D88DFC319824E4"]),
]


@pytest.mark.parametrize(("key", "padded", "chain"), CHAINS)
def test_cbc_chains_of_the_vectors(key, padded, chain):
    for blocks, link in enumerate(chain, 1):
        assert hexes(des_cbc_mac_blocks(rows(key), rows(padded[:16 * blocks]))) == [link]


# key, unpadded input, MAC
MACS = [
    ("003238ABC57659DD", "00001000 06 001122334455 20120229 135100", "F15CAB75"),  # §2.6
    ("003238ABC57659DD", "00001000", "56988A13"),
    ("851032AF0FB93605", "000000B4 06 310100001234 20260315 083015", "25E2DDF1"),  # §2.7.2
    ("851032AF0FB93605", "000000B4", "BAD5D442"),
    ("12650359C76BDBEC", "0000071C 00002710 02 310100001234", "57E79FF0"),  # §2.7.3
    ("12650359C76BDBEC", "00002710 02 310100001234 20260315 084500", "6EBD41E1"),
    ("5723361A772D494C", "00000DAC 09 310100001234 20260315 091000", "D759D9BC"),  # §2.7.4
    ("5723361A772D494C", "00000DAC", "580B0DD1"),
]


@pytest.mark.parametrize(("key", "data", "expected"), MACS)
def test_session_macs_of_the_vectors(key, data, expected):
    assert hexes(pboc_macs(rows(key), rows(data.replace(" ", "")))) == [expected]


def test_tacs_of_the_worked_examples():
    """§2.7.2 purchase, §2.7.4 CAPP purchase on the ETC purse, §2.7.3 load."""
    keys = rows(TRANSIT_TAC_KEY, ETC_TAC_KEY)
    purchases = purchase_tacs(keys, [180, 3500], [0x06, 0x09], TERMINAL[0],
                              [0x00012345, 0x00012346], rows("20260315", "20260315"),
                              rows("083015", "091000"))
    assert hexes(purchases) == ["CC970111", "5096B54F"]
    loaded = load_tacs(keys[:1], [11820], [3], [10000], [0x02], TERMINAL, rows("20260315"),
                       rows("084500"))
    assert hexes(loaded) == ["80D88DFC"]


def test_maintenance_mac_steps():
    """§2.7.5, column by column: DES(KL), DES⁻¹(KR), DES(KL) of the header xor the IV."""
    kl, kr = des_key_schedule(rows("04B194A8717CFA64")), des_key_schedule(rows("16D572B237983231"))
    folded = rows("44E1EE1104800000", "44E7EE1104800000")
    first = des_encrypt_blocks(kl, folded)
    assert hexes(first) == ["6C4C1A8708443731", "66B1E63E8F569A2A"]
    second = des_decrypt_blocks(kr, first)
    assert hexes(second) == ["98EB724A23CC4F72", "1AF83090F59FA0D9"]
    assert hexes(des_encrypt_blocks(kl, second)) == ["6392AA2D92D0B757", "76B2865B50BB7DC4"]


def worked_records() -> dict:
    """The three records of §2.7.2-§2.7.4 as settlement columns (docs/records.md)."""
    return {
        "tx_type": np.array([0x06, 0x02, 0x09], np.uint8),
        "amount": np.array([180, 10000, 3500], np.uint32),
        "terminal_id": np.repeat(TERMINAL, 3, axis=0),
        "terminal_seq": np.array([0x00012345, 7, 0x00012346], np.uint32),
        "date": rows("20260315", "20260315", "20260315"),
        "time": rows("083015", "084500", "091000"),
        "balance_after": np.array([1820, 11820, 1500], np.uint32),
        "card_seq": np.array([5, 3, 0], np.uint16),
    }


def test_verify_a_mixed_batch():
    keys = tac_keys(rows(TRANSIT_MTK, ETC_MTK), [0, 0, 1], rows(TRANSIT_F, TRANSIT_F, ETC_F))
    recorded = rows("CC970111", "80D88DFC", "5096B54F")
    columns = worked_records()
    assert verify_tacs(recorded, keys, **columns).tolist() == [True, True, True]
    recorded[1, 3] ^= 0x01
    assert verify_tacs(recorded, keys, **columns).tolist() == [True, False, True]
    columns["terminal_seq"][0] += 1  # a purchase TAC covers the terminal seq
    columns["terminal_seq"][1] += 1  # a load TAC does not (a load's is a journal number)
    columns["card_seq"][2] += 1  # a purchase TAC does not cover the offline seq
    assert verify_tacs(rows("CC970111", "80D88DFC", "5096B54F"), keys, **columns).tolist() == [
        False, True, True]


# ---- agreement with the reference ----

u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def records(draw, max_size: int = 9) -> dict:
    """1..max_size random records: every field over its whole range, a DTK per record."""
    n = draw(st.integers(1, max_size))

    def column(width: int) -> np.ndarray:
        raw = draw(st.binary(min_size=n * width, max_size=n * width))
        return np.frombuffer(raw, np.uint8).reshape(n, width)

    def ints(strategy: st.SearchStrategy[int], dtype: type) -> np.ndarray:
        return np.array(draw(st.lists(strategy, min_size=n, max_size=n)), dtype)

    return {
        "dtk": column(16),
        "tx_type": ints(st.sampled_from([0x02, 0x06, 0x09]) | st.integers(0, 255), np.uint8),
        "amount": ints(u32, np.uint32),
        "terminal_id": column(6),
        "terminal_seq": ints(u32, np.uint32),
        "date": column(4),
        "time": column(3),
        "balance_after": ints(u32, np.uint32),
        "card_seq": ints(st.integers(0, 0xFFFF), np.uint16),
    }


def reference_purchase(r: dict, i: int) -> bytes:
    return purse.purchase_tac(bytes(r["dtk"][i]), int(r["amount"][i]), int(r["tx_type"][i]),
                              bytes(r["terminal_id"][i]), int(r["terminal_seq"][i]),
                              bytes(r["date"][i]), bytes(r["time"][i]))


def reference_load(r: dict, i: int) -> bytes:
    return purse.load_tac(bytes(r["dtk"][i]), int(r["balance_after"][i]), int(r["card_seq"][i]),
                          int(r["amount"][i]), int(r["tx_type"][i]), bytes(r["terminal_id"][i]),
                          bytes(r["date"][i]), bytes(r["time"][i]))


def fold(dtk: np.ndarray) -> np.ndarray:
    return dtk[:, :8] ^ dtk[:, 8:]


@settings(max_examples=250)
@given(records())
def test_purchase_and_load_tacs_agree_with_the_reference(r):
    keys = fold(r["dtk"])
    purchases = purchase_tacs(keys, r["amount"], r["tx_type"], r["terminal_id"],
                              r["terminal_seq"], r["date"], r["time"])
    loaded = load_tacs(keys, r["balance_after"], r["card_seq"], r["amount"], r["tx_type"],
                       r["terminal_id"], r["date"], r["time"])
    for i in range(len(keys)):
        assert bytes(purchases[i]) == reference_purchase(r, i)
        assert bytes(loaded[i]) == reference_load(r, i)


@settings(max_examples=250)
@given(records(max_size=12), st.data())
def test_verify_agrees_with_the_reference(r, data):
    n = len(r["dtk"])
    expected = np.array([list(reference_load(r, i) if r["tx_type"][i] == 0x02
                              else reference_purchase(r, i)) for i in range(n)], np.uint8)
    tampered = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    flip = np.array(data.draw(st.lists(st.integers(1, 255), min_size=n, max_size=n)), np.uint8)
    recorded = expected.copy()
    recorded[:, 2] ^= np.where(tampered, flip, 0).astype(np.uint8)
    columns = {k: v for k, v in r.items() if k != "dtk"}
    assert verify_tacs(recorded, fold(r["dtk"]), **columns).tolist() == (~tampered).tolist()


@settings(max_examples=60, deadline=None)
@given(records(max_size=150), st.data())
def test_verify_with_keys_derived_in_the_pass_agrees_with_the_reference(r, data):
    """`verify_card_tacs`: masters and cards instead of keys; counts across groups of 64
    lanes, purchases and loads, some TACs tampered, cards repeating under 1 to 3
    masters."""
    n = len(r["dtk"])
    masters = np.frombuffer(data.draw(st.binary(min_size=48, max_size=48)),
                            np.uint8).reshape(3, 16)
    index = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    pool = np.frombuffer(data.draw(st.binary(min_size=40, max_size=40)), np.uint8).reshape(5, 8)
    divs = pool[data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))]
    r = {**r, "dtk": np.array([list(purse.diversify(bytes(masters[k]), bytes(d)))
                               for k, d in zip(index, divs, strict=True)], np.uint8)}
    expected = np.array([list(reference_load(r, i) if r["tx_type"][i] == 0x02
                              else reference_purchase(r, i)) for i in range(n)], np.uint8)
    tampered = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    recorded = expected.copy()
    recorded[:, 0] ^= tampered.astype(np.uint8)
    columns = {k: v for k, v in r.items() if k != "dtk"}
    assert verify_card_tacs(recorded, masters, index, divs, **columns).tolist() == (
        ~tampered).tolist()


@st.composite
def cards(draw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Master keys, and records drawn from a small pool of cards (so cards repeat)."""
    masters = np.frombuffer(draw(st.binary(min_size=16, max_size=16 * 3)).ljust(48, b"\0"),
                            np.uint8).reshape(3, 16)[:draw(st.integers(1, 3))].copy()
    pool = draw(st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=5))
    n = draw(st.integers(1, 14))
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n))
    index = np.array(draw(st.lists(st.integers(0, len(masters) - 1), min_size=n, max_size=n)))
    divs = np.array([list(pool[p]) for p in picks], np.uint8)
    return masters, index, divs


@settings(max_examples=250)
@given(cards())
def test_key_derivation_agrees_with_the_reference(drawn):
    masters, index, divs = drawn
    card_keys = diversify_keys(masters, index, divs)
    keys = tac_keys(masters, index, divs)
    for i, k in enumerate(index):
        dtk = purse.diversify(bytes(masters[k]), bytes(divs[i]))
        assert bytes(card_keys[i]) == dtk
        assert bytes(keys[i]) == purse.tac_key(dtk)
    assert np.array_equal(tac_keys_distinct(masters, index, divs), keys)
    assert np.array_equal(tac_keys_distinct(masters, 0, divs), tac_keys(masters, 0, divs))


@settings(max_examples=200)
@given(st.integers(1, 6), st.integers(0, 30), st.integers(4, 8), st.data())
def test_pboc_macs_agree_with_the_reference(n, length, size, data):
    keys = np.frombuffer(data.draw(st.binary(min_size=8 * n, max_size=8 * n)), np.uint8)
    message = np.frombuffer(data.draw(st.binary(min_size=n * length, max_size=n * length)),
                            np.uint8).reshape(n, length)
    macs = pboc_macs(keys.reshape(n, 8), message, size)
    for i in range(n):
        assert bytes(macs[i]) == mac.pboc_mac(bytes(keys[8 * i:8 * i + 8]), bytes(message[i]),
                                              length=size)


# ---- inputs ----


def test_columns_broadcast_and_accept_any_integer_dtype():
    keys = rows(TRANSIT_TAC_KEY, TRANSIT_TAC_KEY)
    tacs = purchase_tacs(keys, np.array([180, 180], ">u4"), 6, TERMINAL[0],
                         np.array([0x12345, 0x12345], np.int64), rows("20260315")[0],
                         np.repeat(rows("083015"), 2, axis=0))
    assert hexes(tacs) == ["CC970111"] * 2


def test_empty_batches():
    none8, masters = np.zeros((0, 8), np.uint8), rows(TRANSIT_MTK)
    assert tac_keys(masters, np.zeros(0, int), none8).shape == (0, 8)
    assert tac_keys_distinct(masters, np.zeros(0, int), none8).shape == (0, 8)
    assert diversify_keys(masters, 0, none8).shape == (0, 16)
    empty = np.zeros(0, np.uint32)
    assert purchase_tacs(none8, empty, empty, TERMINAL[0], empty, np.zeros((0, 4), np.uint8),
                         np.zeros((0, 3), np.uint8)).shape == (0, 4)
    assert verify_tacs(np.zeros((0, 4), np.uint8), none8, tx_type=empty, amount=empty,
                       terminal_id=TERMINAL[0], terminal_seq=empty,
                       date=np.zeros((0, 4), np.uint8), time=np.zeros((0, 3), np.uint8),
                       balance_after=empty, card_seq=empty).shape == (0,)


def purchase_with(**changes):
    args = {"tac_keys": rows(TRANSIT_TAC_KEY), "amount": [180], "tx_type": [6],
            "terminal_id": TERMINAL, "terminal_seq": [1], "date": rows("20260315"),
            "time": rows("083015")}
    return purchase_tacs(**{**args, **changes})


@pytest.mark.parametrize("changes", [
    {"amount": [1 << 32]},
    {"amount": [-1]},
    {"amount": [1.5]},
    {"tx_type": [256]},
    {"terminal_seq": [1, 2]},
    {"terminal_id": rows("3101000012")},
    {"terminal_id": np.zeros((1, 6), np.int64)},
    {"date": rows("2026031500")},
    {"tac_keys": rows(TRANSIT_MTK)},
])
def test_bad_columns_are_refused(changes):
    with pytest.raises(CryptoError):
        purchase_with(**changes)


def _verify_card(masters, index, divs):
    """`verify_card_tacs` of one purchase (whatever its TAC) under the given derivation."""
    return verify_card_tacs(np.zeros((1, 4), np.uint8), masters, index, divs, tx_type=[6],
                            amount=[1], terminal_id=rows("310100001234"), terminal_seq=[1],
                            date=rows("20260315"), time=rows("083015"), balance_after=[0],
                            card_seq=[0])


@pytest.mark.parametrize("derive", [tac_keys, tac_keys_distinct, diversify_keys, _verify_card])
@pytest.mark.parametrize(("masters", "index", "divs"), [
    (rows(TRANSIT_MTK), [1], rows(TRANSIT_F)),
    (rows(TRANSIT_MTK), [-1], rows(TRANSIT_F)),
    (rows(TRANSIT_MTK), [0, 0], rows(TRANSIT_F)),
    (np.zeros((0, 16), np.uint8), [0], rows(TRANSIT_F)),
    (rows(TRANSIT_F), [0], rows(TRANSIT_F)),
    (rows(TRANSIT_MTK), [0], rows(TRANSIT_MTK)),
])
def test_bad_derivation_inputs_are_refused(derive, masters, index, divs):
    with pytest.raises(CryptoError):
        derive(masters, index, divs)


def test_bad_mac_length_is_refused():
    with pytest.raises(CryptoError):
        pboc_macs(rows(TRANSIT_TAC_KEY), rows("00"), 3)


def test_kernels_never_read_out_of_bounds(run_bounds_checked):
    """The TAC kernels re-compiled with boundscheck (UNIONCARD_JIT_DEBUG=1) agree."""
    script = """
import numpy as np
from unioncard.crypto import purse
from unioncard.crypto.tac_batch import (tac_keys, tac_keys_distinct, diversify_keys,
                                        verify_card_tacs, verify_tacs)
from unioncard.jit import JIT_OPTIONS
assert JIT_OPTIONS["boundscheck"] is True
rng = np.random.default_rng(12)
masters = rng.integers(0, 256, (3, 16), dtype=np.uint8)
for n in [*range(0, 11), 65]:
    u8 = lambda w: rng.integers(0, 256, (n, w), dtype=np.uint8)
    index = rng.integers(0, 3, n)
    divs = rng.integers(0, 256, (3, 8), dtype=np.uint8)[rng.integers(0, 3, n)]
    cols = dict(tx_type=rng.choice([2, 6, 9], n).astype(np.uint8),
                amount=rng.integers(0, 2**32, n, dtype=np.uint32), terminal_id=u8(6),
                terminal_seq=rng.integers(0, 2**32, n, dtype=np.uint32), date=u8(4),
                time=u8(3), balance_after=rng.integers(0, 2**32, n, dtype=np.uint32),
                card_seq=rng.integers(0, 2**16, n, dtype=np.uint16))
    keys = tac_keys(masters, index, divs)
    assert np.array_equal(keys, tac_keys_distinct(masters, index, divs))
    card = diversify_keys(masters, index, divs)
    recorded = np.zeros((n, 4), np.uint8)
    for i in range(n):
        dtk = purse.diversify(bytes(masters[index[i]]), bytes(divs[i]))
        assert bytes(card[i]) == dtk and bytes(keys[i]) == purse.tac_key(dtk)
        c = {k: v[i] for k, v in cols.items()}
        if c["tx_type"] == 2:
            tac = purse.load_tac(dtk, int(c["balance_after"]), int(c["card_seq"]),
                                 int(c["amount"]), 2, bytes(c["terminal_id"]), bytes(c["date"]),
                                 bytes(c["time"]))
        else:
            tac = purse.purchase_tac(dtk, int(c["amount"]), int(c["tx_type"]),
                                     bytes(c["terminal_id"]), int(c["terminal_seq"]),
                                     bytes(c["date"]), bytes(c["time"]))
        recorded[i] = list(tac)
    assert verify_tacs(recorded, keys, **cols).all()
    assert verify_card_tacs(recorded, masters, index, divs, **cols).all()
print("agreed")
"""
    run_bounds_checked(script)
