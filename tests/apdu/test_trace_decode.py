"""Decoding traces for people: pairing, command names, TLV trees, fields, PAN masking."""

import json

import pytest

from unioncard.apdu.trace import Device, TraceRecord
from unioncard.apdu.trace_decode import Exchange, describe, mask_digits, pair, render
from unioncard.apdu.trace_fields import command_fields, response_fields, yuan

H = bytes.fromhex
PAN = "6230580000123456789"


def cmd(hex_text: str, device: Device = Device.CARD) -> TraceRecord:
    return TraceRecord.command(H(hex_text), device)


def rsp(hex_text: str, device: Device = Device.CARD) -> TraceRecord:
    return TraceRecord.response(H(hex_text), device)


def one(command: TraceRecord, response: TraceRecord, unmask: bool = False) -> dict:
    (exchange,) = pair([command, response])
    return describe(exchange, unmask)


def test_pairing_per_device_with_unanswered_and_orphans():
    records = [cmd("805C000204"), cmd("00B0960006", Device.PSAM),
               rsp("3101000012349000", Device.PSAM), cmd("00B2010C00"), rsp("6A83"),
               rsp("9000", Device.PSAM), cmd("00840000 04")]
    got = [(e.device, e.command and e.command.data.hex(), e.response and e.response.data.hex())
           for e in pair(records)]
    assert got == [
        (Device.PSAM, "00b0960006", "3101000012349000"),
        (Device.CARD, "805c000204", None),          # superseded: unanswered
        (Device.CARD, "00b2010c00", "6a83"),
        (Device.PSAM, None, "9000"),                # orphan
        (Device.CARD, "0084000004", None),          # still waiting at the end
    ]
    assert [e.number for e in pair(records)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("digits", "masked"), [
    (PAN, "623058*********6789"),
    ("6212345678901234", "621234******1234"),
    ("1234567890", "******7890"),
    ("1234", "1234"),
])
def test_mask_digits(digits, masked):
    assert mask_digits(digits) == masked


RECORD = ("70 51 5A 0A 6230580000123456789F"
          " 57 13 6230580000123456789D29122010000000000F"
          " 9F6B 13 6230580000123456789D29122010000000000F"
          " 56 12 42 36 32 31 32 33 34 35 36 37 38 39 30 31 32 33 34 5E"
          " 5F24 03 291231 9000")


def test_pans_are_masked_in_the_tree_and_in_the_hex():
    entry = one(cmd("00B2010C00"), rsp(RECORD))
    text = json.dumps(entry)
    assert "0000123456" not in text and "3123456" not in text
    record = entry["response"]["tlv"][0]
    by_tag = {node["tag"]: node for node in record["children"]}
    assert by_tag["5A"]["text"] == "623058*********6789"
    assert by_tag["5A"]["value"] == "623058*********6789F"
    assert by_tag["57"]["value"].startswith("623058*********6789D2912")
    assert by_tag["9F6B"]["value"].startswith("623058*********6789D")
    assert by_tag["56"]["text"] == "B621234******1234^"
    assert by_tag["5F24"]["text"] == "291231"
    assert "623058*********6789F" in entry["response"]["hex"]
    lines = "\n".join(render(entry))
    assert "62 30 58 ** ** ** ** *6 78 9F" in lines and "0000123456" not in lines


def test_unmask_shows_the_pan():
    entry = one(cmd("00B2010C00"), rsp(RECORD), unmask=True)
    by_tag = {node["tag"]: node for node in entry["response"]["tlv"][0]["children"]}
    assert by_tag["5A"]["text"] == PAN
    assert "*" not in entry["response"]["hex"]


def test_command_description():
    entry = one(cmd("00A404000E325041592E5359532E444446303100"), rsp("6A82"))
    command = entry["command"]
    assert command["name"] == "SELECT"
    header = (command["cla"], command["ins"], command["p1"], command["p2"])
    assert header == ("00", "A4", "04", "00")
    assert (command["lc"], command["le"]) == (14, 256)
    assert command["detail"] == "by name 325041592E5359532E4444463031 '2PAY.SYS.DDF01'"
    assert entry["response"] == {"sw": "6A82", "meaning": "file or application not found",
                                 "data": None, "hex": "6A82", "timestamp": None}


def test_malformed_apdus_are_described_not_raised():
    entry = one(cmd("00A4040002AA"), rsp("90"))
    assert "does not match" in entry["command"]["error"]
    assert entry["response"]["error"] == "response shorter than its status word"
    lines = render(entry)
    assert any("malformed command" in line for line in lines)
    assert any("malformed response" in line for line in lines)


def test_tlv_error_when_tlv_was_expected():
    entry = one(cmd("00A4040000"), rsp("6F0584 03A000 9000"))
    assert entry["response"]["tlv_error"]["offset"] == 0
    assert "tlv" not in entry["response"]
    assert any("not valid BER-TLV" in line for line in render(entry))


def test_raw_purse_answers_get_fields():
    entry = one(cmd("805001020B0100000064310100001234 0F"),
                rsp("000007D0 0005 000000 01 00 5A3C9E71 9000"))
    fields = {f["name"]: f["value"] for f in entry["response"]["fields"]}
    assert fields["balance"] == "20.00 yuan (2000 fen)"
    assert fields["offline seq"] == "5"
    assert {f["name"]: f["value"] for f in entry["command"]["fields"]}["amount"] == \
        "1.00 yuan (100 fen)"


def test_get_response_reads_with_the_command_it_continues():
    records = [cmd("807000001C" + "00" * 28, Device.PSAM), rsp("6108", Device.PSAM),
               cmd("00C0000008", Device.PSAM), rsp("0000012378B8B6C09000", Device.PSAM)]
    last = list(pair(records))[-1]
    assert isinstance(last, Exchange) and last.origin[:2] == H("8070")
    fields = describe(last)["response"]["fields"]
    assert fields == [{"name": "terminal seq", "value": "291"},
                      {"name": "MAC1", "value": "78B8B6C0"}]


def test_fields_need_the_exact_layout():
    assert response_fields(H("805C000204"), H("000007")) == []
    assert command_fields(H("805001020B01")) == []
    assert yuan(5) == "0.05 yuan (5 fen)"
    tunion = H("0310000000000000" "02" "01" "03102024000012345678" "20240101" "20341231" "55" "05")
    fields = dict(response_fields(H("00B095001E"), tunion))
    assert fields["card type"] == "55 (union member card)"
    assert fields["member categories"] == "05 (model worker, mutual-aid participant)"


def test_render_of_a_timestamped_exchange():
    from datetime import datetime, timedelta, timezone

    at = datetime(2025, 3, 18, 7, 42, tzinfo=timezone(timedelta(hours=8)))
    records = [TraceRecord.command(H("805C000204"), Device.CARD, at),
               TraceRecord.response(H("000007D09000"), Device.CARD, at)]
    lines = render(describe(next(pair(records))))
    assert lines[0] == "#1  2025-03-18T07:42:00+08:00  card  GET BALANCE"
    assert lines[1:] == ["  > 80 5C 00 02 04", "  < 00 00 07 D0 90 00",
                         "    balance: 20.00 yuan (2000 fen)", "    SW 9000: ok"]
