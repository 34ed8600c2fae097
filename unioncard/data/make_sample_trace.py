"""Writes sample_trace.txt: one bus fare paid with a union member card, as a terminal traced it.

Run from the repository root: ``python unioncard/data/make_sample_trace.py``.
The purse values are internally consistent (PROTOCOL.md §2, §6): the card's
purchase and TAC keys are diversified from the project's test master keys
(transit purse, key version 01) with the card's diversifier, and MAC1, MAC2
and TAC are computed with the PBOC MAC, so a settlement run can verify the
TAC of this trace.  Test keys only, never production keys.  The cryptography
is `unioncard.crypto.purse`.
"""

from __future__ import annotations

import io
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from unioncard.apdu.trace import Device, TraceRecord
from unioncard.apdu.trace_text import TextTraceWriter
from unioncard.crypto.purse import (
    TransactionType,
    diversify,
    purchase_mac1,
    purchase_mac2,
    purchase_session_key,
    purchase_tac,
)

H = bytes.fromhex
OUT = Path(__file__).with_name("sample_trace.txt")

# PROTOCOL.md §6, transit purse (key version 01): purchase and TAC master keys
MPK = H("404142434445464748494A4B4C4D4E4F")
MTK = H("606162636465666768696A6B6C6D6E6F")


CST = timezone(timedelta(hours=8))
START = datetime(2025, 3, 18, 7, 42, 10, 120000, tzinfo=CST)

# the card
PAN_TRACK2 = H("6230580000123456789D29122010000000000F")  # track 2 equivalent (57)
PAN = H("6230580000123456789F")  # 5A, 19 digits
APP_SERIAL = H("03102024000012345678")  # T-Union application serial (10 bytes)
DIVERSIFIER = APP_SERIAL[-8:]
EF_0015 = (H("0310000000000000") + H("02") + H("01") + APP_SERIAL + H("20240101")
           + H("20341231") + H("55") + H("01"))  # card type 55: union member; model worker
BALANCE = 2000  # fen
OFFLINE_SEQ = 5
RANDOM = H("5A3C9E71")
# the terminal and its PSAM
TERMINAL_ID = H("310100001234")
TERMINAL_SEQ = 291
FARE = 200  # 2.00 yuan; members pay 10% less
AMOUNT = FARE - FARE // 10  # 180 fen
DATE, TIME = H("20250318"), H("074212")
PURCHASE = TransactionType.EP_PURCHASE

PDOL = H("9F66049F02069F03069F1A0295055F2A029A039C019F3704DF6001")


def tlv(tag: str, value: bytes) -> bytes:
    assert len(value) < 0x80
    return H(tag) + bytes((len(value),)) + value


def script() -> list[tuple[str, Device, bytes, bytes, str]]:
    """(section comment or "", device, command, response, comment) in order."""
    sespk = purchase_session_key(diversify(MPK, DIVERSIFIER), RANDOM, OFFLINE_SEQ, TERMINAL_SEQ)
    mac1 = purchase_mac1(sespk, AMOUNT, PURCHASE, TERMINAL_ID, DATE, TIME)
    mac2 = purchase_mac2(sespk, AMOUNT)
    tac = purchase_tac(diversify(MTK, DIVERSIFIER), AMOUNT, PURCHASE, TERMINAL_ID, TERMINAL_SEQ,
                       DATE, TIME)
    amount = AMOUNT.to_bytes(4, "big")
    tseq = TERMINAL_SEQ.to_bytes(4, "big")
    ok = H("9000")

    ppse = b"2PAY.SYS.DDF01"
    debit_entry = tlv("4F", H("A000000333010101")) + tlv("50", b"PBOC DEBIT") + tlv("87", H("01"))
    transit_entry = tlv("4F", H("A000000632010105")) + tlv("50", b"T-UNION") + tlv("87", H("02"))
    fci_ppse = tlv("6F", tlv("84", ppse) + tlv("A5", tlv("BF0C", tlv("61", debit_entry)
                                                          + tlv("61", transit_entry))))
    fci_debit = tlv("6F", tlv("84", H("A000000333010101")) + tlv("A5",
        tlv("50", b"PBOC DEBIT") + tlv("87", H("01")) + tlv("9F38", PDOL) + tlv("5F2D", b"zh")
        + tlv("BF0C", tlv("9F4D", H("0B0A")))))
    pdol_data = (H("28000000") + H("000000000000") + H("000000000000") + H("0156")
                 + H("0000000000") + H("0156") + DATE[1:] + H("00") + H("1A2B3C4D") + H("00"))
    gpo = H("80A80000") + bytes((len(pdol_data) + 2,)) + tlv("83", pdol_data) + H("00")
    gpo_answer = tlv("77", tlv("82", H("7C00")) + tlv("94", H("08010100" "10010100"))
                     + tlv("9F36", H("0012")) + tlv("57", PAN_TRACK2) + tlv("5F34", H("01")))
    record_1 = tlv("70", tlv("57", PAN_TRACK2) + tlv("5F20", b"WANG/FANG")
                   + tlv("9F1F", b"0000000000"))
    record_2 = tlv("70", tlv("5A", PAN) + tlv("5F24", H("291231")) + tlv("5F25", H("240101"))
                   + tlv("5F28", H("0156")) + tlv("9F07", H("FF00"))
                   + tlv("8E", H("000000000000000042031E031F00")) + tlv("5F34", H("01")))
    fci_transit = tlv("6F", tlv("84", H("A000000632010105")) + tlv("A5",
        tlv("50", b"T-UNION") + tlv("9F08", H("02")) + tlv("9F0C", EF_0015)))
    sam_data = (RANDOM + OFFLINE_SEQ.to_bytes(2, "big") + amount + bytes((PURCHASE,)) + DATE
                + TIME + H("01") + H("00") + DIVERSIFIER)
    new_balance = (BALANCE - AMOUNT).to_bytes(4, "big")
    return [
        ("Bus validator, line 42: a member taps a union card (PBOC debit + T-Union purse)",
         Device.CARD, H("00A404000E") + ppse + H("00"), fci_ppse + ok, "SELECT PPSE"),
        ("", Device.CARD, H("00A4040008A00000033301010100"), fci_debit + ok,
         "SELECT UnionPay debit"),
        ("", Device.CARD, gpo, gpo_answer + ok, "GET PROCESSING OPTIONS"),
        ("", Device.CARD, H("00B2010C00"), record_1 + ok, "READ RECORD SFI 1 #1: track 2"),
        ("", Device.CARD, H("00B2011400"), record_2 + ok, "READ RECORD SFI 2 #1: PAN, expiry"),
        ("", Device.CARD, H("80CA9F7900"), tlv("9F79", H("000000010000")) + ok,
         "GET DATA: electronic cash balance 100.00"),
        ("Transit purse: member card check, then an EP purchase of 1.80 (2.00 fare, 10% off)",
         Device.CARD, H("00A4040008A00000063201010500"), fci_transit + ok, "SELECT T-Union"),
        ("", Device.CARD, H("00B095001E"), EF_0015 + ok, "EF 0015: card type 55 = union member"),
        ("", Device.CARD, H("805C000204"), BALANCE.to_bytes(4, "big") + ok, "GET BALANCE 20.00"),
        ("", Device.PSAM, H("00B0960006"), TERMINAL_ID + ok, "PSAM terminal id"),
        ("", Device.CARD, H("805001020B01") + amount + TERMINAL_ID + H("0F"),
         BALANCE.to_bytes(4, "big") + OFFLINE_SEQ.to_bytes(2, "big") + H("000000") + H("0100")
         + RANDOM + ok,
         "INITIALIZE FOR PURCHASE"),
        ("", Device.PSAM, H("807000001C") + sam_data, H("6108"), "INIT SAM FOR PURCHASE (T=0)"),
        ("", Device.PSAM, H("00C0000008"), tseq + mac1 + ok, "terminal seq, MAC1"),
        ("", Device.CARD, H("805401000F") + tseq + DATE + TIME + mac1 + H("08"), tac + mac2 + ok,
         "DEBIT FOR PURCHASE: TAC, MAC2"),
        ("", Device.PSAM, H("8072000004") + mac2, ok, "CREDIT SAM FOR PURCHASE: MAC2 verified"),
        ("", Device.CARD, H("805C000204"), new_balance + ok, "GET BALANCE 18.20"),
    ]


def write(stream: IO[bytes]) -> None:
    writer = TextTraceWriter(stream)
    writer.comment("unioncard sample trace: text format, see docs/traces.md")
    writer.comment("Test keys of PROTOCOL.md §6 (transit purse, key version 01);"
                   " PAN masked on output")
    at = START
    for section, device, command, response, comment in script():
        if section:
            writer.comment("")
            writer.comment(section)
        writer.write(TraceRecord.command(command, device, at), comment)
        at += timedelta(milliseconds=9)
        writer.write(TraceRecord.response(response, device, at))
        at += timedelta(milliseconds=14)
    writer.flush()


def main() -> None:
    buffer = io.BytesIO()
    write(buffer)
    OUT.write_bytes(buffer.getvalue())
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
