"""Byte layouts of the purse files: sizes from docs/protocol.md, round trips, strictness."""

import datetime as dt

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from unioncard.apdu import DecodeError, records


@pytest.mark.parametrize(
    ("layout", "size"),
    [(records.TRANSIT_INFO, 30), (records.ETC_INFO, 43), (records.HOLDER, 55),
     (records.LOG_RECORD, 23), (records.CAPP_RECORD, 43)],
)
def test_sizes_match_the_protocol(layout, size):
    assert layout.sizeof() == size


def test_etc_info_fields_at_their_offsets():
    raw = bytes.fromhex(
        "11010000FFFFFFFF" "16" "40" "1101" "1101000000000042" "20260101" "20301231"
        + "京A12345".encode("gbk").hex() + "00" * 4 + "55" "0000")
    info = records.parse(records.ETC_INFO, raw)
    assert info.card_no == raw[12:20]  # the profile's ETC diversifier: bytes 12-19
    assert (info.plate, info.user_type, info.start) == ("京A12345", 0x55, dt.date(2026, 1, 1))
    assert records.build(records.ETC_INFO, **{k: v for k, v in info.items() if k != "_io"}) == raw


def test_capp_record_starts_with_aa29_and_rejects_others():
    fields = dict(lock=0, network=b"\x11\x01", station=b"\x00\x07", lane=2,
                  unix_time=1_780_000_000, vehicle_class=1, status=3,
                  marker_station=bytes(9), staff_no=bytes(3), shift=1, plate="", reserved=bytes(4))
    raw = records.build(records.CAPP_RECORD, **fields)
    assert raw[:2] == b"\xaa\x29" and raw[8:12] == (1_780_000_000).to_bytes(4, "big")
    assert records.parse(records.CAPP_RECORD, raw).status == 3
    with pytest.raises(DecodeError):
        records.parse(records.CAPP_RECORD, b"\xbb" + raw[1:])


def test_parse_refuses_wrong_sizes_and_bad_dates():
    with pytest.raises(DecodeError, match="expected 23 bytes"):
        records.parse(records.LOG_RECORD, bytes(22))
    bad = bytearray(23)
    bad[16:20] = bytes.fromhex("20261301")
    with pytest.raises(DecodeError, match="BCD date"):
        records.parse(records.LOG_RECORD, bytes(bad))
    assert records.parse(records.LOG_RECORD, bytes(23)).date is None  # never set


def test_build_refuses_text_that_does_not_fit():
    with pytest.raises(ValueError, match="holds 20"):
        records.build(records.HOLDER, holder_type=0, staff_flag=0, name="欧阳" * 6,
                      id_number="", id_type=0)


@given(st.binary(min_size=23, max_size=23))
@example(bytes(17) + bytes.fromhex("010101000000"))  # dated 0001-01-01
@example(bytes(17) + bytes.fromhex("100101000000"))  # dated 0010-01-01
def test_log_records_parse_or_raise_decode_error(raw):
    try:
        record = records.parse(records.LOG_RECORD, raw)
    except DecodeError:
        return
    fields = {k: v for k, v in record.items() if k != "_io"}
    assert records.build(records.LOG_RECORD, **fields) == raw


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 255),
       st.binary(min_size=6, max_size=6), st.dates(dt.date(1990, 1, 1), dt.date(2099, 12, 31)))
def test_log_record_round_trip(seq, amount, tx_type, terminal, date):
    raw = records.build(records.LOG_RECORD, seq=seq, overdraft=0, amount=amount,
                        tx_type=tx_type, terminal_id=terminal, date=date, time=b"\x12\x30\x00")
    parsed = records.parse(records.LOG_RECORD, raw)
    assert (parsed.seq, parsed.amount, parsed.date) == (seq, amount, date)


def test_transit_record_is_48_bytes_with_fields_at_their_offsets():
    layout = records.TRANSIT_RECORD
    assert layout.sizeof() == 48
    offsets, pos = {}, 0
    for sub in layout.subcons:
        offsets[sub.name] = pos
        pos += sub.sizeof()
    assert offsets == {"tx_type": 0, "terminal_id": 1, "transit_type": 9, "line_station": 10,
                       "amount": 17, "balance_after": 21, "when": 25, "city_code": 32,
                       "institution": 34, "reserved": 42}
    raw = records.build(layout, tx_type=records.TransitRecordType.EXIT,
                        terminal_id=bytes(range(8)), transit_type=1, line_station=bytes(7),
                        amount=300, balance_after=1520, when=bytes.fromhex("20250318074210"),
                        city_code=bytes.fromhex("3100"), institution=bytes(8), reserved=bytes(6))
    assert raw[0] == 0x04 and raw[17:21] == (300).to_bytes(4, "big")
    assert raw[25:32].hex() == "20250318074210" and raw[32:34] == b"\x31\x00"
    assert records.parse(layout, raw).balance_after == 1520
