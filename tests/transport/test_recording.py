"""Recording exchanges to a trace file: both formats, unanswered commands, flushing,
refusing to overwrite or to follow a link, and a recorder that never fails an exchange."""

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest
from loopback_card import LoopbackCard

from unioncard.apdu import CommandAPDU
from unioncard.apdu.trace import Device, Direction, TraceRecord, read_records
from unioncard.apdu.trace_text import TextTraceWriter
from unioncard.errors import TransportError
from unioncard.transport import Channel, InProcessTransport
from unioncard.transport.recording import NO_ANSWER, TraceRecorder, trace_format

SELECT = bytes.fromhex("00A4040002AABB")
SELECTED = bytes.fromhex("6F048402AABB9000")
T0 = dt.datetime(2026, 3, 15, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def ticking():
    """A clock that moves one millisecond per reading."""
    now = [T0]

    def clock() -> dt.datetime:
        now[0] += dt.timedelta(milliseconds=1)
        return now[0]

    return clock


def powered(card=None) -> InProcessTransport:
    transport = InProcessTransport(card or LoopbackCard())
    transport.power_on()
    return transport


def records(path):
    with open(path, "rb") as stream:
        return list(read_records(stream, name=path.name))


def test_text_trace_of_card_and_psam_with_timestamps(tmp_path):
    path = tmp_path / "tap.txt"
    card, psam = powered(), powered(LoopbackCard("T=0"))
    with TraceRecorder.open(path, clock=ticking()) as recorder:
        recorder.attach(card, Device.CARD)
        recorder.attach(psam, "psam")
        card.transmit(SELECT)
        Channel(psam).transmit(CommandAPDU.from_bytes(SELECT))  # 61xx, then GET RESPONSE
    assert recorder.exchanges == 3 and recorder.unanswered == 0
    got = records(path)
    assert [(r.device, r.direction, r.data.hex().upper()) for r in got] == [
        (Device.CARD, Direction.COMMAND, "00A4040002AABB"),
        (Device.CARD, Direction.RESPONSE, "6F048402AABB9000"),
        (Device.PSAM, Direction.COMMAND, "00A4040002AABB"),
        (Device.PSAM, Direction.RESPONSE, "6106"),
        (Device.PSAM, Direction.COMMAND, "00C0000006"),  # the wire, below the channel
        (Device.PSAM, Direction.RESPONSE, "6F048402AABB9000"),
    ]
    stamps = [r.timestamp for r in got]
    assert stamps[0] == stamps[1] == T0 + dt.timedelta(milliseconds=1)
    assert stamps[-1] == T0 + dt.timedelta(milliseconds=3)


def test_binary_by_suffix_drops_timestamps(tmp_path):
    path = tmp_path / "tap.uct"
    assert trace_format(path).value == "binary" and trace_format(tmp_path / "x.BIN") == "binary"
    assert trace_format(tmp_path / "tap.log").value == "text"
    card = powered()
    with TraceRecorder.open(path) as recorder:
        recorder.attach(card, Device.CARD)
        card.transmit(SELECT)
    assert path.read_bytes()[:4] == b"UCT1"
    assert records(path) == [TraceRecord.command(SELECT), TraceRecord.response(SELECTED)]


@pytest.mark.parametrize("name", ["tap.txt", "tap.uct"])
def test_an_unanswered_command_is_written_alone(tmp_path, name):
    path = tmp_path / name
    loopback = LoopbackCard()
    card = powered(loopback)
    with TraceRecorder.open(path) as recorder:
        recorder.attach(card, Device.CARD)
        card.transmit(SELECT)
        loopback.cut_power_next = True
        with pytest.raises(TransportError):
            card.transmit(SELECT)
    assert (recorder.exchanges, recorder.unanswered) == (2, 1)
    got = records(path)
    assert [r.direction for r in got] == [Direction.COMMAND, Direction.RESPONSE,
                                          Direction.COMMAND]
    if name.endswith(".txt"):
        last = path.read_text().splitlines()[-1]
        assert last.endswith(f"# {NO_ANSWER[Device.CARD]}")
        assert "the card did not answer" in last


def test_each_exchange_is_on_disk_at_once(tmp_path):
    path = tmp_path / "tap.txt"
    card = powered()
    recorder = TraceRecorder.open(path)
    recorder.attach(card, Device.CARD)
    card.transmit(SELECT)
    assert len(records(path)) == 2  # before close
    recorder.close()


def test_a_killed_terminal_keeps_its_trace(tmp_path):
    path = tmp_path / "tap.uct"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from loopback_card import LoopbackCard
        from unioncard.transport import InProcessTransport
        from unioncard.transport.recording import TraceRecorder
        card = InProcessTransport(LoopbackCard())
        card.power_on()
        recorder = TraceRecorder.open({str(path)!r})
        recorder.attach(card, "card")
        card.transmit(bytes.fromhex("00A4040002AABB"))
        card.transmit(bytes.fromhex("00A4040002CCDD"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [r.data[-2:].hex() for r in records(path)] == ["aabb", "9000", "ccdd", "9000"]


def test_an_existing_file_is_refused_unless_overwriting(tmp_path):
    path = tmp_path / "tap.txt"
    path.write_text("# an earlier recording\n")
    with pytest.raises(FileExistsError, match="exists already"):
        TraceRecorder.open(path)
    assert path.read_text() == "# an earlier recording\n"
    card = powered()
    with TraceRecorder.open(path, overwrite=True) as recorder:
        recorder.attach(card, Device.CARD)
        card.transmit(SELECT)
    assert "earlier" not in path.read_text() and len(records(path)) == 2


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("target_exists", [False, True])
def test_a_link_planted_at_the_path_is_not_followed(tmp_path, overwrite, target_exists):
    target = tmp_path / "victim"
    if target_exists:
        target.write_text("precious\n")
    link = tmp_path / "tap.txt"
    link.symlink_to(target)
    with pytest.raises(OSError, match=r"exists already|symbolic link"):
        TraceRecorder.open(link, overwrite=overwrite)
    assert link.is_symlink()
    if target_exists:
        assert target.read_text() == "precious\n"
    else:
        assert not target.exists()


def test_a_fifo_or_a_device_is_not_a_trace_file(tmp_path):
    fifo = tmp_path / "tap.txt"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        TraceRecorder.open(fifo, overwrite=True)
    with pytest.raises(OSError, match="not a regular file"):
        TraceRecorder.open("/dev/null", overwrite=True)


def test_a_new_trace_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "tap.txt"
    TraceRecorder.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_previous_observer_still_sees_exchanges_and_comes_back(tmp_path):
    seen = []
    card = InProcessTransport(LoopbackCard(), on_apdu=lambda c, r: seen.append((c, r)))
    card.power_on()
    previous = card.on_apdu
    recorder = TraceRecorder.open(tmp_path / "tap.txt")
    recorder.attach(card, Device.CARD)
    card.transmit(SELECT)
    recorder.close()
    assert card.on_apdu is previous
    card.transmit(SELECT)
    assert seen == [(SELECT, SELECTED)] * 2
    assert len(records(tmp_path / "tap.txt")) == 2
    with pytest.raises(ValueError, match="closed"):
        recorder.attach(card, Device.CARD)


class FullDisk(TextTraceWriter):
    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_a_write_error_stops_the_recording_not_the_exchange(tmp_path, caplog):
    card = powered()
    with open(tmp_path / "tap.txt", "wb") as stream:
        recorder = TraceRecorder(FullDisk(stream))
        recorder.attach(card, Device.CARD)
        assert card.transmit(SELECT) == SELECTED
        assert card.transmit(SELECT) == SELECTED
        recorder.close()
    assert isinstance(recorder.error, OSError) and recorder.exchanges == 0
    assert "stopped after 0 exchanges" in caplog.text
