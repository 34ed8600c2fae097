"""Replaying a recorded trace as the card and the PSAM: pairing, mismatches, torn
exchanges, the transaction's time, every trace format, and a terminal's purchase
recorded in process and replayed to the same outcome."""

import datetime as dt
import io
import os
import threading
import time
from pathlib import Path

import pytest

import unioncard
from unioncard.apdu.trace import Device, TraceRecord, read_records
from unioncard.apdu.trace_binary import BinaryTraceWriter
from unioncard.applet_sim.nvm import Step
from unioncard.bounded_read import InputFileError
from unioncard.errors import TransportError, UnionCardError
from unioncard.tariffs import Mode
from unioncard.terminal import Decision, TransactionJournal, TransitPurchase, run
from unioncard.transport import Channel, InProcessTransport
from unioncard.transport.recording import TraceRecorder
from unioncard.transport.replay import (
    PLACEHOLDER_ATR,
    Replay,
    ReplayError,
    ReplayMismatch,
)

H = bytes.fromhex
SPY = Path(__file__).parents[1] / "apdu" / "data" / "pcsc_spy"
NOW = dt.datetime(2026, 3, 15, 8, 30, 15)

TEXT = b"""\
# a fare, shortened
card 2026-03-15T08:30:15.100+08:00 > 00 A4 04 00 08 A000000632010105 00
card < 6F 04 84 02 AA BB 90 00
card > 80 50 01 02 0B 01 000000B4 310100001234 0F
card < 000007D0000500000001005A3C9E71 9000
psam > 80 70 00 00 1C 5A3C9E710005000000B4062026031508301501005500000000000042 08
psam < 61 08
psam > 00 C0 00 00 08
psam < 0001234525E2DDF1 9000
card > 80 54 01 00 0F 000123452026031508301525E2DDF1 08
"""


def replay_text(text: bytes = TEXT) -> Replay:
    replay = Replay.from_records(read_records(io.BytesIO(text)))
    replay.card.power_on()
    replay.psam.power_on()
    return replay


def test_records_pair_into_exchanges_per_device():
    replay = replay_text()
    assert [(e.device.value, e.number, e.record, e.response is not None) for e in replay] == [
        ("card", 1, 1, True), ("card", 2, 3, True), ("psam", 1, 5, True),
        ("psam", 2, 7, True), ("card", 3, 9, False),
    ]
    assert replay.devices == {Device.CARD, Device.PSAM}
    assert replay.first_timestamp == dt.datetime.fromisoformat("2026-03-15T08:30:15.100+08:00")
    assert replay.card.power_on() == replay.psam.power_on() == PLACEHOLDER_ATR


def test_each_device_answers_its_recorded_responses_in_order():
    replay = replay_text()
    seen = []
    replay.psam.on_apdu = lambda c, r: seen.append((c, r))
    card, psam = replay.card, replay.psam
    assert card.transmit(H("00A4040008A00000063201010500")) == H("6F048402AABB9000")
    assert card.transmit(H("805001020B01000000B43101000012340F"))[-2:] == H("9000")
    assert psam.transmit(H("807000001C5A3C9E710005000000B4062026031508301501005500000000000042"
                           "08")) == H("6108")
    assert psam.transmit(H("00C0000008")) == H("0001234525E2DDF19000")
    assert [r for _, r in seen] == [H("6108"), H("0001234525E2DDF19000")]
    assert [e.number for e in replay.unused()] == [3]


def test_an_unanswered_command_replays_as_a_pulled_card():
    replay = replay_text()
    for exchange in list(replay)[:4]:
        replay.transport(exchange.device).transmit(exchange.command)
    seen = []
    replay.card.on_apdu = lambda c, r: seen.append((c, r))
    debit = H("805401000F000123452026031508301525E2DDF108")
    with pytest.raises(TransportError, match="did not answer") as info:
        replay.card.transmit(debit)
    assert not isinstance(info.value, ReplayMismatch)
    assert seen == [(debit, None)]
    assert not replay.card.powered
    with pytest.raises(TransportError, match="not powered"):
        replay.card.transmit(debit)
    replay.finish()  # everything was replayed


def test_another_command_is_a_mismatch_naming_both_and_where():
    replay = replay_text()
    replay.card.transmit(H("00A4040008A00000063201010500"))
    sent = H("805001020B0100000190310100001234" "0F")  # 4.00 yuan, not 1.80
    with pytest.raises(ReplayMismatch) as info:
        replay.card.transmit(sent)
    error = info.value
    assert isinstance(error, UnionCardError) and not isinstance(error, TransportError)
    assert (error.device, error.exchange, error.sent) == (Device.CARD, 2, sent)
    assert error.recorded == H("805001020B01000000B43101000012340F")
    message = str(error)
    assert "card exchange 2 (record 3" in message
    assert "80 50 01 02 0B 01 00 00 01 90 31 01 00 00 12 34 0F (INITIALIZE FOR PURCHASE)" in message
    assert "80 50 01 02 0B 01 00 00 00 B4" in message
    assert "bytes 8-9 (from 0) differ" in message
    assert replay.card.position == 1  # nothing consumed


def test_mismatch_of_instruction_and_length():
    replay = replay_text()
    with pytest.raises(ReplayMismatch, match=r"GET BALANCE.*SELECT.*bytes sent") as info:
        replay.card.transmit(H("805C000204"))
    assert "5 bytes sent, 14 recorded" in str(info.value)


def test_more_commands_than_recorded_is_a_mismatch():
    replay = replay_text(b"card > 00 84 00 00 04\ncard < 01020304 9000\n")
    replay.card.transmit(H("0084000004"))
    with pytest.raises(ReplayMismatch, match=r"has only 1 card exchange$"):
        replay.card.transmit(H("0084000004"))
    with pytest.raises(ReplayMismatch, match="has no PSAM exchange") as info:
        replay.psam.transmit(H("00B0960006"))
    assert info.value.recorded is None and info.value.exchange == 1


def test_a_session_that_stops_early_is_a_mismatch_at_finish():
    replay = replay_text()
    replay.card.transmit(H("00A4040008A00000063201010500"))
    assert [e.record for e in replay.unused()] == [3, 5, 7, 9]
    with pytest.raises(ReplayMismatch, match=r"stopped before the end of the recording; 2 card "
                                             r"exchanges, 2 PSAM exchanges not replayed, the "
                                             r"first card exchange 2 \(record 3\): 80 50") as info:
        replay.finish()
    assert info.value.sent is None


def test_a_response_without_command_cannot_be_replayed():
    with pytest.raises(ReplayError, match="record 2 is a PSAM response that answers no command"):
        Replay.from_records(read_records(io.BytesIO(b"card > 00 84 00 00 04\npsam < 90 00\n")))


def test_transaction_time_from_the_psam_80_70_or_credit_for_load():
    assert replay_text().transaction_time() == dt.datetime(2026, 3, 15, 8, 30, 15)
    load = b"card > 80 52 00 00 0B 202603150845006EBD41E1 04\ncard < 80D88DFC 9000\n"
    assert replay_text(load).transaction_time() == dt.datetime(2026, 3, 15, 8, 45)
    assert replay_text(b"card > 80 5C 00 02 04\ncard < 0000071C 9000\n").transaction_time() is None
    bad = b"psam > 80 70 00 00 1C 5A3C9E710005000000B406 20261315 083015 01005500000000000042 08\n"
    assert replay_text(bad + load).transaction_time() == dt.datetime(2026, 3, 15, 8, 45)
    assert replay_text(b"card > 80 70 00 00 04 20260315\n").transaction_time() is None


@pytest.mark.parametrize("name", ["spy_raw.log", "spy_display.txt"])
def test_pcsc_spy_logs_replay(name):
    replay = Replay.load(SPY / name, psam_readers=["Virtual PCD 00 01"])
    assert replay.transaction_time() == dt.datetime(2024, 1, 1, 12, 0)
    assert (replay.first_timestamp is None) == name.endswith(".txt")
    replay.card.power_on()
    replay.psam.power_on()
    assert replay.psam.transmit(H("00B0960006")) == H("0000000012349000")
    ppse = H("00A404000E325041592E5359532E444446303100")
    assert replay.card.transmit(ppse)[-2:] == H("9000")
    with pytest.raises(TransportError):  # SCARD_E_INSUFFICIENT_BUFFER: no answer recorded
        replay.card.transmit(ppse)


def test_binary_traces_replay(tmp_path):
    path = tmp_path / "t.uct"
    with BinaryTraceWriter.open(path) as writer:
        writer.write(TraceRecord.command(H("805C000204")))
        writer.write(TraceRecord.response(H("000007D09000")))
    replay = Replay.load(path)
    assert replay.first_timestamp is None and replay.source == str(path)
    replay.card.power_on()
    assert replay.card.transmit(H("805C000204")) == H("000007D09000")


# -- a terminal's purchase, recorded in process and replayed ---------------------------------


def purchase(card, psam, amount=180, now=NOW):
    journal = TransactionJournal(":memory:")
    try:
        session = TransitPurchase(Mode.BUS, amount, route="42", now=now,
                                  pending=journal.pending())
        return run(session, card=Channel(card), psam=Channel(psam), journal=journal)
    finally:
        journal.close()


def record_purchase(path, sim_card, sim_psam, *, tear=False):
    card, psam = InProcessTransport(sim_card), InProcessTransport(sim_psam)
    with TraceRecorder.open(path) as recorder:
        recorder.attach(card, Device.CARD)
        recorder.attach(psam, Device.PSAM)
        card.power_on()
        psam.power_on()
        if tear:
            sim_card.faults.cut_after(Step.COMMIT)
        return purchase(card, psam)


def summary(outcome):
    return (outcome.decision, outcome.charged_amount, outcome.balance_after, outcome.tac,
            outcome.reason)


@pytest.mark.sim_psam(protocol="T=0")
@pytest.mark.parametrize("name", ["tap.txt", "tap.uct"])
def test_a_recorded_purchase_replays_to_the_same_outcome(tmp_path, sim_card, sim_psam, name):
    original = record_purchase(tmp_path / name, sim_card, sim_psam)
    assert original.decision is Decision.APPROVED
    replay = Replay.load(tmp_path / name)
    assert replay.transaction_time() == NOW
    assert any(e.command[:2] == H("00C0") for e in replay.psam.exchanges)  # T=0 rounds kept
    replay.card.power_on()
    replay.psam.power_on()
    again = TraceRecorder.open(tmp_path / ("again" + name[3:]))
    again.attach(replay.card, Device.CARD)
    again.attach(replay.psam, Device.PSAM)
    replayed = purchase(replay.card, replay.psam, now=replay.transaction_time())
    again.close()
    replay.finish()
    assert summary(replayed) == summary(original)
    first = [r.without_timestamp() for r in read_records((tmp_path / name).open("rb"))]
    second = [r.without_timestamp() for r in read_records(again.path.open("rb"))]
    assert first == second


@pytest.mark.sim_psam(protocol="T=0")
def test_a_replay_of_another_fare_stops_with_a_mismatch(tmp_path, sim_card, sim_psam):
    record_purchase(tmp_path / "tap.txt", sim_card, sim_psam)
    replay = Replay.load(tmp_path / "tap.txt")
    replay.card.power_on()
    replay.psam.power_on()
    with pytest.raises(ReplayMismatch, match=r"card exchange \d+ .*INITIALIZE FOR PURCHASE"):
        purchase(replay.card, replay.psam, amount=200)


def test_a_torn_purchase_replays_torn(tmp_path, sim_card, sim_psam):
    original = record_purchase(tmp_path / "tap.txt", sim_card, sim_psam, tear=True)
    assert original.decision is Decision.INTERRUPTED
    replay = Replay.load(tmp_path / "tap.txt")
    assert replay.card.exchanges[-1].response is None
    assert "the card did not answer" in (tmp_path / "tap.txt").read_text().splitlines()[-1]
    replay.card.power_on()
    replay.psam.power_on()
    replayed = purchase(replay.card, replay.psam, now=replay.transaction_time())
    replay.finish()
    assert replayed.decision is Decision.INTERRUPTED
    assert summary(replayed)[:4] == summary(original)[:4]


def test_a_recording_too_long_for_one_session_is_refused(monkeypatch):
    from unioncard.transport import replay as replay_module

    monkeypatch.setattr(replay_module, "MAX_REPLAY_RECORDS", 10)
    records = [TraceRecord.command(bytes.fromhex("00B0000000")),
               TraceRecord.response(bytes.fromhex("9000"))] * 6
    with pytest.raises(replay_module.ReplayError, match="more than 10 records"):
        replay_module.Replay.from_records(records, source="day.uct")


def test_a_recording_on_a_pipe_is_read_once_and_a_silent_fifo_never_waited_on(tmp_path):
    """Replay.load takes a recording from a pipe as from a file (read once, no sniffing
    reopen), returns at once from a FIFO nobody writes to, and refuses a directory."""
    text = (Path(unioncard.__file__).parent / "data" / "sample_trace.txt").read_bytes()
    read_end, write_end = os.pipe()

    def send() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(text)

    writer = threading.Thread(target=send)
    writer.start()
    try:
        from_pipe = Replay.load(f"/dev/fd/{read_end}")
    finally:
        writer.join(10)
        os.close(read_end)
    from_file = Replay.load(Path(unioncard.__file__).parent / "data" / "sample_trace.txt")
    assert from_pipe.exchanges == from_file.exchanges and from_file.exchanges
    silent = tmp_path / "silent.fifo"
    os.mkfifo(silent)
    started = time.monotonic()
    assert Replay.load(silent).exchanges == ()
    assert time.monotonic() - started < 5
    with pytest.raises(InputFileError, match="directory"):
        Replay.load(tmp_path)
