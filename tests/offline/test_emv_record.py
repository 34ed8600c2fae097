"""The EMV card record: layout, round trips, validation, the documented bytes, batches of
both kinds, and batch files of purse records only as earlier releases wrote them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import struct
import zlib
from pathlib import Path

import pytest
from records_doc import code_block, documented_dump, section  # tests/offline: test path

from unioncard.crypto import emv
from unioncard.errors import DecodeError
from unioncard.offline import (
    EMV_RECORD_LAYOUT,
    EmvPath,
    EmvRecord,
    OfflineRecord,
    decode_record,
    encode_batch,
    read_batch,
)

TERMINAL = bytes.fromhex("310100001234")
KNOWN_IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # docs/protocol.md §5
KNOWN_UDK = bytes.fromhex("73AD54688CEF2934B0979857E3C719F1")


def sale(**changes: object) -> EmvRecord:
    """A valid EMV sale whose fields have distinctive values."""
    fields: dict[str, object] = dict(
        terminal_id=TERMINAL, terminal_seq=0xB1B2B3B4, pan="6230120000000004242",
        psn="07", aid=bytes.fromhex("A000000333010102"), cid=0x40,
        ac=bytes.fromhex("C1C2C3C4C5C6C7C8"), amount_other=0, tvr=bytes.fromhex("0000048000"),
        unpredictable_number=bytes.fromhex("D1D2D3D4"), aip=bytes.fromhex("7D00"), atc=0xE1E2,
        iad=bytes.fromhex("0701010360000001") + bytes(24), arc=b"00", path=EmvPath.ONLINE,
        card_expiry=dt.date(2031, 2, 28), card_type=0x55, category_flags=0x05,
        member_status=0x02, organization="工会", list_amount=0x0A0B0C0D,
        charged_amount=0x0A0B0C00, rules=(3, 0x1234), merchant="M-1", mcc=5411,
        when=dt.datetime(2026, 12, 31, 23, 59, 58), ruleset_version=bytes(range(32)),
        rounding=2)
    fields.update(changes)
    return EmvRecord(**fields)  # type: ignore[arg-type]


def with_crc(raw: bytes | bytearray) -> bytes:
    raw = bytearray(raw)
    raw[252:] = zlib.crc32(raw[:252]).to_bytes(4, "big")
    return bytes(raw)


def test_layout_is_256_bytes_with_kind_terminal_and_crc_where_every_record_has_them():
    layout = {name: (offset, size) for name, offset, size in EMV_RECORD_LAYOUT}
    assert layout["record_version"] == (0, 1) and layout["terminal_id"] == (1, 6)
    assert layout["crc"] == (252, 4) and sum(size for _, _, size in EMV_RECORD_LAYOUT) == 256


def test_round_trip_and_dispatch_by_kind():
    record = sale()
    raw = record.to_bytes()
    assert raw[0] == 0xE1 and EmvRecord.from_bytes(raw) == record
    assert decode_record(raw) == record and record.discount == 13 and not record.is_load
    assert isinstance(decode_record(sale().to_bytes()), EmvRecord)
    # an ARQC the issuer approved (qPBOC online), an empty ARC, a short IAD
    other = sale(cid=0x80, path=EmvPath.QPBOC_ONLINE, arc=b"", iad=bytes(7), pan="623012000042")
    assert EmvRecord.from_bytes(other.to_bytes()) == other


def test_the_covered_values_rebuild_from_the_record():
    values = sale().ac_values()
    assert list(values) == list(emv.AC_TAGS)
    assert values[0x9F02] == bytes.fromhex("000168496128")  # 0x0A0B0C00 fen as n12
    assert values[0x9A] == bytes.fromhex("261231") and values[0x9F36] == b"\xE1\xE2"
    assert sale().cvr == bytes.fromhex("03600000") and sale().dki == 1


@pytest.mark.parametrize(("changes", "field"), [
    ({"cid": 0x00}, "cid"),  # an AAC: declined sales are not records
    ({"cid": 0x80}, "cid"),  # an ARQC outside qPBOC online
    ({"pan": "12345678901"}, "pan"), ({"pan": "1234567890123456789A"}, "pan"),
    ({"psn": "1"}, "psn"), ({"aid": bytes(4)}, "aid"), ({"iad": bytes(6)}, "iad"),
    ({"iad": bytes(33)}, "iad"), ({"arc": b"\x00\x01"}, "arc"), ({"path": 6}, "path"),
    ({"charged_amount": 0, "list_amount": 0}, "charged_amount"),
    ({"charged_amount": 5, "list_amount": 4}, "charged_amount"), ({"atc": 1 << 16}, "atc"),
    ({"merchant": "商户"}, "merchant"), ({"rounding": 3}, "rounding"),
    ({"when": dt.datetime(2026, 1, 1, microsecond=5)}, "when"), ({"tvr": bytes(4)}, "tvr"),
])
def test_construction_refuses_invalid_fields(changes: dict[str, object], field: str):
    with pytest.raises(ValueError, match=f"^{field}: "):
        sale(**changes)


def test_decoding_names_the_offset_of_what_is_wrong():
    raw = bytearray(sale().to_bytes())
    with pytest.raises(DecodeError, match="CRC-32 mismatch") as caught:
        decode_record(bytes(raw[:100]) + b"\xFF" + bytes(raw[101:]))
    assert caught.value.offset == 252
    raw[39] = 0x00  # an AAC
    with pytest.raises(DecodeError, match="cid") as caught:
        decode_record(with_crc(raw))
    assert caught.value.offset == 39
    raw = bytearray(sale().to_bytes())
    raw[22] = 3  # an AID of 3 bytes
    with pytest.raises(DecodeError, match="aid") as caught:
        decode_record(with_crc(raw))
    assert caught.value.offset == 22
    raw = bytearray(sale().to_bytes())
    raw[0] = 0x02
    with pytest.raises(DecodeError, match="unknown record_version 02") as caught:
        decode_record(with_crc(raw))
    assert caught.value.offset == 0
    with pytest.raises(DecodeError, match="unknown record_version 225"):
        OfflineRecord.from_bytes(sale().to_bytes())  # a purse-only reader refuses it


def test_to_dict_masks_the_pan():
    doc = sale().to_dict()
    assert doc["pan"] == "623012*********4242" and doc["kind"] == "emv"
    assert doc["values"]["9F02"] == "000168496128" and doc["path"] == "online"
    assert sale().to_dict(unmask=True)["pan"] == "6230120000000004242"


def test_documented_table_matches_the_declaration():
    table = section("## The EMV card record")
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\w+) \|", table, re.M)
    assert [(name, int(off), int(size)) for off, size, name in rows] == list(EMV_RECORD_LAYOUT)
    paths = re.search(r"^\| meaning \| (.*) \|$", table, re.M)
    assert paths is not None
    assert [p.split(" (")[0] for p in paths.group(1).split(" | ")] == [
        p.label for p in EmvPath]


def test_known_answer_record_in_the_docs_and_its_tc_verifies():
    scope: dict[str, object] = {}
    exec(code_block("# known-answer EMV record"), scope)
    record = scope["record"]
    assert isinstance(record, EmvRecord)
    assert record.to_bytes() == documented_dump("## An annotated EMV record")
    assert EmvRecord.from_bytes(documented_dump("## An annotated EMV record")) == record
    udk = emv.derive_udk(KNOWN_IMK, record.pan, record.psn)
    assert emv.same_key(udk, KNOWN_UDK)  # the public option A vector
    ac = emv.application_cryptogram(emv.session_key(udk, record.atc),
                                    emv.ac_data(record.ac_values(), record.cvr))
    assert ac == record.ac


def purse_record() -> OfflineRecord:
    from unioncard.offline import Application, TransactionType

    return OfflineRecord(
        terminal_id=TERMINAL, terminal_seq=42, issuer=bytes.fromhex("10000000FFFFFFFF"),
        diversifier=bytes.fromhex("5500000000000042"), application=Application.TRANSIT,
        card_seq=5, key_version=1, tx_type=TransactionType.EP_PURCHASE, mode=7,
        card_type=0x55, list_amount=200, charged_amount=180, balance_after=1820,
        when=dt.datetime(2026, 5, 1, 8, 30, 15), tac=bytes.fromhex("1A2B3C4D"))


def test_a_batch_carries_both_kinds_and_sums_them():
    records = [purse_record(), sale(), purse_record().__class__(
        **{**_fields(purse_record()), "terminal_seq": 43, "card_seq": 6})]
    raw = encode_batch(TERMINAL, 9, dt.datetime(2026, 5, 1, 23, 0), records)
    batch = read_batch(raw, emv=True)
    assert batch.records == tuple(records)
    with pytest.raises(DecodeError, match="record 1: an EMV card record") as caught:
        read_batch(raw)  # a reader of purse records only refuses the file, never skips a sale
    assert caught.value.offset == 32 + 256
    assert batch.list_total == 400 + sale().list_amount
    assert batch.charged_total == 360 + sale().charged_amount
    with pytest.raises(ValueError, match="from terminal"):
        encode_batch(bytes(6), 9, dt.datetime(2026, 5, 1, 23, 0), [sale()])


def test_a_purse_only_batch_file_as_earlier_releases_wrote_it_still_reads():
    """Built byte by byte from the version-1 layout (not with this release's writer)."""
    record = bytes.fromhex(
        "01310100001234" "0000002A" "10000000FFFFFFFF" "5500000000000042" "01" "0005" "01"
        "06" "07" "55" "00" "00") + bytes(48) + bytes.fromhex(
        "00000000" "000000C8" "000000B4" "0000071C") + b"\xFF" * 16 + bytes(16) + bytes(
        4) + bytes(24) + bytes(3) + bytes.fromhex("20260501" "083015" "1A2B3C4D" "00") + bytes(
        32) + bytes(1) + bytes(44)
    record += struct.pack(">I", zlib.crc32(record))
    header = b"UCOR" + struct.pack(">HH", 1, 256) + TERMINAL + struct.pack(">I", 3) \
        + bytes.fromhex("20260501230000") + bytes(7)
    body = header + record + b"UCOE" + struct.pack(">IQQ", 1, 200, 180) + bytes(4)
    data = body + struct.pack(">I", zlib.crc32(body))
    batch = read_batch(data)
    assert batch.records == (purse_record(),) and batch.batch_id == 3
    assert encode_batch(TERMINAL, 3, dt.datetime(2026, 5, 1, 23), [purse_record()]) == data


def test_the_documented_standard_library_reader_refuses_an_emv_record(tmp_path: Path):
    scope: dict[str, object] = {}
    exec(code_block("# read a batch without unioncard"), scope)
    path = tmp_path / "b.ucb"
    path.write_bytes(encode_batch(TERMINAL, 1, dt.datetime(2026, 5, 1), [purse_record()]))
    assert [r["tac"] for r in scope["read_records"](path)] == ["1A2B3C4D"]  # type: ignore[operator]
    path.write_bytes(encode_batch(TERMINAL, 1, dt.datetime(2026, 5, 1), [sale()]))
    with pytest.raises(ValueError, match="unknown record version"):
        list(scope["read_records"](path))  # type: ignore[operator]


def test_replacing_a_field_keeps_validation():
    with pytest.raises(ValueError, match=r"^cid: "):
        dataclasses.replace(sale(), cid=0x00)


# --- helpers ---------------------------------------------------------------------------------


def _fields(record: OfflineRecord) -> dict[str, object]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def test_paths_by_the_kernel_s_names():
    assert [EmvPath.of_label(p.label) for p in EmvPath] == list(EmvPath)
    with pytest.raises(ValueError, match="no EMV approval path 'declined'"):
        EmvPath.of_label("declined")
