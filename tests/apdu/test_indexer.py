"""The numba bulk indexer agrees exactly with the plain-Python reference."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unioncard.apdu import tlv
from unioncard.apdu.indexer import (
    FrameStatus,
    TlvClass,
    TraceIndex,
    concat,
    index_buffer,
    iter_index,
    iter_index_records,
)
from unioncard.apdu.indexer_reference import expects_tlv, reference_index
from unioncard.apdu.trace_binary import read_binary
from unioncard.errors import DecodeError
from unioncard.testing.trace_strategies import binary_traces, nested, tlv_bytes

H = bytes.fromhex


def frame(kind: int, payload: bytes) -> bytes:
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def agree(buffer: bytes) -> TraceIndex:
    fast, slow = index_buffer(buffer), reference_index(buffer)
    assert fast.same_as(slow), f"kernel and reference differ on {buffer.hex()}"
    return fast


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(binary_traces())
def test_kernel_agrees_with_reference(buffer):
    agree(buffer)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(binary_traces(), st.integers(1, 40))
def test_streaming_in_chunks_agrees_with_whole_buffer(buffer, chunk):
    whole = reference_index(buffer)
    streamed = concat(iter_index(io.BytesIO(buffer), chunk))
    assert streamed.same_as(whole)


@settings(max_examples=200, deadline=None)
@given(tlv_bytes())
def test_tlv_objects_match_the_reference_decoder(data):
    """Objects of one SELECT answer: the same tags, depths and values as tlv.decode."""
    buffer = b"UCT1" + frame(1, H("00A4040000")) + frame(2, data + H("9000"))
    index = agree(buffer)
    try:
        nodes = tlv.decode(data)
    except DecodeError as exc:
        assert index.frame_tlv[1] == (TlvClass.MALFORMED if data else TlvClass.NONE)
        assert index.frame_tlv_error[1] == 4 + 3 + 5 + 3 + exc.offset
        assert index.objects == 0
        return
    assert index.frame_tlv[1] == (TlvClass.OK if data else TlvClass.NONE)
    walked = list(tlv.walk(nodes))
    assert index.object_tag.tolist() == [node.tag for _, node in walked]
    assert index.object_depth.tolist() == [depth for depth, _ in walked]
    values = [buffer[o: o + n] for o, n in zip(index.object_offset.tolist(),
                                               index.object_length.tolist(), strict=True)]
    assert values == [node.value for _, node in walked]


def test_a_worked_example():
    buffer = b"UCT1" + b"".join([
        frame(0x01, H("00B2010C00")),                       # 0 READ RECORD SFI 1
        frame(0x02, H("7008 5A06 623058001234 9000")),      # 1 TLV ok
        frame(0x11, H("807000001C") + bytes(28)),           # 2 PSAM: INIT SAM
        frame(0x12, H("6108")),                             # 3 no data
        frame(0x01, H("805001020B") + bytes(11)),           # 4 INITIALIZE
        frame(0x02, H("000007D0000500000001011122334490 00")),  # 5 raw purse data
        frame(0x01, H("00A40400")),                         # 6 SELECT, unanswered
        frame(0x01, H("00A404000201")),                     # 7 bad command (Lc 2, 1 byte)
        frame(0x02, H("6F05 8403 A000 9000")),              # 8 answers it: raw
        frame(0x07, H("00")),                               # 9 unknown kind
        frame(0x02, H("90")),                               # 10 orphan without SW
        frame(0x12, H("6A82")),                             # 11 orphan
    ]) + H("0200")                                          # 12 truncated header
    index = agree(buffer)
    assert index.frame_status.tolist() == [0, 0, 0, 0, 0, 0, 0, FrameStatus.BAD_COMMAND, 0,
                                           FrameStatus.UNKNOWN_KIND, FrameStatus.NO_SW, 0,
                                           FrameStatus.TRUNCATED]
    assert index.frame_peer.tolist() == [-1, 0, -1, 2, -1, 4, -1, -1, 7, -1, -1, -1, -1]
    assert index.frame_tlv.tolist() == [0, 2, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert index.frame_sw.tolist() == [-1, 0x9000, -1, 0x6108, -1, 0x9000, -1, -1, 0x9000, -1,
                                       -1, 0x6A82, -1]
    assert index.frame_command[0] == 0x00B201 and index.frame_command[4] == 0x805001
    assert index.object_tag.tolist() == [0x70, 0x5A]
    assert index.object_depth.tolist() == [0, 1]
    assert index.object_frame.tolist() == [1, 1]
    assert index.frame_length[-1] == -1 and index.end == len(buffer)


def test_malformed_tlv_when_expected_is_reported_with_its_offset():
    buffer = b"UCT1" + frame(1, H("00A4040000")) + frame(2, H("6F05 8403 A000 9000"))
    index = agree(buffer)
    assert index.frame_tlv.tolist() == [0, TlvClass.MALFORMED]
    assert index.frame_tlv_error[1] == 4 + 8 + 3  # the 6F header: its value overruns


def test_get_response_inherits_the_expectation():
    buffer = b"UCT1" + b"".join([
        frame(1, H("00A4040007A0000003330101")), frame(2, H("6120")),
        frame(1, H("00C0000020")), frame(2, H("6F03840100 9000")),
        frame(0x11, H("807000001C") + bytes(28)), frame(0x12, H("6108")),
        frame(0x11, H("00C0000008")), frame(0x12, H("0000000112345678 9000")),
    ])
    index = agree(buffer)
    assert index.frame_tlv.tolist() == [0, 0, 0, TlvClass.OK, 0, 0, 0, TlvClass.RAW]


@pytest.mark.parametrize(("depth", "ok"), [(tlv.MAX_DEPTH, True), (tlv.MAX_DEPTH + 1, False)])
def test_nesting_limit_is_the_reference_decoders(depth, ok):
    buffer = b"UCT1" + frame(1, H("00CA9F7900")) + frame(2, nested(depth) + H("9000"))
    index = agree(buffer)
    assert index.frame_tlv[1] == (TlvClass.OK if ok else TlvClass.MALFORMED)
    assert index.objects == (depth + 1 if ok else 0)


def test_policy_examples():
    assert expects_tlv(H("00A404000E325041592E5359532E444446303100"))
    assert expects_tlv(H("80A8000002830000"))
    assert not expects_tlv(H("00A80000"))             # GPO is proprietary class only
    assert expects_tlv(H("00B2011400"))               # SFI 2
    assert not expects_tlv(H("00B201C400"))           # SFI 24: the purse log
    assert expects_tlv(H("00B0810000"))               # member identity EF, SFI 1
    assert not expects_tlv(H("00B095001E"))           # T-Union EF 0015
    assert not expects_tlv(H("805001020B"))
    assert not expects_tlv(H("FFCA000000"))
    assert expects_tlv(H("00C0000010"), last=True) and not expects_tlv(H("00C0000010"))


def test_bad_magic_is_reported_not_raised():
    for buffer in (b"", b"UCT", b"XXXX" + frame(1, b"")):
        index = index_buffer(buffer)
        assert not index.magic_ok and index.frames == 0
        assert index.same_as(reference_index(buffer))
        (part,) = iter_index(io.BytesIO(buffer))
        assert not part.magic_ok


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_crash_the_kernel(raw):
    for buffer in (raw, b"UCT1" + raw):
        agree(buffer)


def test_large_buffer_grows_its_arrays():
    """More frames and objects than one kernel call's capacity."""
    record = H("70 0D 5A02 1234 5F2403291231 9F0800") + H("9000")
    pair = frame(1, H("00B2010C00")) + frame(2, record)
    buffer = b"UCT1" + pair * 140_000
    index = index_buffer(buffer)
    assert index.frames == 280_000 and index.objects == 560_000
    assert (index.frame_tlv[1::2] == TlvClass.OK).all()
    streamed = concat(iter_index(io.BytesIO(buffer), chunk=1 << 16))
    assert streamed.same_as(index)


def test_records_index_like_their_binary_encoding():
    buffer = b"UCT1" + frame(1, H("00B2010C00")) + frame(2, H("70035A01129000"))
    records = list(read_binary(io.BytesIO(buffer)))
    assert concat(iter_index_records(records, chunk=7)).same_as(index_buffer(buffer))


def test_memmap_input(tmp_path):
    path = tmp_path / "t.uct"
    path.write_bytes(b"UCT1" + frame(1, H("00B2010C00")) + frame(2, H("70035A01129000")))
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    assert index_buffer(mapped).same_as(reference_index(path.read_bytes()))


def test_trace_index_validates_its_arrays():
    empty = TraceIndex.empty()
    with pytest.raises(TypeError):
        TraceIndex(**{**_arrays(empty), "frame_sw": np.zeros(0, np.int64)})
    with pytest.raises(ValueError):
        TraceIndex(**{**_arrays(empty), "frame_sw": np.zeros(1, np.int32)})


def _arrays(index: TraceIndex) -> dict:
    return {name: getattr(index, name) for name in TraceIndex.__dataclass_fields__
            if isinstance(getattr(index, name), np.ndarray)}


def test_agreement_with_numba_bounds_checking(run_bounds_checked):
    """The kernel re-compiled with boundscheck (UNIONCARD_JIT_DEBUG=1, fresh cache) agrees."""
    script = """
import numpy as np
from hypothesis import given, settings, HealthCheck
from unioncard.testing.trace_strategies import binary_traces
from unioncard.jit import JIT_OPTIONS, jit
from unioncard.apdu.indexer import index_buffer
from unioncard.apdu.indexer_reference import reference_index
assert JIT_OPTIONS["boundscheck"] is True

@jit(cache=False)
def past_the_end(a):
    return a[a.shape[0]]
try:
    past_the_end(np.zeros(3, np.uint8))
    raise SystemExit("bounds checking is off")
except IndexError:
    pass

@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(binary_traces())
def check(buffer):
    assert index_buffer(buffer).same_as(reference_index(buffer)), buffer.hex()
check()
print("agreed")
"""
    run_bounds_checked(script)


class _Repeating(io.RawIOBase):
    """A UCT1 stream of ``size`` bytes made of one block repeated, never held whole."""

    def __init__(self, block: bytes, size: int) -> None:
        self.pending = bytearray(b"UCT1")
        self.block = block
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while len(self.pending) < len(target) and self.left > 0:
            self.pending += self.block
            self.left -= len(self.block)
        n = min(len(target), len(self.pending))
        target[:n] = self.pending[:n]
        del self.pending[:n]
        return n


def test_streaming_statistics_use_constant_memory():
    """Peak traced memory is the same for a 8 MB and a 64 MB stream."""
    import tracemalloc

    from unioncard.apdu.trace_stats import TraceStats

    block = (frame(1, H("00B2010C00")) + frame(2, H("700D5A0212345F24032912319F0800 9000"))
             + frame(1, H("805C000204")) + frame(2, H("000007D09000")))
    peaks = []
    for megabytes in (8, 64):
        stream = _Repeating(block * 1000, megabytes << 20)
        stats = TraceStats()
        tracemalloc.start()
        for part in iter_index(stream, chunk=1 << 20, reuse=True):
            stats.add(part)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert stats.summary()["bytes"] >= megabytes << 20
    assert peaks[1] < peaks[0] + (1 << 20)
    assert peaks[1] < 48 << 20
