"""What the kernel learns of the card: its data elements by tag, the AFL, dates, the CVM list.

EMV Book 3 §10.2 and Annex A.  Every parser raises `CardError` on data a card
must not send, naming the data element.

>>> afl = parse_afl(bytes.fromhex("08010201100102001801010118020201"))
>>> [(e.sfi, e.first, e.last, e.oda) for e in afl][:2]
[(1, 1, 2, 1), (2, 1, 2, 0)]
>>> parse_date(bytes.fromhex("301231"))
datetime.date(2030, 12, 31)
>>> bcd_amount(12345).hex()
'000000012345'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from unioncard.apdu import tlv
from unioncard.errors import CardError, DecodeError

__all__ = [
    "AflEntry",
    "CardData",
    "CvmRule",
    "bcd_amount",
    "parse_afl",
    "parse_amount",
    "parse_cvm_list",
    "parse_date",
]

TEMPLATES = frozenset({0x6F, 0xA5, 0xBF0C, 0x61, 0x70, 0x77, 0x80})
"""Constructed templates whose children are data elements (``80`` is handled apart)."""


@dataclass(frozen=True, slots=True)
class AflEntry:
    """One Application File Locator entry: records ``first``..``last`` of ``sfi``, the
    first ``oda`` of which take part in offline data authentication."""

    sfi: int
    first: int
    last: int
    oda: int

    def records(self) -> Iterator[tuple[int, bool]]:
        """(record number, signed for ODA) in order."""
        for number in range(self.first, self.last + 1):
            yield number, number - self.first < self.oda


def parse_afl(raw: bytes) -> list[AflEntry]:
    """The AFL ``94``: 4-byte entries, each checked (Book 3 §10.2)."""
    if not raw or len(raw) % 4:
        raise CardError(f"the AFL has {len(raw)} bytes, not a multiple of 4")
    entries = []
    for at in range(0, len(raw), 4):
        sfi, first, last, oda = raw[at] >> 3, raw[at + 1], raw[at + 2], raw[at + 3]
        if raw[at] & 0x07 or not 1 <= sfi <= 30 or first == 0 or last < first \
                or oda > last - first + 1:
            raise CardError(f"AFL entry {raw[at:at + 4].hex().upper()} is invalid")
        entries.append(AflEntry(sfi, first, last, oda))
    return entries


def parse_date(raw: bytes, what: str = "date") -> dt.date:
    """An n6 date YYMMDD: years 00-49 are 20YY, 50-99 19YY (Book 4 §6.7.3)."""
    text = raw.hex()
    try:
        year = int(text[:2])
        return dt.date(2000 + year if year < 50 else 1900 + year, int(text[2:4]), int(text[4:6]))
    except ValueError:
        raise CardError(f"{what} {text.upper()} is not a YYMMDD date") from None


def bcd_amount(fen: int) -> bytes:
    """An amount as n12 (6 bytes BCD), in fen."""
    if not 0 <= fen <= 999_999_999_999:
        raise ValueError(f"amount {fen} does not fit n12")
    return bytes.fromhex(f"{fen:012d}")


def parse_amount(raw: bytes, what: str = "amount") -> int:
    """An n12 amount back to fen."""
    text = raw.hex()
    if not text.isdigit():
        raise CardError(f"{what} {text.upper()} is not BCD")
    return int(text or "0")


@dataclass(frozen=True, slots=True)
class CvmRule:
    """One CV rule of a CVM list: method (b6-b1), continue on failure (b7), condition."""

    code: int
    condition: int

    @property
    def method(self) -> int:
        return self.code & 0x3F

    @property
    def continue_on_failure(self) -> bool:
        return bool(self.code & 0x40)


def parse_cvm_list(raw: bytes) -> tuple[int, int, list[CvmRule]]:
    """The CVM list ``8E``: amounts X and Y (binary, in the application currency) and rules."""
    if len(raw) < 8 or len(raw) % 2:
        raise CardError(f"the CVM list has {len(raw)} bytes: 8 bytes of amounts then 2-byte "
                        "rules")
    rules = [CvmRule(raw[i], raw[i + 1]) for i in range(8, len(raw), 2)]
    return int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:8], "big"), rules


class CardData:
    """The card's data elements by tag, as the kernel collects them (FCI, GPO, records,
    GET DATA).  A primitive tag met twice in the records with two values is an error
    (Book 3 §7.5, §10.2); the FCI is not a record: a record may repeat one of its tags
    (``50``, ``87``, ``5F2D``, ``9F12``, ...) with another value, the record's then counts."""

    def __init__(self) -> None:
        self._values: dict[int, bytes] = {}
        self._checked: set[int] = set()
        """Tags that came from records or the GPO answer (``unique`` adds)."""

    def __contains__(self, tag: int) -> bool:
        return tag in self._values

    def get(self, tag: int) -> bytes | None:
        return self._values.get(tag)

    def __getitem__(self, tag: int) -> bytes:
        return self._values[tag]

    def set(self, tag: int, value: bytes) -> None:
        self._values[tag] = bytes(value)

    def discard(self, tag: int) -> None:
        self._values.pop(tag, None)

    def items(self) -> Iterable[tuple[int, bytes]]:
        return self._values.items()

    def add(self, nodes: Iterable[tlv.Tlv], *, unique: bool = False, what: str = "") -> None:
        """Every primitive element in ``nodes`` (descending into templates); ``unique``
        (records, the GPO answer) refuses one an earlier record or the GPO answer gave with
        another value (qPBOC cards repeat track 2 of their GPO answer in a record)."""
        for _, node in tlv.walk(nodes):
            if node.children or (tlv.is_constructed(node.tag)):
                continue
            if unique:
                known = self._values.get(node.tag)
                if node.tag in self._checked and known != node.value:
                    raise CardError(f"{what}: tag {node.tag:X} appears twice in the card's "
                                    "data, with different values")
                self._checked.add(node.tag)
            self._values[node.tag] = node.value

    def date(self, tag: int, what: str) -> dt.date | None:
        raw = self._values.get(tag)
        return None if raw is None else parse_date(raw, what)

    @property
    def pan(self) -> str | None:
        """The PAN ``5A`` (``F`` padding dropped), else the one of track 2 ``57``."""
        raw = self._values.get(0x5A)
        if raw is not None:
            return raw.hex().upper().rstrip("F")
        track2 = self._values.get(0x57)
        if track2 is not None:
            return track2.hex().upper().split("D")[0]
        return None

    @property
    def psn(self) -> str:
        """The PAN sequence number ``5F34`` as 2 digits (``00`` when absent)."""
        raw = self._values.get(0x5F34)
        return "00" if raw is None else raw.hex()[-2:]


def decode(raw: bytes, what: str) -> list[tlv.Tlv]:
    """BER-TLV from the card, or `CardError` naming the answer."""
    try:
        return tlv.decode(raw)
    except DecodeError as exc:
        raise CardError(f"{what} answered malformed TLV: {exc.message}") from None
