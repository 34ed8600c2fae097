"""The fast bulk indexer of binary traces (a numba kernel), and its streaming driver.

`index_buffer` indexes a whole ``UCT1`` buffer (bytes, or an ``np.memmap`` of a
file); `iter_index` streams a file of any size in fixed chunks (frames that
cross a chunk border are carried over), yielding one `TraceIndex` part at a
time, so memory stays bounded.  Both return numpy arrays:

- per frame: header offset, payload length, kind, `FrameStatus`, the command
  frame a response answers (``peer``), the `TlvClass` of a response's data, the
  offset of its first TLV error, its status word, and a command's CLA INS P1;
- per BER-TLV object inside response data: frame, tag, depth, value offset
  and value length, depth-first in document order (as `tlv.walk`).

Policy (docs/traces.md, "What gets TLV-indexed"): a response's data (before
SW1 SW2) is decoded as BER-TLV when the command it answers returns BER-TLV by
specification (`indexer_reference.expects_tlv`); data that decodes is indexed whole, data that
does not is `TlvClass.MALFORMED` with the offset of the error, and its objects
are dropped (all or nothing, as `tlv.decode` raises).  Other data is
`TlvClass.RAW` (purse answers, EF 0015, logs): not decoded, not an error.

Malformed input never stops the kernel: a frame of unknown kind is skipped by
its length and flagged, a truncated last frame is flagged, a response without
a status word and a command that is not a valid APDU encoding are flagged; each
is reported by frame index.  The kernel checks every offset against the buffer
before reading (run the agreement tests with ``UNIONCARD_JIT_DEBUG=1`` to have
numba prove it).  `unioncard.apdu.indexer_reference` is the plain-Python
reference it must agree with exactly.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from unioncard.apdu.tlv import MAX_DEPTH
from unioncard.apdu.trace import MAX_FRAME, TraceRecord
from unioncard.apdu.trace_binary import HEADER, MAGIC, encode_frame
from unioncard.jit import jit

__all__ = [
    "CHUNK",
    "FrameStatus",
    "TlvClass",
    "TraceIndex",
    "concat",
    "index_buffer",
    "iter_index",
    "iter_index_records",
]

CHUNK = 1 << 23
"""Bytes of file indexed per kernel call when streaming (8 MiB)."""
FRAME_CAPACITY = 1 << 18
OBJECT_CAPACITY = 1 << 19
MIN_OBJECT_CAPACITY = MAX_FRAME // 2 + 1  # the most objects one frame's data can hold


class FrameStatus(IntEnum):
    """Per-frame verdict of the indexer."""

    OK = 0
    UNKNOWN_KIND = 1  # kind not 01/02/11/12: skipped by its length
    TRUNCATED = 2  # the last frame's header or payload runs past the end of the trace
    NO_SW = 3  # a response of fewer than two bytes
    BAD_COMMAND = 4  # a command that is none of the seven ISO 7816-4 encodings


class TlvClass(IntEnum):
    """What the indexer made of a frame's data."""

    NONE = 0  # a command, a response without data, or a malformed frame
    RAW = 1  # response data not expected to be BER-TLV: not decoded
    OK = 2  # BER-TLV, indexed
    MALFORMED = 3  # expected BER-TLV, but does not decode: objects dropped


# kernel stop reasons
_DONE, _MORE, _FULL = 0, 1, 2
# state slots per device (card 0, psam 1): pending command frame, it expects TLV,
# the last non-GET-RESPONSE command expected TLV
_STATE = 3


@jit
def _expects_tlv_kernel(cla: int, ins: int, p1: int, p2: int, last: int) -> int:
    if cla == 0xFF:
        return 0
    if ins == 0xC0:  # GET RESPONSE continues the previous command
        return last
    if ins == 0xA4 or ins == 0xCA or ins == 0x88:  # SELECT, GET DATA, INTERNAL AUTHENTICATE
        return 1
    if (ins == 0xA8 or ins == 0xAE) and cla & 0x80:  # GET PROCESSING OPTIONS, GENERATE AC
        return 1
    if ins == 0xB2:  # READ RECORD: EMV files SFI 1..10 hold template-70 records
        sfi = p2 >> 3
        return 1 if 1 <= sfi <= 10 else 0
    if ins == 0xB0:  # READ BINARY by short EF identifier 1..10
        return 1 if (p1 & 0x80) and 1 <= (p1 & 0x1F) <= 10 else 0
    return 0


@jit
def _at(buf: Any, i: int) -> int:
    """buf[i] as a signed 64-bit int (numba would otherwise mix uint8 into uint64)."""
    return int(np.int64(buf[i]))


@jit
def _command_ok(buf: Any, start: int, n: int) -> bool:
    """CommandAPDU.from_bytes accepts these n bytes (ISO 7816-4 §5.1 cases)."""
    if n < 4:
        return False
    if n <= 5:
        return True
    b5: int = _at(buf, start + 4)
    if b5 != 0:
        return n == 5 + b5 or n == 6 + b5
    if n < 7:
        return False
    if n == 7:
        return True
    length: int = (_at(buf, start + 5) << 8) | _at(buf, start + 6)
    if length == 0:
        return False
    return n == 7 + length or n == 9 + length


@jit
def _scan_tlv(buf: Any, start: int, end: int, base: int, frame: int, no: int,
              o_frame: Any, o_tag: Any, o_depth: Any, o_off: Any, o_len: Any,
              ends: Any) -> tuple[int, int]:
    """BER-TLV objects of buf[start:end] as tlv.decode reads them.

    Returns (objects written so far, error offset or -1); on error the caller
    drops this frame's objects.  Error offsets match tlv.decode's DecodeError.
    """
    depth = 0
    ends[0] = end
    pos = start
    while True:
        limit = ends[depth]
        if pos >= limit:
            if depth == 0:
                return no, -1
            depth -= 1
            continue
        first = _at(buf, pos)
        if first == 0x00 or first == 0xFF:
            pos += 1
            continue
        head = pos
        tag = first
        pos += 1
        if first & 0x1F == 0x1F:
            while True:
                if pos >= limit:
                    return no, head  # multi-byte tag truncated
                b = _at(buf, pos)
                if pos == head + 1 and b & 0x7F == 0:
                    return no, head  # first subsequent tag byte 00 or 80
                tag = (tag << 8) | b
                pos += 1
                if not b & 0x80:
                    break
                if pos - head >= 4:
                    return no, head  # tag longer than four bytes
        if pos >= limit:
            return no, pos  # length expected
        length = _at(buf, pos)
        if length < 0x80:
            pos += 1
        else:
            count = length & 0x7F
            if count == 0 or count > 4 or pos + 1 + count > limit:
                return no, pos
            length = 0
            for k in range(count):
                length = (length << 8) | _at(buf, pos + 1 + k)
            pos += 1 + count
        stop = pos + length
        if stop > limit:
            return no, head  # value overruns
        o_frame[no] = frame
        o_tag[no] = tag
        o_depth[no] = depth
        o_off[no] = base + pos
        o_len[no] = length
        no += 1
        if first & 0x20:
            if depth >= MAX_DEPTH:
                return no, head
            depth += 1
            ends[depth] = stop
        else:
            pos = stop


@jit
def _index_kernel(buf: Any, pos: int, final: bool, base: int, frame0: int, state: Any,
                  f_off: Any, f_len: Any, f_kind: Any, f_status: Any, f_peer: Any,
                  f_tlv: Any, f_err: Any, f_sw: Any, f_cmd: Any,
                  o_frame: Any, o_tag: Any, o_depth: Any, o_off: Any, o_len: Any,
                  ends: Any) -> tuple[int, int, int, int]:
    n = buf.shape[0]
    fcap = f_off.shape[0]
    ocap = o_tag.shape[0]
    nf = 0
    no = 0
    while pos < n:
        if nf >= fcap:
            return pos, nf, no, _FULL
        remaining = n - pos
        length = -1
        if remaining >= HEADER:
            length = (_at(buf, pos + 1) << 8) | _at(buf, pos + 2)
        if length < 0 or remaining < HEADER + length:
            if not final:
                return pos, nf, no, _MORE
            f_off[nf] = base + pos
            f_len[nf] = length
            f_kind[nf] = buf[pos]
            f_status[nf] = FrameStatus.TRUNCATED
            f_peer[nf] = -1
            f_tlv[nf] = TlvClass.NONE
            f_err[nf] = -1
            f_sw[nf] = -1
            f_cmd[nf] = -1
            nf += 1
            pos = n
            break
        kind = _at(buf, pos)
        start = pos + HEADER
        if (kind == 0x02 or kind == 0x12) and ocap - no < length // 2 + 1:
            return pos, nf, no, _FULL
        index = frame0 + nf
        f_off[nf] = base + pos
        f_len[nf] = length
        f_kind[nf] = kind
        f_status[nf] = FrameStatus.OK
        f_peer[nf] = -1
        f_tlv[nf] = TlvClass.NONE
        f_err[nf] = -1
        f_sw[nf] = -1
        f_cmd[nf] = -1
        slot = _STATE * (1 if kind & 0x10 else 0)
        if kind == 0x01 or kind == 0x11:
            expect = 0
            cla = ins = p1 = 0
            if length >= 4:
                cla = _at(buf, start)
                ins = _at(buf, start + 1)
                p1 = _at(buf, start + 2)
                f_cmd[nf] = (cla << 16) | (ins << 8) | p1
            if _command_ok(buf, start, length):
                expect = _expects_tlv_kernel(cla, ins, p1, _at(buf, start + 3), state[slot + 2])
                if cla == 0xFF or ins != 0xC0:
                    state[slot + 2] = expect
            else:
                f_status[nf] = FrameStatus.BAD_COMMAND
            state[slot] = index
            state[slot + 1] = expect
        elif kind == 0x02 or kind == 0x12:
            peer = state[slot]
            expect = state[slot + 1] if peer >= 0 else 0
            state[slot] = -1
            f_peer[nf] = peer
            if length < 2:
                f_status[nf] = FrameStatus.NO_SW
            else:
                f_sw[nf] = (_at(buf, start + length - 2) << 8) | _at(buf, start + length - 1)
                if length > 2:
                    if expect:
                        saved = no
                        no, err = _scan_tlv(buf, start, start + length - 2, base, index, no,
                                            o_frame, o_tag, o_depth, o_off, o_len, ends)
                        if err >= 0:
                            no = saved
                            f_tlv[nf] = TlvClass.MALFORMED
                            f_err[nf] = base + err
                        else:
                            f_tlv[nf] = TlvClass.OK
                    else:
                        f_tlv[nf] = TlvClass.RAW
        else:
            f_status[nf] = FrameStatus.UNKNOWN_KIND
        nf += 1
        pos = start + length
    return pos, nf, no, _DONE


_FRAME_DTYPES: dict[str, npt.DTypeLike] = {
    "frame_offset": np.int64, "frame_length": np.int32, "frame_kind": np.uint8,
    "frame_status": np.uint8, "frame_peer": np.int64, "frame_tlv": np.uint8,
    "frame_tlv_error": np.int64, "frame_sw": np.int32, "frame_command": np.int32,
}
_OBJECT_DTYPES: dict[str, npt.DTypeLike] = {
    "object_frame": np.int64, "object_tag": np.uint32, "object_depth": np.uint8,
    "object_offset": np.int64, "object_length": np.uint32,
}


@dataclass(frozen=True, slots=True, eq=False)
class TraceIndex:
    """Index of (part of) a binary trace; offsets are absolute file offsets.

    ``first_frame`` is the global index of this part's first frame (frame
    numbers in ``frame_peer`` and ``object_frame`` are global).  ``end`` is
    the file offset up to which this part has consumed the trace.
    ``magic_ok`` is False when the buffer does not start with ``UCT1``; then
    nothing was indexed.
    """

    frame_offset: npt.NDArray[np.int64]
    frame_length: npt.NDArray[np.int32]
    frame_kind: npt.NDArray[np.uint8]
    frame_status: npt.NDArray[np.uint8]
    frame_peer: npt.NDArray[np.int64]
    frame_tlv: npt.NDArray[np.uint8]
    frame_tlv_error: npt.NDArray[np.int64]
    frame_sw: npt.NDArray[np.int32]
    frame_command: npt.NDArray[np.int32]
    object_frame: npt.NDArray[np.int64]
    object_tag: npt.NDArray[np.uint32]
    object_depth: npt.NDArray[np.uint8]
    object_offset: npt.NDArray[np.int64]
    object_length: npt.NDArray[np.uint32]
    first_frame: int = 0
    end: int = 0
    magic_ok: bool = True

    def __post_init__(self) -> None:
        for names in (_FRAME_DTYPES, _OBJECT_DTYPES):
            sizes = set()
            for name, dtype in names.items():
                array = getattr(self, name)
                if not isinstance(array, np.ndarray) or array.ndim != 1:
                    raise TypeError(f"TraceIndex.{name} must be a 1-d numpy array")
                if array.dtype != np.dtype(dtype):
                    raise TypeError(f"TraceIndex.{name} must have dtype {np.dtype(dtype)}")
                sizes.add(array.shape[0])
            if len(sizes) > 1:
                raise ValueError("TraceIndex arrays of one table differ in length")

    @property
    def frames(self) -> int:
        return int(self.frame_offset.shape[0])

    @property
    def objects(self) -> int:
        return int(self.object_tag.shape[0])

    @classmethod
    def from_columns(cls, columns: dict[str, Any], first_frame: int = 0, end: int = 0,
                     magic_ok: bool = True) -> TraceIndex:
        """From a dict of the fourteen arrays, by field name."""
        return cls(**columns, first_frame=first_frame, end=end, magic_ok=magic_ok)

    @classmethod
    def empty(cls, first_frame: int = 0, end: int = 0, magic_ok: bool = True) -> TraceIndex:
        arrays = {name: np.empty(0, dtype) for name, dtype in {**_FRAME_DTYPES,
                                                                **_OBJECT_DTYPES}.items()}
        return cls.from_columns(arrays, first_frame, end, magic_ok)

    def same_as(self, other: TraceIndex) -> bool:
        """Equal in every array and field (what the agreement tests compare)."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray):
                if not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True


def concat(parts: Iterable[TraceIndex]) -> TraceIndex:
    """One index from consecutive parts (as `iter_index` yields them)."""
    items = list(parts)
    if not items:
        return TraceIndex.empty()
    if not all(p.magic_ok for p in items):
        return TraceIndex.empty(magic_ok=False)
    arrays = {name: np.concatenate([getattr(p, name) for p in items])
              for name in (*_FRAME_DTYPES, *_OBJECT_DTYPES)}
    return TraceIndex.from_columns(arrays, items[0].first_frame, items[-1].end)


class _Run:
    """Kernel calls over one stream: the state carried between them, and the output arrays.

    The output arrays are allocated once per run and reused by every call;
    `step` hands out copies, or views valid until the next call (``reuse``).
    """

    def __init__(self, frame_capacity: int, object_capacity: int = OBJECT_CAPACITY) -> None:
        self.state = np.array([-1, 0, 0] * 2, dtype=np.int64)
        self.frames = 0
        self.ends = np.empty(MAX_DEPTH + 2, dtype=np.int64)
        self.f = {name: np.empty(max(1, frame_capacity), dtype)
                  for name, dtype in _FRAME_DTYPES.items()}
        self.o = {name: np.empty(max(MIN_OBJECT_CAPACITY, object_capacity), dtype)
                  for name, dtype in _OBJECT_DTYPES.items()}

    def step(self, buf: npt.NDArray[np.uint8], pos: int, final: bool, base: int,
             reuse: bool = False) -> tuple[int, int, TraceIndex]:
        """Index from ``pos``; return (stop position, stop reason, the part indexed)."""
        stop, nf, no, reason = _index_kernel(
            buf, pos, final, base, self.frames, self.state, *self.f.values(), *self.o.values(),
            self.ends)
        columns = {k: v[:nf] if reuse else v[:nf].copy() for k, v in self.f.items()}
        columns.update({k: v[:no] if reuse else v[:no].copy() for k, v in self.o.items()})
        part = TraceIndex.from_columns(columns, self.frames, base + stop)
        self.frames += nf
        return stop, reason, part


def _readonly(array: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A read-only plain-ndarray view: the kernel is compiled for this one array type."""
    view = np.asarray(array).view(np.ndarray)
    view.flags.writeable = False
    return view


def _as_array(buffer: bytes | bytearray | memoryview | npt.NDArray[np.uint8]
              ) -> npt.NDArray[np.uint8]:
    if isinstance(buffer, np.ndarray):
        if buffer.dtype != np.uint8 or buffer.ndim != 1:
            raise TypeError("index a 1-d uint8 array")
        return _readonly(np.ascontiguousarray(buffer))
    return _readonly(np.frombuffer(buffer, dtype=np.uint8))


def index_buffer(buffer: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> TraceIndex:
    """Index a whole binary trace held in memory (or memory-mapped)."""
    buf = _as_array(buffer)
    if buf.shape[0] < len(MAGIC) or bytes(buf[: len(MAGIC)]) != MAGIC:
        return TraceIndex.empty(magic_ok=False)
    pos = len(MAGIC)
    run = _Run(min(FRAME_CAPACITY, (buf.shape[0] - pos) // HEADER + 1),
               min(OBJECT_CAPACITY, buf.shape[0] // 2 + 1))
    parts = []
    while True:
        pos, reason, part = run.step(buf, pos, True, 0)
        parts.append(part)
        if reason == _DONE:
            return concat(parts)


def iter_index(stream: IO[bytes], chunk: int = CHUNK, reuse: bool = False
               ) -> Iterator[TraceIndex]:
    """Index a binary trace from a file object, ``chunk`` bytes at a time.

    Yields parts in order; each part's ``end`` tells how far the file has been
    consumed (for a progress bar).  A stream without the magic yields one empty
    part with ``magic_ok`` False.  With ``reuse`` the parts' arrays are views
    into buffers that the next part overwrites: consume each part before asking
    for the next (as `TraceStats.add` does); memory then stays constant.
    """
    if chunk < 1:
        raise ValueError("chunk must be positive")
    if stream.read(len(MAGIC)) != MAGIC:
        yield TraceIndex.empty(magic_ok=False)
        return
    buf = np.empty(chunk + HEADER + MAX_FRAME, dtype=np.uint8)
    view = memoryview(buf)  # type: ignore[arg-type]
    filled = 0
    base = len(MAGIC)
    eof = False
    run = _Run(min(FRAME_CAPACITY, buf.shape[0] // HEADER + 1))
    while True:
        if not eof and filled < buf.shape[0]:
            got = _read_into(stream, view[filled: filled + min(chunk, buf.shape[0] - filled)])
            eof = got == 0
            filled += got
        pos = 0
        reason = _FULL
        while reason == _FULL:
            pos, reason, part = run.step(_readonly(buf[:filled]), pos, eof, base, reuse)
            if part.frames or reason == _DONE:
                yield part
        if eof and reason == _DONE:
            return
        buf[: filled - pos] = buf[pos:filled]
        filled -= pos
        base += pos


def _read_into(stream: IO[bytes], target: memoryview) -> int:
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        got = readinto(target)
        return int(got or 0)
    data = stream.read(len(target))
    target[: len(data)] = data
    return len(data)


class _RecordFrames(io.RawIOBase):
    """A binary trace (magic and frames) read on demand from records."""

    def __init__(self, records: Iterable[TraceRecord]) -> None:
        self._records = iter(records)
        self._pending = bytearray(MAGIC)

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        while len(self._pending) < len(view):
            record = next(self._records, None)
            if record is None:
                break
            self._pending += encode_frame(record.kind, record.data)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        del self._pending[:n]
        return n


def iter_index_records(records: Iterable[TraceRecord], chunk: int = CHUNK,
                       reuse: bool = False) -> Iterator[TraceIndex]:
    """Index records from any reader (text, pcsc-spy) as if they were a binary trace.

    Offsets then refer to that binary encoding, not to the source file.
    """
    return iter_index(io.BufferedReader(_RecordFrames(records), buffer_size=1 << 16), chunk,
                      reuse)
