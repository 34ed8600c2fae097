"""The indexes replays and duplicates are found with agree with plain Python sets and dicts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unioncard.settlement.keyindex import SPAN_MISSES, KeyedRows, SeqSet, _mix

SEED = 0x9E3779B97F4A7C15  # the start of a row's hash chain (keyindex._row_hash)


def colliding(inner: int, firsts: range) -> np.ndarray:
    """Two-field keys that all have one 64-bit hash: the chain after the first field
    (``mix(SEED ^ first) ^ second``) is ``inner`` for each."""
    return np.array([(a, int(_mix(np.uint64(SEED ^ a))) ^ inner) for a in firsts], np.uint64)

key = st.tuples(st.integers(0, 5), st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 3))
batches = st.lists(st.lists(key, max_size=300), min_size=1, max_size=8)


@given(batches)
@settings(max_examples=80, deadline=None)
def test_keyed_rows_number_keys_in_order_of_arrival(parts):
    """Numbers in order of arrival, through every growth of the table; the payload words
    (here: how often each key was added) stay with their key."""
    rows, model, seen = KeyedRows(3, payload=1), {}, {}
    for part in parts:
        keys = np.array(part, np.uint64).reshape(-1, 3)
        before, payload = rows.find(keys, payload=True)
        assert before.tolist() == [model.get(k, -1) for k in part]
        assert [int(p) for p, b in zip(payload[:, 0], before, strict=True) if b >= 0] == [
            seen[k] for k in part if k in model]
        numbers = rows.add(keys)
        rows.set_payload(numbers, np.ones((len(part), 1), np.uint64), add=True)
        for k in part:
            model.setdefault(k, len(model))
            seen[k] = seen.get(k, 0) + 1
        assert numbers.tolist() == [model[k] for k in part]
    assert len(rows) == len(model)
    assert [tuple(f) for f in rows.fields().tolist()] == list(model)
    assert rows.payload_of(np.arange(len(model)))[:, 0].tolist() == [seen[k] for k in model]


def test_keys_with_one_hash_are_told_apart():
    rows = KeyedRows(2, payload=1)
    keys = colliding(0x1234_5678_9ABC_DEF0, range(40))
    assert len({int(_mix(np.uint64(SEED ^ a)) ^ b) for a, b in keys.tolist()}) == 1
    numbers = rows.add(keys[::2])
    rows.set_payload(numbers, (keys[::2, 0] + np.uint64(1000))[:, None])
    assert rows.add(keys).tolist() == [i // 2 if i % 2 == 0 else 20 + i // 2
                                       for i in range(40)]
    assert rows.find(keys[::-1]).tolist() == rows.add(keys)[::-1].tolist()
    assert rows.payload_of(rows.find(keys[::2]))[:, 0].tolist() == list(range(1000, 1040, 2))
    assert rows.find(keys[::2], payload=True)[1][:, 0].tolist() == list(range(1000, 1040, 2))
    assert rows.find(colliding(0x1234_5678_9ABC_DEF0, range(40, 45))).tolist() == [-1] * 5


def test_keyed_rows_grow_past_their_first_tables():
    rows = KeyedRows(2)
    keys = np.column_stack([np.arange(50_000, dtype=np.uint64) * np.uint64(7919),
                            np.ones(50_000, np.uint64)])
    for start in range(0, 50_000, 4_000):
        assert rows.add(keys[start:start + 4_000]).tolist() == list(range(start,
                                                                          min(start + 4_000,
                                                                              50_000)))
    assert rows.find(keys[::-1]).tolist() == list(range(49_999, -1, -1))


seq_step = st.tuples(st.booleans(), st.lists(st.tuples(st.integers(0, 40),
                                                      st.sampled_from([0, 1, 63, 64, 65, 127,
                                                                       4_000, 65_535,
                                                                       2**32 - 1])),
                                            max_size=200))


@given(st.lists(seq_step, min_size=1, max_size=10))
@settings(max_examples=80, deadline=None)
def test_seq_sets_say_what_was_settled_before_and_in_the_run(steps):
    seqs, before, run = SeqSet(), set(), set()
    for in_run, pairs in steps:
        owner = np.array([p[0] for p in pairs], np.int64)
        seq = np.array([p[1] for p in pairs], np.int64)
        seen_before, seen_run = seqs.test(owner, seq)
        assert seen_before.tolist() == [p in before for p in pairs]
        assert seen_run.tolist() == [p in run for p in pairs]
        seqs.add(owner, seq, in_run=in_run)
        (run if in_run else before).update(pairs)
    probe = [(o, s) for o in (-1, 0, 3, 40, 41) for s in (0, 63, 64, 65_535, 2**32 - 1)]
    seen_before, seen_run = seqs.test(np.array([p[0] for p in probe]),
                                      np.array([p[1] for p in probe]))
    assert seen_before.tolist() == [p in before for p in probe]
    assert seen_run.tolist() == [p in run for p in probe]


@given(st.lists(seq_step, min_size=1, max_size=6), st.randoms(use_true_random=False))
@settings(max_examples=80, deadline=None)
def test_seq_sets_find_the_gaps_between_held_seqs(steps, random):
    """`with_gaps` names exactly the counters holding a seq missing between two held ones
    (before the run or in it), and `gaps` lists those runs of missing seqs, counter by
    counter in the order asked and by seq, up to its limit."""
    seqs, held = SeqSet(), {}
    for in_run, pairs in steps:
        seqs.add(np.array([p[0] for p in pairs], np.int64),
                 np.array([p[1] for p in pairs], np.int64), in_run=in_run)
        for owner, seq in pairs:
            held.setdefault(owner, set()).add(seq)
    expected = {owner: [(a + 1, b - 1) for a, b in itertools.pairwise(sorted(s)) if b > a + 1]
                for owner, s in held.items()}
    asked = list(range(45))
    assert seqs.with_gaps(np.array(asked)).tolist() == sorted(o for o, g in expected.items() if g)
    random.shuffle(asked)
    listed = [(o, a, b) for o in asked for a, b in expected.get(o, [])]
    assert [tuple(g) for g in seqs.gaps(np.array(asked)).tolist()] == listed
    assert [tuple(g) for g in seqs.gaps(np.array(asked), limit=2).tolist()] == listed[:2]


def test_a_key_whose_hash_is_zero_survives_the_tables_growth():
    """0 is a hash like any other: a key hashing to it keeps its number, its payload and
    its slot (``where``) through every rehash."""
    rows = KeyedRows(2, payload=1)
    zero = colliding(0, range(3))  # the chain ends in mix(0) = 0
    rows.set_payload(rows.add(zero), np.array([[5], [6], [7]], np.uint64))
    others = np.column_stack([np.arange(1, 20_001, dtype=np.uint64), np.zeros(20_000, np.uint64)])
    rows.add(others)
    assert rows.find(zero).tolist() == [0, 1, 2]
    assert rows.payload_of(np.arange(3))[:, 0].tolist() == [5, 6, 7]
    assert rows.fields(np.arange(3)).tolist() == zero.tolist()
    assert rows.add(zero).tolist() == [0, 1, 2] and len(rows) == 20_003


def test_gaps_take_a_limit_larger_than_any_list():
    """A limit bounds the list, not the memory asked for: any limit, however large, lists
    every gap."""
    seqs = SeqSet()
    seqs.add(np.array([0, 0, 2, 2]), np.array([1, 5, 0, 2**32 - 1]), in_run=False)
    for limit in (2**40, 2**63 - 1):
        assert seqs.gaps(np.array([0, 1, 2]), limit).tolist() == [[0, 2, 4],
                                                                   [2, 1, 2**32 - 2]]
    assert seqs.gaps(np.array([0, 1, 2]), 0).tolist() == []


def test_payload_values_of_any_integer_type_set_whole_words():
    """Payload values are integers, one per payload word, whatever their numpy type (a
    negative one as its two's complement); values of another width are refused instead
    of written over the slot's number."""
    rows = KeyedRows(2, payload=2)
    numbers = rows.add(np.array([[1, 2], [3, 4]], np.uint64))
    rows.set_payload(numbers, np.array([[1, -2], [3, 4]], np.int32))
    rows.set_payload(numbers[:1], np.array([[5, 6]], np.uint8), add=True)
    assert rows.payload_of(numbers).view(np.int64).tolist() == [[6, 4], [3, 4]]
    with pytest.raises(ValueError, match="payload"):
        rows.set_payload(numbers, np.ones((2, 3), np.uint64))
    assert rows.find(np.array([[1, 2], [3, 4]], np.uint64)).tolist() == [0, 1]


def test_numbers_no_key_has_are_refused_and_negative_counters_ignored():
    """Reading or setting the payload or the fields of a number no key has is an error,
    never another key's words; a negative counter (never numbered) holds no gap."""
    rows = KeyedRows(2, payload=1)
    rows.add(np.array([[1, 2], [3, 4]], np.uint64))
    for bad in ([-1], [2], [0, 5]):
        with pytest.raises(IndexError):
            rows.payload_of(np.array(bad))
        with pytest.raises(IndexError):
            rows.fields(np.array(bad))
        with pytest.raises(IndexError):
            rows.set_payload(np.array(bad), np.ones((len(bad), 1), np.uint64))
    seqs = SeqSet()
    seqs.add(np.array([0, 0, 1023, 1023]), np.array([1, 2, 1, 5]), in_run=True)
    assert seqs.with_gaps(np.array([-1, 0])).tolist() == []
    assert seqs.gaps(np.array([-1, 0])).tolist() == []
    assert seqs.gaps(np.array([1023])).tolist() == [[1023, 2, 4]]


@given(st.lists(seq_step.map(lambda step: step[1]), min_size=1, max_size=6),
       st.lists(seq_step.map(lambda step: step[1]), max_size=3))
@settings(max_examples=80, deadline=None)
def test_seq_sets_restored_from_what_was_settled_before_the_run(history, later):
    """A set restored from `settled_before` answers as the set it was taken from, then
    takes the run's seqs the same way."""
    seqs = SeqSet()
    for pairs in history:
        seqs.add(np.array([p[0] for p in pairs], np.int64),
                 np.array([p[1] for p in pairs], np.int64), in_run=False)
    restored = SeqSet.restored(*seqs.settled_before())
    for pairs in later:
        for each in (seqs, restored):
            each.add(np.array([p[0] for p in pairs], np.int64),
                     np.array([p[1] for p in pairs], np.int64), in_run=True)
    probe = {p for pairs in history + later for p in pairs} | {(0, 5), (50, 0), (-1, 0)}
    owner = np.array([p[0] for p in probe], np.int64)
    seq = np.array([p[1] for p in probe], np.int64)
    assert [a.tolist() for a in restored.test(owner, seq)] == [
        a.tolist() for a in seqs.test(owner, seq)]
    assert restored.gaps(np.arange(45)).tolist() == seqs.gaps(np.arange(45)).tolist()


def test_a_state_before_the_run_is_refused_once_the_run_marked_seqs():
    seqs = SeqSet()
    seqs.add(np.array([0, 0]), np.array([1, 500]), in_run=False)
    assert [a.tolist() for a in seqs.settled_before()] == [[[1, 2, 0, 0]],
                                                          [[(1 << 32) | 7, 1 << 52]]]
    seqs.add(np.array([1]), np.array([2]), in_run=True)
    with pytest.raises(ValueError, match="this run"):
        seqs.settled_before()


runs = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 300), st.integers(1, 200)),
                max_size=4).map(lambda spans: [(owner, seq) for owner, start, length in spans
                                               for seq in range(start, start + length)])
history_step = st.tuples(st.sampled_from([None, 0, 3, 70, SPAN_MISSES]),
                         st.tuples(runs, seq_step).map(lambda parts: parts[0] + parts[1][1]))
"""Seqs settled before the run, then a compaction (None: none) taking in at most so many
seqs missing."""


def _pairs(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


@given(st.lists(history_step, min_size=1, max_size=6),
       st.lists(st.tuples(runs, seq_step).map(lambda parts: parts[0] + parts[1][1]),
                max_size=3))
@settings(max_examples=200, deadline=None)
def test_compacting_a_seq_set_changes_no_answer(history, later):
    """`compact`, between any steps of what was settled before the run, folds seqs into
    spans that keep what they miss as bits, and gives spans back as bits when a jump cuts
    them off (small limits make jumps of small gaps); no answer changes: settled before,
    settled in the run, the gaps and the counters holding one; nor for the set restored
    from a compacted one."""
    plain, packed = SeqSet(), SeqSet()
    for limit, pairs in history:
        for each in (plain, packed):
            each.add(*_pairs(pairs), in_run=False)
        if limit is not None:
            packed.compact(limit)
    packed.compact()
    restored = SeqSet.restored(*packed.settled_before())
    for pairs in later:
        for each in (plain, packed, restored):
            each.add(*_pairs(pairs), in_run=True)
    held = {p for _, pairs in history for p in pairs} | {p for pairs in later for p in pairs}
    probe = sorted({(o, s + d) for o, s in held for d in (-65, -1, 0, 1, 64)
                    if 0 <= s + d < 2**32} | {(0, 5), (50, 0), (-1, 0)})
    owner, seq = _pairs(probe)
    expected = [a.tolist() for a in plain.test(owner, seq)]
    counters = np.arange(-1, 45)
    for each in (packed, restored):
        assert [a.tolist() for a in each.test(owner, seq)] == expected
        assert each.gaps(counters).tolist() == plain.gaps(counters).tolist()
        assert each.with_gaps(counters).tolist() == plain.with_gaps(counters).tolist()


def test_a_compacted_history_keeps_a_bit_only_for_each_seq_it_misses():
    """Days of consecutive seqs fold into each counter's span: the blocks of bits go; a
    counter with a seq that never came (a record rejected, or lost) keeps one word, whose
    bit says its span misses that seq, however many days follow; a record that comes
    late fills it."""
    seqs = SeqSet()
    owners = np.repeat(np.arange(200), 1000)
    for day in range(5):
        seq = np.tile(np.arange(day * 1000, (day + 1) * 1000), 200)
        keep = ~((owners == 7) & (seq == 2500))  # one record of card 7 never arrived
        seqs.add(owners[keep], seq[keep], in_run=False)
        seqs.compact()
        home, blocks = seqs.settled_before()
        assert len(blocks) == 0  # no table
        assert [c for c in range(200) if home[c, 0]] == ([7] if day >= 2 else [])
        if day >= 2:
            assert home[7, :2].tolist() == [2500 // 64 + 1, 1 << 2500 % 64]  # what it misses
        assert home[:, 2].tolist() == [0] * 200  # the spans: from seq 0
        assert home[:, 3].tolist() == [(day + 1) * 1000] * 200  # to the day's last
    assert seqs.gaps(np.arange(200)).tolist() == [[7, 2500, 2500]]
    before, run = seqs.test(np.array([7, 7, 7, 8]), np.array([2499, 2500, 4999, 5000]))
    assert before.tolist() == [True, False, True, False] and not run.any()
    seqs.add(np.array([7]), np.array([2500]), in_run=False)  # the late record
    seqs.compact()
    assert seqs.gaps(np.arange(200)).tolist() == []
    assert not seqs.settled_before()[0][:, 0].any()  # no bits left anywhere


def test_a_span_cut_off_by_a_jump_goes_back_to_bits_a_word_at_a_time():
    """When a counter's seqs jump by more than a span may miss (`SPAN_MISSES`), its span
    becomes the run after the jump and the seqs before it bits again, in words of 64
    seqs, not seq by seq: a day on which every card's seqs jumped costs the next run's
    start memory in proportion to the blocks, not to the cards' history."""
    import tracemalloc

    counters, history = 500, 5000
    jump = history + SPAN_MISSES + 1
    seqs = SeqSet()
    seqs.add(np.repeat(np.arange(counters), history), np.tile(np.arange(history), counters),
             in_run=False)
    seqs.compact()
    seqs.add(np.arange(counters), np.full(counters, jump), in_run=False)
    tracemalloc.start()
    try:
        seqs.compact()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # 2.5 million seqs cut: as int64 arrays, 20 MB each
    home, blocks = seqs.settled_before()
    assert len(blocks) + int((home[:, 0] != 0).sum()) == counters * -(-history // 64)
    assert home[:, 2].tolist() == [jump] * counters  # the new spans: the last run
    before, _ = seqs.test(np.array([3, 3, 3, 3]), np.array([0, history - 1, history, jump]))
    assert before.tolist() == [True, True, False, True]
    assert seqs.gaps(np.array([3])).tolist() == [[3, history, jump - 1]]
    later = np.delete(np.arange(jump + 1, jump + 5001), 2500)  # the next day, one rejected
    seqs.add(np.full(len(later), 3), later, in_run=False)
    seqs.compact()  # the span after the jump goes on, missing one seq: one word more
    home, blocks = seqs.settled_before()
    assert home[3, 2:].tolist() == [jump, jump + 5001]
    assert len(blocks) + int((home[:, 0] != 0).sum()) == counters * -(-history // 64) + 1
    small = SeqSet()  # a smaller limit: the same
    small.add(np.zeros(10, np.int64), np.r_[np.arange(9), 20], in_run=False)
    small.compact(limit=11)
    assert small.settled_before()[0][:, 2:].tolist() == [[0, 21]]  # misses 9 to 19: 11 seqs
    small.add(np.array([0]), np.array([40]), in_run=False)
    small.compact(limit=11)
    assert small.settled_before()[0][:, 2:].tolist() == [[40, 41]]  # would miss 21 to 39: 19
    assert small.gaps(np.array([0])).tolist() == [[0, 9, 19], [0, 21, 39]]


def test_seq_sets_agree_with_numba_bounds_checking(run_bounds_checked):
    """The seq set's kernels re-compiled with boundscheck (UNIONCARD_JIT_DEBUG=1) give the
    answers of a plain set, through compactions with jumps and snapshots."""
    run_bounds_checked("""
import numpy as np
from unioncard.jit import JIT_OPTIONS
from unioncard.settlement.keyindex import SeqSet
assert JIT_OPTIONS["boundscheck"] is True
rng = np.random.default_rng(7)
seqs, held = SeqSet(), set()
for day in range(6):
    owner = rng.integers(0, 40, 3000)
    seq = rng.integers(0, 300, 3000) + day * 250 + np.where(owner == 5, 70_000 * day, 0)
    keep = rng.random(3000) > 0.05
    seqs.add(owner[keep], seq[keep], in_run=False)
    held |= set(zip(owner[keep].tolist(), seq[keep].tolist()))
    seqs.compact(limit=[0, 3, 64, 65_536][day % 4])
    seqs = SeqSet.restored(*seqs.settled_before())
probe_owner = rng.integers(-1, 45, 20_000)
probe_seq = rng.integers(0, 2_000, 20_000) + np.where(probe_owner == 5, 350_000, 0)
before, run = seqs.test(probe_owner, probe_seq)
assert before.tolist() == [(o, s) in held for o, s in zip(probe_owner.tolist(), probe_seq.tolist())]
assert not run.any()
gaps = seqs.gaps(np.arange(45), limit=1 << 20)
expected = []
for o in range(45):
    mine = sorted(s for oo, s in held if oo == o)
    expected += [[o, a + 1, b - 1] for a, b in zip(mine, mine[1:]) if b > a + 1]
assert gaps.tolist() == expected
print("agreed")
""")
