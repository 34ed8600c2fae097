"""The 256-byte offline record: layout, round trips, CRC, validation, the documented bytes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from records_doc import code_block, documented_dump, section  # tests/offline: test path

from unioncard.errors import DecodeError
from unioncard.offline import (
    OFFLINE_RECORD,
    RECORD_LAYOUT,
    Application,
    OfflineRecord,
    RecordFlags,
    TransactionType,
)
from unioncard.offline.record import _compiled
from unioncard.testing.record_strategies import offline_records


def purchase(**changes: object) -> OfflineRecord:
    """A valid bus purchase whose every field has a distinctive value."""
    fields: dict[str, object] = dict(
        terminal_id=bytes.fromhex("A1A2A3A4A5A6"), terminal_seq=0xB1B2B3B4,
        issuer=bytes.fromhex("C1C2C3C4C5C6C7C8"), diversifier=bytes.fromhex("D1D2D3D4D5D6D7D8"),
        application=Application.ETC, card_seq=0xE1E2, key_version=0xE3,
        tx_type=TransactionType.CAPP_PURCHASE, mode=6, card_type=0x55, category_flags=0x05,
        member_status=0x02, organization="工会", card_expiry=dt.date(2031, 2, 28),
        list_amount=0x0A0B0C0D, charged_amount=0x0A0B0C00, balance_after=0x01020304,
        rules=(3, 0x1234), route="G60", station=0x5152, entry_station=0x6162,
        merchant="M-1", vehicle_class=4, mcc=0x7172,
        when=dt.datetime(2026, 12, 31, 23, 59, 58), tac=bytes.fromhex("F1F2F3F4"),
        flags=RecordFlags.RECOVERED, ruleset_version=bytes(range(32)), rounding=2)
    fields.update(changes)
    return OfflineRecord(**fields)


def load(**changes: object) -> OfflineRecord:
    return dataclasses.replace(purchase(), tx_type=TransactionType.EP_LOAD, mode=0,
                               charged_amount=500, list_amount=500, rules=(),
                               ruleset_version=bytes(32), **changes)


def with_crc(raw: bytes | bytearray) -> bytes:
    """The bytes with their CRC recomputed (to reach the checks after the CRC)."""
    raw = bytearray(raw)
    raw[252:] = zlib.crc32(raw[:252]).to_bytes(4, "big")
    return bytes(raw)


def patched(raw: bytes, offset: int, new: bytes) -> bytes:
    return with_crc(raw[:offset] + new + raw[offset + len(new):])


# --- layout --------------------------------------------------------------------------


def test_the_record_is_256_bytes_and_fields_sit_at_their_documented_offsets():
    raw = purchase().to_bytes()
    assert OFFLINE_RECORD.sizeof() == len(raw) == 256
    expected = {
        0: "01", 1: "A1A2A3A4A5A6", 7: "B1B2B3B4", 11: "C1C2C3C4C5C6C7C8",
        19: "D1D2D3D4D5D6D7D8", 27: "02", 28: "E1E2", 30: "E3", 31: "09", 32: "06", 33: "55",
        34: "05", 35: "02", 36: "E5B7A5E4BC9A" + "00" * 42, 84: "20310228", 88: "0A0B0C0D",
        92: "0A0B0C00", 96: "01020304", 100: "00031234" + "FFFF" * 6,
        116: "473630" + "00" * 13, 132: "5152", 134: "6162", 136: "4D2D31" + "00" * 21,
        160: "04", 161: "7172", 163: "20261231", 167: "235958", 170: "F1F2F3F4", 174: "01",
        175: bytes(range(32)).hex(), 207: "02", 208: "00" * 44,
        252: f"{zlib.crc32(raw[:252]):08X}",
    }
    offset = 0
    for at, hexa in expected.items():
        assert at == offset, "the expected slices cover the record without gaps"
        size = len(hexa) // 2
        assert raw[at:at + size].hex().upper() == hexa.upper(), f"field at offset {at}"
        offset += size
    assert offset == 256


def test_documented_table_matches_the_declaration():
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\w+) \|", section("## The record"), re.M)
    assert [(name, int(off), int(size)) for off, size, name in rows] == list(RECORD_LAYOUT)


def test_documented_modes_rounding_and_types_agree_with_the_engine():
    from unioncard.crypto.purse import TransactionType
    from unioncard.tariffs.model import Mode
    from unioncard.tariffs.money import ROUNDING_CODES

    modes = re.search(r"^\| meaning \| (.*) \|$", section("## The record"), re.M)
    assert modes is not None
    assert modes.group(1).split(" | ") == ["load"] + [m.label for m in sorted(Mode)]
    assert [m.value for m in sorted(Mode)] == list(range(1, 8))
    assert {r.value: c for r, c in ROUNDING_CODES.items()} == {
        "half-up": 0, "half-even": 1, "down": 2}
    for tx in TransactionType:
        assert TransactionType[tx.name] == tx


# --- round trips and the CRC ---------------------------------------------------------


@given(offline_records())
def test_round_trip(record):
    raw = record.to_bytes()
    assert len(raw) == 256
    assert OfflineRecord.from_bytes(raw) == record
    assert OfflineRecord.from_bytes(raw).to_bytes() == raw


@given(offline_records())
def test_compiled_parser_agrees_with_the_declaration(record):
    raw = record.to_bytes()
    fast, reference = _compiled().parse(raw), OFFLINE_RECORD.parse(raw)
    assert {k: v for k, v in fast.items() if not k.startswith("_")} == {
        k: v for k, v in reference.items() if not k.startswith("_")}


@given(offline_records(), st.integers(0, 255), st.integers(1, 255))
def test_crc_detects_any_flipped_byte(record, index, mask):
    raw = bytearray(record.to_bytes())
    raw[index] ^= mask
    with pytest.raises(DecodeError, match="CRC-32 mismatch") as caught:
        OfflineRecord.from_bytes(bytes(raw))
    assert caught.value.offset == 252


def test_crc_is_zlib_crc32_of_bytes_0_to_251():
    raw = purchase().to_bytes()
    assert int.from_bytes(raw[252:], "big") == zlib.crc32(raw[:252])
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the check value docs/records.md gives


def test_reserved_bytes_are_ignored_on_read_and_written_as_zeros():
    raw = purchase().to_bytes()
    dirty = patched(raw, 208, b"\x5a" * 44)
    assert OfflineRecord.from_bytes(dirty) == purchase()
    assert OfflineRecord.from_bytes(dirty).to_bytes() == raw


def test_known_answer_record_in_the_docs():
    scope: dict[str, object] = {}
    exec(code_block("# known-answer record"), scope)
    record = scope["record"]
    assert isinstance(record, OfflineRecord)
    assert record.to_bytes() == documented_dump("## An annotated record")
    assert OfflineRecord.from_bytes(documented_dump("## An annotated record")) == record


# --- refusals when decoding ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 255, 257, 512])
def test_from_bytes_refuses_a_wrong_size(size):
    with pytest.raises(DecodeError, match=f"256 bytes, got {size}"):
        OfflineRecord.from_bytes(bytes(size))


def test_from_bytes_refuses_an_unknown_version_after_checking_the_crc():
    raw = purchase().to_bytes()
    with pytest.raises(DecodeError, match="unknown record_version 2") as caught:
        OfflineRecord.from_bytes(patched(raw, 0, b"\x02"))
    assert caught.value.offset == 0
    damaged = b"\x02" + raw[1:]
    crc = f"{zlib.crc32(damaged[:252]):08X}"
    with pytest.raises(DecodeError, match=f"expected {crc} .*found {raw[252:].hex().upper()}"):
        OfflineRecord.from_bytes(damaged)


@pytest.mark.parametrize(
    ("offset", "new", "message"),
    [
        (84, bytes.fromhex("20311302"), "card_expiry.*not a BCD date"),
        (84, bytes.fromhex("2031A201"), "card_expiry.*not a BCD date"),
        (163, bytes.fromhex("20260230"), "date.*not a BCD date"),
        (163, bytes(4), "date: 00000000 is not a transaction date"),
        (167, bytes.fromhex("245900"), "time.*not a BCD time"),
        (167, bytes.fromhex("1260A0"), "time.*not a BCD time"),
        (36, b"\xff\xfe", "organization.*not utf-8"),
        (36, b"A\x00B", "organization.*00 byte inside"),
        (36, b"a\x07" + bytes(4), "organization: control characters"),
        (116, b"\xc3\xa9", "route.*not ascii"),
        (136, b"\x01", "merchant: printable ASCII"),
        (100, bytes.fromhex("0001FFFF0002"), "rules.*used rule slot after an unused one"),
        (27, b"\x03", "application: unknown application 3"),
        (31, b"\x05", "tx_type: 0x05 is not"),
        (32, b"\x00", "mode: mode 0 is a load"),
        (174, b"\x08", "flags: unknown flags"),
        (174, b"\x04", "flags: UNVERIFIED implies NO_TAC"),
        (170, bytes(4), "tac: must be zeros exactly when"),
        (207, b"\x03", "rounding: 3 is not"),
        (92, (0x0A0B0C0E).to_bytes(4, "big"), "charged_amount: .* exceeds the list amount"),
        (163, bytes.fromhex("09991231"), "when: years before 1000"),
    ],
)
def test_from_bytes_names_the_bad_field_and_its_offset(offset, new, message):
    raw = patched(purchase().to_bytes(), offset, new)
    with pytest.raises(DecodeError, match=message) as caught:
        OfflineRecord.from_bytes(raw)
    assert caught.value.offset == offset


def test_from_bytes_refuses_inconsistent_loads():
    raw = load().to_bytes()
    for offset, new, field in [(32, b"\x01", "mode"), (92, bytes(4), "charged_amount"),
                               (100, b"\x00\x01", "rules"), (175, b"\x01", "ruleset_version")]:
        with pytest.raises(DecodeError, match=f"{field}: a load") as caught:
            OfflineRecord.from_bytes(patched(raw, offset, new))
        assert caught.value.offset == offset


# --- validation on construction ------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"terminal_id": bytes(5)}, "terminal_id: must be 6 bytes"),
        ({"issuer": "C1C2C3C4C5C6C7C8"}, "issuer: must be bytes"),
        ({"ruleset_version": bytes(31)}, "ruleset_version: must be 32 bytes"),
        ({"tac": bytearray(4)}, "tac: must be bytes"),
        ({"terminal_seq": 1 << 32}, "terminal_seq: must be an unsigned 32-bit"),
        ({"card_seq": -1}, "card_seq: must be an unsigned 16-bit"),
        ({"key_version": True}, "key_version: must be an int"),
        ({"list_amount": 1.5}, "list_amount: must be an int"),
        ({"application": 3}, "application: unknown application 3"),
        ({"flags": 8}, "flags: unknown flags"),
        ({"flags": RecordFlags.UNVERIFIED, "tac": bytes(4)}, "UNVERIFIED implies NO_TAC"),
        ({"flags": RecordFlags.NO_TAC}, "tac: must be zeros exactly when"),
        ({"tac": bytes(4)}, "tac: must be zeros exactly when"),
        ({"tx_type": 0x01}, "tx_type: 0x01 is not"),
        ({"rounding": 3}, "rounding: 3 is not"),
        ({"organization": "工" * 17}, "organization: 51 bytes, the field holds 48"),
        ({"organization": "a\x00"}, "organization: control characters"),
        ({"organization": "\ud800"}, "organization: not encodable"),
        ({"organization": b"union"}, "organization: must be a str"),
        ({"route": "x" * 17}, "route: 17 bytes, the field holds 16"),
        ({"route": "地铁1号线"}, "route: printable ASCII only"),
        ({"merchant": "m\n"}, "merchant: printable ASCII only"),
        ({"merchant": "m" * 25}, "merchant: 25 bytes, the field holds 24"),
        ({"rules": tuple(range(9))}, "rules: 9 rules, a record holds at most 8"),
        ({"rules": (0xFFFF,)}, "rules: rule index 65535"),
        ({"rules": (-1,)}, "rules: rule index -1"),
        ({"rules": "01"}, "rules: must be a tuple"),
        ({"when": dt.date(2026, 5, 1)}, "when: must be a datetime"),
        ({"when": dt.datetime(2026, 5, 1, tzinfo=dt.UTC)}, "when: must be naive"),
        ({"when": dt.datetime(2026, 5, 1, 8, 30, 0, 1)}, "when: .*whole seconds"),
        ({"when": dt.datetime(999, 5, 1)}, "when: years before 1000"),
        ({"card_expiry": dt.datetime(2030, 1, 1)}, "card_expiry: must be a date or None"),
        ({"card_expiry": dt.date(999, 1, 1)}, "card_expiry: years before 1000"),
        ({"mode": 0}, "mode: mode 0 is a load"),
        ({"charged_amount": 0x0A0B0C0E}, "charged_amount: .* exceeds the list amount"),
    ],
)
def test_construction_refuses_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        purchase(**changes)


def test_loads_are_checked_for_what_a_load_is():
    assert load().is_load and load().discount == 0
    with pytest.raises(ValueError, match="mode: a load has mode 0"):
        dataclasses.replace(load(), mode=1)
    with pytest.raises(ValueError, match="charged_amount: a load charges"):
        dataclasses.replace(load(), charged_amount=499)
    with pytest.raises(ValueError, match="rules: a load applies no"):
        dataclasses.replace(load(), rules=(1,))
    with pytest.raises(ValueError, match="ruleset_version: a load has no rule set"):
        dataclasses.replace(load(), ruleset_version=b"\x01" * 32)


def test_values_are_normalized():
    record = purchase(application=1, flags=3, rules=[4, 5], mode=TransactionType.EP_PURCHASE,
                      tac=bytes(4))
    assert record.application is Application.TRANSIT
    assert type(record.flags) is RecordFlags
    assert record.flags == RecordFlags.RECOVERED | RecordFlags.NO_TAC
    assert record.rules == (4, 5) and type(record.mode) is int
    assert hash(record) == hash(OfflineRecord.from_bytes(record.to_bytes()))


def test_text_at_its_byte_limit_round_trips():
    record = purchase(organization="工" * 16, route="R" * 16, merchant="~" * 24)
    assert OfflineRecord.from_bytes(record.to_bytes()) == record


def test_the_record_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        purchase().mode = 1


# --- derived values and JSON ---------------------------------------------------------


def test_to_dict_is_json_ready():
    record = purchase(flags=RecordFlags.RECOVERED | RecordFlags.NO_TAC, tac=bytes(4))
    d = record.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["terminal_id"] == "A1A2A3A4A5A6" and d["tac"] == "00000000"
    assert d["application"] == "etc" and d["flags"] == ["RECOVERED", "NO_TAC"]
    assert d["when"] == "2026-12-31T23:59:58" and d["card_expiry"] == "2031-02-28"
    assert d["list_amount"] - d["charged_amount"] == d["discount"] == 13 == record.discount
    assert d["ruleset_version"] == bytes(range(32)).hex() and d["rules"] == [3, 0x1234]
    assert d["record_version"] == 1 and not record.is_load
    assert purchase(card_expiry=None, flags=0).to_dict()["card_expiry"] is None


@given(offline_records())
def test_to_dict_always_serializes(record):
    assert json.loads(json.dumps(record.to_dict())) == record.to_dict()


def test_importing_offline_loads_neither_the_tariff_engine_nor_numba_nor_pyscard():
    script = ("import sys, unioncard.offline; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('numba', 'numpy', 'smartcard') or m.startswith('unioncard.tariffs')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
