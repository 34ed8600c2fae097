"""The text trace format: grammar, errors with line and offset, round trips, streaming."""

import contextlib
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.apdu.trace import Device, Direction, TraceRecord
from unioncard.apdu.trace_text import (
    MAX_LINE,
    TextTraceWriter,
    format_record,
    parse_line,
    read_text,
)
from unioncard.errors import DecodeError
from unioncard.testing.trace_strategies import records

H = bytes.fromhex


def read(text: str | bytes) -> list[TraceRecord]:
    raw = text.encode() if isinstance(text, str) else text
    return list(read_text(io.BytesIO(raw)))


def write(items: list[TraceRecord]) -> bytes:
    out = io.BytesIO()
    with TextTraceWriter(out) as writer:
        for item in items:
            writer.write(item)
    return out.getvalue()


def test_every_optional_part_of_the_grammar():
    text = (
        "# a transit purchase\n"
        "\n"
        "> 00A4040008A000000632010105 00\n"
        "< 6F 1E 84 08 a0 00 00 06 32 01 01 05 90 00   # FCI, lower case hex\n"
        "psam > 00 B0 96 00 06\n"
        "PSAM\t<\t000000001234 9000\n"
        "2024-05-01T08:30:00.125+08:00 > 805C000204\n"
        "card 2024-05-01T08:30:00.250+08:00 < 000007D0 9000\r\n"
        "card 2024-05-01T08:30:01>80500102\n"
        "   card <   \n"
    )
    got = read(text)
    cst = timezone(timedelta(hours=8))
    assert got == [
        TraceRecord(Device.CARD, Direction.COMMAND, H("00A4040008A00000063201010500")),
        TraceRecord(Device.CARD, Direction.RESPONSE, H("6F1E8408A0000006320101059000")),
        TraceRecord(Device.PSAM, Direction.COMMAND, H("00B0960006")),
        TraceRecord(Device.PSAM, Direction.RESPONSE, H("0000000012349000")),
        TraceRecord(Device.CARD, Direction.COMMAND, H("805C000204"),
                    datetime(2024, 5, 1, 8, 30, 0, 125000, cst)),
        TraceRecord(Device.CARD, Direction.RESPONSE, H("000007D09000"),
                    datetime(2024, 5, 1, 8, 30, 0, 250000, cst)),
        TraceRecord(Device.CARD, Direction.COMMAND, H("80500102"), datetime(2024, 5, 1, 8, 30, 1)),
        TraceRecord(Device.CARD, Direction.RESPONSE, b""),
    ]


def test_comments_may_hold_any_bytes():
    raw = "> 9000 # 工会会员卡\n".encode("gbk") + b"< 9000 #\xff\xfe\n"
    assert [r.data for r in read(raw)] == [H("9000"), H("9000")]


def test_byte_order_mark_is_ignored():
    assert read(b"\xef\xbb\xbf> 00B2010C00\n")[0].data == H("00B2010C00")


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("> 9000\n00A4\n", "line 2: no '>'", 7),
        ("> 9000\n< 90 0\n", "line 2: odd number of hex digits (3)", 8),
        ("> 90G0\n", "line 1: 'G' is not a hex digit", 4),
        ("reader > 9000\n", "line 1: 'reader' is neither a device nor an ISO 8601", 0),
        ("card 2024-13-01T00:00 > 9000\n", "line 1: '2024-13-01T00:00' is neither", 5),
        ("psam 2024-05-01 extra > 9000\n", "line 1: more than a device and a timestamp", 16),
        ("tap 2024-05-01 > 9000\n", "line 1: unknown device 'tap'", 0),
        ("> 90 \u00e9 00\n", "line 1: non-ASCII byte outside a comment", 5),
    ],
)
def test_malformed_lines_name_line_and_offset(text, message, offset):
    with pytest.raises(DecodeError) as caught:
        read(text)
    assert str(caught.value.message).startswith(message)
    assert caught.value.offset == offset


def test_over_long_line_is_refused_without_reading_it_all():
    stream = io.BytesIO(b"> " + b"00" * MAX_LINE + b"\n> 9000\n")
    with pytest.raises(DecodeError, match="line 1: longer than"):
        list(read_text(stream))
    assert stream.tell() <= MAX_LINE + 1


def test_reading_is_lazy():
    stream = io.BytesIO(b"> 00B2010C00\n" + b"garbage\n")
    reader = read_text(stream)
    assert next(reader).data == H("00B2010C00")
    with pytest.raises(DecodeError, match="line 2"):
        next(reader)


def test_writer_output_and_comments():
    out = io.BytesIO()
    writer = TextTraceWriter(out)
    writer.comment("purchase, fare 2.00")
    writer.write(TraceRecord.command(H("805C000204"), Device.PSAM,
                                     datetime(2024, 5, 1, 8, 30, tzinfo=UTC)), "balance")
    writer.flush()
    assert out.getvalue() == (b"# purchase, fare 2.00\n"
                              b"psam 2024-05-01T08:30:00+00:00 > 80 5C 00 02 04 # balance\n")
    writer.close()
    assert not out.closed  # not opened by the writer
    with pytest.raises(ValueError, match="one line"):
        writer.comment("two\nlines")
    assert format_record(TraceRecord.command(b"")) == "card >"


def test_writer_open_owns_the_file(tmp_path):
    path = tmp_path / "t.txt"
    with TextTraceWriter.open(path) as writer:
        writer.write(TraceRecord.response(H("9000")))
    assert path.read_bytes() == b"card < 90 00\n"


@given(st.lists(records(), max_size=20))
def test_read_of_write_is_identity(items):
    assert read(write(items)) == items


@given(st.lists(records(), max_size=20))
def test_write_of_read_is_identity(items):
    text = write(items)
    assert write(read(text)) == text


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_errors(raw):
    try:
        read(raw)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(raw)


@given(st.text(alphabet="<> \t#0123456789abcdefcardpsamT:-+.\n", max_size=120))
def test_near_miss_text_raises_only_decode_errors(text):
    with contextlib.suppress(DecodeError):
        read(text)


def test_parse_line_skips_blank_and_comment_lines():
    assert parse_line(b"   \t\n") is None
    assert parse_line(b"  # only a comment\n") is None
