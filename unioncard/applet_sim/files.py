"""The card's file system: MF, DFs and EFs, their NVM cells, and SELECT search (ISO/IEC 7816-4 §7).

The tree is static after personalization (`DF`, `EF` are frozen descriptions);
file contents live in NVM cells so that every update is journaled:

- transparent EF ``3F00/1002/0015``: one cell at the file's path;
- linear EF: one cell per record, ``<path>#<n>`` (n from 1); records exist from 1
  up to the first missing cell;
- cyclic EF: slots ``<path>#<i>`` and a pointer cell ``<path>#ptr`` holding the
  newest slot and the number of records written; record 1 is the newest.

Appending to a cyclic file is two physical writes (the slot, then the pointer),
each one a named NVM step.

>>> ef = EF(0x0015, FileKind.TRANSPARENT, 4, sfi=0x15)
>>> mf = DF(0x3F00, children=(DF(0x1001, children=(ef,)),))
>>> fs = FileSystem(mf)
>>> fs.select_fid("3F00", 0x1001).path, fs.child_by_sfi("3F00/1001", 0x15).path
('3F00/1001', '3F00/1001/0015')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from unioncard.apdu import tlv
from unioncard.applet_sim.nvm import Nvm, Step

__all__ = [
    "DF",
    "EF",
    "MF_FID",
    "MF_PATH",
    "Access",
    "AppConfig",
    "FileKind",
    "FileSystem",
    "Node",
    "append_cyclic",
    "personalize_binary",
    "personalize_records",
    "read_record",
    "read_transparent",
    "record_count",
    "write_record",
    "write_transparent",
]

MF_FID = 0x3F00
MF_PATH = "3F00"


class Access(StrEnum):
    """Access condition of a file operation."""

    ALWAYS = "always"
    PIN = "pin"
    NEVER = "never"


class FileKind(StrEnum):
    TRANSPARENT = "transparent"
    LINEAR = "linear"
    CYCLIC = "cyclic"


class _Descriptor(IntEnum):
    """ISO 7816-4 file descriptor byte (tag 82)."""

    TRANSPARENT = 0x01
    LINEAR = 0x02
    CYCLIC = 0x06
    DF = 0x38


class AppConfig(Protocol):
    """The static configuration of an application attached to a DF."""

    @property
    def type(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class EF:
    """An elementary file: transparent (``size`` bytes) or records of ``size`` bytes."""

    fid: int
    kind: FileKind
    size: int
    records: int = 0
    sfi: int | None = None
    read: Access = Access.ALWAYS
    update: Access = Access.NEVER
    capp: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.fid <= 0xFFFE or self.fid == MF_FID:
            raise ValueError(f"EF file identifier {self.fid:04X} is reserved or out of range")
        object.__setattr__(self, "kind", FileKind(self.kind))
        object.__setattr__(self, "read", Access(self.read))
        object.__setattr__(self, "update", Access(self.update))
        if self.sfi is not None and not 1 <= self.sfi <= 30:
            raise ValueError(f"short file identifier must be 1..30, got {self.sfi}")
        if self.kind is FileKind.TRANSPARENT:
            if not 1 <= self.size <= 0x7FFF or self.records:
                raise ValueError("a transparent EF has 1..32767 bytes and no records")
        elif not 1 <= self.size <= 255 or not 1 <= self.records <= 254:
            raise ValueError("a record EF has records of 1..255 bytes, 1..254 of them")
        if self.capp and self.kind is not FileKind.LINEAR:
            raise ValueError("a CAPP (composite) file is a linear record file")


@dataclass(frozen=True, slots=True)
class DF:
    """A dedicated file (the MF, or an application DF/ADF), with its application if any."""

    fid: int | None
    aid: bytes | None = None
    children: tuple[EF | DF, ...] = ()
    app: AppConfig | None = field(default=None, compare=False)
    name: str = ""

    def __post_init__(self) -> None:
        if self.fid is None and self.aid is None:
            raise ValueError("a DF needs a file identifier or a DF name")
        if self.fid is not None and not 0 <= self.fid <= 0xFFFE:
            raise ValueError(f"DF file identifier {self.fid:04X} is out of range")
        if self.aid is not None and not 5 <= len(self.aid) <= 16:
            raise ValueError(f"a DF name (AID) has 5..16 bytes, got {len(self.aid)}")
        fids = [c.fid for c in self.children if c.fid is not None]
        if len(fids) != len(set(fids)):
            raise ValueError(f"duplicate file identifiers under DF {self.fid}")
        sfis = [c.sfi for c in self.children if isinstance(c, EF) and c.sfi is not None]
        if len(sfis) != len(set(sfis)):
            raise ValueError(f"duplicate short file identifiers under DF {self.fid}")


@dataclass(frozen=True, slots=True)
class Node:
    """A file in the built tree: its description, path and parent path."""

    spec: EF | DF
    path: str
    parent: str | None

    @property
    def is_df(self) -> bool:
        return isinstance(self.spec, DF)

    @property
    def ef(self) -> EF:
        if not isinstance(self.spec, EF):
            raise TypeError(f"{self.path} is not an EF")
        return self.spec

    @property
    def df(self) -> DF:
        if not isinstance(self.spec, DF):
            raise TypeError(f"{self.path} is not a DF")
        return self.spec

    def fcp(self) -> bytes:
        """File control parameters (template 62): size, descriptor, FID, SFI."""
        spec = self.spec
        items = []
        if isinstance(spec, EF):
            if spec.kind is FileKind.TRANSPARENT:
                items.append(tlv.Tlv.primitive(0x80, spec.size.to_bytes(2, "big")))
                items.append(tlv.Tlv.primitive(0x82, bytes([_Descriptor.TRANSPARENT])))
            else:
                linear = spec.kind is FileKind.LINEAR
                descriptor = _Descriptor.LINEAR if linear else _Descriptor.CYCLIC
                items.append(tlv.Tlv.primitive(0x80, (spec.size * spec.records).to_bytes(2, "big")))
                items.append(tlv.Tlv.primitive(
                    0x82, bytes([descriptor, 0x21]) + spec.size.to_bytes(2, "big")
                    + bytes([spec.records])))
            items.append(tlv.Tlv.primitive(0x83, spec.fid.to_bytes(2, "big")))
            if spec.sfi is not None:
                items.append(tlv.Tlv.primitive(0x88, bytes([spec.sfi])))
        else:
            items.append(tlv.Tlv.primitive(0x82, bytes([_Descriptor.DF])))
            if spec.fid is not None:
                items.append(tlv.Tlv.primitive(0x83, spec.fid.to_bytes(2, "big")))
            if spec.aid is not None:
                items.append(tlv.Tlv.primitive(0x84, spec.aid))
        return tlv.encode(tlv.Tlv.template(0x62, items))


def _path_name(spec: EF | DF, parent: str) -> str:
    if spec.fid is not None:
        return f"{parent}/{spec.fid:04X}"
    assert isinstance(spec, DF) and spec.aid is not None  # checked in DF.__post_init__
    return f"{parent}/{spec.aid.hex().upper()}"


class FileSystem:
    """The built tree: nodes by path, and the ISO 7816-4 search rules of SELECT."""

    def __init__(self, mf: DF) -> None:
        if mf.fid != MF_FID:
            raise ValueError("the root of a card's file system is the MF, 3F00")
        self.mf = mf
        self.nodes: dict[str, Node] = {}
        self._children: dict[str, list[Node]] = {}
        self._add(mf, MF_PATH, None)

    def _add(self, spec: EF | DF, path: str, parent: str | None) -> None:
        node = Node(spec, path, parent)
        self.nodes[path] = node
        if parent is not None:
            self._children[parent].append(node)
        if isinstance(spec, DF):
            self._children[path] = []
            for child in spec.children:
                self._add(child, _path_name(child, path), path)

    # --- navigation ------------------------------------------------------------------

    def node(self, path: str) -> Node:
        return self.nodes[path]

    def children(self, df_path: str) -> list[Node]:
        return self._children.get(df_path, [])

    def walk(self) -> Iterator[Node]:
        """Every node, in document (personalization) order."""
        return iter(self.nodes.values())

    def child_by_fid(self, df_path: str, fid: int) -> Node | None:
        for child in self.children(df_path):
            if child.spec.fid == fid:
                return child
        return None

    def cyclic_child(self, df_path: str, fid: int) -> Node:
        """The cyclic EF ``fid`` of the DF ``df_path`` (an application's log); `LookupError`
        when there is none."""
        node = self.child_by_fid(df_path, fid)
        if node is None or node.ef.kind is not FileKind.CYCLIC:
            raise LookupError(f"{df_path} has no cyclic log EF {fid:04X}")
        return node

    def child_by_sfi(self, df_path: str, sfi: int) -> Node | None:
        for child in self.children(df_path):
            if isinstance(child.spec, EF) and child.spec.sfi == sfi:
                return child
        return None

    def select_fid(self, current_df: str, fid: int) -> Node | None:
        """SELECT by FID (P1 00): the MF; else the children of the current DF, the current
        DF itself, its parent, and the parent's children, in that order (ISO 7816-4 §7.1.1)."""
        if fid == MF_FID:
            return self.nodes[MF_PATH]
        found = self.child_by_fid(current_df, fid)
        if found is not None:
            return found
        current = self.nodes[current_df]
        if current.spec.fid == fid:
            return current
        if current.parent is not None:
            parent = self.nodes[current.parent]
            if parent.spec.fid == fid:
                return parent
            return self.child_by_fid(parent.path, fid)
        return None

    def select_aid(self, name: bytes, after: str | None = None) -> Node | None:
        """SELECT by DF name (P1 04): the first DF whose name starts with ``name``
        (right truncation), or the next one after ``after`` (P2 ``02``)."""
        passed = after is None
        for node in self.walk():
            if not passed:
                passed = node.path == after
                continue
            if isinstance(node.spec, DF) and node.spec.aid is not None \
                    and node.spec.aid.startswith(name):
                return node
        return None

    def select_path(self, start: str, fids: list[int]) -> Node | None:
        """SELECT by path (P1 08 from the MF, 09 from the current DF)."""
        node: Node | None = self.nodes[start]
        for fid in fids:
            if node is None or not node.is_df:
                return None
            node = self.child_by_fid(node.path, fid)
        return node

    def df_of(self, path: str) -> Node:
        """The DF a file is in (a DF is its own)."""
        node = self.nodes[path]
        if node.is_df or node.parent is None:
            return node
        return self.nodes[node.parent]

    def app_df(self, path: str) -> Node | None:
        """The nearest DF (the file's own, or an ancestor) that hosts an application."""
        node: Node | None = self.df_of(path)
        while node is not None:
            if isinstance(node.spec, DF) and node.spec.app is not None:
                return node
            node = self.nodes[node.parent] if node.parent is not None else None
        return None

    def fci(self, df: Node, proprietary: bytes) -> bytes:
        """FCI of a DF (template 6F): DF name or FID, and the application's A5 template."""
        spec = df.df
        items = []
        if spec.aid is not None:
            items.append(tlv.Tlv.primitive(0x84, spec.aid))
        elif spec.fid is not None:
            items.append(tlv.Tlv.primitive(0x83, spec.fid.to_bytes(2, "big")))
        if proprietary:
            items.append(tlv.Tlv(0xA5, proprietary, tlv.decode(proprietary)))
        return tlv.encode(tlv.Tlv.template(0x6F, items))


# --- contents in NVM -------------------------------------------------------------------


def read_transparent(nvm: Nvm, node: Node) -> bytes:
    """The whole content of a transparent EF (zeros if never written)."""
    ef = node.ef
    return nvm.get(node.path) or bytes(ef.size)


def write_transparent(nvm: Nvm, step: str, node: Node, offset: int, data: bytes) -> None:
    """Journal new bytes at ``offset`` of a transparent EF (one physical write)."""
    content = bytearray(read_transparent(nvm, node))
    if offset + len(data) > len(content):
        raise ValueError("write beyond the end of the file")
    content[offset:offset + len(data)] = data
    nvm.write(step, node.path, bytes(content))


def _pointer(nvm: Nvm, node: Node) -> tuple[int, int]:
    raw = nvm.get(f"{node.path}#ptr")
    return (raw[0], raw[1]) if raw else (0, 0)


def record_count(nvm: Nvm, node: Node) -> int:
    """How many records the file holds now."""
    ef = node.ef
    if ef.kind is FileKind.CYCLIC:
        return _pointer(nvm, node)[1]
    count = 0
    while count < ef.records and nvm.get(f"{node.path}#{count + 1}") is not None:
        count += 1
    return count


def _cyclic_slot(nvm: Nvm, node: Node, number: int) -> int | None:
    newest, count = _pointer(nvm, node)
    if not 1 <= number <= count:
        return None
    return (newest - number) % node.ef.records + 1


def read_record(nvm: Nvm, node: Node, number: int) -> bytes | None:
    """Record ``number`` (1-based; in a cyclic file 1 is the newest), or None."""
    ef = node.ef
    if ef.kind is FileKind.CYCLIC:
        slot = _cyclic_slot(nvm, node, number)
        return None if slot is None else nvm.get(f"{node.path}#{slot}")
    if not 1 <= number <= record_count(nvm, node):
        return None
    return nvm.get(f"{node.path}#{number}")


def write_record(nvm: Nvm, step: str, node: Node, number: int, data: bytes) -> None:
    """Journal a new content for linear record ``number`` (which must exist or be the next)."""
    ef = node.ef
    if ef.kind is not FileKind.LINEAR or len(data) != ef.size:
        raise ValueError("write_record takes a whole record of a linear file")
    if not 1 <= number <= min(record_count(nvm, node) + 1, ef.records):
        raise ValueError(f"record {number} cannot be written")
    nvm.write(step, f"{node.path}#{number}", data)


def append_cyclic(
    nvm: Nvm, node: Node, data: bytes,
    record_step: str = Step.PURSE_LOG, pointer_step: str = Step.PURSE_LOG_POINTER,
) -> None:
    """Add a record to a cyclic file, overwriting the oldest when full: the slot, then
    the pointer (two physical writes)."""
    ef = node.ef
    if ef.kind is not FileKind.CYCLIC or len(data) != ef.size:
        raise ValueError("append_cyclic takes a whole record of a cyclic file")
    newest, count = _pointer(nvm, node)
    slot = newest % ef.records + 1
    nvm.write(record_step, f"{node.path}#{slot}", data)
    nvm.write(pointer_step, f"{node.path}#ptr", bytes([slot, min(count + 1, ef.records)]))


def personalize_records(nvm: Nvm, node: Node, records: list[bytes]) -> None:
    """Personalization: lay records into a record file (no tear points)."""
    ef = node.ef
    if len(records) > ef.records or any(len(r) != ef.size for r in records):
        raise ValueError(f"{node.path}: records must be {ef.size} bytes, at most {ef.records}")
    for i, record in enumerate(records, 1):
        nvm.format(f"{node.path}#{i}", record)
    if ef.kind is FileKind.CYCLIC and records:
        # personalized in chronological order: the last given is the newest
        nvm.format(f"{node.path}#ptr", bytes([len(records), len(records)]))


def personalize_binary(nvm: Nvm, node: Node, content: bytes) -> None:
    """Personalization: set a transparent EF's content (padded with zeros)."""
    ef = node.ef
    if len(content) > ef.size:
        raise ValueError(f"{node.path}: {len(content)} bytes do not fit {ef.size}")
    nvm.format(node.path, content + bytes(ef.size - len(content)))
