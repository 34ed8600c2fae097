"""Command and response APDUs: the seven ISO 7816-4 encodings, round trips, strictness."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.apdu import CommandAPDU, DecodeError, ResponseAPDU
from unioncard.testing.strategies import command_apdus, response_apdus

H = bytes.fromhex


@pytest.mark.parametrize(
    ("raw", "case", "data", "le", "extended"),
    [
        ("00A40400", 1, b"", None, False),
        ("00B0950000", 2, b"", 256, False),
        ("00B095001E", 2, b"", 30, False),
        ("00A40000023F00", 3, H("3F00"), None, False),
        ("805001020B0100000100112233445566" + "0F", 4, H("0100000100112233445566"), 15, False),
        ("805001020B0100000100112233445566" + "00", 4, H("0100000100112233445566"), 256, False),
        ("00B00000000000", 2, b"", 65536, True),
        ("00B00000000100", 2, b"", 256, True),
        ("00DC0000000003AABBCC", 3, H("AABBCC"), None, True),
        ("00DC0000000003AABBCC0000", 4, H("AABBCC"), 65536, True),
        ("00DC0000000003AABBCC0010", 4, H("AABBCC"), 16, True),
    ],
)
def test_every_case_decodes_and_reencodes_byte_for_byte(raw, case, data, le, extended):
    command = CommandAPDU.from_bytes(H(raw))
    assert (command.case, command.data, command.le, command.extended) == (case, data, le, extended)
    assert command.to_bytes() == H(raw)


def test_select_by_name_fields():
    command = CommandAPDU.from_bytes(H("00A404000E315041592E5359532E444446303100"))
    assert (command.cla, command.ins, command.p1, command.p2) == (0x00, 0xA4, 0x04, 0x00)
    assert command.data == b"1PAY.SYS.DDF01"
    assert command.le == 256


def test_values_too_big_for_short_form_choose_extended():
    command = CommandAPDU(0x00, 0xD6, 0, 0, bytes(300))
    assert command.extended
    assert command.to_bytes()[4:7] == H("00012C")
    assert CommandAPDU(0x00, 0xB0, 0, 0, le=257).to_bytes() == H("00B00000000101")


def test_case_1_is_never_extended():
    assert CommandAPDU(0x00, 0xA4, 4, 0, extended=True).to_bytes() == H("00A40400")


def test_with_le_keeps_the_rest():
    command = CommandAPDU(0x80, 0x50, 1, 2, H("01"), 15)
    assert command.with_le(8) == CommandAPDU(0x80, 0x50, 1, 2, H("01"), 8)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "00A404",
        "00A4040002AA",  # Lc 2 with one data byte
        "00A4040002AABBCCDD",  # Lc 2 with three bytes
        "00A4040000",  # fine: case 2S, checked separately below
        "00A404000001",  # extended length field truncated
        "00A40400000000AA",  # extended Lc 0000
        "00A40400000002AA",  # extended Lc 2, one byte
        "00A40400000002AABBCC",  # extended Lc 2, one stray byte
    ],
)
def test_malformed_commands_raise_decode_error(raw):
    if raw == "00A4040000":
        assert CommandAPDU.from_bytes(H(raw)).le == 256
        return
    with pytest.raises(DecodeError) as info:
        CommandAPDU.from_bytes(H(raw))
    assert isinstance(info.value, ValueError)
    assert info.value.offset >= 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cla": 256, "ins": 0},
        {"cla": 0, "ins": -1},
        {"cla": 0, "ins": 0, "le": 0},
        {"cla": 0, "ins": 0, "le": 65537},
        {"cla": 0, "ins": 0, "data": bytes(65536)},
    ],
)
def test_invalid_fields_are_refused(kwargs):
    with pytest.raises(ValueError):
        CommandAPDU(**kwargs)


@given(command_apdus())
def test_command_round_trip(command):
    raw = command.to_bytes()
    assert CommandAPDU.from_bytes(raw) == command
    assert CommandAPDU.from_bytes(raw).to_bytes() == raw


@given(command_apdus(extended=True))
def test_extended_stays_extended(command):
    raw = command.to_bytes()
    if command.case != 1:
        assert raw[4] == 0 and len(raw) >= 7
    assert CommandAPDU.from_bytes(raw).to_bytes() == raw


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_decode_error(raw):
    try:
        command = CommandAPDU.from_bytes(raw)
    except DecodeError:
        return
    assert command.to_bytes() == raw


@given(response_apdus())
def test_response_round_trip(response):
    raw = response.to_bytes()
    parsed = ResponseAPDU.from_bytes(raw)
    assert parsed == response
    assert (parsed.sw1 << 8) | parsed.sw2 == parsed.sw
    assert parsed.to_bytes() == raw


def test_response_fields():
    response = ResponseAPDU.from_bytes(H("000003E89000"))
    assert response.data == H("000003E8")
    assert (response.sw, response.sw1, response.sw2, response.ok) == (0x9000, 0x90, 0x00, True)


@pytest.mark.parametrize("raw", ["", "90"])
def test_response_without_status_word_is_refused(raw):
    with pytest.raises(DecodeError):
        ResponseAPDU.from_bytes(H(raw))
