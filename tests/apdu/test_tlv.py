"""BER-TLV (EMV Book 3 Annex B): decoding, encoding, lookup, strictness, pyemv agreement."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyemv import tlv as pyemv_tlv

from unioncard.apdu import DecodeError, tlv
from unioncard.apdu.tlv import Tlv
from unioncard.testing.strategies import tags, tlv_trees

H = bytes.fromhex

# FCI of the T-Union purse as a real card returns it (EMV Book 1 §11.3.4).
FCI = H(
    "6F2E" "8408A000000632010105" "A522"
    "500F" + b"MOT.TRANSIT CRD".hex() + "9F080102" "9F0C0A" + "01" * 10
)


def test_decode_fci_tree():
    (fci,) = tlv.decode(FCI)
    assert fci.tag == 0x6F and fci.constructed
    assert [child.tag for child in fci.children] == [0x84, 0xA5]
    assert fci.children[0].value == H("A000000632010105")
    prop = fci.children[1]
    assert [child.tag for child in prop.children] == [0x50, 0x9F08, 0x9F0C]
    assert prop.children[0].value == b"MOT.TRANSIT CRD"
    assert prop.children[1].children == []


def test_multi_byte_tags_and_long_lengths():
    value = bytes(range(256)) * 2
    raw = H("DF8101") + H("820200") + value
    (node,) = tlv.decode(raw)
    assert (node.tag, node.value) == (0xDF8101, value)
    assert tlv.encode(node) == raw
    (node,) = tlv.decode(H("5F2481") + bytes([0x90]) + bytes(0x90))
    assert node.tag == 0x5F24 and len(node.value) == 0x90


def test_four_byte_length_form():
    (node,) = tlv.decode(H("C184000000020102"))
    assert node.value == H("0102")


def test_padding_between_objects_is_skipped():
    raw = H("00" "9F3602001C" "FFFF" "70 06 00 5A02 1234 00".replace(" ", ""))
    nodes = tlv.decode(raw)
    assert [n.tag for n in nodes] == [0x9F36, 0x70]
    assert nodes[0].value == H("001C")
    assert [c.tag for c in nodes[1].children] == [0x5A]
    # a constructed value keeps its padding, so re-encoding is byte-faithful
    assert tlv.encode(nodes[1]) == H("7006005A02123400")


def test_zero_length_values():
    assert tlv.decode(H("9F0200")) == [Tlv(0x9F02, b"", [])]
    assert tlv.decode(H("7000")) == [Tlv(0x70, b"", [])]


@pytest.mark.parametrize(
    ("raw", "offset", "decoded"),
    [
        ("9F", 0, 0),  # tag truncated
        ("5A", 1, 0),  # length missing
        ("5A0812", 0, 0),  # value truncated
        ("9F02010157", 5, 1),  # second object's length missing
        ("5A80", 1, 0),  # indefinite length
        ("5A8500000000010", 1, 0),  # five length bytes
        ("5A8201", 1, 0),  # length field truncated
        ("9F8001", 0, 0),  # first subsequent tag byte 80
        ("9F8181818101", 0, 0),  # tag longer than four bytes
        ("9F0201AA7003" "5A0512", 6, 1),  # child overruns its parent
        ("70055A0712345600", 2, 0),  # child value overruns the template
    ],
)
def test_malformed_input_raises_with_offset_and_partial(raw, offset, decoded):
    with pytest.raises(DecodeError) as info:
        tlv.decode(H(raw.ljust(len(raw) + len(raw) % 2, "0")))
    error = info.value
    assert isinstance(error, ValueError)
    assert error.offset == offset
    assert len(error.partial) == decoded


def test_nesting_deeper_than_the_limit_is_refused():
    raw = H("5A0100")
    for _ in range(tlv.MAX_DEPTH + 1):
        raw = H("70") + tlv.encode_length(len(raw)) + raw
    with pytest.raises(DecodeError, match="nesting deeper"):
        tlv.decode(raw)
    assert tlv.decode(raw[2:])  # one level less is accepted


def test_lookup_by_tag_and_path():
    nodes = tlv.decode(FCI)
    assert tlv.find(nodes, 0x50).value == b"MOT.TRANSIT CRD"
    assert tlv.find(nodes, 0x5A) is None
    assert tlv.find_path(nodes, "6F/A5/9F08").value == H("02")
    assert tlv.find_path(nodes, [0x6F, 0x84]).value == H("A000000632010105")
    assert tlv.find_path(nodes, "6F.A5.50").value == b"MOT.TRANSIT CRD"
    assert tlv.find_path(nodes, "A5/50") is None  # paths start at the top level
    assert len(tlv.find_all(nodes + nodes, 0x9F0C)) == 2
    with pytest.raises(ValueError):
        tlv.find_path(nodes, "6F/XYZ")
    assert [(depth, node.tag) for depth, node in tlv.walk(nodes)] == [
        (0, 0x6F), (1, 0x84), (1, 0xA5), (2, 0x50), (2, 0x9F08), (2, 0x9F0C)
    ]


def test_builders_check_the_constructed_bit():
    with pytest.raises(ValueError):
        Tlv.primitive(0x70, b"")
    with pytest.raises(ValueError):
        Tlv.template(0x5A, [])
    node = Tlv.template(0xA5, [Tlv.primitive(0x50, b"X")])
    assert node.value == H("500158") and node.tag_hex == "A5"


@pytest.mark.parametrize(("length", "encoded"), [
    (0, "00"), (0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"), (0x100, "820100"),
    (0x10000, "83010000"), (0xFFFFFFFF, "84FFFFFFFF"),
])
def test_minimal_length_encoding(length, encoded):
    assert tlv.encode_length(length) == H(encoded)
    assert tlv.read_length(H(encoded), 0) == (length, len(encoded) // 2)


@given(tlv_trees())
def test_round_trip_tree_bytes_tree(tree):
    raw = tlv.encode(tree)
    assert tlv.decode(raw) == tree
    assert tlv.encode(tlv.decode(raw)) == raw


@given(tags())
def test_tag_round_trip(tag):
    encoded = tlv.tag_bytes(tag)
    assert tlv.read_tag(encoded, 0) == (tag, len(encoded))


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_decode_error(raw):
    try:
        tlv.decode(raw)
    except DecodeError as error:
        assert 0 <= error.offset <= len(raw)
        assert isinstance(error.partial, list)


def _as_pyemv(nodes):
    """Our tree in pyemv's shape: {tag hex: bytes | dict}, later duplicates winning."""
    out = {}
    for node in nodes:
        out[node.tag_hex] = _as_pyemv(node.children) if node.constructed else node.value
    return out


@given(tlv_trees())
@settings(max_examples=300)
def test_agrees_with_pyemv_on_generated_records(tree):
    raw = tlv.encode(tree)
    assert _as_pyemv(tlv.decode(raw)) == pyemv_tlv.decode(raw)


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_agrees_with_pyemv_wherever_both_accept_a_canonical_record(raw):
    try:
        ours = tlv.decode(raw)
        theirs = pyemv_tlv.decode(raw)
    except (DecodeError, pyemv_tlv.DecodeError):
        return
    if tlv.encode(ours) == raw:  # no padding skipped, minimal lengths: well-formed
        assert _as_pyemv(ours) == theirs


def test_agrees_with_pyemv_on_a_real_record():
    record = Tlv.template(0x70, [
        Tlv.primitive(0x5F20, b"FULL NAME      "),
        Tlv.primitive(0x5A, H("6212345678901234")),
        Tlv.primitive(0x5F24, H("291231")),
        Tlv.primitive(0x9F07, H("FF00")),
        Tlv.primitive(0x8E, H("000000000000000042031E031F03")),
        Tlv.primitive(0x57, H("6212345678901234D29122011234567800000F")),
        Tlv.primitive(0x8C, H("9F02069F03069F1A0295055F2A029A039C019F3704")),
        Tlv.primitive(0x9F4A, H("82")),
        Tlv.primitive(0x9F0D, H("B0509C8800")),
        Tlv.primitive(0x9F0E, H("0000000000")),
        Tlv.primitive(0x9F0F, H("B0709C9800")),
        Tlv.primitive(0x5F34, H("01")),
    ]).to_bytes()
    assert record[:2] == H("7081")  # long-form length
    assert _as_pyemv(tlv.decode(record)) == pyemv_tlv.decode(record)
