"""The NVM journal: every cut between physical writes recovers to all-or-nothing."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.applet_sim.nvm import (
    FaultInjector,
    JournalEntry,
    Nvm,
    Phase,
    PowerLoss,
    Step,
    WritePoint,
)
from unioncard.errors import DecodeError, TransportError

OLD = {"a": b"\x01", "b": b"\x02", "c": b"\x03"}
NEW = {"a": b"\x11", "b": b"\x12", "c": b"\x13"}
STEPS = {"a": Step.PURSE_BALANCE, "b": Step.PURSE_OFFLINE_SEQ, "c": Step.PURSE_LOG}


def fresh() -> Nvm:
    nvm = Nvm()
    for address, value in OLD.items():
        nvm.format(address, value)
    return nvm


def transaction(nvm: Nvm) -> None:
    for address, value in NEW.items():
        nvm.write(STEPS[address], address, value)
    nvm.commit()


def state(nvm: Nvm) -> dict:
    return {a: nvm.get(a) for a in OLD}


def test_commit_applies_everything_and_calls_the_hook():
    nvm = fresh()
    calls = []
    nvm.on_commit = lambda: calls.append(dict(nvm.cells))
    nvm.faults.start_trace()
    transaction(nvm)
    assert state(nvm) == NEW and nvm.journal == [] and not nvm.committed
    assert calls == [NEW]
    assert [(p.step, p.phase) for p in nvm.faults.trace] == [
        ("purse.balance", Phase.JOURNAL), ("purse.offline_seq", Phase.JOURNAL),
        ("purse.log", Phase.JOURNAL), ("nvm.commit", Phase.COMMIT),
        ("purse.balance", Phase.APPLY), ("purse.offline_seq", Phase.APPLY),
        ("purse.log", Phase.APPLY), ("nvm.clear", Phase.CLEAR)]
    assert nvm.writes == 8


def test_reads_see_the_open_transaction():
    nvm = fresh()
    nvm.write(Step.PURSE_BALANCE, "a", b"\x99")
    assert nvm.get("a") == b"\x99" and nvm.pending
    nvm.abort()
    assert nvm.get("a") == b"\x01" and nvm.journal == [] and not nvm.pending


@pytest.mark.parametrize("index", range(1, 9))
@pytest.mark.parametrize("after", [False, True])
def test_every_cut_recovers_all_or_nothing(index, after):
    nvm = fresh()
    nvm.faults.cut_at_write(index, after=after)
    with pytest.raises(PowerLoss) as caught:
        transaction(nvm)
    nvm.power_lost()
    assert isinstance(caught.value, TransportError)
    committed = index > 4 or (index == 4 and after)  # write 4 is the commit flag
    # Before recovery, a reader of an unpowered card sees the committed outcome already
    assert state(nvm) == (NEW if committed else OLD)
    report = nvm.recover()
    assert state(nvm) == (NEW if committed else OLD)
    assert nvm.journal == [] and not nvm.committed
    journaled = len([p for p in range(1, 4) if p < index or (p == index and after)])
    finished = index == 8 and after  # the journal was already cleared
    if committed:
        assert (report.replayed, report.discarded) == (0 if finished else 3, 0)
    else:
        assert (report.replayed, report.discarded) == (0, journaled)


def test_cut_during_recovery_is_recovered_again():
    nvm = fresh()
    nvm.faults.cut_after(Step.COMMIT)
    with pytest.raises(PowerLoss):
        transaction(nvm)
    nvm.power_lost()
    nvm.faults.cut_after("purse.offline_seq", phase="apply")
    with pytest.raises(PowerLoss):
        nvm.recover()
    assert nvm.cells["a"] == NEW["a"] and nvm.cells["c"] == OLD["c"]  # half applied
    assert nvm.recover().replayed == 3
    assert state(nvm) == NEW


def test_named_cuts_phase_and_occurrence():
    nvm = fresh()
    nvm.faults.cut_before("purse.balance", phase=Phase.APPLY)
    with pytest.raises(PowerLoss) as caught:
        transaction(nvm)
    assert caught.value.point == WritePoint("purse.balance", Phase.APPLY, "a")
    assert caught.value.when == "before"
    assert nvm.faults.fired is caught.value and not nvm.faults.armed
    nvm.recover()
    assert state(nvm) == NEW

    nvm = fresh()
    nvm.faults.cut_after(Step.PURSE_BALANCE, occurrence=2)  # journal, then apply
    with pytest.raises(PowerLoss) as caught:
        transaction(nvm)
    assert caught.value.point.phase == Phase.APPLY and caught.value.when == "after"


def test_disarm_and_no_cut_without_matching_step():
    nvm = fresh()
    nvm.faults.cut_before(Step.PSAM_TERMINAL_SEQ)
    transaction(nvm)  # never matches
    assert nvm.faults.armed
    nvm.faults.disarm()
    assert not nvm.faults.armed


def test_abort_is_a_tear_point_and_recovers():
    nvm = fresh()
    nvm.write(Step.PURSE_BALANCE, "a", b"\x55")
    nvm.faults.cut_before(Step.CLEAR)
    with pytest.raises(PowerLoss):
        nvm.abort()
    nvm.power_lost()
    assert nvm.get("a") == OLD["a"]
    assert nvm.recover().discarded == 1


def test_empty_commit_writes_nothing():
    nvm = fresh()
    nvm.faults.start_trace()
    nvm.commit()
    nvm.abort()
    assert nvm.faults.trace == [] and nvm.writes == 0


def test_json_round_trip_keeps_the_journal():
    nvm = fresh()
    nvm.faults.cut_after(Step.COMMIT)
    with pytest.raises(PowerLoss):
        transaction(nvm)
    doc = nvm.to_json()
    assert doc["journal"]["committed"] is True and len(doc["journal"]["entries"]) == 3
    again = Nvm.from_json(doc)
    assert again.journal == [JournalEntry(str(STEPS[a]), a, v) for a, v in NEW.items()]
    again.recover()
    assert state(again) == NEW


@pytest.mark.parametrize("doc", [{}, {"cells": {"a": "zz"}, "journal": {"committed": False,
                                  "entries": []}}, {"cells": {}, "journal": {"committed": 1,
                                                                            "entries": []}}])
def test_malformed_json_raises_decode_error(doc):
    with pytest.raises(DecodeError):
        Nvm.from_json(doc)


def test_bad_arguments():
    faults = FaultInjector()
    with pytest.raises(ValueError):
        faults.cut_at_write(0)
    with pytest.raises(ValueError):
        faults.cut_before("x", occurrence=0)
    nvm = fresh()
    nvm.write(Step.PURSE_BALANCE, "a", b"\x00")
    with pytest.raises(RuntimeError):
        nvm.format("a", b"\x00")
    with pytest.raises(KeyError):
        nvm.read("nowhere")


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.binary(min_size=1, max_size=4), min_size=1),
    st.integers(1, 20),
    st.booleans(),
)
def test_random_transactions_are_atomic(writes, cut, after):
    nvm = Nvm()
    for address in "abcdef":
        nvm.format(address, b"old")
    before = dict(nvm.cells)
    expected = {**before, **writes}
    nvm.faults.cut_at_write(cut, after=after)
    try:
        for address, value in writes.items():
            nvm.write(Step.FILE_UPDATE, address, value)
        nvm.commit()
    except PowerLoss:
        nvm.power_lost()
    nvm.faults.disarm()
    nvm.recover()
    assert nvm.cells in (before, expected)
    assert nvm.journal == []
