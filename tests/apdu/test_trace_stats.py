"""Trace statistics from the indexer, checked against the reference pairing and decoding."""

import io
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unioncard.apdu.indexer import concat, index_buffer, iter_index, iter_index_records
from unioncard.apdu.indexer_reference import reference_index
from unioncard.apdu.trace import Device, TraceRecord
from unioncard.apdu.trace_binary import BinaryTraceWriter
from unioncard.apdu.trace_decode import describe, pair
from unioncard.apdu.trace_stats import EXAMPLES, TraceStats
from unioncard.testing.trace_strategies import commands, responses

H = bytes.fromhex


def frame(kind: int, payload: bytes) -> bytes:
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def summarise(buffer: bytes, chunk: int = 1 << 20) -> dict:
    stats = TraceStats()
    for part in iter_index(io.BytesIO(buffer), chunk):
        stats.add(part)
    return stats.summary()


EXAMPLE = b"UCT1" + b"".join([
    frame(0x01, H("00A404000E325041592E5359532E444446303100")),
    frame(0x02, H("6F0C840832504159 2E535953 9000")),       # FCI cut short: malformed TLV
    frame(0x01, H("00B2010C00")), frame(0x02, H("70035A0112 9000")),
    frame(0x01, H("00B2020C00")), frame(0x02, H("6A83")),
    frame(0x11, H("807000001C") + bytes(28)), frame(0x12, H("6108")),
    frame(0x11, H("00C0000008")), frame(0x12, H("0000000112345678 9000")),
    frame(0x01, H("805C000204")),                            # unanswered
    frame(0x01, H("805C000204")), frame(0x02, H("000007D0 9000")),
    frame(0x12, H("9000")),                                  # orphan
    frame(0x05, H("01")),                                    # unknown kind
    frame(0x01, H("00")), frame(0x02, H("67")),              # short command, response w/o SW
]) + H("020009")                                             # truncated


def test_worked_example():
    doc = summarise(EXAMPLE)
    assert doc["bytes"] == len(EXAMPLE)
    assert doc["frames"] == {"total": 18, "commands": 8, "responses": 8, "malformed": 4,
                             "by_device": {"card": {"commands": 6, "responses": 5},
                                           "psam": {"commands": 2, "responses": 3}}}
    assert doc["exchanges"] == {
        "total": 7, "unanswered_commands": 1, "orphan_responses": 1,
        "by_device": {"card": {"exchanges": 5, "unanswered_commands": 1, "orphan_responses": 0},
                      "psam": {"exchanges": 2, "unanswered_commands": 0, "orphan_responses": 1}}}
    assert doc["commands"] == {"SELECT": 1, "READ RECORD": 2, "INIT SAM FOR PURCHASE": 1,
                               "GET RESPONSE": 1, "GET BALANCE": 2,
                               "MALFORMED (shorter than 4 bytes)": 1}
    assert {sw: v["count"] for sw, v in doc["status_words"].items()} == {
        "9000": 5, "6A83": 1, "6108": 1}
    assert doc["status_words"]["6A83"]["meaning"] == "record not found"
    assert doc["malformed_frames"]["by_reason"] == {
        "unknown frame kind": 1, "truncated at the end of the trace": 1,
        "response shorter than its status word": 1, "command is not a valid APDU encoding": 1}
    assert [e["frame"] for e in doc["malformed_frames"]["examples"]] == [14, 15, 16, 17]
    assert doc["malformed_frames"]["examples"][0]["offset"] == EXAMPLE.index(H("050001"))
    tlv = doc["tlv"]
    assert (tlv["responses_tlv"], tlv["responses_malformed_tlv"], tlv["responses_raw_data"],
            tlv["responses_without_data"], tlv["objects"]) == (1, 1, 2, 4, 2)
    assert tlv["tags"] == {"70": {"count": 1, "name": "READ RECORD Response Message Template"},
                           "5A": {"count": 1, "name": "Application Primary Account Number (PAN)"}}
    (bad,) = tlv["malformed_examples"]
    assert bad["frame"] == 1 and bad["data_offset"] == 0
    assert bad["offset"] == EXAMPLE.index(H("6F0C84"))


def test_chunked_and_whole_give_the_same_summary():
    assert summarise(EXAMPLE, chunk=5) == summarise(EXAMPLE)


def test_offsets_are_left_out_for_non_binary_sources():
    stats = TraceStats(offsets=False)
    stats.add(reference_index(EXAMPLE))
    doc = stats.summary()
    assert all("offset" not in e for e in doc["malformed_frames"]["examples"])
    assert all("offset" not in e for e in doc["tlv"]["malformed_examples"])


def test_examples_are_capped():
    buffer = b"UCT1" + frame(0x09, b"") * (EXAMPLES + 5)
    stats = TraceStats()
    for part in iter_index(io.BytesIO(buffer), chunk=7):
        stats.add(part)
    doc = stats.summary()
    assert doc["malformed_frames"]["total"] == EXAMPLES + 5
    assert len(doc["malformed_frames"]["examples"]) == EXAMPLES


def test_bad_magic_is_remembered():
    stats = TraceStats()
    for part in iter_index(io.BytesIO(b"nope")):
        stats.add(part)
    assert not stats.magic_ok


trace_records = st.lists(
    st.one_of(
        st.builds(TraceRecord.command, commands(), st.sampled_from(Device)),
        st.builds(TraceRecord.response, responses(), st.sampled_from(Device)),
    ),
    max_size=16,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_records)
def test_stats_agree_with_the_decoder_pairing_and_trees(records):
    """The indexer's exchanges, TLV verdicts and tags match trace_decode's (reference) view."""
    out = io.BytesIO()
    with BinaryTraceWriter(out) as writer:
        for record in records:
            writer.write(record)
    index = index_buffer(out.getvalue())
    assert index.same_as(concat(iter_index_records(records, chunk=9)))
    stats = TraceStats()
    stats.add(index)
    doc = stats.summary()

    exchanges = [describe(e, unmask=True) for e in pair(records)]
    full = [e for e in exchanges if e["command"] and e["response"]]
    assert doc["exchanges"]["total"] == len(full)
    assert doc["exchanges"]["unanswered_commands"] == sum(1 for e in exchanges
                                                          if not e["response"])
    assert doc["exchanges"]["orphan_responses"] == sum(1 for e in exchanges if not e["command"])
    answered = [e["response"] for e in exchanges if e["response"]]
    assert doc["tlv"]["responses_tlv"] == sum(1 for r in answered if "tlv" in r)
    assert doc["tlv"]["responses_malformed_tlv"] == sum(1 for r in answered if "tlv_error" in r)
    tags: Counter[str] = Counter()

    def count(nodes: list) -> None:
        for node in nodes:
            tags[node["tag"]] += 1
            count(node.get("children", []))

    for response in answered:
        count(response.get("tlv", []))
    assert {tag: v["count"] for tag, v in doc["tlv"]["tags"].items()} == dict(tags)
    assert index.same_as(reference_index(out.getvalue()))
