"""The tag dictionary: EMV Book 3 Annex A data elements plus the PBOC/qPBOC
tags of JR/T 0025 and this project's profile tags.

The table itself is data, in ``tags.tsv`` beside this module (tab-separated:
tag, name, format, source, spec).  Formats are EMV's: ``n`` numeric BCD,
``cn`` compressed numeric, ``a``, ``an``, ``ans``, ``b`` binary, and ``var``
for templates; source is ``ICC``, ``Terminal``, ``Issuer`` or ``ICC/Terminal``.

>>> lookup(0x9F02).name
'Amount, Authorised (Numeric)'
>>> format_of(0x5A)
'cn'
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

__all__ = ["FORMATS", "TAGS", "TagInfo", "format_of", "lookup", "name_of"]

FORMATS = frozenset({"n", "cn", "a", "an", "ans", "b", "var"})
SOURCES = frozenset({"ICC", "Terminal", "Issuer", "ICC/Terminal", "Issuer/Terminal"})


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One data element: its tag, name, EMV format, source and defining spec."""

    tag: int
    name: str
    format: str
    source: str
    spec: str

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"tag {self.tag:X}: unknown format {self.format!r}")
        if self.source not in SOURCES:
            raise ValueError(f"tag {self.tag:X}: unknown source {self.source!r}")


def _load() -> Mapping[int, TagInfo]:
    table: dict[int, TagInfo] = {}
    text = resources.files(__package__).joinpath("tags.tsv").read_text(encoding="utf-8")
    rows = csv.reader((line for line in text.splitlines() if line and not line.startswith("#")),
                      delimiter="\t")
    for row in rows:
        tag_hex, name, fmt, source, spec = row
        tag = int(tag_hex, 16)
        if tag in table:
            raise ValueError(f"tags.tsv: tag {tag_hex} listed twice")
        table[tag] = TagInfo(tag, name, fmt, source, spec)
    return MappingProxyType(table)


TAGS: Mapping[int, TagInfo] = _load()
"""Every known tag, by tag number."""


def lookup(tag: int) -> TagInfo | None:
    return TAGS.get(tag)


def name_of(tag: int) -> str:
    """The tag's name, or ``"unknown tag XXXX"``."""
    info = TAGS.get(tag)
    return info.name if info else f"unknown tag {tag:02X}"


def format_of(tag: int) -> str:
    """The tag's EMV format; unknown tags are treated as binary (``b``)."""
    info = TAGS.get(tag)
    return info.format if info else "b"
