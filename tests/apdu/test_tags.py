"""The tag dictionary against an independent transcription of EMV Book 3 Annex A,
the PBOC tags of docs/protocol.md section 5 and the member-profile tags of section 4."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.apdu import dol, tags
from unioncard.apdu.tlv import is_constructed, tag_bytes

DATA = Path(__file__).parent / "data"
PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "PROTOCOL.md"
"""The team's shared notes, when checked out beside the repository: an extra source."""

# Templates inside which EMV 4.4 reuses tags with another meaning (Annex A).
BIOMETRIC_TEMPLATES = {"A1", "BF4C", "BF4D", "BF4E"}


class AnnexRow(NamedTuple):
    name: str
    source: str
    format: str
    templates: tuple[str, ...]
    tag: int | None

    @property
    def template_scoped(self) -> bool:
        return bool(self.templates) and set(self.templates) <= BIOMETRIC_TEMPLATES


def read_annex_a() -> list[AnnexRow]:
    rows = []
    for line in (DATA / "emv_annex_a.txt").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, source, fmt, template, tag = (field.strip() for field in line.split(" | "))
        templates = () if template == "—" else tuple(template.split(" or "))
        rows.append(AnnexRow(name, source, fmt, templates, None if tag == "—" else int(tag, 16)))
    return rows


ANNEX_A = read_annex_a()
TAGGED = [row for row in ANNEX_A if row.tag is not None and not row.template_scoped]
SCOPED = [row for row in ANNEX_A if row.tag is not None and row.template_scoped]


def annex_format(text: str) -> str:
    """The dictionary's format code for an Annex A format cell."""
    if text.startswith("As defined by the Payment System"):
        return "ans"  # Authorisation Code: PBOC, M/Chip and VCPS use ans 6 (tags.tsv comment)
    if text == "—":
        return "b"  # Static Data Authentication Tag List: a list of tags (tags.tsv comment)
    if text.startswith("var."):
        return "var"
    code = text.split()[0]
    assert code in {"n", "cn", "a", "an", "ans", "b"}, text
    return code


def tsv_comments() -> str:
    text = resources.files("unioncard.apdu").joinpath("tags.tsv").read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if line.startswith("#"))


# --- EMV Book 3 Annex A ---------------------------------------------------------------


def test_fixture_is_a_plausible_transcription():
    # Guards the fixture itself: a truncated or mangled copy must not pass quietly.
    assert len(ANNEX_A) == 175
    assert len(TAGGED) == 135
    assert len(SCOPED) == 16
    assert len({row.tag for row in TAGGED}) == len(TAGGED)
    assert {row.source for row in ANNEX_A} <= tags.SOURCES


@pytest.mark.parametrize("row", TAGGED, ids=lambda row: f"{row.tag:02X}")
def test_every_annex_a_tag_is_present_with_its_name_format_and_source(row):
    info = tags.lookup(row.tag)
    assert info is not None, f"{row.name} ({row.tag:02X}) is missing"
    assert info.spec == "EMV"
    assert info.name == row.name
    assert info.format == annex_format(row.format)
    assert info.source == row.source


def test_emv_entries_are_exactly_the_annex_a_tags():
    emv = {tag for tag, info in tags.TAGS.items() if info.spec == "EMV"}
    assert emv == {row.tag for row in TAGGED}


def test_untagged_annex_a_elements_are_not_invented():
    untagged = {row.name for row in ANNEX_A if row.tag is None}
    assert "Issuer Script Results" in untagged
    assert not untagged & {info.name for info in tags.TAGS.values() if info.spec == "EMV"}


@pytest.mark.parametrize("row", SCOPED, ids=lambda row: f"{row.tag:02X}-{row.name}")
def test_template_scoped_biometric_elements_are_documented_not_listed(row):
    # 81/82/90 keep their top-level meaning; DF50-DF54 (three meanings each) have no line.
    top_level = [other for other in TAGGED if other.tag == row.tag]
    info = tags.lookup(row.tag)
    if top_level:
        assert info is not None and info.name == top_level[0].name
    else:
        assert info is None
    assert row.name in tsv_comments()


# --- PBOC (docs/protocol.md section 5) and the member profile (section 4) --------------------

PBOC = {
    0x9F66: ("Terminal Transaction Qualifiers (TTQ)", "b", "Terminal"),
    0x9F79: ("Electronic Cash Balance", "n", "ICC"),
    0x9F77: ("Electronic Cash Balance Limit", "n", "ICC"),
    0x9F78: ("Electronic Cash Single Transaction Limit", "n", "ICC"),
    0x9F6D: ("Electronic Cash Reset Threshold", "n", "ICC"),
    0x9F74: ("Electronic Cash Issuer Authorization Code", "a", "ICC"),
    0x9F7A: ("Electronic Cash Terminal Support Indicator", "b", "Terminal"),
    0x9F7B: ("Electronic Cash Terminal Transaction Limit", "n", "Terminal"),
    0x9F5D: ("Available Offline Spending Amount", "n", "ICC"),
    0x9F6C: ("Card Transaction Qualifiers (CTQ)", "b", "ICC"),
    0x9F69: ("Card Authentication Related Data", "b", "ICC"),
    0xDF60: ("CAPP Transaction Indicator", "b", "Terminal"),
    0xDF61: ("Segmented Charging Application Indicator", "b", "ICC"),
    0xDF69: ("SM Algorithm Support Indicator", "b", "Terminal"),
}

PROFILE = {
    0xDF41: ("Member Number", "an"),
    0xDF42: ("Member Name", "ans"),
    0xDF43: ("Union Organization", "ans"),
    0xDF44: ("Member Category Flags", "b"),
    0xDF45: ("Member Status", "b"),
    0xDF46: ("Membership Valid From", "n"),
    0xDF47: ("Membership Valid Until", "n"),
}


@pytest.mark.parametrize("tag", sorted(PBOC), ids=lambda tag: f"{tag:X}")
def test_pboc_tags_of_protocol_section_5(tag):
    name, fmt, source = PBOC[tag]
    assert tags.TAGS[tag] == tags.TagInfo(tag, name, fmt, source, "PBOC")


def test_iad_is_the_emv_element():
    assert tags.TAGS[0x9F10].spec == "EMV"
    assert tags.name_of(0x9F10) == "Issuer Application Data"


@pytest.mark.parametrize("tag", sorted(PROFILE), ids=lambda tag: f"{tag:X}")
def test_member_profile_tags_of_protocol_section_4(tag):
    name, fmt = PROFILE[tag]
    assert tags.TAGS[tag] == tags.TagInfo(tag, name, fmt, "ICC", "profile")


def test_profile_tags_are_exactly_the_member_template():
    assert {tag for tag, info in tags.TAGS.items() if info.spec == "profile"} == set(PROFILE)


def protocol_section(number: int, source: Path = PROTOCOL) -> str:
    if not source.exists():
        pytest.skip(f"{source} is not beside this checkout")
    text = source.read_text(encoding="utf-8")
    start = text.index(f"\n## {number}.")
    end = text.index(f"\n## {number + 1}.", start)
    return text[start:end]


SOURCES = [pytest.param(PROTOCOL, id="docs/protocol.md"),
           pytest.param(SHARED, id="shared PROTOCOL.md")]


@pytest.mark.parametrize("source", SOURCES)
def test_every_tag_named_in_protocol_section_5_is_known(source):
    section = protocol_section(5, source)
    named = {int(tag, 16) for tag in re.findall(r"`((?:5F|9F|BF|DF)[0-9A-F]{2})`", section)}
    pdol_hex = re.search(r"PDOL: `([0-9A-F ]+)`", section)
    assert pdol_hex is not None
    pdol = dol.parse(bytes.fromhex(pdol_hex.group(1)))
    named |= {entry.tag for entry in pdol}
    assert {0x9F66, 0x9F79, 0xDF60, 0xDF69, 0x9F10, 0x95, 0x9A} <= named
    assert sorted(f"{tag:X}" for tag in named - tags.TAGS.keys()) == []


@pytest.mark.parametrize("source", SOURCES)
def test_every_tag_of_the_member_template_in_protocol_section_4_is_known(source):
    section = protocol_section(4, source)
    member = section[section.index("ember identity application") :]
    named = {int(tag, 16) for tag in re.findall(r"`(DF[0-9A-F]{2})`", member)}
    assert named == set(PROFILE)


def test_typical_unionpay_pdol_is_formatted_by_the_dictionary():
    # n values are right-justified with leading zeros, b values left-justified (Book 3 §5.4).
    pdol = dol.parse(bytes.fromhex("9F66049F02069F1A02DF6001"))
    data = dol.build(pdol, {0x9F02: bytes.fromhex("1000"), 0x9F1A: bytes.fromhex("0156"),
                            0x9F66: bytes.fromhex("28")})
    assert data.hex().upper() == "28000000" + "000000001000" + "0156" + "00"


# --- The table's own rules ------------------------------------------------------------


def test_every_entry_is_valid_and_its_tag_well_formed():
    assert len(tags.TAGS) == 178
    for tag, info in tags.TAGS.items():
        assert info.tag == tag
        assert info.format in tags.FORMATS
        assert info.source in tags.SOURCES
        assert info.spec in tags.SPECS
        assert int.from_bytes(tag_bytes(tag), "big") == tag


def test_constructed_tags_are_never_numeric():
    for tag, info in tags.TAGS.items():
        if is_constructed(tag):
            assert info.format in {"var", "b"}, f"{tag:X}"


def test_tags_is_read_only_and_entries_frozen():
    with pytest.raises(TypeError):
        tags.TAGS[0x01] = tags.TAGS[0x9F02]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        tags.TAGS[0x9F02].name = "x"  # type: ignore[misc]


GOOD = "9F02\tAmount, Authorised (Numeric)\tn\tTerminal\tEMV\n"


def test_parse_table_skips_comments_and_blank_lines():
    table = tags.parse_table("# tag\tname\n\n" + GOOD + "#\n5A\tPAN\tcn\tICC\tEMV\n")
    assert list(table) == [0x9F02, 0x5A]


def test_duplicate_tag_is_refused_with_both_lines():
    bad = GOOD + "# comment\n9F02\tAgain\tb\tTerminal\tPBOC\n"
    with pytest.raises(ValueError, match=r"line 3: tag 9F02 listed twice \(first on line 1\)"):
        tags.parse_table(bad)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("9F02\tAmount\tn\tTerminal", "4 tab-separated fields"),
        ("9F02\tAmount\tn\tTerminal\tEMV\textra", "6 tab-separated fields"),
        ("9f02\tAmount\tn\tTerminal\tEMV", "not upper-case hex"),
        ("9F0\tAmount\tn\tTerminal\tEMV", "not upper-case hex"),
        ("1F\tAmount\tn\tTerminal\tEMV", "not a BER-TLV tag"),
        ("9F0201\tAmount\tn\tTerminal\tEMV", "ends after 2 bytes"),
        ("9F02\tAmount\tbcd\tTerminal\tEMV", "unknown format 'bcd'"),
        ("9F02\tAmount\tn\tCard\tEMV", "unknown source 'Card'"),
        ("9F02\tAmount\tn\tTerminal\tVisa", "unknown spec 'Visa'"),
        ("9F02\t\tn\tTerminal\tEMV", "empty or padded name"),
        ("9F02\t Amount\tn\tTerminal\tEMV", "empty or padded name"),
    ],
)
def test_malformed_lines_are_refused_with_their_line_number(line, message):
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        tags.parse_table("# header\n" + line + "\n", name="bad.tsv")
    assert str(raised.value).startswith("bad.tsv line 2:")


def test_taginfo_validates_itself():
    with pytest.raises(ValueError, match="unknown format"):
        tags.TagInfo(0x9F02, "Amount", "N", "Terminal", "EMV")
    with pytest.raises(ValueError, match="one- to four-byte"):
        tags.TagInfo(0, "Nothing", "b", "ICC", "EMV")


# --- Lookups and their fallbacks ------------------------------------------------------


def test_lookups_of_known_tags():
    assert tags.lookup(0x9F37) is tags.TAGS[0x9F37]
    assert tags.name_of(0x9F37) == "Unpredictable Number"
    assert tags.format_of(0x9F37) == "b"
    assert tags.format_of(0x9A) == "n"
    assert tags.format_of(0x70) == "var"
    assert tags.name_of(0xBF0C) == "File Control Information (FCI) Issuer Discretionary Data"


def test_fallbacks_for_unknown_tags():
    assert tags.lookup(0xDF50) is None
    assert tags.name_of(0xDF50) == "unknown tag DF50"
    assert tags.name_of(0x05) == "unknown tag 05"
    assert tags.format_of(0xDF50) == "b"


@given(st.integers(min_value=1, max_value=0xFFFFFFFF))
def test_lookups_agree_for_any_tag(tag):
    info = tags.lookup(tag)
    if info is None:
        assert tags.name_of(tag) == f"unknown tag {tag:02X}"
        assert tags.format_of(tag) == "b"
    else:
        assert (tags.name_of(tag), tags.format_of(tag)) == (info.name, info.format)
