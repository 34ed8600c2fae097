"""pcsc-spy logs (recorded from a real pcscd + vpcd, see data/pcsc_spy/record.py)."""

import contextlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.apdu.pcsc_spy import read_spy
from unioncard.apdu.trace import Device, Direction, TraceFormat, detect_format, read_records
from unioncard.errors import DecodeError

DATA = Path(__file__).parent / "data" / "pcsc_spy"
H = bytes.fromhex

# What the recording client sent and the two virtual cards answered, in order
# (the second SELECT PPSE failed with SCARD_E_INSUFFICIENT_BUFFER: command only).
EXPECTED = [
    ("psam", ">", "00B0960006"), ("psam", "<", "0000000012349000"),
    ("card", ">", "00A404000E325041592E5359532E444446303100"),
    ("card", "<", "6F2C840E325041592E5359532E4444463031A51ABF0C1761154F08A000000632010105"
                  "500854204D454D4245528701019000"),
    ("card", ">", "00A404000E325041592E5359532E444446303100"),
    ("card", ">", "00A4040008A00000063201010500"),
    ("card", "<", "6F1E8408A000000632010105A512500854552D554E494F4E9F0801029F4E01009000"),
    ("card", ">", "00B095001E"),
    ("card", "<", "0201000000000000020100001234567890123456202401012029123155019000"),
    ("card", ">", "805C000204"), ("card", "<", "000007D09000"),
    ("card", ">", "805001020B0100000064000000001234"),
    ("card", "<", "000007D000050000000101112233449000"),
    ("psam", ">", "807000001C11223344000500000064062024010112000001010000123456789012"),
    ("psam", "<", "6108"), ("psam", ">", "00C0000008"), ("psam", "<", "000000019A8B7C6D9000"),
    ("card", ">", "00B2010C00"), ("card", "<", "6A83"),
]


def load(name: str, **options) -> list:
    with open(DATA / name, "rb") as stream:
        return list(read_spy(stream, **options))


def summary(items) -> list:
    return [(str(r.device), str(r.direction), r.data.hex().upper()) for r in items]


@pytest.mark.parametrize("name", ["spy_raw.log", "spy_display.txt", "spy_display_color.txt"])
def test_real_logs_give_the_transmitted_apdus(name):
    assert summary(load(name, psam_readers=["Virtual PCD 00 01"])) == EXPECTED


def test_without_psam_readers_everything_is_the_card():
    assert {r.device for r in load("spy_raw.log")} == {Device.CARD}


def test_raw_log_timestamps_are_utc_from_the_spy_clock():
    items = load("spy_raw.log")
    first = items[0]
    # line 25 of the fixture: 7F5D4E48BB80@>|1795452109|547254|SCardTransmit
    assert first.timestamp == datetime(2026, 11, 23, 16, 41, 49, 547254, tzinfo=UTC)
    stamps = [r.timestamp for r in items]
    assert stamps == sorted(stamps)
    assert all(r.timestamp is None for r in load("spy_display.txt"))


def test_detected_and_read_through_the_generic_reader():
    for name in ("spy_raw.log", "spy_display.txt", "spy_display_color.txt"):
        with open(DATA / name, "rb") as stream:
            assert detect_format(stream.read(4096), name) is TraceFormat.SPY
            stream.seek(0)
            assert len(list(read_records(stream))) == len(EXPECTED)


def raw_lines() -> list[bytes]:
    return (DATA / "spy_raw.log").read_bytes().splitlines(keepends=True)


def damaged(lines: list[bytes]) -> list:
    return list(read_spy(io.BytesIO(b"".join(lines))))


def test_old_five_argument_transmit_is_read():
    log = (b"1@>|10|5|SCardTransmit\n1@0x00000001\n1@0x00000005\n1@00 B2 01 0C 00 \n"
           b"1@0x00000002\n1@6A 83 \n1@<|10|9|SCardTransmit|Command successful.|0x00000000\n")
    items = list(read_spy(io.BytesIO(log)))
    assert [(r.direction, r.data) for r in items] == [(Direction.COMMAND, H("00B2010C00")),
                                                      (Direction.RESPONSE, H("6A83"))]


def test_interleaved_threads_are_followed_separately():
    log = (b"A@>|1|0|SCardTransmit\nA@0x1\nA@0x00000001\nB@>|1|1|SCardGetStatusChange\n"
           b"A@00 \nB@0x2\nA@0x00000002\nA@90 00 \nB@<|1|2|SCardGetStatusChange|x|0x0\n"
           b"A@<|1|3|SCardTransmit|Command successful.|0x00000000\n")
    assert [r.data for r in read_spy(io.BytesIO(log))] == [b"\x00", H("9000")]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: [*ls[:30], b"garbage without a thread\n", *ls[30:]], "line 31: not a pcsc-spy"),
        (lambda ls: ls[:28], "line 28: the log ends inside SCardTransmit begun at line 25"),
        (lambda ls: [ls[0].replace(b">|", b"<|"), *ls[1:]], "line 1: argument line outside"),
        (lambda ls: [*ls[:29], ls[29].replace(b"00 B0", b"00 B0 96"), *ls[30:]],
         "line 30: bSendBuffer of 6 bytes, bSendLength says 0x00000005"),
        (lambda ls: [*ls[:29], ls[29].replace(b"00 B0", b"0G B0"), *ls[30:]],
         "line 30: bSendBuffer: not a buffer of hex bytes"),
        (lambda ls: ls[:26] + ls[27:], "line 34: SCardTransmit (line 25) has 8 argument lines"),
        (lambda ls: [*ls[:25], ls[4], *ls[25:]], "line 26: SCardConnect begins before"),
    ],
)
def test_damaged_raw_logs_name_the_line(edit, message):
    with pytest.raises(DecodeError, match=re.escape(message)):
        damaged(edit(raw_lines()))


def test_damaged_display_names_the_line():
    lines = (DATA / "spy_display.txt").read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(b" i  0000 00 B0 96"))
    broken = [*lines[:at], lines[at].replace(b"0000 00", b"0010 00"), *lines[at + 1:]]
    with pytest.raises(DecodeError, match=f"line {at + 1}: malformed hex dump"):
        list(read_spy(io.BytesIO(b"".join(broken))))
    with pytest.raises(DecodeError, match="line 1: neither a pcsc-spy raw log nor"):
        list(read_spy(io.BytesIO(b"hello\n")))
    with pytest.raises(DecodeError, match="ends inside SCardTransmit"):
        list(read_spy(io.BytesIO(b"".join(lines[: at + 1]))))


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(raw):
    for candidate in (raw, b"1@" + raw, b"SCardTransmit\n" + raw):
        with contextlib.suppress(DecodeError):
            list(read_spy(io.BytesIO(candidate)))


@given(st.lists(st.integers(0, 144), max_size=6), st.data())
def test_mutated_real_log_raises_only_decode_errors(cuts, data):
    lines = raw_lines()
    for cut in cuts:
        if cut < len(lines):
            line = bytearray(lines[cut])
            line[data.draw(st.integers(0, len(line) - 1))] = data.draw(
                st.sampled_from(b"@|<>0F \n"))
            lines[cut] = bytes(line)
    with contextlib.suppress(DecodeError):
        damaged(lines)
