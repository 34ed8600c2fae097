"""Batch files: round trips, every refusal of read_batch, atomic writes, the documented reader."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import stat
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unioncard.errors import DecodeError
from unioncard.offline import (
    BATCH_HEADER,
    BATCH_TRAILER,
    Application,
    Batch,
    OfflineRecord,
    RecordFlags,
    TransactionType,
    batch_file_name,
    encode_batch,
    read_batch,
    write_batch,
)
from unioncard.testing.record_strategies import batches

DOC = Path(__file__).resolve().parents[2] / "docs" / "records.md"
TERMINAL = bytes.fromhex("310100001234")
CREATED = dt.datetime(2026, 5, 1, 23, 0, 5)


def record(seq: int, charged: int = 180, terminal_id: bytes = TERMINAL) -> OfflineRecord:
    return OfflineRecord(
        terminal_id=terminal_id, terminal_seq=seq, issuer=bytes(8),
        diversifier=bytes.fromhex("5500000000000042"), application=Application.TRANSIT,
        card_seq=seq, key_version=1, tx_type=TransactionType.EP_PURCHASE, mode=1, card_type=0x55,
        list_amount=200, charged_amount=charged, balance_after=10_000 - seq,
        when=dt.datetime(2026, 5, 1, 8, 30, seq % 60), tac=seq.to_bytes(4, "big"))


RECORDS = [record(1), record(2, 200), record(3, 150)]


def sample() -> bytes:
    return encode_batch(TERMINAL, 42, CREATED, RECORDS)


def with_file_crc(data: bytes | bytearray) -> bytes:
    data = bytearray(data)
    data[-4:] = zlib.crc32(data[:-4]).to_bytes(4, "big")
    return bytes(data)


def patched(data: bytes, offset: int, new: bytes) -> bytes:
    """``data`` with ``new`` at ``offset`` and the file CRC made valid again."""
    return with_file_crc(data[:offset] + new + data[offset + len(new):])


def refused(data: bytes, message: str) -> DecodeError:
    with pytest.raises(DecodeError, match=message) as caught:
        read_batch(data)
    return caught.value


# --- layout and round trips ----------------------------------------------------------


def test_layout_of_a_batch_file():
    data = sample()
    assert BATCH_HEADER.sizeof() == BATCH_TRAILER.sizeof() == 32
    assert len(data) == 32 + 3 * 256 + 32
    assert data[:32].hex().upper() == (
        "55434F52" "0001" "0100" "310100001234" "0000002A" "20260501230005" + "00" * 7)
    assert data[32:288] == RECORDS[0].to_bytes() and data[544:800] == RECORDS[2].to_bytes()
    trailer = data[800:]
    assert trailer[:4] == b"UCOE" and int.from_bytes(trailer[4:8], "big") == 3
    assert int.from_bytes(trailer[8:16], "big") == 600
    assert int.from_bytes(trailer[16:24], "big") == 530
    assert trailer[24:28] == bytes(4)
    assert int.from_bytes(trailer[28:], "big") == zlib.crc32(data[:-4])


def test_read_gives_back_what_was_written():
    batch = read_batch(sample())
    assert (batch.terminal_id, batch.batch_id, batch.created) == (TERMINAL, 42, CREATED)
    assert batch.records == tuple(RECORDS) and batch.count == 3
    assert (batch.list_total, batch.charged_total) == (600, 530)
    assert batch.file_name == "310100001234-00000042.ucb"


@settings(max_examples=50)
@given(batches())
def test_round_trip(batch):
    data = encode_batch(batch.terminal_id, batch.batch_id, batch.created, batch.records)
    assert read_batch(data) == batch
    assert len(data) == 64 + 256 * batch.count


@settings(max_examples=50)
@given(batches(max_records=2), st.data())
def test_any_flipped_byte_is_refused(batch, data):
    raw = bytearray(encode_batch(batch.terminal_id, batch.batch_id, batch.created,
                                 batch.records))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecodeError):
        read_batch(bytes(raw))


@settings(max_examples=50)
@given(batches(max_records=2), st.data())
def test_any_truncation_or_extension_is_refused(batch, data):
    raw = encode_batch(batch.terminal_id, batch.batch_id, batch.created, batch.records)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        read_batch(raw[:cut])
    with pytest.raises(DecodeError):
        read_batch(raw + data.draw(st.binary(min_size=1, max_size=600)))


def test_an_empty_batch_is_valid():
    batch = read_batch(encode_batch(TERMINAL, 0, CREATED, []))
    assert batch.records == () and batch.list_total == batch.charged_total == 0


# --- every refusal of read_batch -----------------------------------------------------


@pytest.mark.parametrize("size", [0, 31, 63])
def test_refuses_a_file_too_short_for_header_and_trailer(size):
    assert refused(sample()[:size], "truncated").offset == size


@pytest.mark.parametrize("cut", [1, 100, 255])
def test_refuses_a_truncated_file(cut):
    data = sample()[:-cut]
    assert refused(data, "is not header \\+ n × 256 \\+ trailer").offset == len(data)


def test_refuses_a_file_truncated_by_whole_records():
    data = sample()[:-256]
    assert refused(data, "bad trailer magic").offset == len(data) - 32


@pytest.mark.parametrize("extra", [b"\x00", bytes(256), b"UCOE" + bytes(28)])
def test_refuses_extra_bytes(extra):
    refused(sample() + extra, "is not header|bad trailer magic")


def test_refuses_a_bad_header_magic():
    assert refused(b"UCOX" + sample()[4:], "bad header magic").offset == 0


def test_refuses_an_unknown_format_version():
    assert refused(patched(sample(), 4, b"\x00\x02"), "format_version 2").offset == 4


def test_refuses_another_record_size():
    assert refused(patched(sample(), 6, b"\x00\x80"), "record_size 128").offset == 6


def test_refuses_a_bad_trailer_magic():
    data = patched(sample(), 800, b"UCOF")
    assert refused(data, "bad trailer magic").offset == 800


def test_refuses_a_bad_creation_time():
    data = patched(sample(), 18, bytes.fromhex("20261301000000"))
    assert refused(data, "bad header: .*not a BCD date and time").offset == 18


def test_refuses_a_wrong_count():
    data = patched(sample(), 804, (2).to_bytes(4, "big"))
    assert refused(data, "trailer count 2, the file holds 3 records").offset == 804


def test_refuses_a_wrong_list_sum():
    data = patched(sample(), 808, (601).to_bytes(8, "big"))
    assert refused(data, "list_amount sum 601, the records add up to 600").offset == 808


def test_refuses_a_wrong_charged_sum():
    data = patched(sample(), 816, (529).to_bytes(8, "big"))
    assert refused(data, "charged_amount sum 529, the records add up to 530").offset == 816


def test_refuses_a_record_with_a_bad_crc():
    data = patched(sample(), 288 + 90, b"\x99")  # record 1's list amount, file CRC fixed
    error = refused(data, "record 1: record CRC-32 mismatch")
    assert error.offset == 288 + 252
    assert error.partial == [RECORDS[0]]


def test_refuses_a_record_with_a_bad_field():
    bad = bytearray(RECORDS[2].to_bytes())
    bad[167:170] = bytes.fromhex("256000")
    bad[252:] = zlib.crc32(bad[:252]).to_bytes(4, "big")
    data = patched(sample(), 544, bytes(bad))
    assert refused(data, "record 2: bad time").offset == 544 + 167


def test_refuses_a_bad_file_crc():
    data = bytearray(sample())
    data[-1] ^= 0x01
    assert refused(bytes(data), "file CRC-32 mismatch").offset == len(data) - 4
    data = bytearray(sample())
    data[14] ^= 0x01  # the header's batch id: only the file CRC covers it
    assert refused(bytes(data), "file CRC-32 mismatch").offset == len(data) - 4


def test_refuses_a_record_from_another_terminal():
    foreign = record(2, 200, terminal_id=bytes.fromhex("310100009999"))
    data = patched(sample(), 288, foreign.to_bytes())
    error = refused(data, "record 1 is from terminal 310100009999, the batch header names "
                          "310100001234")
    assert error.offset == 288 + 1


def test_reserved_bytes_are_ignored_but_covered_by_the_file_crc():
    data = patched(patched(sample(), 25, b"\xee" * 7), 824, b"\xee" * 4)
    assert read_batch(data) == read_batch(sample())


# --- encoding refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((TERMINAL[:5], 1, CREATED, []), "terminal_id must be 6 bytes"),
        ((TERMINAL, -1, CREATED, []), "batch_id must be an unsigned 32-bit"),
        ((TERMINAL, 1 << 32, CREATED, []), "batch_id must be an unsigned 32-bit"),
        ((TERMINAL, 1, CREATED.replace(microsecond=5), []), "whole seconds"),
        ((TERMINAL, 1, CREATED.replace(tzinfo=dt.UTC), []), "naive datetime"),
        ((TERMINAL, 1, CREATED, [record(1, terminal_id=bytes(6))]),
         "record 0 is from terminal 000000000000"),
        ((TERMINAL, 1, CREATED, [RECORDS[0].to_bytes()]), "record 0 is a bytes"),
    ],
)
def test_encode_refuses(args, message):
    with pytest.raises(ValueError, match=message):
        encode_batch(*args)


def test_batch_fields_are_derived_not_given():
    with pytest.raises(TypeError):
        Batch(TERMINAL, 1, CREATED, (), 0, 0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="records must be a tuple"):
        Batch(TERMINAL, 1, CREATED, RECORDS)  # type: ignore[arg-type]


# --- file names ----------------------------------------------------------------------


def test_batch_file_name():
    assert batch_file_name(TERMINAL, 42) == "310100001234-00000042.ucb"
    assert batch_file_name(bytes.fromhex("ABCDEF012345"), 0xFFFF_FFFF) == \
        "ABCDEF012345-4294967295.ucb"
    with pytest.raises(ValueError):
        batch_file_name(TERMINAL, -1)
    with pytest.raises(ValueError):
        batch_file_name(b"\x31", 1)


# --- writing -------------------------------------------------------------------------


def test_write_batch_writes_the_encoded_bytes_and_reads_back(tmp_path):
    path = write_batch(tmp_path / batch_file_name(TERMINAL, 42), TERMINAL, 42, CREATED,
                       RECORDS)
    assert path == tmp_path / "310100001234-00000042.ucb"
    assert path.read_bytes() == sample()
    assert read_batch(path).records == tuple(RECORDS)
    assert read_batch(str(path)) == read_batch(memoryview(sample()))
    assert os.listdir(tmp_path) == [path.name]


def test_write_batch_gives_the_permissions_open_would(tmp_path):
    umask = os.umask(0o027)
    try:
        path = write_batch(tmp_path / "b.ucb", TERMINAL, 1, CREATED, [])
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_writing_the_same_batch_again_is_harmless(tmp_path):
    path = tmp_path / batch_file_name(TERMINAL, 42)
    write_batch(path, TERMINAL, 42, CREATED, RECORDS)
    before = path.read_bytes()
    write_batch(path, TERMINAL, 42, CREATED, RECORDS)
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


def test_a_different_batch_never_replaces_a_batch_file(tmp_path):
    """Two journals exporting for one terminal id would both write its batch 42: the
    second is refused, and the first file, with its records, stays."""
    path = tmp_path / batch_file_name(TERMINAL, 42)
    write_batch(path, TERMINAL, 42, CREATED, RECORDS[:1])
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="a different file already has this name"):
        write_batch(path, TERMINAL, 42, CREATED, RECORDS)
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("failing", ["link", "fsync"])
def test_a_failed_write_leaves_no_temporary_file_and_the_old_file_intact(
        tmp_path, monkeypatch, failing):
    path = write_batch(tmp_path / "b.ucb", TERMINAL, 42, CREATED, RECORDS[:1])
    before = path.read_bytes()
    path.unlink()  # the name is free again: the write below gets as far as the link

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        write_batch(path, TERMINAL, 42, CREATED, RECORDS)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []  # no temporary file, no half-written batch
    path.write_bytes(before)


def test_invalid_records_are_refused_before_any_file_is_created(tmp_path):
    with pytest.raises(ValueError):
        write_batch(tmp_path / "b.ucb", TERMINAL, 42, CREATED, [record(1, terminal_id=bytes(6))])
    assert os.listdir(tmp_path) == []


# --- the documented third-party reader -----------------------------------------------


def test_the_documented_reader_without_unioncard_agrees_with_read_batch(tmp_path):
    blocks = re.findall(r"```python\n(# read a batch without unioncard\n.*?)```",
                        DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    scope: dict[str, object] = {}
    exec(blocks[0], scope)
    read_records = scope["read_records"]
    recovered = dataclasses.replace(RECORDS[1], flags=RecordFlags.RECOVERED)
    path = write_batch(tmp_path / "b.ucb", TERMINAL, 42, CREATED, [RECORDS[0], recovered])
    rows = list(read_records(path))  # type: ignore[operator]
    assert [
        (r["terminal_id"], r["terminal_seq"], r["card_seq"], r["tx_type"], r["list_amount"],
         r["charged_amount"], r["balance_after"], r["when"], r["tac"]) for r in rows
    ] == [
        (x.terminal_id.hex().upper(), x.terminal_seq, x.card_seq, x.tx_type, x.list_amount,
         x.charged_amount, x.balance_after, f"{x.when:%Y%m%d%H%M%S}", x.tac.hex().upper())
        for x in read_batch(path).records
    ]
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="CRC"):
        list(read_records(path))  # type: ignore[operator]
