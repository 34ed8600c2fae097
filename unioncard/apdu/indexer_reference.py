"""The plain-Python reference of the bulk trace indexer, and the TLV-indexing policy.

Obviously right rather than fast: frames are split one at a time, commands
are checked with `CommandAPDU.from_bytes`, and response data is decoded with
the reference BER-TLV decoder `tlv.decode`; value offsets are recovered by
re-reading each node's header with `tlv.read_tag` / `tlv.read_length`.  The
numba kernel in `unioncard.apdu.indexer` must produce exactly the same
`TraceIndex` (the agreement tests compare every array).

The policy of which responses are TLV-indexed is `expects_tlv`, documented
in docs/traces.md ("What gets TLV-indexed").
"""

from __future__ import annotations

import numpy as np

from unioncard.apdu import tlv
from unioncard.apdu.apdu import CommandAPDU
from unioncard.apdu.indexer import _FRAME_DTYPES, _OBJECT_DTYPES, FrameStatus, TlvClass, TraceIndex
from unioncard.apdu.trace import Device, Direction, FrameKind
from unioncard.apdu.trace_binary import HEADER, MAGIC
from unioncard.errors import DecodeError

__all__ = ["expects_tlv", "is_get_response", "object_offsets", "reference_index"]

EMV_RECORD_SFIS = range(1, 11)
"""Short EF identifiers whose contents are BER-TLV: EMV Book 3 §5.3.2.2 reserves SFI 1-10
for files of template-70 records; READ BINARY by SFI follows the same rule (profile)."""


def is_get_response(command: bytes) -> bool:
    """GET RESPONSE (INS C0, ISO 7816-4 §7.6.1): the continuation of the previous command."""
    return len(command) >= 4 and command[0] != 0xFF and command[1] == 0xC0


def expects_tlv(command: bytes, last: bool = False) -> bool:
    """Whether the response to ``command`` carries BER-TLV data (the indexing policy).

    True for SELECT (FCI/FCP), GET DATA, INTERNAL AUTHENTICATE, GET PROCESSING
    OPTIONS and GENERATE AC (CLA 8x), READ RECORD of SFI 1-10 and READ BINARY
    by SFI 1-10; a GET RESPONSE inherits ``last``, the answer for the device's
    previous other command.  False for everything else: purse and PSAM commands,
    READ BINARY of EF 0015, logs, GET CHALLENGE, PC/SC pseudo-APDUs (CLA FF).

    >>> expects_tlv(bytes.fromhex("00B2010C00")), expects_tlv(bytes.fromhex("00B095001E"))
    (True, False)
    """
    if len(command) < 4:
        return False
    cla, ins, p1, p2 = command[:4]
    if cla == 0xFF:
        return False
    if ins == 0xC0:
        return last
    if ins in (0xA4, 0xCA, 0x88):
        return True
    if ins in (0xA8, 0xAE):
        return bool(cla & 0x80)
    if ins == 0xB2:
        return p2 >> 3 in EMV_RECORD_SFIS
    if ins == 0xB0:
        return bool(p1 & 0x80) and p1 & 0x1F in EMV_RECORD_SFIS
    return False


def object_offsets(data: bytes, nodes: list[tlv.Tlv]) -> list[tuple[int, int, int, int]]:
    """(tag, depth, value offset, length) of every node of ``tlv.decode(data)``, in walk order.

    >>> data = bytes.fromhex("00 70 03 5A 01 12")
    >>> object_offsets(data, tlv.decode(data))
    [(112, 0, 3, 3), (90, 1, 5, 1)]
    """
    out: list[tuple[int, int, int, int]] = []
    _objects(data, nodes, 0, len(data), 0, out)
    return out


def _objects(data: bytes, nodes: list[tlv.Tlv], pos: int, end: int, depth: int,
             out: list[tuple[int, int, int, int]]) -> None:
    for node in nodes:
        while data[pos] in tlv.PADDING:
            pos += 1
        tag, at = tlv.read_tag(data, pos, end)
        length, at = tlv.read_length(data, at, end)
        if tag != node.tag or length != len(node.value):
            raise RuntimeError(f"reference index: header at {pos} does not match tag {node.tag:X}")
        out.append((node.tag, depth, at, length))
        if node.children:
            _objects(data, node.children, at, at + length, depth + 1, out)
        pos = at + length


def reference_index(buffer: bytes) -> TraceIndex:
    """Index a whole binary trace the slow, obvious way."""
    data = bytes(buffer)
    if not data.startswith(MAGIC):
        return TraceIndex.empty(magic_ok=False)
    rows: list[tuple[int, ...]] = []
    objects: list[tuple[int, int, int, int, int]] = []
    pending: dict[Device, tuple[int, bool]] = {}
    last = {Device.CARD: False, Device.PSAM: False}
    pos = len(MAGIC)
    while pos < len(data):
        index = len(rows)
        kind = data[pos]
        if len(data) - pos < HEADER:
            rows.append((pos, -1, kind, FrameStatus.TRUNCATED, -1, TlvClass.NONE, -1, -1, -1))
            break
        length = int.from_bytes(data[pos + 1: pos + 3], "big")
        if len(data) - pos - HEADER < length:
            rows.append((pos, length, kind, FrameStatus.TRUNCATED, -1, TlvClass.NONE, -1, -1,
                         -1))
            break
        start = pos + HEADER
        payload = data[start: start + length]
        status, peer, tlv_class, error, sw, command = FrameStatus.OK, -1, TlvClass.NONE, -1, -1, -1
        try:
            frame_kind = FrameKind(kind)
        except ValueError:
            status = FrameStatus.UNKNOWN_KIND
        else:
            device = frame_kind.device
            if frame_kind.direction is Direction.COMMAND:
                if length >= 4:
                    command = (payload[0] << 16) | (payload[1] << 8) | payload[2]
                try:
                    CommandAPDU.from_bytes(payload)
                except DecodeError:
                    status = FrameStatus.BAD_COMMAND
                    expect = False
                else:
                    expect = expects_tlv(payload, last[device])
                    if not is_get_response(payload):
                        last[device] = expect
                pending[device] = (index, expect)
            else:
                peer, expect = pending.pop(device, (-1, False))
                if length < 2:
                    status = FrameStatus.NO_SW
                else:
                    sw = int.from_bytes(payload[-2:], "big")
                    body = payload[:-2]
                    if body and not expect:
                        tlv_class = TlvClass.RAW
                    elif body:
                        try:
                            nodes = tlv.decode(body)
                        except DecodeError as exc:
                            tlv_class, error = TlvClass.MALFORMED, start + exc.offset
                        else:
                            tlv_class = TlvClass.OK
                            objects.extend((index, tag, depth, start + offset, size) for
                                           tag, depth, offset, size in object_offsets(body, nodes))
        rows.append((pos, length, kind, status, peer, tlv_class, error, sw, command))
        pos = start + length
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(_FRAME_DTYPES)
    object_columns = list(zip(*objects, strict=True)) if objects else [()] * len(_OBJECT_DTYPES)
    arrays = {name: np.array(column, dtype=dtype)
              for (name, dtype), column in zip(_FRAME_DTYPES.items(), columns, strict=True)}
    arrays.update({name: np.array(column, dtype=dtype) for (name, dtype), column in
                   zip(_OBJECT_DTYPES.items(), object_columns, strict=True)})
    return TraceIndex.from_columns(arrays, 0, len(data))
