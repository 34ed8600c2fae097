"""The hotlist: parsing and its refusals, lookups, the index cache (stale, damaged,
unwritable), deltas, and the index agreeing with a dict (docs/hotlist.md)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unioncard.errors import UnionCardError
from unioncard.offline import hotlist as module
from unioncard.offline.hotlist import (
    HEADER_SIZE,
    SLOT_SIZE,
    DeltaResult,
    DeltaRow,
    Hotlist,
    HotlistError,
    HotlistWarning,
    IndexState,
    apply_delta,
    cache_dir,
    check_hotlist,
    index_path,
    parse_delta,
    parse_hotlist,
    read_delta,
    read_hotlist,
    write_hotlist,
)

ISSUER = bytes.fromhex("3101000000000001")
OTHER_ISSUER = bytes.fromhex("3201000000000002")


def card(n: int) -> bytes:
    return (0x3101000000000000 + n).to_bytes(8, "big")


def row(issuer: bytes, diversifier: bytes, when: str, *rest: str) -> str:
    return ",".join([issuer.hex().upper(), diversifier.hex().upper(), when, *rest])


LIST = "\n".join(["issuer,card,listed_at",
                  row(ISSUER, card(1), "2026-05-01T09:00:00"),
                  row(ISSUER, card(2), "2026-05-01T01:00:00Z"),
                  row(OTHER_ISSUER, card(1), "2026-04-30T20:00:00-05:00")]) + "\n"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Never the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def csv_file(tmp_path) -> Path:
    path = tmp_path / "hotlist.csv"
    path.write_text(LIST)
    return path


@pytest.fixture
def racy(csv_file, monkeypatch) -> None:
    """The hotlist's clock reads the moment the CSV was written: its index is checked
    within the racy window, however slow the machine."""
    written = os.stat(csv_file).st_ctime_ns
    monkeypatch.setattr(module, "_clock", lambda: written)


def later(monkeypatch, seconds: int = 10) -> None:
    """Move the hotlist's clock on: the CSV was written well before the index is checked."""
    now = module._clock()
    monkeypatch.setattr(module, "_clock", lambda: now + seconds * 1_000_000_000)


# --- parsing -------------------------------------------------------------------------------


def test_a_list_with_its_header_and_time_zones():
    assert parse_hotlist(LIST) == {
        (ISSUER, card(1)): dt.datetime(2026, 5, 1, 9, 0),
        (ISSUER, card(2)): dt.datetime(2026, 5, 1, 9, 0),       # 01:00 UTC
        (OTHER_ISSUER, card(1)): dt.datetime(2026, 5, 1, 9, 0),  # 20:00 at UTC-5
    }


def test_the_header_is_optional_and_cells_are_forgiving():
    text = ("\ufeff" + row(ISSUER, card(1), "2026-05-01 09:00").lower() + "\r\n\r\n"
            + f'" {ISSUER.hex()} ","{card(2).hex()}","2026-05-01T09:00:00.250000"\n')
    assert parse_hotlist(text.encode()) == {
        (ISSUER, card(1)): dt.datetime(2026, 5, 1, 9, 0),
        (ISSUER, card(2)): dt.datetime(2026, 5, 1, 9, 0, 0, 250000),
    }


@pytest.mark.parametrize(("when", "china"), [
    ("2026-05-01T09:00:00", dt.datetime(2026, 5, 1, 9, 0)),
    ("2026-05-01T09:00:00+08:00", dt.datetime(2026, 5, 1, 9, 0)),
    ("2026-05-01T00:30:00+00:00", dt.datetime(2026, 5, 1, 8, 30)),
    ("2026-04-30T23:00:00Z", dt.datetime(2026, 5, 1, 7, 0)),
    ("2026-05-01T09:00:00+09:00", dt.datetime(2026, 5, 1, 8, 0)),
    ("2026-05-01", dt.datetime(2026, 5, 1, 0, 0)),
    ("1969-12-31T23:59:59.999999", dt.datetime(1969, 12, 31, 23, 59, 59, 999999)),
])
def test_listing_times_are_china_standard_time(when, china):
    assert parse_hotlist(row(ISSUER, card(1), when)) == {(ISSUER, card(1)): china}


def test_a_card_listed_twice_keeps_its_earliest_time():
    text = "\n".join([row(ISSUER, card(1), "2026-05-03T00:00:00"),
                      row(ISSUER, card(1), "2026-05-01T00:00:00"),
                      row(ISSUER, card(1), "2026-05-02T00:00:00")])
    assert parse_hotlist(text) == {(ISSUER, card(1)): dt.datetime(2026, 5, 1)}
    assert check_hotlist(text.encode()) == (1, 3)


def test_an_empty_list_and_a_header_alone_list_nothing():
    assert parse_hotlist(b"") == {}
    assert parse_hotlist(b"issuer,card,listed_at\n") == {}


GOOD = row(ISSUER, card(1), "2026-05-01T09:00:00")


@pytest.mark.parametrize(("bad", "reason"), [
    (row(ISSUER, card(1), "2026-05-01T09:00:00").replace("31", "3G", 1),
     "issuer '3G01000000000001' is not 16 hex digits (8 bytes)"),
    (f"31010000000001,{card(1).hex()},2026-05-01", "issuer '31010000000001' is not 16 hex"),
    (f"{ISSUER.hex()},{card(1).hex()}00,2026-05-01", "is not 16 hex digits"),
    (f"{ISSUER.hex()},3101 0000 0000 00,2026-05-01", "card '3101 0000 0000 00' is not 16"),
    (row(ISSUER, card(1), "2026-13-01T09:00:00"),
     "listing time '2026-13-01T09:00:00' is not an ISO 8601 date and time"),
    (row(ISSUER, card(1), "yesterday"), "listing time 'yesterday' is not an ISO 8601"),
    (row(ISSUER, card(1), ""), "listing time is empty"),
    (row(ISSUER, card(1), "2026-05-01", "add"), "4 fields; a hotlist row is "
                                                "issuer,card,listed_at (is this a delta file?)"),
    (f"{ISSUER.hex()},{card(1).hex()}", "2 fields"),
])
def test_a_bad_row_names_the_file_and_line(tmp_path, bad, reason):
    path = tmp_path / "list.csv"
    path.write_text("\n".join(["issuer,card,listed_at", GOOD, "", bad, GOOD]) + "\n")
    with pytest.raises(HotlistError) as caught:
        read_hotlist(path)
    assert str(caught.value).startswith(f"{path}:4: ")
    assert reason in str(caught.value)
    assert caught.value.problems == (str(caught.value).removesuffix("; nothing was read"),)
    assert isinstance(caught.value, UnionCardError)


def test_every_bad_row_is_reported_and_nothing_is_read():
    text = "\n".join([GOOD, "nonsense", GOOD, "x,y,z", *["a,b"] * 30])
    with pytest.raises(HotlistError) as caught:
        parse_hotlist(text, source="list.csv")
    assert str(caught.value) == ("list.csv:2: 1 fields; a hotlist row is issuer,card,listed_at "
                                 "(and 31 more bad rows); nothing was read")
    assert len(caught.value.problems) == 20
    assert caught.value.problems[1] == "list.csv:4: issuer 'x' is not 16 hex digits (8 bytes)"


def test_a_wrong_header_and_text_that_is_not_utf8(tmp_path):
    with pytest.raises(HotlistError, match=r"^l\.csv:1: header 'issuer,card,when' is not "
                                           r"issuer,card,listed_at$"):
        parse_hotlist("issuer,card,when\n" + GOOD, source="l.csv")
    with pytest.raises(HotlistError, match=r"^l\.csv:1: header .* is not issuer,card,listed_at"):
        parse_hotlist("issuer,card,listed_at,action\n" + GOOD, source="l.csv")
    path = tmp_path / "gbk.csv"
    path.write_bytes((GOOD + "\n" + GOOD + ",挂失\n").encode("gbk"))
    with pytest.raises(HotlistError, match=rf"^{path}:2: not UTF-8 text"):
        read_hotlist(path)
    with pytest.raises(HotlistError, match=r"missing\.csv: cannot read the hotlist"):
        read_hotlist(tmp_path / "missing.csv")


def test_a_csv_error_is_a_bad_row():
    with pytest.raises(HotlistError, match=r"^<hotlist>:2: unreadable CSV: ',' expected"):
        parse_hotlist(GOOD + '\n"3101000000000001"x,3101000000000001,2026-05-01\n' + GOOD)
    with pytest.raises(HotlistError, match=r"^<hotlist>:3: unreadable CSV: unexpected end"):
        parse_hotlist(GOOD + '\n"' + GOOD + "\n" + GOOD)


# --- lookups -------------------------------------------------------------------------------


def test_lookups_through_the_index(csv_file):
    with Hotlist.load(csv_file) as hotlist:
        assert hotlist.index_state is IndexState.BUILT
        assert hotlist.index_path == index_path(csv_file)
        assert hotlist.index_path.parent == cache_dir()
        assert hotlist.listed_at(ISSUER, card(1)) == dt.datetime(2026, 5, 1, 9, 0)
        assert hotlist.listed_at(ISSUER, card(3)) is None
        assert hotlist.listed_at(OTHER_ISSUER, card(2)) is None
        assert (OTHER_ISSUER, card(1)) in hotlist
        assert (ISSUER, card(9)) not in hotlist and "card" not in hotlist
        assert len(hotlist) == hotlist.rows == 3
        assert hotlist.oldest == hotlist.newest == dt.datetime(2026, 5, 1, 9, 0)
        assert list(hotlist.entries()) == [(*key, when) for key, when
                                           in sorted(parse_hotlist(LIST).items())]
        with pytest.raises(ValueError, match="8 bytes each"):
            hotlist.listed_at(ISSUER[:7], ISSUER[7:] + card(1))
    with pytest.raises(ValueError, match="closed"):
        hotlist.listed_at(ISSUER, card(1))


def test_from_entries_answers_like_load(csv_file):
    listed = parse_hotlist(LIST)
    in_memory = Hotlist.from_entries([(*key, when) for key, when in listed.items()])
    assert in_memory.index_state is IndexState.MEMORY and in_memory.index_path is None
    with Hotlist.load(csv_file) as loaded:
        for issuer in (ISSUER, OTHER_ISSUER):
            for n in range(4):
                assert in_memory.listed_at(issuer, card(n)) == loaded.listed_at(issuer, card(n))
    aware = dt.datetime(2026, 5, 1, 1, 0, tzinfo=dt.UTC)
    twice = Hotlist.from_entries([(ISSUER, card(1), dt.datetime(2026, 5, 2)),
                                  (ISSUER, card(1), aware)])
    assert twice.listed_at(ISSUER, card(1)) == dt.datetime(2026, 5, 1, 9, 0)
    assert len(Hotlist.from_entries([])) == 0 and Hotlist.from_entries([]).oldest is None


def test_an_empty_list_has_an_index_too(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with Hotlist.load(path) as hotlist:
        assert len(hotlist) == 0 and hotlist.slots == 16 and hotlist.oldest is None
        assert hotlist.listed_at(ISSUER, card(1)) is None


def test_a_missing_list_is_an_error(tmp_path):
    with pytest.raises(HotlistError, match=r"cannot read the hotlist .*nowhere\.csv"):
        Hotlist.load(tmp_path / "nowhere.csv")


def test_sequential_card_numbers_spread_over_the_table():
    slots = 1 << 15
    shift = 128 - 15
    homes = sorted(module._home(ISSUER + card(n), shift) for n in range(slots // 2))
    assert len(set(homes)) > 0.99 * len(homes)
    gaps = [b - a for a, b in itertools.pairwise(homes)]
    assert max(gaps) < 40


# --- the index cache -----------------------------------------------------------------------


def test_an_index_is_used_once_the_csv_is_old_enough(csv_file, racy, monkeypatch):
    assert Hotlist.load(csv_file).index_state is IndexState.BUILT
    built = index_path(csv_file).read_bytes()
    # Written moments ago: the stat stamp might miss a change in the same clock tick.
    assert Hotlist.load(csv_file).index_state is IndexState.VERIFIED
    assert index_path(csv_file).read_bytes() == built
    later(monkeypatch)
    verified = Hotlist.load(csv_file)
    assert verified.index_state is IndexState.VERIFIED
    assert "now trusts" in verified.index_detail
    assert index_path(csv_file).read_bytes()[HEADER_SIZE:] == built[HEADER_SIZE:]
    fresh = Hotlist.load(csv_file)
    assert fresh.index_state is IndexState.FRESH
    assert fresh.listed_at(ISSUER, card(1)) == dt.datetime(2026, 5, 1, 9, 0)


def test_the_index_follows_a_replaced_csv(csv_file, tmp_path, monkeypatch):
    Hotlist.load(csv_file).close()
    later(monkeypatch)
    new = tmp_path / "new.csv"
    new.write_text(row(ISSUER, card(7), "2026-06-01T00:00:00") + "\n")
    os.replace(new, csv_file)
    with Hotlist.load(csv_file) as hotlist:
        assert hotlist.index_state is IndexState.REBUILT
        assert hotlist.index_detail == "the CSV changed since the index was built"
        assert hotlist.listed_at(ISSUER, card(1)) is None
        assert hotlist.listed_at(ISSUER, card(7)) == dt.datetime(2026, 6, 1)


def _rewrite_in_place(path: Path, text: str) -> None:
    """Same size, same inode, and the old mtime put back: only ctime and content differ."""
    before = os.stat(path)
    assert len(text.encode()) == before.st_size
    with open(path, "r+b") as file:
        file.write(text.encode())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)


CHANGED = LIST.replace(card(2).hex().upper(), card(8).hex().upper())


def test_a_change_within_the_same_second_is_seen(csv_file):
    assert Hotlist.load(csv_file).listed_at(ISSUER, card(2)) is not None
    _rewrite_in_place(csv_file, CHANGED)
    with Hotlist.load(csv_file) as hotlist:
        assert hotlist.index_state is IndexState.REBUILT
        assert hotlist.listed_at(ISSUER, card(2)) is None
        assert hotlist.listed_at(ISSUER, card(8)) == dt.datetime(2026, 5, 1, 9, 0)


def test_the_content_hash_catches_what_the_stat_stamp_cannot(csv_file, racy, monkeypatch):
    """A file system without ctime: size, mtime and inode unchanged, only the content."""
    monkeypatch.setattr(module, "_stamp", lambda st: (st.st_size, st.st_mtime_ns, 0,
                                                      st.st_ino, st.st_dev))
    Hotlist.load(csv_file).close()
    _rewrite_in_place(csv_file, CHANGED)
    with Hotlist.load(csv_file) as hotlist:
        assert hotlist.index_state is IndexState.REBUILT
        assert "same stat stamp, other content" in hotlist.index_detail
        assert hotlist.listed_at(ISSUER, card(8)) is not None


def _loaded_after(damage, csv_file) -> Hotlist:
    Hotlist.load(csv_file).close()
    index = index_path(csv_file)
    data = bytearray(index.read_bytes())
    index.write_bytes(damage(data))
    return Hotlist.load(csv_file)


@pytest.mark.parametrize(("damage", "why"), [
    (lambda data: data[:-5], "truncated or extended"),
    (lambda data: data[:100], "truncated: 100 bytes"),
    (lambda data: data + b"\0", "truncated or extended"),
    (lambda data: b"", "truncated: 0 bytes"),
    (lambda data: b"PK\x03\x04" + data[4:], "not a hotlist index"),
    (lambda data: data[:8] + bytes([data[8] ^ 1]) + data[9:], "header CRC-32 mismatch"),
])
def test_a_damaged_index_is_rebuilt(csv_file, racy, damage, why):
    with _loaded_after(damage, csv_file) as hotlist:
        assert hotlist.index_state is IndexState.REBUILT
        assert why in hotlist.index_detail
        assert hotlist.listed_at(ISSUER, card(1)) == dt.datetime(2026, 5, 1, 9, 0)
    assert Hotlist.load(csv_file).index_state is IndexState.VERIFIED


def _slot_damaged(field: int = 20) -> Callable[[bytearray], bytes]:
    """What damages the index slot of card 1: one bit flipped at ``field`` bytes into it
    (0: the key, 20: the listing time, 25: the CRC)."""
    def damage(data: bytearray) -> bytes:
        data[data.index(ISSUER + card(1)) + field] ^= 0x10
        return bytes(data)
    return damage


@pytest.mark.parametrize("field", [0, 20, 25])
def test_a_damaged_slot_is_caught_at_lookup_and_the_index_rebuilt(csv_file, racy, field):
    hotlist = _loaded_after(_slot_damaged(field), csv_file)
    assert hotlist.index_state is IndexState.VERIFIED  # the header is intact
    with pytest.warns(HotlistWarning, match="the index is damaged .*fails its CRC-32"):
        assert hotlist.listed_at(ISSUER, card(1)) == dt.datetime(2026, 5, 1, 9, 0)
    assert hotlist.index_state is IndexState.REBUILT
    assert hotlist.listed_at(ISSUER, card(2)) == dt.datetime(2026, 5, 1, 9, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Hotlist.load(csv_file)
        assert again.listed_at(ISSUER, card(1)) == dt.datetime(2026, 5, 1, 9, 0)
        assert len(list(again.entries())) == 3


def test_threads_meeting_a_damaged_slot_rebuild_the_index_once(csv_file, racy,
                                                                race_threads):
    """Analysis threads (settle --jobs) share a hotlist: the first to meet the damaged
    slot rebuilds the index, the others wait or read the old one, and every answer is
    right (no read of a closed map, no half-swapped table)."""
    hotlist = _loaded_after(_slot_damaged(), csv_file)
    answers: list[object] = []

    def look() -> None:
        for _ in range(200):
            answers.append(hotlist.listed_at(ISSUER, card(1)))
            answers.append(hotlist.listed_at(ISSUER, card(2)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        errors = race_threads(look, 8)
    assert not errors, errors[:3]
    assert set(answers) == {dt.datetime(2026, 5, 1, 9, 0)} and len(answers) == 3200
    assert [str(w.message) for w in caught if w.category is HotlistWarning].__len__() == 1
    assert hotlist.index_state is IndexState.REBUILT


def test_a_damaged_slot_whose_index_cannot_be_rewritten_falls_back_to_memory(
        csv_file, racy, monkeypatch):
    """The rebuild a damaged slot starts cannot write the new index: the list is then
    held in memory, and looked up there (not in the damaged table)."""
    import unioncard.atomic_file

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    hotlist = _loaded_after(_slot_damaged(), csv_file)
    monkeypatch.setattr(unioncard.atomic_file, "write_atomically", refuse)
    with pytest.warns(HotlistWarning, match="the index is damaged"), \
            pytest.warns(HotlistWarning, match="cannot write .*Permission denied"):
        assert hotlist.listed_at(ISSUER, card(1)) == dt.datetime(2026, 5, 1, 9, 0)
    assert hotlist.index_state is IndexState.MEMORY and hotlist.slots == 0
    assert hotlist.listed_at(ISSUER, card(2)) == dt.datetime(2026, 5, 1, 9, 0)
    assert hotlist.listed_at(ISSUER, card(5)) is None and len(hotlist) == 3


def test_an_index_that_cannot_be_written_falls_back_to_memory(csv_file, tmp_path,
                                                              monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    with pytest.warns(HotlistWarning, match="no index .*held in memory"):
        hotlist = Hotlist.load(csv_file)
    assert hotlist.index_state is IndexState.MEMORY and hotlist.index_path is None
    assert "cannot create" in hotlist.index_detail
    assert hotlist.listed_at(ISSUER, card(2)) == dt.datetime(2026, 5, 1, 9, 0)
    assert hotlist.listed_at(ISSUER, card(5)) is None
    assert len(hotlist) == 3 and hotlist.slots == 0


def test_an_unwritable_index_file_falls_back_to_memory(csv_file, monkeypatch):
    import unioncard.atomic_file

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(unioncard.atomic_file, "write_atomically", refuse)
    with pytest.warns(HotlistWarning, match="cannot write .*Permission denied"):
        hotlist = Hotlist.load(csv_file)
    assert hotlist.index_state is IndexState.MEMORY
    assert hotlist.listed_at(ISSUER, card(1)) is not None


def test_the_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "unioncard" / "hotlist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "unioncard" / "hotlist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "unioncard" / "hotlist"
    monkeypatch.chdir(tmp_path)
    assert index_path("a/hot list.csv") == index_path(tmp_path / "a" / "hot list.csv")
    assert index_path("a/hot list.csv").name.startswith("hot_list.csv-")
    assert index_path("a/hot list.csv") != index_path("b/hot list.csv")


def test_the_index_layout(csv_file):
    Hotlist.load(csv_file).close()
    data = index_path(csv_file).read_bytes()
    assert data[:8] == b"UCHL\x01\x00\x1c\x00"
    assert len(data) == HEADER_SIZE + 16 * SLOT_SIZE
    assert int.from_bytes(data[8:16], "little") == 3
    assert int.from_bytes(data[16:24], "little") == 16


def test_the_tap_time_module_imports_nothing_heavy():
    code = ("import sys, unioncard.offline\n"
            "assert 'unioncard.offline.hotlist' not in sys.modules\n"
            "from unioncard.offline import Hotlist, HotlistError\n"
            "heavy = {'numpy', 'numba', 'rich', 'dask', 'click', 'unioncard.atomic_file'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules} | "
            "heavy & set(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


# --- deltas and writing --------------------------------------------------------------------


DELTA = "\n".join(["issuer,card,listed_at,action",
                   row(ISSUER, card(5), "2026-05-02T10:00:00"),
                   row(ISSUER, card(1), "2026-04-01T00:00:00", "add"),
                   row(ISSUER, card(2), "", "remove"),
                   row(ISSUER, card(6), "2026-05-02T11:00:00", "REMOVE"),
                   row(OTHER_ISSUER, card(1), "2026-06-01T00:00:00", "")]) + "\n"


def test_a_delta_is_parsed_in_file_order():
    assert parse_delta(DELTA, source="d.csv")[:3] == [
        DeltaRow(2, "add", ISSUER, card(5), dt.datetime(2026, 5, 2, 10, 0)),
        DeltaRow(3, "add", ISSUER, card(1), dt.datetime(2026, 4, 1)),
        DeltaRow(4, "remove", ISSUER, card(2), None),
    ]
    assert parse_delta(row(ISSUER, card(1), "2026-05-01"))[0].action == "add"


def test_applying_a_delta_twice_leaves_the_same_list(csv_file, tmp_path):
    delta = tmp_path / "delta.csv"
    delta.write_text(DELTA)
    assert apply_delta(csv_file, delta) == DeltaResult(added=1, already_listed=2, removed=1,
                                                       not_listed=1, entries=3)
    after = read_hotlist(csv_file)
    assert after == {(ISSUER, card(1)): dt.datetime(2026, 4, 1),
                     (ISSUER, card(5)): dt.datetime(2026, 5, 2, 10, 0),
                     (OTHER_ISSUER, card(1)): dt.datetime(2026, 5, 1, 9, 0)}
    written = csv_file.read_bytes()
    assert written.splitlines()[:2] == [
        b"issuer,card,listed_at", b"3101000000000001,3101000000000001,2026-04-01T00:00:00+08:00"]
    again = apply_delta(csv_file, delta)
    assert again.to_dict() == {"added": 0, "already_listed": 3, "removed": 0,
                               "not_listed": 2, "entries": 3}
    assert csv_file.read_bytes() == written
    with Hotlist.load(csv_file) as hotlist:
        assert hotlist.listed_at(ISSUER, card(5)) == dt.datetime(2026, 5, 2, 10, 0)
        assert hotlist.listed_at(ISSUER, card(2)) is None


def test_a_delta_that_adds_and_removes_the_same_card_applies_in_order(csv_file, tmp_path):
    delta = tmp_path / "delta.csv"
    delta.write_text("\n".join([row(ISSUER, card(9), "2026-05-01", "add"),
                                row(ISSUER, card(9), "", "remove"),
                                row(ISSUER, card(1), "", "remove"),
                                row(ISSUER, card(1), "2026-07-01", "add")]))
    result = apply_delta(csv_file, delta)
    assert (result.added, result.removed) == (2, 2)
    assert read_hotlist(csv_file)[ISSUER, card(1)] == dt.datetime(2026, 7, 1)
    assert (ISSUER, card(9)) not in read_hotlist(csv_file)


@pytest.mark.parametrize(("bad", "reason"), [
    (row(ISSUER, card(1), "2026-05-01", "delete"), "action 'delete' is neither add nor remove"),
    (row(ISSUER, card(1), "", "add"), "listing time is empty"),
    (row(ISSUER, card(1), "soon", "remove"), "listing time 'soon'"),
    (row(ISSUER, card(1), "2026-05-01", "add", "x"), "5 fields; a delta row is"),
])
def test_a_bad_delta_changes_nothing(csv_file, tmp_path, bad, reason):
    delta = tmp_path / "delta.csv"
    delta.write_text(DELTA + bad + "\n")
    before = csv_file.read_bytes()
    with pytest.raises(HotlistError) as caught:
        apply_delta(csv_file, delta)
    assert str(caught.value).startswith(f"{delta}:7: {reason}")
    assert csv_file.read_bytes() == before
    with pytest.raises(HotlistError, match=":7: "):
        read_delta(delta)


def test_a_delta_on_a_bad_list_changes_nothing(tmp_path):
    listed, delta = tmp_path / "list.csv", tmp_path / "delta.csv"
    listed.write_text(GOOD + "\nbroken\n")
    delta.write_text(DELTA)
    with pytest.raises(HotlistError, match=rf"^{listed}:2: "):
        apply_delta(listed, delta)
    assert listed.read_text() == GOOD + "\nbroken\n"


def test_write_hotlist_round_trips(tmp_path):
    path = tmp_path / "out.csv"
    entries = {(ISSUER, card(2)): dt.datetime(2026, 5, 1, 9, 0, 0, 5),
               (ISSUER, card(1)): dt.datetime(2026, 5, 1, 9, 0)}
    os.chmod(write_hotlist(path, entries), 0o640)
    assert read_hotlist(path) == entries
    assert path.read_text().splitlines() == [
        "issuer,card,listed_at",
        "3101000000000001,3101000000000001,2026-05-01T09:00:00+08:00",
        "3101000000000001,3101000000000002,2026-05-01T09:00:00.000005+08:00"]
    write_hotlist(path, [(ISSUER, card(3), dt.datetime(2026, 1, 1))])
    assert read_hotlist(path) == {(ISSUER, card(3)): dt.datetime(2026, 1, 1)}
    assert os.stat(path).st_mode & 0o777 == 0o640


# --- the index agrees with a dict ----------------------------------------------------------

KEYS = st.tuples(st.sampled_from([ISSUER, OTHER_ISSUER, bytes(8)]),
                 st.integers(0, 300).map(card) | st.binary(min_size=8, max_size=8))
TIMES = st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2100, 1, 1))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(listed=st.dictionaries(KEYS, TIMES, max_size=200), probes=st.lists(KEYS, max_size=50))
def test_the_index_agrees_with_a_dict(listed, probes):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "hotlist.csv"
        write_hotlist(path, listed)
        with Hotlist.load(path) as hotlist:
            assert hotlist.index_path is not None and len(hotlist) == len(listed)
            for key in [*listed, *probes]:
                assert hotlist.listed_at(*key) == listed.get(key)
            assert {(i, d): when for i, d, when in hotlist.entries()} == listed
            assert hotlist.oldest == min(listed.values(), default=None)
            assert hotlist.newest == max(listed.values(), default=None)


# --- writers of one list, listing times a datetime cannot hold --------------------------------

UPDATER = """
import sys
from collections.abc import Callable
from pathlib import Path
from unioncard.offline.hotlist import apply_delta
hotlist, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for n in range(count):
    delta = hotlist.with_name(f"{name}-{n}.csv")
    delta.write_text(f"3101000000000001,{name}{n:014d},2026-05-01T09:00:00\\n")
    apply_delta(hotlist, delta)
"""


def test_concurrent_updates_of_one_list_lose_nothing(tmp_path):
    """The list's lock is held from reading it to writing it back: no update is lost."""
    hotlist = tmp_path / "hotlist.csv"
    hotlist.write_text("issuer,card,listed_at\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    writers = [subprocess.Popen([sys.executable, "-c", UPDATER, str(hotlist), name, "15"],
                                env=env) for name in ("aa", "bb")]
    assert [writer.wait(120) for writer in writers] == [0, 0]
    listed = read_hotlist(hotlist)
    assert len(listed) == 30
    assert not (tmp_path / ".hotlist.csv.lock").exists()


def test_an_update_waits_for_the_holder_then_refuses_in_words(tmp_path):
    from unioncard.file_lock import FileInUseError, FileLock

    hotlist = tmp_path / "hotlist.csv"
    hotlist.write_text("issuer,card,listed_at\n")
    delta = tmp_path / "delta.csv"
    delta.write_text(row(ISSUER, card(1), "2026-05-01T09:00:00") + "\n")
    script = ("import sys, time; from unioncard.file_lock import FileLock; "
              "lock = FileLock(sys.argv[1], 'unioncard hotlist update').acquire(); "
              "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(hotlist)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(FileInUseError, match="unioncard hotlist update"):
            apply_delta(hotlist, delta, wait=0.2)
        with pytest.raises(FileInUseError):
            module.replace_hotlist(hotlist, delta, wait=0.2)
    finally:
        holder.kill()
        holder.wait(10)
    assert hotlist.read_text() == "issuer,card,listed_at\n"
    with FileLock(hotlist, "test"):
        pass  # the killed holder's lock is taken over


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+09:00", "9999-12-31T23:00:00-01:00",
                                  "9999-12-31T16:00:00Z"])
def test_a_listing_time_outside_the_years_a_datetime_holds_is_a_bad_row(when):
    text = "issuer,card,listed_at\n" + row(ISSUER, card(1), when) + "\n"
    with pytest.raises(HotlistError, match="outside the years 1 to 9999 in China time"):
        parse_hotlist(text.encode())
    with pytest.raises(HotlistError, match="outside the years 1 to 9999"):
        parse_delta(text.replace("issuer,card,listed_at\n", "").encode())


@pytest.mark.parametrize("when", ["0001-01-01T08:00:00Z", "9999-12-31T15:59:59.999999Z"])
def test_the_extreme_listing_times_in_range_are_listed(tmp_path, when):
    path = tmp_path / "hotlist.csv"
    path.write_text("issuer,card,listed_at\n" + row(ISSUER, card(1), when) + "\n")
    with Hotlist.load(path) as listed:
        expected = dt.datetime.fromisoformat(when).astimezone(
            dt.timezone(dt.timedelta(hours=8))).replace(tzinfo=None)
        assert listed.listed_at(ISSUER, card(1)) == expected
        assert listed.oldest == listed.newest == expected
        assert [when for _, _, when in listed.entries()] == [expected]


def test_replace_refuses_what_is_not_a_hotlist_and_leaves_it(tmp_path):
    new = tmp_path / "new.csv"
    new.write_text(row(ISSUER, card(1), "2026-05-01T09:00:00") + "\n")
    image = tmp_path / "card.json"
    image.write_text('{"format": "unioncard-card-image", "version": 1}\n')
    delta = tmp_path / "delta.csv"
    delta.write_text("issuer,card,listed_at,action\n" + row(ISSUER, card(2), "", "remove") + "\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("dear diary\n")
    journal = tmp_path / "journal.sqlite"
    import sqlite3

    sqlite3.connect(journal).execute("CREATE TABLE t (x)").connection.close()
    for target, words in ((image, "is a card image, not a hotlist"),
                          (delta, "is a hotlist delta, not a hotlist"),
                          (notes, "is not a hotlist"),
                          (journal, "an SQLite database")):
        before = target.read_bytes()
        with pytest.raises(HotlistError, match=words):
            module.replace_hotlist(target, new)
        assert target.read_bytes() == before
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(HotlistError, match="FIFO"):
        module.replace_hotlist(fifo, new)
    fresh = tmp_path / "fresh.csv"
    assert module.replace_hotlist(fresh, new) == (1, 1)
    assert fresh.read_bytes() == new.read_bytes()
    assert module.replace_hotlist(fresh, new) == (1, 1)  # a hotlist: replaced
