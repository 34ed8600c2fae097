"""The tag dictionary: EMV Book 3 Annex A data elements plus the PBOC/qPBOC
tags of JR/T 0025 and this project's profile tags.

The table itself is data, in ``tags.tsv`` beside this module (tab-separated:
tag, name, format, source, spec; ``#`` starts a comment line).  Formats are
EMV's (Book 3 §4.3): ``n`` numeric BCD, ``cn`` compressed numeric, ``a``,
``an``, ``ans``, ``b`` binary, and ``var`` where Annex A writes "var."
(templates and a few variable-structure elements such as the AFL); source is
``ICC``, ``Terminal``, ``Issuer``, ``ICC/Terminal`` or ``Issuer/Terminal``;
spec is ``EMV``, ``PBOC`` or ``profile``.  A tag appears once: where PBOC or
another scheme gives a tag a second meaning, the table keeps one and says why
in a comment line.  See ``docs/tags.md``.

>>> lookup(0x9F02).name
'Amount, Authorised (Numeric)'
>>> format_of(0x5A)
'cn'
>>> name_of(0x9F79), TAGS[0x9F79].spec
('Electronic Cash Balance', 'PBOC')
>>> name_of(0xDF7E), format_of(0xDF7E)
('unknown tag DF7E', 'b')
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

from unioncard.apdu.tlv import read_tag
from unioncard.errors import DecodeError

__all__ = [
    "FORMATS",
    "SOURCES",
    "SPECS",
    "TAGS",
    "TagInfo",
    "format_of",
    "lookup",
    "name_of",
    "parse_table",
]

FORMATS = frozenset({"n", "cn", "a", "an", "ans", "b", "var"})
"""EMV data element formats (Book 3 §4.3); ``var`` is Annex A's "var."."""

SOURCES = frozenset({"ICC", "Terminal", "Issuer", "ICC/Terminal", "Issuer/Terminal"})
"""Where a data element comes from, as Annex A's "Source" column says."""

SPECS = frozenset({"EMV", "PBOC", "profile"})
"""Which document defines the element: EMV Book 3, JR/T 0025, or this project."""

_FIELDS = 5
_TAG_HEX = re.compile(r"(?:[0-9A-F]{2}){1,4}")


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One data element: its tag, name, EMV format, source and defining spec."""

    tag: int
    name: str
    format: str
    source: str
    spec: str

    def __post_init__(self) -> None:
        if not 0 < self.tag <= 0xFFFFFFFF:
            raise ValueError(f"tag {self.tag:#x} is not a one- to four-byte tag")
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"tag {self.tag:X}: empty or padded name {self.name!r}")
        if self.format not in FORMATS:
            raise ValueError(f"tag {self.tag:X}: unknown format {self.format!r}")
        if self.source not in SOURCES:
            raise ValueError(f"tag {self.tag:X}: unknown source {self.source!r}")
        if self.spec not in SPECS:
            raise ValueError(f"tag {self.tag:X}: unknown spec {self.spec!r}")


def _parse_tag(tag_hex: str, where: str) -> int:
    """The tag number of a hex field, which must be one well-formed BER tag (Annex B1)."""
    if not _TAG_HEX.fullmatch(tag_hex):
        raise ValueError(f"{where}: tag {tag_hex!r} is not upper-case hex of 1-4 bytes")
    raw = bytes.fromhex(tag_hex)
    try:
        tag, end = read_tag(raw, 0)
    except DecodeError as exc:
        raise ValueError(f"{where}: {tag_hex} is not a BER-TLV tag: {exc}") from None
    if end != len(raw):
        raise ValueError(f"{where}: {tag_hex} is not a BER-TLV tag: it ends after {end} bytes")
    return tag


def parse_table(text: str, name: str = "tags.tsv") -> Mapping[int, TagInfo]:
    """Parse a tag table in the ``tags.tsv`` layout; refuse malformed lines and duplicates.

    >>> table = parse_table("# a comment\\n9F02\\tAmount\\tn\\tTerminal\\tEMV\\n")
    >>> table[0x9F02].format
    'n'
    """
    table: dict[int, TagInfo] = {}
    first_line: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{name} line {number}"
        fields = line.split("\t")
        if len(fields) != _FIELDS:
            raise ValueError(f"{where}: {len(fields)} tab-separated fields, expected {_FIELDS}")
        tag_hex, element, fmt, source, spec = fields
        tag = _parse_tag(tag_hex, where)
        if tag in table:
            first = first_line[tag]
            raise ValueError(f"{where}: tag {tag_hex} listed twice (first on line {first})")
        try:
            table[tag] = TagInfo(tag, element, fmt, source, spec)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        first_line[tag] = number
    return MappingProxyType(table)


@cache
def _table() -> Mapping[int, TagInfo]:
    """The packaged ``tags.tsv``, read when a tag is first looked up (a purse tap never
    looks one up, so it never pays for reading it)."""
    from importlib import resources

    text = resources.files("unioncard.apdu").joinpath("tags.tsv").read_text(encoding="utf-8")
    return parse_table(text)


class _Table(Mapping[int, TagInfo]):
    """A read-only view of the packaged table that reads it on first use."""

    def __getitem__(self, tag: int) -> TagInfo:
        return _table()[tag]

    def __iter__(self) -> Iterator[int]:
        return iter(_table())

    def __len__(self) -> int:
        return len(_table())


TAGS: Mapping[int, TagInfo] = _Table()
"""Every known tag, by tag number (read-only)."""


def lookup(tag: int) -> TagInfo | None:
    """The tag's entry, or ``None`` for a tag the dictionary does not know."""
    return _table().get(tag)


def name_of(tag: int) -> str:
    """The tag's name, or ``"unknown tag XXXX"``."""
    info = _table().get(tag)
    return info.name if info else f"unknown tag {tag:02X}"


def format_of(tag: int) -> str:
    """The tag's EMV format; unknown tags are treated as binary (``b``)."""
    info = _table().get(tag)
    return info.format if info else "b"
