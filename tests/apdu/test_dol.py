"""Data object lists and the EMV Book 3 §5.4 formatting rules."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.apdu import DecodeError, dol
from unioncard.apdu.dol import DolEntry

H = bytes.fromhex

# docs/protocol.md §5: a typical UnionPay PDOL.
UNIONPAY_PDOL = H("9F66049F02069F03069F1A0295055F2A029A039C019F3704DF6001")


def test_parse_unionpay_pdol():
    entries = dol.parse(UNIONPAY_PDOL)
    assert entries == [
        DolEntry(0x9F66, 4), DolEntry(0x9F02, 6), DolEntry(0x9F03, 6), DolEntry(0x9F1A, 2),
        DolEntry(0x95, 5), DolEntry(0x5F2A, 2), DolEntry(0x9A, 3), DolEntry(0x9C, 1),
        DolEntry(0x9F37, 4), DolEntry(0xDF60, 1),
    ]
    assert dol.encode(entries) == UNIONPAY_PDOL


def test_build_and_split_unionpay_pdol():
    entries = dol.parse(UNIONPAY_PDOL)
    values = {
        0x9F66: H("26000080"), 0x9F02: H("000000000200"), 0x9F03: H("000000000000"),
        0x9F1A: H("0156"), 0x95: H("0000000000"), 0x5F2A: H("0156"), 0x9A: H("261123"),
        0x9C: H("00"), 0x9F37: H("11223344"),
    }
    data = dol.build(entries, values)
    assert len(data) == 34
    assert data[-1:] == H("00")  # DF60 not supplied: zero-filled
    split = dol.split(entries, data)
    assert split[0x9F02] == H("000000000200") and split[0xDF60] == H("00")
    with pytest.raises(DecodeError):
        dol.split(entries, data[:-1])


@pytest.mark.parametrize(
    ("value", "length", "fmt", "expected"),
    [
        ("0200", 6, "n", "000000000200"),  # n: left-padded with zeros
        ("000000000200", 2, "n", "0200"),  # n: leftmost bytes dropped
        ("6212345678", 8, "cn", "6212345678FFFFFF"),  # cn: trailing FF
        ("62123456789012345F", 4, "cn", "62123456"),  # cn: rightmost bytes dropped
        ("414243", 5, "an", "4142430000"),  # an: right-padded
        ("41424344", 2, "ans", "4142"),  # ans: truncated on the right
        ("AABB", 4, "b", "AABB0000"),  # b: zero-filled
        ("AABBCC", 1, "b", "AA"),  # b: truncated on the right
        ("AABB", 2, "b", "AABB"),
    ],
)
def test_format_value_rules(value, length, fmt, expected):
    assert dol.format_value(H(value), length, fmt) == H(expected)


def test_missing_and_constructed_values_are_zeros():
    assert dol.format_value(None, 3, "n") == bytes(3)
    assert dol.format_value(H("AA"), 2, "b", constructed=True) == bytes(2)
    assert dol.build([DolEntry(0x70, 2), DolEntry(0x9F37, 4)], {0x70: H("FFFF")}) == bytes(6)


def test_dictionary_formats_drive_build():
    # 9F02 is numeric in the dictionary: padded on the left; 9F37 binary: on the right.
    data = dol.build([DolEntry(0x9F02, 6), DolEntry(0x9F37, 4)], {0x9F02: H("01"), 0x9F37: H("AA")})
    assert data == H("000000000001" "AA000000")


@pytest.mark.parametrize("raw", ["9F", "9F02", "9F0281", "9F0280"])
def test_malformed_dol_raises(raw):
    with pytest.raises(DecodeError):
        dol.parse(H(raw))


def test_encode_refuses_lengths_over_255():
    with pytest.raises(ValueError):
        dol.encode([DolEntry(0x9F02, 256)])


@given(st.binary(max_size=100))
def test_random_dols_raise_only_decode_error(raw):
    try:
        entries = dol.parse(raw)
    except DecodeError:
        return
    assert all(entry.length >= 0 for entry in entries)


@given(st.binary(max_size=40), st.integers(0, 40), st.sampled_from(["n", "cn", "an", "ans", "b"]))
def test_format_value_always_has_the_asked_length(value, length, fmt):
    out = dol.format_value(value, length, fmt)
    assert len(out) == length
    if len(value) == length:
        assert out == value
