"""TAC verification: the numba batch path against OpenSSL DES and the reference, one run.

One million offline purchases of 100 000 cards (transit and ETC purses, the test
keystore's TAC master keys; docs/protocol.md §2.4).  Measured in the same session:

(a) OpenSSL DES through `cryptography`, expressed as purchase TACs per second (one TAC
    = one 24-byte CBC-MAC = 3 DES blocks under the record's own key):
    - per record, what a reference path pays: ``Cipher(TripleDES(key*3),
      CBC(0)).encryptor().update(24 bytes)``;
    - bulk: one key over an 8 MiB buffer, ECB, the absolute upper limit.  The "OpenSSL
      limit" is this raw throughput expressed as TACs: bulk blocks/s ÷ 3.  `cryptography`
      has no single DES: ``TripleDES(K‖K‖K)`` runs three DES operations per block, so
      OpenSSL's own single DES (libcrypto ``DES_ncbc_encrypt``, through ctypes, when the
      system library has it) is reported beside it;
(b) the numba path on all 1M records: (i) TAC keys given, (ii) TAC keys derived per
    record, (iii) derived once per distinct card, then (iv) `verify_tacs` on a batch of
    purchases and loads, keys per distinct card, and (v) `verify_card_tacs` on the same
    batch, each key derived in the bitsliced pass: what settlement runs; and the numba
    bulk DES and 3DES block rates with one key;
(c) the reference `purse.purchase_tac` per record, `diversify` included, on a 20 000
    record sample (rates extrapolate linearly: each record is independent).

    .venv/bin/python -m pytest benchmarks/test_bench_tac.py -p no:xdist --benchmark-only
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from bench_report import BULK, Report, openssl_block_rate
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from unioncard.crypto import purse
from unioncard.crypto.des import TripleDES
from unioncard.crypto.des_batch import (
    des_encrypt_blocks,
    des_key_schedule,
    tdes_encrypt_blocks,
    tdes_key_schedule,
)
from unioncard.crypto.keystore import Keystore
from unioncard.crypto.tac_batch import (
    load_tacs,
    purchase_tacs,
    tac_keys,
    tac_keys_distinct,
    verify_card_tacs,
    verify_tacs,
)

N = 1_000_000
CARDS = 100_000
SAMPLE = 20_000
TARGET = 500_000  # records verified per second, end to end, one core

report = Report("TAC verification: numba batch path vs OpenSSL DES and the reference")
rates: dict[str, float] = {}


def _rate(items: int, seconds: list[float] | float) -> float:
    median = statistics.median(seconds) if isinstance(seconds, list) else seconds
    return items / median


def _timed(action: Callable[[], Any], rounds: int = 5) -> list[float]:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return seconds


def _bcd(values: np.ndarray) -> np.ndarray:
    return ((values // 10) << 4 | values % 10).astype(np.uint8)


def make_batch(n: int = N, cards: int = CARDS, seed: int = 2026) -> dict[str, np.ndarray]:
    """n purchases of ``cards`` cards: 80% transit (type 06), 20% ETC (type 09)."""
    rng = np.random.default_rng(seed)
    keys = Keystore.test()
    masters = np.array([list(keys.purse_keys(app).tac_mk) for app in ("transit", "etc")],
                       np.uint8)
    card_index = rng.integers(0, 2, cards, dtype=np.int64) * (rng.random(cards) < 0.2)
    card_f = rng.integers(0, 256, (cards, 8), dtype=np.uint8)
    card_f[:, 0] = np.where(card_index == 0, 0x55, 0x11)
    card = rng.integers(0, cards, n)
    day = rng.integers(1, 32, n)
    seconds = rng.integers(6 * 3600, 23 * 3600, n)
    return {
        "masters": masters,
        "key_index": card_index[card],
        "diversifiers": card_f[card],
        "amount": rng.integers(100, 5_000, n).astype(np.uint32),
        "tx_type": np.where(card_index[card] == 0, 0x06, 0x09).astype(np.uint8),
        "terminal_id": rng.integers(0, 256, (5_000, 6), dtype=np.uint8)[rng.integers(0, 5_000,
                                                                                     n)],
        "terminal_seq": rng.integers(1, 1 << 24, n).astype(np.uint32),
        "date": np.stack([np.full(n, 0x20, np.uint8), np.full(n, 0x26, np.uint8),
                          np.full(n, 0x05, np.uint8), _bcd(day)], axis=1),
        "time": np.stack([_bcd(seconds // 3600), _bcd(seconds // 60 % 60), _bcd(seconds % 60)],
                         axis=1),
    }


PURCHASE = ("amount", "tx_type", "terminal_id", "terminal_seq", "date", "time")


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    made = make_batch()
    small = {k: v[:8] if k != "masters" else v for k, v in made.items()}  # compile or load first
    keys = tac_keys_distinct(small["masters"], small["key_index"], small["diversifiers"])
    purchase_tacs(keys, *(small[k] for k in PURCHASE))
    return made


@pytest.fixture(scope="module")
def keys(batch) -> np.ndarray:
    return tac_keys(batch["masters"], batch["key_index"], batch["diversifiers"])


@pytest.fixture(scope="module")
def tacs(batch, keys) -> np.ndarray:
    return purchase_tacs(keys, *(batch[k] for k in PURCHASE))


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    r = rates
    lines = []
    if "openssl_bulk" in r:
        lines.append(f"(a) OpenSSL via cryptography, bulk, one key, TripleDES(K‖K‖K) ECB over"
                     f" {BULK >> 20} MiB: {r['openssl_bulk']:,.0f} blocks/s"
                     f" → OpenSSL limit {r['openssl_bulk'] / 3:,.0f} TACs/s (blocks/s ÷ 3)")
    if "libcrypto_des" in r:
        lines.append(f"    OpenSSL libcrypto single DES (DES_ncbc_encrypt), one key, {BULK >> 20}"
                     f" MiB: {r['libcrypto_des']:,.0f} blocks/s → {r['libcrypto_des'] / 3:,.0f}"
                     f" TACs/s")
    if "openssl_record" in r:
        lines.append(f"    OpenSSL via cryptography, per record (Cipher(TripleDES(key*3), CBC(0))"
                     f".encryptor().update(24 B)): {r['openssl_record']:,.0f} TACs/s")
    if "numba_des" in r:
        lines.append(f"(b) numba bulk, one key, {N:,} blocks: DES {r['numba_des']:,.0f} blocks/s,"
                     f" 3DES {r.get('numba_tdes', float('nan')):,.0f} blocks/s")
    labels = {"keys_given": "(i) TAC keys given", "per_record": "(ii) keys derived per record",
              "per_card": "(iii) keys derived per distinct card",
              "verify": "(iv) verify_tacs, purchases and loads, keys per distinct card",
              "verify_card": "(v) verify_card_tacs, the same records, each key derived in the "
                             "bitsliced pass (what settlement runs)"}
    for key, label in labels.items():
        if key in r:
            line = f"    {label}: {r[key]:,.0f} TACs/s"
            if "openssl_bulk" in r:
                line += f", {r[key] / (r['openssl_bulk'] / 3):.2f}x the OpenSSL limit"
            if "libcrypto_des" in r:
                line += f", {r[key] / (r['libcrypto_des'] / 3):.2f}x libcrypto single DES"
            if "openssl_record" in r:
                line += f", {r[key] / r['openssl_record']:.1f}x per-record cryptography"
            if "reference" in r:
                line += f", {r[key] / r['reference']:.0f}x the reference"
            lines.append(line)
    if "reference" in r:
        lines.append(f"(c) reference purse.purchase_tac + diversify per record (sample of"
                     f" {SAMPLE:,}): {r['reference']:,.0f} TACs/s")
    for line in lines:
        report.add(line)
    report.emit(request.config)


# ---- (a) OpenSSL ----


def test_openssl_bulk_block_rate(benchmark):
    """The absolute upper limit through `cryptography`: one key, ECB, a large buffer."""
    benchmark.group = "bulk DES blocks"
    rates["openssl_bulk"] = openssl_block_rate(benchmark, report, "openssl_bulk")


def _libcrypto() -> Any:
    name = ctypes.util.find_library("crypto")
    try:
        lib = ctypes.CDLL(name or "libcrypto.so.3")
    except OSError:
        return None
    return lib if all(hasattr(lib, f) for f in ("DES_set_key_unchecked",
                                                   "DES_ncbc_encrypt")) else None


def test_openssl_libcrypto_single_des_rate(benchmark):
    """OpenSSL's own single DES (the legacy API), one key, CBC over a large buffer."""
    benchmark.group = "bulk DES blocks"
    lib = _libcrypto()
    if lib is None:
        pytest.skip("no libcrypto with the DES API")
    schedule = ctypes.create_string_buffer(128)
    lib.DES_set_key_unchecked(ctypes.create_string_buffer(bytes.fromhex("133457799BBCDFF1"), 8),
                              schedule)
    source = ctypes.create_string_buffer(bytes(BULK), BULK)
    target = ctypes.create_string_buffer(BULK)
    one = ctypes.create_string_buffer(bytes.fromhex("0123456789ABCDEF"), 8)

    def run() -> None:
        lib.DES_ncbc_encrypt(source, target, ctypes.c_long(BULK), schedule,
                             ctypes.create_string_buffer(8), 1)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    lib.DES_ncbc_encrypt(one, target, ctypes.c_long(8), schedule, ctypes.create_string_buffer(8),
                         1)
    assert target.raw[:8] == bytes.fromhex("85E813540F0AB405")
    rates["libcrypto_des"] = _rate(BULK // 8, report.median("libcrypto_des", benchmark))


def test_openssl_per_record_tacs(benchmark, batch, keys, tacs):
    """What a reference path pays: a fresh CBC context under each record's TAC key."""
    benchmark.group = "purchase TACs"
    zero = bytes(8)
    messages = [
        (bytes(keys[i]) * 3,
         int(batch["amount"][i]).to_bytes(4, "big") + bytes([batch["tx_type"][i]])
         + bytes(batch["terminal_id"][i]) + int(batch["terminal_seq"][i]).to_bytes(4, "big")
         + bytes(batch["date"][i]) + bytes(batch["time"][i]) + b"\x80\x00")
        for i in range(SAMPLE)]

    def run() -> list[bytes]:
        return [Cipher(TripleDES(key), modes.CBC(zero)).encryptor().update(data)[16:20]
                for key, data in messages]

    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert out == [bytes(t) for t in tacs[:SAMPLE]]
    rates["openssl_record"] = _rate(SAMPLE, report.median("openssl_record", benchmark))


# ---- (b) numba ----


def test_numba_bulk_des_block_rate(benchmark):
    benchmark.group = "bulk DES blocks"
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, (N, 8), dtype=np.uint8)
    schedule = des_key_schedule(np.frombuffer(bytes.fromhex("133457799BBCDFF1"), np.uint8)
                                .reshape(1, 8))
    des_encrypt_blocks(schedule, blocks[:8])
    benchmark.pedantic(des_encrypt_blocks, args=(schedule, blocks), rounds=5, iterations=1)
    rates["numba_des"] = _rate(N, report.median("numba_des", benchmark))
    tdes = tdes_key_schedule(rng.integers(0, 256, (1, 16), dtype=np.uint8))
    tdes_encrypt_blocks(tdes, blocks[:8])
    rates["numba_tdes"] = _rate(N, _timed(lambda: tdes_encrypt_blocks(tdes, blocks), 3))


def test_numba_tacs_keys_given(benchmark, batch, keys, tacs):
    """(i) purchase_tacs alone: a key schedule and 3 DES blocks per record."""
    benchmark.group = "purchase TACs"
    out = benchmark.pedantic(purchase_tacs, args=(keys, *(batch[k] for k in PURCHASE)),
                             rounds=5, iterations=1)
    assert np.array_equal(out, tacs)
    rates["keys_given"] = _rate(N, report.median("keys_given", benchmark))


def test_numba_tacs_keys_per_record(benchmark, batch, tacs):
    """(ii) tac_keys (two 3DES blocks per record) then purchase_tacs."""
    benchmark.group = "purchase TACs"

    def run() -> np.ndarray:
        derived = tac_keys(batch["masters"], batch["key_index"], batch["diversifiers"])
        return purchase_tacs(derived, *(batch[k] for k in PURCHASE))

    out = benchmark.pedantic(run, rounds=5, iterations=1)
    assert np.array_equal(out, tacs)
    rates["per_record"] = _rate(N, report.median("per_record", benchmark))


def test_numba_tacs_keys_per_card(benchmark, batch, tacs):
    """(iii) tac_keys_distinct (sort, ~100k derivations, scatter) then purchase_tacs."""
    benchmark.group = "purchase TACs"

    def run() -> np.ndarray:
        derived = tac_keys_distinct(batch["masters"], batch["key_index"], batch["diversifiers"])
        return purchase_tacs(derived, *(batch[k] for k in PURCHASE))

    out = benchmark.pedantic(run, rounds=5, iterations=1)
    assert np.array_equal(out, tacs)
    rates["per_card"] = _rate(N, report.median("per_card", benchmark))
    assert rates["per_card"] >= TARGET


def test_numba_verify_mixed_batch(benchmark, batch, tacs):
    """(iv) settlement's call: keys per distinct card, then verify_tacs on 90% purchases and
    10% loads, 0.1% of them with a damaged TAC."""
    benchmark.group = "purchase TACs"
    rng = np.random.default_rng(3)
    load = rng.random(N) < 0.1
    columns = {k: batch[k].copy() for k in PURCHASE}
    columns["tx_type"][load] = 0x02
    balance = rng.integers(0, 100_000, N).astype(np.uint32)
    seq = rng.integers(0, 1 << 16, N).astype(np.uint16)
    keys = tac_keys_distinct(batch["masters"], batch["key_index"], batch["diversifiers"])
    recorded = tacs.copy()
    recorded[load] = load_tacs(keys[load], balance[load], seq[load], columns["amount"][load],
                               0x02, columns["terminal_id"][load], columns["date"][load],
                               columns["time"][load])
    damaged = rng.random(N) < 0.001
    recorded[damaged, 0] ^= 0x5A
    for i in np.flatnonzero(load)[:200]:  # spot check of the loads against the reference
        dtk = purse.diversify(bytes(batch["masters"][batch["key_index"][i]]),
                              bytes(batch["diversifiers"][i]))
        expected = purse.load_tac(dtk, int(balance[i]), int(seq[i]), int(columns["amount"][i]),
                                  0x02, bytes(columns["terminal_id"][i]),
                                  bytes(columns["date"][i]), bytes(columns["time"][i]))
        assert bytes(recorded[i]) == expected or damaged[i]

    def run() -> np.ndarray:
        derived = tac_keys_distinct(batch["masters"], batch["key_index"], batch["diversifiers"])
        return verify_tacs(recorded, derived, balance_after=balance, card_seq=seq, **columns)

    ok = benchmark.pedantic(run, rounds=5, iterations=1)
    assert np.array_equal(ok, ~damaged)
    rates["verify"] = _rate(N, report.median("verify", benchmark))
    assert rates["verify"] >= TARGET

    def derived_in_the_pass() -> np.ndarray:
        return verify_card_tacs(recorded, batch["masters"], batch["key_index"],
                                batch["diversifiers"], balance_after=balance, card_seq=seq,
                                **columns)

    timed = []
    for _ in range(5):  # (v), measured here on the same records
        started = time.perf_counter()
        ok = derived_in_the_pass()
        timed.append(time.perf_counter() - started)
    assert np.array_equal(ok, ~damaged)
    rates["verify_card"] = N / statistics.median(timed)


# ---- (c) reference ----


def test_reference_tacs(benchmark, batch, tacs):
    """purse.purchase_tac per record, the card's DTK diversified each time."""
    benchmark.group = "purchase TACs"
    records = [(bytes(batch["masters"][batch["key_index"][i]]), bytes(batch["diversifiers"][i]),
                int(batch["amount"][i]), int(batch["tx_type"][i]), bytes(batch["terminal_id"][i]),
                int(batch["terminal_seq"][i]), bytes(batch["date"][i]), bytes(batch["time"][i]))
               for i in range(SAMPLE)]

    def run() -> list[bytes]:
        return [purse.purchase_tac(purse.diversify(mtk, f), *fields)
                for mtk, f, *fields in records]

    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert out == [bytes(t) for t in tacs[:SAMPLE]]
    rates["reference"] = _rate(SAMPLE, report.median("reference", benchmark))
