"""Payment system directories: the contact PSE ``1PAY.SYS.DDF01`` and the contactless PPSE
``2PAY.SYS.DDF01`` (EMV 4.3 Book 1 §12.2-12.3; docs/pboc.md).

Both list the card's EMV applications only, each as a directory entry ``61`` carrying
``4F`` ADF name, ``50`` label and ``87`` priority.  The PSE's FCI carries ``88`` (the SFI
of its directory file) and ``5F2D``; its directory is a record file the card OS reads
(`pse_record`).  The PPSE's FCI carries the entries themselves in ``BF0C``.

>>> entry = DirectoryEntry(bytes.fromhex("A000000333010101"), "PBOC DEBIT", 1)
>>> entry.to_tlv().hex().upper()
'61194F08A000000333010101500A50424F43204445424954870101'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unioncard.apdu.tlv import Tlv, encode, encode_length
from unioncard.applet_sim.base import Application, CardServices, application_label
from unioncard.applet_sim.files import Node

__all__ = [
    "DIRECTORY_SFI",
    "PPSE_NAME",
    "PSE_NAME",
    "DirectoryConfig",
    "DirectoryEntry",
    "pse_record",
]

PSE_NAME = b"1PAY.SYS.DDF01"
PPSE_NAME = b"2PAY.SYS.DDF01"
DIRECTORY_SFI = 0x01
LANGUAGES = b"zhen"


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One application of a directory: ADF name, label (ASCII, ≤ 16) and priority."""

    aid: bytes
    label: str
    priority: int = 1

    def __post_init__(self) -> None:
        if not 5 <= len(self.aid) <= 16:
            raise ValueError("an ADF name has 5 to 16 bytes")
        if not (self.label and len(self.label) <= 16 and self.label.isascii()
                and self.label.isprintable()):
            raise ValueError("an application label is 1 to 16 printable ASCII characters")
        if not 0 <= self.priority <= 0xFF:
            raise ValueError("an application priority indicator is one byte")

    def to_tlv(self) -> bytes:
        """The directory entry ``61 { 4F, 50, 87 }``."""
        return encode(Tlv.template(0x61, [
            Tlv.primitive(0x4F, self.aid),
            Tlv.primitive(0x50, self.label.encode("ascii")),
            Tlv.primitive(0x87, bytes([self.priority])),
        ]))

    def to_json(self) -> dict[str, Any]:
        return {"aid": self.aid.hex().upper(), "label": self.label, "priority": self.priority}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DirectoryEntry:
        return cls(bytes.fromhex(doc["aid"]), str(doc["label"]), int(doc["priority"]))


def pse_record(entries: tuple[DirectoryEntry, ...]) -> bytes:
    """Record 1 of the PSE directory file: ``70`` with every entry."""
    return b"\x70" + _length(b"".join(e.to_tlv() for e in entries))


def _length(value: bytes) -> bytes:
    return encode_length(len(value)) + value


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    """A PSE (``kind = "pse"``) or PPSE (``"ppse"``) and the entries it lists."""

    kind: str
    entries: tuple[DirectoryEntry, ...]
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("pse", "ppse"):
            raise ValueError("a directory is a pse or a ppse")
        if len(self.label) > 16 or not (self.label.isascii() and self.label.isprintable()):
            raise ValueError("a directory's label is at most 16 printable ASCII characters")
        if not self.entries:
            raise ValueError("a directory lists at least one application")
        aids = [e.aid for e in self.entries]
        if len(set(aids)) != len(aids):
            raise ValueError("a directory lists each application once")

    @property
    def type(self) -> str:
        return "directory"

    def create(self, card: CardServices, node: Node) -> Application:
        return DirectoryApplication(card, node, self)

    def to_json(self) -> dict[str, Any]:
        return {"type": "directory", "kind": self.kind, "label": self.label,
                "entries": [e.to_json() for e in self.entries]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DirectoryConfig:
        entries = doc["entries"]
        if not isinstance(entries, list):
            raise ValueError("directory entries must be a list")
        return cls(str(doc["kind"]), tuple(DirectoryEntry.from_json(e) for e in entries),
                   str(doc.get("label", "")))


class DirectoryApplication(Application):
    """The FCI of a PSE or PPSE; the PSE's directory records are an ordinary record EF."""

    config: DirectoryConfig

    def fci_proprietary(self) -> bytes:
        if self.config.kind == "pse":
            return (bytes([0x88, 0x01, DIRECTORY_SFI]) + b"\x5F\x2D" + bytes([len(LANGUAGES)])
                    + LANGUAGES + application_label(self.config.label))
        return b"\xBF\x0C" + _length(b"".join(e.to_tlv() for e in self.config.entries))
