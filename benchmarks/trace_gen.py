"""Generates large binary (UCT1) traces of realistic card and PSAM exchanges, for benchmarks.

A trace is a sequence of taps.  Each tap is what a bus validator does with a
union member card: PPSE and UnionPay selection (FCI), GPO (template 77), two
to four READ RECORDs (template 70, one with an issuer public key certificate),
GET DATA of the EC balance, then the T-Union purse: SELECT, READ BINARY of EF
0015, GET BALANCE, INITIALIZE FOR PURCHASE, the PSAM's INIT SAM FOR PURCHASE
(T=0: 61 08 and GET RESPONSE), DEBIT, CREDIT SAM, and a READ RECORD of the
purse log (SFI 24, raw).  About one tap in 50 carries damage the indexer must
report: a truncated FCI (malformed TLV), a command that is no valid APDU
encoding, or a response without a status word.

Taps are built from a pool of randomised variants and concatenated, so a
100 MB file is written in a few seconds.  Nothing here is committed output:
benchmarks write into a temporary directory.
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["MAGIC", "make_tap", "write_trace"]

MAGIC = b"UCT1"
H = bytes.fromhex


def _tlv(tag: str, value: bytes) -> bytes:
    n = len(value)
    length = bytes((n,)) if n < 0x80 else (b"\x81" + bytes((n,)) if n < 0x100
                                          else b"\x82" + n.to_bytes(2, "big"))
    return H(tag) + length + value


def _frame(kind: int, payload: bytes) -> bytes:
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def make_tap(rng: random.Random, damage: bool = False) -> bytes:
    """The frames of one tap (card kinds 01/02, PSAM kinds 11/12)."""
    ok = H("9000")
    pan = "623058" + _digits(rng, 13)
    pan_cn = H(pan + "F")
    track2 = H(pan + "D" + "2912201" + _digits(rng, 10) + "F")
    aid = H("A000000333010101")
    fci_ppse = _tlv("6F", _tlv("84", b"2PAY.SYS.DDF01") + _tlv("A5", _tlv("BF0C",
        _tlv("61", _tlv("4F", aid) + _tlv("50", b"PBOC DEBIT") + _tlv("87", H("01")))
        + _tlv("61", _tlv("4F", H("A000000632010105")) + _tlv("50", b"T-UNION")
               + _tlv("87", H("02"))))))
    pdol = H("9F66049F02069F03069F1A0295055F2A029A039C019F3704DF6001")
    fci_aid = _tlv("6F", _tlv("84", aid) + _tlv("A5", _tlv("50", b"PBOC DEBIT")
                   + _tlv("87", H("01")) + _tlv("9F38", pdol) + _tlv("5F2D", b"zh")
                   + _tlv("BF0C", _tlv("9F4D", H("0B0A")))))
    gpo = _tlv("77", _tlv("82", H("7C00")) + _tlv("94", H("08010300" "10010100"))
               + _tlv("9F36", rng.randbytes(2)) + _tlv("9F26", rng.randbytes(8))
               + _tlv("9F27", H("80")) + _tlv("9F10", H("07010103A00000") + H("01"))
               + _tlv("57", track2) + _tlv("5F34", H("01")) + _tlv("9F6C", H("0000")))
    records = [
        _tlv("70", _tlv("57", track2) + _tlv("5F20", b"MEMBER/UNION")
             + _tlv("9F1F", _digits(rng, 10).encode())),
        _tlv("70", _tlv("5A", pan_cn) + _tlv("5F24", H("291231")) + _tlv("5F25", H("240101"))
             + _tlv("5F28", H("0156")) + _tlv("9F07", H("FF00"))
             + _tlv("8E", H("000000000000000042031E031F00")) + _tlv("5F34", H("01"))
             + _tlv("8C", H("9F02069F03069F1A0295055F2A029A039C019F37049F21039F4E14"))
             + _tlv("8D", H("910A8A0295059F37049F4C08"))),
        _tlv("70", _tlv("90", rng.randbytes(rng.choice([144, 176, 248])))
             + _tlv("8F", H("05")) + _tlv("92", rng.randbytes(36)) + _tlv("9F32", H("03"))),
        _tlv("70", _tlv("9F46", rng.randbytes(rng.choice([112, 144])))
             + _tlv("9F47", H("03")) + _tlv("9F48", rng.randbytes(42))
             + _tlv("9F49", H("9F3704")) + _tlv("9F69", rng.randbytes(7))),
    ]
    serial = rng.randbytes(10)
    ef15 = H("0310000000000000") + H("0201") + serial + H("2024010120341231")
    ef15 += bytes((rng.choice([0x55, 0x55, 0x55, 0x01]), rng.choice([0, 1, 2, 4])))
    balance = rng.randrange(0, 100000)
    amount = rng.choice([180, 200, 90, 100, 300])
    frames = [
        (0x01, H("00A404000E") + b"2PAY.SYS.DDF01" + H("00"), fci_ppse + ok),
        (0x01, H("00A4040008") + aid + H("00"), fci_aid + ok),
        (0x01, H("80A8000024") + _tlv("83", rng.randbytes(34)) + H("00"), gpo + ok),
    ]
    for n, record in enumerate(records[: rng.randint(2, 4)]):
        frames.append((0x01, bytes((0x00, 0xB2, 1, ((n % 3) + 1) << 3 | 4, 0)), record + ok))
    frames += [
        (0x01, H("80CA9F7900"), _tlv("9F79", rng.randbytes(6)) + ok),
        (0x01, H("00A4040008A00000063201010500"), _tlv("6F", _tlv("84", H("A000000632010105"))
         + _tlv("A5", _tlv("50", b"T-UNION") + _tlv("9F08", H("02")) + _tlv("9F0C", ef15))) + ok),
        (0x01, H("00B095001E"), ef15 + ok),
        (0x01, H("805C000204"), balance.to_bytes(4, "big") + ok),
        (0x11, H("00B0960006"), rng.randbytes(6) + ok),
        (0x01, H("805001020B01") + amount.to_bytes(4, "big") + rng.randbytes(6) + H("0F"),
         balance.to_bytes(4, "big") + rng.randbytes(2) + H("000000") + H("0100")
         + rng.randbytes(4) + ok),
        (0x11, H("807000001C") + rng.randbytes(28), H("6108")),
        (0x11, H("00C0000008"), rng.randbytes(8) + ok),
        (0x01, H("805401000F") + rng.randbytes(15) + H("08"), rng.randbytes(8) + ok),
        (0x11, H("8072000004") + rng.randbytes(4), ok),
        (0x01, H("00B201C400"), rng.randbytes(23) + ok),
    ]
    if damage:
        at = rng.randrange(3)
        if at == 0:  # an FCI cut short: malformed TLV where TLV is expected
            frames[0] = (0x01, frames[0][1], fci_ppse[: len(fci_ppse) // 2] + ok)
        elif at == 1:  # Lc announces more data than the command has
            frames[-1] = (0x01, H("00B201C41700"), H("6700"))
        else:  # a response too short to hold a status word
            frames[-2] = (0x11, frames[-2][1], H("90"))
    out = bytearray()
    for kind, command, response in frames:
        out += _frame(kind, command)
        out += _frame(kind + 1, response)
    return bytes(out)


def write_trace(path: Path, size: int, seed: int = 2025, variants: int = 3000) -> int:
    """Write a trace of at least ``size`` bytes to ``path``; return its size."""
    rng = random.Random(seed)
    pool = [make_tap(rng, damage=rng.random() < 0.02) for _ in range(variants)]
    written = 0
    with open(path, "wb") as out:
        out.write(MAGIC)
        written += len(MAGIC)
        while written < size:
            batch = b"".join(rng.choices(pool, k=1000))
            out.write(batch)
            written += len(batch)
    return written
