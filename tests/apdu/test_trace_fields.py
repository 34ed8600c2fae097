"""Field-by-field display of purse, PSAM and file payloads, from the construct structs."""

import json

import construct as c
import pytest

from unioncard.apdu import purse as ap
from unioncard.apdu import records
from unioncard.apdu.trace import Device, TraceRecord
from unioncard.apdu.trace_decode import describe, pair, render
from unioncard.apdu.trace_fields import command_fields, hidden_nibbles, response_fields

H = bytes.fromhex

# every struct of apdu/purse.py: (header it travels with, True for response data)
CARRIERS = {
    "INITIALIZE_COMMAND": ("805001020B", False),
    "INIT_PURCHASE_RESPONSE": ("805001020B", True),
    "INIT_LOAD_RESPONSE": ("805000020B", True),
    "DEBIT_COMMAND": ("805401000F", False),
    "DEBIT_RESPONSE": ("805401000F", True),
    "CREDIT_FOR_LOAD_COMMAND": ("805200000B", False),
    "CREDIT_FOR_LOAD_RESPONSE": ("805200000B", True),
    "BALANCE_RESPONSE": ("805C000204", True),
    "PROVE_COMMAND": ("805A000602", False),
    "PROVE_RESPONSE": ("805A000602", True),
    "MAINTENANCE_COMMAND": ("841E000004", False),
    "SAM_PURCHASE_COMMAND": ("807000001C", False),
    "SAM_PURCHASE_RESPONSE": ("807000001C", True),
    "SAM_CREDIT_COMMAND": ("8072000004", False),
    "TERMINAL_ID_RESPONSE": ("00B0960006", True),
}
NAMES = {"mac": "MAC", "mac1": "MAC1", "mac2": "MAC2", "tac": "TAC", "alg_id": "algorithm id",
         "diversifier": "card diversifier", "tx_type": "type"}


def test_every_purse_struct_has_a_carrier():
    structs = {name for name in ap.__all__ if isinstance(getattr(ap, name), c.Struct)}
    assert structs == set(CARRIERS)


@pytest.mark.parametrize("name", sorted(CARRIERS))
def test_purse_struct_round_trip(name):
    struct = getattr(ap, name)
    header, is_response = CARRIERS[name]
    size = struct.sizeof()
    raw = struct.build(struct.parse(bytes(range(1, size + 1))))

    def shown(data: bytes) -> list[tuple[str, str]]:
        if is_response:
            return response_fields(H(header), data)
        return command_fields(H(header[:8]) + bytes([len(data)]) + data)

    assert [n for n, _ in shown(raw)] == [NAMES.get(s.name, s.name.replace("_", " "))
                                          for s in struct.subcons]
    assert shown(raw[:-1]) == [] and shown(raw + b"\x00") == []


def test_prove_and_maintenance_commands():
    assert command_fields(H("805A000602000608")) == [("card seq", "6")]
    assert command_fields(H("841E00000411223344")) == [("MAC", "11223344")]
    assert command_fields(H("841800000411223344")) == [("MAC", "11223344")]


LOG = H("0005" "000000" "000000B4" "06" "310100001234" "20250318" "074212")


def test_log_record_of_sfi_18():
    assert response_fields(H("00B201C400"), LOG) == [
        ("seq", "5"), ("overdraft limit", "0.00 yuan (0 fen)"),
        ("amount", "1.80 yuan (180 fen)"), ("type", "06 (EP purchase)"),
        ("terminal id", "310100001234"), ("date", "2025-03-18"), ("time", "07:42:12")]
    assert response_fields(H("00B201C400"), LOG[:-1]) == []
    assert response_fields(H("00B201D400"), LOG) == []  # SFI 1A: no layout


def test_transit_record_of_sfi_1e():
    raw = records.build(records.TRANSIT_RECORD, tx_type=3, terminal_id=H("1001020304050607"),
                        transit_type=1, line_station=H("01020300000000"), amount=0,
                        balance_after=1820, when=H("20250318074210"), city_code=H("3100"),
                        institution=H("0000000000000001"), reserved=bytes(6))
    assert response_fields(H("00B201F400"), raw) == [
        ("transaction type", "03 (entry)"), ("terminal id", "1001020304050607"),
        ("transit type", "01 (metro)"), ("line/station", "01020300000000"),
        ("amount", "0.00 yuan (0 fen)"), ("balance after", "18.20 yuan (1820 fen)"),
        ("date-time", "2025-03-18 07:42:10"), ("city code", "3100"),
        ("institution id", "0000000000000001"), ("reserved", "000000000000")]
    assert response_fields(H("00B201F400"), raw + b"\x00") == []


CAPP = records.build(records.CAPP_RECORD, lock=0, network=H("1101"), station=H("0007"), lane=2,
                     unix_time=1_780_000_000, vehicle_class=1, status=3,
                     marker_station=bytes(9), staff_no=bytes(3), shift=1, plate="京A12345",
                     reserved=bytes(4))


def test_capp_record_read_and_written():
    fields = dict(response_fields(H("00B201CC2B"), CAPP))
    assert (fields["record id"], fields["lock"], fields["network"], fields["lane"]) == (
        "AA", "00", "1101", "02")
    assert fields["unix time"] == "1780000000 (2026-05-28 20:26:40 UTC)"
    assert (fields["status"], fields["plate"]) == ("03 (ETC entry)", "京A12345")
    assert dict(command_fields(H("80DCAAC82B") + CAPP)) == fields
    assert command_fields(H("80DCBBC82B") + b"\xbb" + CAPP[1:]) == []  # not an AA 29 record
    personalized = H("AA29") + bytes(41)
    assert dict(response_fields(H("00B201CC2B"), personalized))["plate"] == "(empty)"


def test_etc_and_t_union_ef_0015_by_length():
    etc = H("11010000FFFFFFFF" "16" "40" "1101" "1101000000000042" "20260101" "20301231"
            + "京A12345".encode("gbk").hex() + "00" * 4 + "55" "0000")
    fields = response_fields(H("00B095002B"), etc)
    assert [n for n, _ in fields] == [
        "issuer", "card type", "card version", "network", "card number", "valid from",
        "valid until", "plate", "user type", "other"]
    shown = dict(fields)
    assert (shown["card type"], shown["user type"]) == ("16", "55 (union member card)")
    assert (shown["valid from"], shown["plate"]) == ("2026-01-01", "京A12345")
    tunion = dict(response_fields(H("00B095001E"), etc[:30]))
    assert "application serial" in tunion and "plate" not in tunion


HOLDER = records.build(records.HOLDER, holder_type=0, staff_flag=0, name="王芳",
                       id_number="110105194912310021", id_type=1)


def test_holder_id_number_is_masked_in_fields_and_hex():
    assert response_fields(H("00B0960037"), HOLDER) == [
        ("holder type", "00"), ("staff flag", "00"), ("name", "王芳"),
        ("id number", "110105********0021"), ("id type", "01")]
    assert dict(response_fields(H("00B0960037"), HOLDER, unmask=True))["id number"] == \
        "110105194912310021"
    assert hidden_nibbles(H("00B0960037"), HOLDER) == set(range(56, 72))
    assert hidden_nibbles(H("00B0960006"), H("310100001234")) == set()
    assert response_fields(H("00B0960006"), H("310100001234")) == [("terminal id", "310100001234")]

    (exchange,) = pair([TraceRecord.command(H("00B0960037"), Device.CARD),
                        TraceRecord.response(HOLDER + H("9000"), Device.CARD)])
    masked = describe(exchange)
    secret = b"19491231".hex().upper()
    assert secret not in json.dumps(masked)
    assert "313130313035****************3030" in masked["response"]["hex"]
    assert "    id number: 110105********0021" in render(masked)
    unmasked = describe(exchange, unmask=True)
    assert secret in unmasked["response"]["hex"]
    assert {"name": "id number", "value": "110105194912310021"} in unmasked["response"]["fields"]
