"""Single-record BER-TLV decoding: unioncard.apdu.tlv.decode against pyemv.tlv.decode.

The records are the ones a terminal reads in every tap (FCI, GPO answer,
READ RECORD templates, one with an issuer public key certificate).  Both
decoders run on the same bytes in the same session; the report at the end gives
records/s, MB/s and the ratio of medians (ours / pyemv: below 1 is faster).
"""

from __future__ import annotations

import pytest
from bench_report import Report
from pyemv import tlv as pyemv_tlv

from unioncard.apdu import tlv

H = bytes.fromhex

RECORDS = {
    "fci_ppse": H("6F48840E325041592E5359532E4444463031A536BF0C3361194F08A000000333010101"
                  "500A50424F43204445424954870101 61164F08A000000632010105500754 2D554E494F4E"
                  "870102".replace(" ", "")),
    "fci_aid": H("6F4684 08A000000333010101A53A500A50424F43204445424954870101 9F381B9F66049F02"
                 "069F03069F1A0295055F2A029A039C019F3704DF6001 5F2D027A68BF0C059F4D020B0A"
                 .replace(" ", "")),
    "gpo_77": H("772C82027C00940808010100100101009F3602001257136230580000123456789D2912201"
                "0000000000F5F340101"),
    "record_pan": H("70365A0A6230580000123456789F5F24032912315F25032401015F280201569F0702FF00"
                    "8E0E000000000000000042031E031F005F340101"),
    "record_issuer_cert": H("7081E0" + "9081B0" + "AB" * 176 + "8F0105" + "9224" + "CD" * 36
                            + "9F320103"),
}

report = Report("single-record TLV decode: unioncard.apdu.tlv.decode vs pyemv.tlv.decode")


@pytest.fixture(scope="module", autouse=True)
def _emit(request):
    yield
    for name, data in RECORDS.items():
        ours, theirs = report.medians.get(f"ours:{name}"), report.medians.get(f"pyemv:{name}")
        if ours is None or theirs is None:
            continue
        report.add(f"{name:20s} {len(data):4d} B  ours {ours * 1e6:7.2f} us"
                   f" ({1 / ours:>9,.0f} rec/s, {len(data) / ours / 1e6:6.1f} MB/s)"
                   f"  pyemv {theirs * 1e6:7.2f} us ({1 / theirs:>9,.0f} rec/s,"
                   f" {len(data) / theirs / 1e6:6.1f} MB/s)  ours/pyemv {ours / theirs:.2f}")
    report.emit(request.config)


def test_records_decode_alike():
    for data in RECORDS.values():
        flat = {node.tag_hex: node.value for _, node in tlv.walk(tlv.decode(data))
                if not node.children}
        assert flat == pyemv_tlv.decode(data, flatten=True)


@pytest.mark.parametrize("name", list(RECORDS))
def test_ours(benchmark, name):
    benchmark.group = f"tlv {name}"
    data = RECORDS[name]
    nodes = benchmark(tlv.decode, data)
    assert nodes
    report.median(f"ours:{name}", benchmark)


@pytest.mark.parametrize("name", list(RECORDS))
def test_pyemv(benchmark, name):
    benchmark.group = f"tlv {name}"
    data = RECORDS[name]
    assert benchmark(pyemv_tlv.decode, data)
    report.median(f"pyemv:{name}", benchmark)
