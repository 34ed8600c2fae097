"""The fast checks of settlement agree with the reference reader and the reference path.

- Record by record: `columns._invalid` (numba) refuses exactly the records
  `OfflineRecord.from_bytes` refuses, over valid records with one to three bytes changed
  (values biased to the ones field checks turn on) and their CRC recomputed, or not.
- File by file: `decode_batch` refuses exactly the files `read_batch` refuses, with the
  same message: a damaged header, a wrong size, a bad trailer count or sum, a bad file
  CRC, a record from another terminal, any bytes changed.
- `record_crcs` is `zlib.crc32` of each row's first 252 bytes.
- `analyze_batch` (columns, numba TACs, the tariffs batch kernel) and
  `analyze_batch_reference` (one record at a time) mark the same records for the same
  reasons, on generated batches with tampered records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batch_files import records_of, with_crcs
from hypothesis import given, settings
from hypothesis import strategies as st

from unioncard.crypto import Keystore
from unioncard.errors import DecodeError
from unioncard.offline import OfflineRecord, RecordFlags, read_batch
from unioncard.settlement import RunInputs
from unioncard.settlement.analyze import analyze_batch, analyze_batch_reference
from unioncard.settlement.columns import (
    RECORD_DTYPE,
    _file_crc,
    _invalid,
    decode_batch,
    record_crcs,
)
from unioncard.settlement.errors import BatchRefused
from unioncard.settlement.generate import DayPlan, _batch_bytes, generate_day

KEYS = Keystore.test()
CITY_ONLY = Keystore.from_toml(  # the test keys for one issuer only: others are unknown
    KEYS.to_toml().replace('key_version = 0x01\n', 'key_version = 0x01\nissuer = '
                           '"10000000FFFFFFFF"\n').replace(
        'key_version = 0x02\n', 'key_version = 0x02\nissuer = "10000000FFFFFFFF"\n'))
INTERESTING = (0x00, 0x01, 0x20, 0x7F, 0x80, 0x9F, 0xC2, 0xE0, 0xED, 0xF4, 0xFF)
CREATED = dt.datetime(2026, 5, 1, 23, 30)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small generated day: 1 200 records, batches of at most 60."""
    return generate_day(tmp_path_factory.mktemp("columns-day"), DayPlan(1200, batch_records=60))


def batch_bytes(records: np.ndarray) -> bytes:
    """A well-formed batch file of ``records`` (record CRCs, sums and file CRC computed)."""
    records = with_crcs(records)
    return _batch_bytes(bytes(records["terminal_id"][0]), 7, CREATED, records)


# --- record by record ----------------------------------------------------------------------


def _varied_records(day: list[Path]) -> list[bytes]:
    """Valid records of every shape: each kind and mode of the generated day, members and
    not, and records built to sit on the edges of the checks (no TAC, unverified, no
    expiry, eight rules, text fields full, four-byte UTF-8, rounding 2)."""
    every = np.concatenate([records_of(p) for p in day]).astype(RECORD_DTYPE)
    chosen: dict[tuple[int, ...], bytes] = {}
    for row in every:
        key = (int(row["tx_type"]), int(row["mode"]), int(row["card_type"]),
               int(row["organization"][0]))
        chosen.setdefault(key, row.tobytes())
    purchase = next(OfflineRecord.from_bytes(raw) for raw in chosen.values()
                    if not OfflineRecord.from_bytes(raw).is_load)
    edges = [
        dataclasses.replace(purchase, tac=bytes(4), flags=RecordFlags.RECOVERED
                            | RecordFlags.NO_TAC),
        dataclasses.replace(purchase, tac=bytes(4), flags=RecordFlags.NO_TAC
                            | RecordFlags.UNVERIFIED),
        dataclasses.replace(purchase, card_expiry=None, rounding=2),
        dataclasses.replace(purchase, rules=(0, 1, 2, 3, 4, 5, 6, 0xFFFE)),
        dataclasses.replace(purchase, organization="工会🎉" + "会" * 12 + "ab",
                            route="R" * 16, merchant="~" * 24),
        dataclasses.replace(purchase, organization="é", route=" ", merchant="M",
                            when=dt.datetime(1000, 1, 1, 0, 0, 0),
                            card_expiry=dt.date(9999, 12, 31)),
        dataclasses.replace(purchase, when=dt.datetime(2024, 2, 29, 23, 59, 59), mode=255),
    ]
    assert len(edges[4].organization.encode()) == 48
    return [*chosen.values(), *(r.to_bytes() for r in edges)]


@pytest.fixture(scope="module")
def varied(day: list[Path]) -> list[bytes]:
    return _varied_records(day)


def reference_refuses(raw: bytes) -> bool:
    try:
        OfflineRecord.from_bytes(raw)
    except DecodeError:
        return True
    return False


def fast_refuses(rows: list[bytes]) -> list[bool]:
    data = b"".join(rows)
    raw = np.frombuffer(data, np.uint8).reshape(len(rows), 256)
    return _invalid(np.frombuffer(data, RECORD_DTYPE), raw)[0].tolist()


byte_values = st.one_of(st.sampled_from(INTERESTING), st.integers(0, 255))
changes = st.lists(st.tuples(st.integers(0, 251), byte_values), min_size=1, max_size=3)
mutants = st.lists(st.tuples(st.integers(0, 63), changes, st.integers(0, 7)), min_size=1,
                   max_size=4)


@settings(max_examples=1200)
@given(mutations=mutants)
def test_the_fast_record_checks_refuse_what_the_reference_refuses(varied, mutations):
    """Up to four valid records, each with one to three of bytes 0..251 set (to values
    the checks turn on, mostly) and its CRC recomputed (or, one time in eight, left as
    it was): numba's verdict is the reference reader's, record by record."""
    rows = []
    for pick, changed, crc in mutations:
        raw = bytearray(varied[pick % len(varied)])
        for offset, value in changed:
            raw[offset] = value
        if crc:
            raw[252:] = zlib.crc32(bytes(raw[:252])).to_bytes(4, "big")
        rows.append(bytes(raw))
    assert fast_refuses(rows) == [reference_refuses(raw) for raw in rows]


def test_every_edge_record_is_valid_and_each_field_check_is_shared(varied):
    """The edge records are valid for both; each field the reference checks, set to a
    value it refuses (CRC recomputed), is refused by numba too."""
    assert fast_refuses(varied) == [False] * len(varied)
    purchase = next(raw for raw in varied if raw[31] == 0x06)
    load = next(raw for raw in varied if raw[31] == 0x02)
    bad = {  # offset: value, on a purchase unless the name says load
        "record_version": (0, 2), "application": (27, 3), "tx_type": (31, 0x07),
        "mode of a purchase": (32, 0), "organization: a C1 control": (36, 0xC2),
        "card_expiry: month 13": (86, 0x13), "rules: a used slot after an unused one": (
            100, 0xFF), "route: DEL": (116, 0x7F), "merchant: 00 then text": (137, 0x41),
        "date: year 0999": (163, 0x09), "date: 30 February": (166, 0x30),
        "time: 24 h": (167, 0x24), "flags: unknown bit": (174, 0x08), "rounding": (207, 3),
    }
    rows = []
    for name, (offset, value) in bad.items():
        raw = bytearray(purchase)
        raw[offset] = value
        if name == "date: 30 February":
            raw[165] = 0x02
        if name == "rules: a used slot after an unused one":
            raw[100:104] = b"\xff\xff\x00\x01"
        if name == "merchant: 00 then text":
            raw[136] = 0
        raw[252:] = zlib.crc32(bytes(raw[:252])).to_bytes(4, "big")
        rows.append(bytes(raw))
    for offset, value in ((32, 1), (92, 0xFF), (100, 0x00), (175, 0x01)):  # load shapes
        raw = bytearray(load)
        raw[offset] = value
        raw[252:] = zlib.crc32(bytes(raw[:252])).to_bytes(4, "big")
        rows.append(bytes(raw))
    assert [reference_refuses(raw) for raw in rows] == [True] * len(rows)
    assert fast_refuses(rows) == [True] * len(rows)


def test_record_crcs_is_zlib_crc32():
    """On random rows (contiguous or not, any count: rows go four at a time), the CRC of
    bytes 0..251 of each."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, (1000, 256), dtype=np.uint8)
    expected = [zlib.crc32(row[:252].tobytes()) for row in raw]
    assert record_crcs(raw).tolist() == expected
    assert record_crcs(raw[::3]).tolist() == expected[::3]
    for n in range(10):
        assert record_crcs(raw[:n]).tolist() == expected[:n]
    assert record_crcs(raw[:0]).tolist() == []
    assert record_crcs(np.zeros((1, 256), np.uint8))[0] == zlib.crc32(bytes(252))


def test_the_file_crc_from_the_record_crcs_is_zlib_crc32():
    """On random files of 0 to 300 rows: the file CRC folded from each row's CRC of bytes
    0..251 is zlib's CRC of the whole file but its last 4 bytes."""
    rng = np.random.default_rng(11)
    for rows in (0, 1, 2, 7, 300):
        data = rng.integers(0, 256, 32 + 256 * rows + 32, dtype=np.uint8).tobytes()
        raw = np.frombuffer(data, np.uint8, count=256 * rows, offset=32).reshape(rows, 256)
        assert _file_crc(data, raw, record_crcs(raw)) == zlib.crc32(data[:-4]), rows


# --- file by file ----------------------------------------------------------------------------


def verdict(data: bytes) -> tuple[str, str] | tuple[str, Any]:
    """``("refused", message)`` from both readers, each checked to say the same."""
    try:
        expected = read_batch(data)
    except DecodeError as exc:
        with pytest.raises(BatchRefused) as refused:
            decode_batch(data, "f.ucb")
        assert refused.value.reason == exc.message
        assert str(refused.value) == f"f.ucb: {exc}"
        return "refused", exc.message
    decoded = decode_batch(data, "f.ucb")
    assert (decoded.terminal_id, decoded.batch_id, decoded.count) == (
        expected.terminal_id, expected.batch_id, expected.count)
    assert [OfflineRecord.from_bytes(row.tobytes()) for row in decoded.records] == list(
        expected.records)
    return "read", decoded.count


def with_record_crc(data: bytes, index: int) -> bytes:
    """Record ``index``'s CRC recomputed, and the file's."""
    at = 32 + 256 * index
    return patched(data, at + 252, zlib.crc32(data[at:at + 252]).to_bytes(4, "big"))


def patched(data: bytes, at: int, value: bytes, *, file_crc: bool = True) -> bytes:
    out = bytearray(data)
    out[at:at + len(value)] = value
    if file_crc:
        out[-4:] = zlib.crc32(bytes(out[:-4])).to_bytes(4, "big")
    return bytes(out)


@pytest.fixture(scope="module")
def small_batch(day: list[Path]) -> bytes:
    """A valid batch file of five records."""
    return batch_bytes(records_of(day[1])[:5])


def test_each_whole_file_refusal_is_the_reference_readers(small_batch):
    """Every check of `read_batch`, failed one at a time: `decode_batch` refuses the file
    with the same message; the valid file and an empty batch are read by both."""
    data = small_batch
    n = 5
    trailer = len(data) - 32
    record = bytearray(data[32:288])
    record[1] ^= 0x01  # another terminal, the record's CRC recomputed
    record[252:] = zlib.crc32(bytes(record[:252])).to_bytes(4, "big")
    cases = {
        "valid": data,
        "empty batch": _batch_bytes(data[8:14], 1, CREATED, np.zeros(0, RECORD_DTYPE)),
        "truncated below a header and a trailer": data[:63],
        "header magic": patched(data, 0, b"UCOX"),
        "format version": patched(data, 4, b"\x00\x02"),
        "record size": patched(data, 6, b"\x01\x01"),
        "a byte appended": data + b"\x00",
        "a byte cut": data[:-1],
        "a record cut": data[:32 + 256 * (n - 1)] + data[trailer:],
        "trailer magic": patched(data, trailer, b"UCOF"),
        "created: month 13": patched(data, 20, b"\x13"),
        "created: not BCD": patched(data, 24, b"\x5a"),
        "created: year 0": patched(data, 18, b"\x00\x00"),
        "a record's CRC": patched(data, 40, bytes([data[40] ^ 0x01])),
        "a record's field": with_record_crc(patched(data, 32 + 31, b"\x07"), 0),
        "file CRC": patched(data, len(data) - 1, bytes([data[-1] ^ 0x01]), file_crc=False),
        "trailer count": patched(data, trailer + 4, (n + 1).to_bytes(4, "big")),
        "trailer list sum": patched(data, trailer + 8,
                                    (int.from_bytes(data[trailer + 8:trailer + 16], "big")
                                     + 1).to_bytes(8, "big")),
        "trailer charged sum": patched(data, trailer + 16, bytes(8)),
        "a record from another terminal": patched(data, 32, bytes(record)),
        "the header names another terminal": patched(data, 13, bytes([data[13] ^ 0x01])),
        "trailer reserved bytes": patched(data, trailer + 24, b"\x01\x02\x03\x04"),
        "header reserved bytes": patched(data, 25, b"\x01"),
    }
    verdicts = {name: verdict(raw) for name, raw in cases.items()}
    read = {name for name, (kind, _) in verdicts.items() if kind == "read"}
    assert read == {"valid", "empty batch", "trailer reserved bytes", "header reserved bytes"}
    assert verdicts["the header names another terminal"][1].startswith("record 0 is from")
    assert verdicts["a record from another terminal"][1].startswith("record 0 is from terminal")
    assert verdicts["file CRC"][1].startswith("file CRC-32 mismatch")
    assert verdicts["trailer count"][1].startswith("trailer count 6")


@settings(max_examples=400)
@given(data=st.data())
def test_the_fast_file_checks_refuse_what_the_reference_refuses(small_batch, data):
    """A valid file with one to three bytes set anywhere (header, records, trailer), the
    records' CRCs recomputed or not, the file CRC recomputed or not, cut or extended at
    the end, or not: both readers refuse it, with the same message, or read the same."""
    raw = bytearray(small_batch)
    for offset, value in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1),
                                                      byte_values), min_size=1, max_size=3)):
        raw[offset] = value
    if data.draw(st.booleans(), label="record CRCs"):
        for at in range(32, len(raw) - 32, 256):
            raw[at + 252:at + 256] = zlib.crc32(bytes(raw[at:at + 252])).to_bytes(4, "big")
    if data.draw(st.booleans(), label="file CRC"):
        raw[-4:] = zlib.crc32(bytes(raw[:-4])).to_bytes(4, "big")
    end = data.draw(st.sampled_from([0, 0, 0, -1, -256, 1, 256]), label="cut or extend")
    changed = bytes(raw[:end]) if end < 0 else bytes(raw) + bytes(end)
    verdict(changed)


# --- the fast and the reference analysis ------------------------------------------------------


def _set(field: str, value: Any, at: int | None = None) -> Any:
    def change(r: np.ndarray, i: int) -> None:
        if at is None:
            r[field][i] = value
        else:
            r[field][i, at] = value
    return change


def _flip_tac(r: np.ndarray, i: int) -> None:
    r["tac"][i, 2] ^= 0x40


def _lower(r: np.ndarray, i: int) -> None:
    r["charged_amount"][i] -= 1
    r["list_amount"][i] -= 1


def _raise_list(r: np.ndarray, i: int) -> None:
    r["list_amount"][i] += 100


def _other_card_type(r: np.ndarray, i: int) -> None:
    r["card_type"][i] = 0x01 if r["card_type"][i] == 0x55 else 0x55


def _no_tac(r: np.ndarray, i: int) -> None:
    r["tac"][i], r["flags"][i] = 0, 0x03


def _version_sharing_a_hash(r: np.ndarray, i: int) -> None:
    """A rule set version other than the record's whose 64-bit hash (`Columns.version`:
    the mix chained over its four big-endian words) is the same: only the byte for byte
    check tells them apart."""
    from unioncard.settlement.keyindex import _mix

    words = [int.from_bytes(bytes(r["ruleset_version"][i][k:k + 8]), "big") for k in (0, 8, 16)]
    last = int.from_bytes(bytes(r["ruleset_version"][i][24:32]), "big")
    other = [words[0] ^ 1, *words[1:]]
    chain = []
    for version in (words, other):
        h = np.uint64(0)
        for w in version:
            h = _mix(h ^ np.uint64(w))
        chain.append(int(h))
    other.append(chain[0] ^ chain[1] ^ last)
    r["ruleset_version"][i] = np.frombuffer(b"".join(w.to_bytes(8, "big") for w in other),
                                            np.uint8)


CHANGES = [
    _flip_tac,                                             # bad TAC
    _lower,                                                # bad TAC, and re-priced
    _raise_list,                                           # the rules give another amount
    _other_card_type,                                      # priced for another card
    _set("member_status", 2),                              # reported lost: no benefit
    _set("member_status", 9),                              # no rule set can price it
    _set("mode", 42),                                      # a mode no rule set has
    _set("ruleset_version", 0x00, at=31),                  # an unknown rule set
    _set("card_expiry", [0x20, 0x26, 0x04, 0x30]),         # expired the day before
    _set("card_expiry", [0, 0, 0, 0]),                     # expiry unknown
    _no_tac,                                               # recovered without TAC
    _set("key_version", 9),                                # no such key
    _set("merchant", np.frombuffer(b"EXAMPLE-PARTNER-0001".ljust(24, b"\0"), np.uint8)),
    _set("mcc", 5812),                                     # a restaurant
    _set("category_flags", 0x07),                          # every member category
    _set("ruleset_version", 0),                            # priced by no rule set
    _version_sharing_a_hash,                               # an unknown rule set, same hash
]


def tampered(day: list[Path]) -> list[bytes]:
    """Batch files of the day with records tampered with in fields the TAC covers and in
    fields only the re-pricing looks at (each file still well formed), and a load's
    balance changed (its TAC covers it)."""
    files = []
    for number, path in enumerate(day):
        r = records_of(path)
        picks = iter(np.flatnonzero(r["tx_type"] != 0x02).tolist())
        for change in CHANGES[number % 5::5]:
            row = next(picks, None)
            if row is not None:
                change(r, row)
        loads = np.flatnonzero(r["tx_type"] == 0x02)
        if loads.size:
            r["balance_after"][loads[0]] += 1
        files.append(batch_bytes(r))
    return files


@pytest.mark.parametrize("keys", ["test", "city-only"])
def test_the_fast_and_the_reference_analyses_agree(day, tmp_path, keys):
    """On every batch of a day with tampered records, with a hotlist and with the test
    keys or keys for one issuer only: the same reasons on every record, the same verified
    TACs, rule sets and rebates."""
    first = records_of(day[0])[0]
    hotlist = tmp_path / "hotlist.csv"
    hotlist.write_text("issuer,card,listed_at\n"
                       f"{bytes(first['issuer']).hex().upper()},"
                       f"{bytes(first['diversifier']).hex().upper()},2026-05-01T12:00:00\n")
    inputs = RunInputs(KEYS if keys == "test" else CITY_ONLY, hotlist_path=str(hotlist))
    marked = 0
    for number, data in enumerate(tampered(day)):
        fast = analyze_batch(data, f"{number}.ucb", inputs)
        reference = analyze_batch_reference(data, f"{number}.ucb", inputs)
        for name in ("mask", "verified", "ruleset", "rebate"):
            assert np.array_equal(getattr(fast, name), getattr(reference, name)), (number, name)
        marked += int((fast.mask != 0).sum())
    assert marked > 2 * len(day)


def test_line_groups_are_the_distinct_kind_day_mode_and_texts(day):
    """`line_groups` puts two records in one group exactly when their head (kind, day,
    mode) and their route, merchant and organization bytes are equal; groups in order of
    appearance."""
    from unioncard.settlement.columns import line_groups

    r = np.concatenate([records_of(p) for p in day]).astype(RECORD_DTYPE)
    rng = np.random.default_rng(7)
    rows = np.flatnonzero(rng.random(len(r)) < 0.8)
    head = rng.integers(0, 3, len(rows)) << 40 | r["mode"][rows].astype(np.int64)
    first, inverse = line_groups(r, rows, head)
    keys = [(int(h), bytes(r["route"][i]), bytes(r["merchant"][i]), bytes(r["organization"][i]))
            for h, i in zip(head.tolist(), rows.tolist(), strict=True)]
    expected = list(dict.fromkeys(keys))
    assert [keys[i] for i in first.tolist()] == expected
    assert [expected[g] for g in inverse.tolist()] == keys
    assert len(expected) > 20
