"""The sample trace shipped with unioncard: recorded from the engine, regenerable, decodable,
cryptographically consistent."""

import io
import runpy
from importlib import resources

from unioncard.apdu.trace_decode import describe, pair
from unioncard.apdu.trace_text import read_text
from unioncard.crypto.purse import (
    diversify,
    purchase_mac1,
    purchase_mac2,
    purchase_session_key,
    purchase_tac,
)

SAMPLE = resources.files("unioncard").joinpath("data/sample_trace.txt")
GENERATOR = resources.files("unioncard").joinpath("data/make_sample_trace.py")
H = bytes.fromhex


def exchanges() -> list[dict]:
    with SAMPLE.open("rb") as stream:
        return [describe(e) for e in pair(read_text(stream))]


def test_the_committed_sample_is_what_the_generator_writes():
    generator = runpy.run_path(str(GENERATOR))
    out = io.BytesIO()
    generator["write"](out)
    assert out.getvalue() == SAMPLE.read_bytes()


def test_the_sample_tells_the_whole_story():
    names = [e["command"]["name"] for e in exchanges()]
    assert names == ["SELECT", "GET RESPONSE", "READ BINARY", "SELECT", "GET RESPONSE",
                     "SELECT", "READ BINARY", "SELECT", "READ BINARY",
                     "INITIALIZE FOR PURCHASE", "INIT SAM FOR PURCHASE", "GET RESPONSE",
                     "DEBIT FOR PURCHASE", "CREDIT SAM FOR PURCHASE"]
    assert all(e["response"]["sw"] == "9000" or e["response"]["sw"].startswith("61")
               for e in exchanges())
    assert all(e["timestamp"] for e in exchanges())
    assert {e["device"] for e in exchanges()} == {"card", "psam"}


def test_the_sample_cites_nothing_outside_the_repository():
    text = SAMPLE.read_text()
    assert "PROTOCOL" + ".md" not in text and "docs/protocol.md" in text


def fields(entry: dict, part: str) -> dict[str, str]:
    return {f["name"]: f["value"] for f in entry[part].get("fields", [])}


def test_mac1_mac2_and_tac_follow_protocol_md():
    """Recompute the purse cryptograms from the trace's own fields with the test keys."""
    by_name = {e["command"]["name"]: e for e in exchanges()}
    ef15 = fields(next(e for e in exchanges() if e["command"]["hex"] == "00B095001E"), "response")
    assert ef15["card type"] == "55 (union member card)"
    diversifier = H(ef15["application serial"])[-8:]
    init = by_name["INITIALIZE FOR PURCHASE"]
    amount = int(init["command"]["data"][2:10], 16)
    terminal_id = H(fields(init, "command")["terminal id"])
    card = fields(init, "response")
    random, seq = H(card["random"]), int(card["offline seq"])
    assert card["key version"] == "01"  # transit purse keys
    sam = fields(by_name["GET RESPONSE"], "response")
    debit = by_name["DEBIT FOR PURCHASE"]
    tseq = int(sam["terminal seq"])
    date, time = H(debit["command"]["data"][8:16]), H(debit["command"]["data"][16:22])
    dpk = diversify(H("404142434445464748494A4B4C4D4E4F"), diversifier)
    sespk = purchase_session_key(dpk, random, seq, tseq)
    mac1 = purchase_mac1(sespk, amount, 0x06, terminal_id, date, time)
    assert sam["MAC1"] == fields(debit, "command")["MAC1"] == mac1.hex().upper()
    result = fields(debit, "response")
    assert result["MAC2"] == purchase_mac2(sespk, amount).hex().upper()
    dtk = diversify(H("606162636465666768696A6B6C6D6E6F"), diversifier)
    tac = purchase_tac(dtk, amount, 0x06, terminal_id, tseq, date, time)
    assert result["TAC"] == tac.hex().upper()
    credit = by_name["CREDIT SAM FOR PURCHASE"]
    assert fields(credit, "command")["MAC2"] == result["MAC2"]
    assert card["balance"] == "20.00 yuan (2000 fen)"
    assert amount == 180  # 2.00 fare less the 10% member discount
