"""Toll tables (`unioncard.terminal.tolls`): parsing, lookups, and errors that name the file
and the entry.  The ETC lanes that use them are in test_sessions.py."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from unioncard.terminal import TollTable, load_toll_table, parse_toll_table
from unioncard.terminal.tolls import MAX_TOLL, TollTableError

TABLE = """
network = "1101"
name = "Example expressway"

[[toll]]
entry = "0203"
exit = "0007"
fen = { 1 = 10000, 2 = 15000 }

[[toll]]
entry = "0011"
exit = "0007"
fen = { 1 = 5500 }

[[toll]]
entry = "0007"
exit = "0011"
fen = { 1 = 6000 }
"""


def table_with(entry: str) -> str:
    """A table whose one [[toll]] entry is ``entry`` (TOML lines)."""
    return f'network = "1101"\n\n[[toll]]\n{entry}\n'


def test_a_table_gives_tolls_in_both_directions_unless_the_reverse_is_listed():
    table = parse_toll_table(TABLE, "tolls.toml")
    assert (table.network, table.name) == (0x1101, "Example expressway")
    assert table.toll(0x0203, 0x0007, 1) == 10000
    assert table.toll(0x0007, 0x0203, 2) == 15000  # the reverse of a listed trip
    assert table.toll(0x0011, 0x0007, 1) == 5500
    assert table.toll(0x0007, 0x0011, 1) == 6000  # its reverse is listed apart
    assert table.toll(0x0203, 0x0007, 3) is None  # no toll for that class
    assert table.toll(0x0203, 0x0011, 1) is None  # no such trip
    assert table.stations == {0x0203, 0x0007, 0x0011}


def test_the_longest_toll_into_an_exit_is_by_vehicle_class():
    table = parse_toll_table(TABLE)
    assert table.longest_toll(0x0007, 1) == 10000
    assert table.longest_toll(0x0007, 2) == 15000
    assert table.longest_toll(0x0011, 1) == 6000
    assert table.longest_toll(0x0007, 3) is None
    assert table.longest_toll(0x0555, 1) is None


def test_the_shipped_example_table_parses(tmp_path):
    text = resources.files("unioncard").joinpath("data", "toll-table-example.toml").read_text(
        "utf-8")
    path = tmp_path / "example.toml"
    path.write_text(text, encoding="utf-8")
    table = load_toll_table(path)
    assert table == parse_toll_table(text)
    assert table.network == 0x1101 and table.toll(0x0203, 0x0007, 1) == 10000


ERRORS = [
    ("network = ", "tolls.toml: not valid TOML: "),
    ('name = "x"\n[[toll]]\nentry = "0203"\nexit = "0007"\nfen = { 1 = 1 }',
     "tolls.toml: network must be 4 hex digits in quotes, got None"),
    ('network = 1101\n[[toll]]\nentry = "0203"\nexit = "0007"\nfen = { 1 = 1 }',
     "tolls.toml:1: network must be 4 hex digits in quotes, got 1101"),
    ('network = "1101"\nroad = "G1"', "tolls.toml:2: unknown entries road"),
    ('network = "1101"\nname = 5\n[[toll]]\nentry = "0203"\nexit = "0007"\nfen = { 1 = 1 }',
     "tolls.toml:2: name must be a string"),
    ('network = "1101"', "tolls.toml: no [[toll]] entries"),
    ('network = "1101"\ntoll = 5', "tolls.toml:2: no [[toll]] entries"),
    (table_with('exit = "0007"\nfen = { 1 = 1 }'),
     "tolls.toml:3: [[toll]] #1: entry must be 4 hex digits in quotes, got None"),
    (table_with('entry = "0203"\nfen = { 1 = 1 }'),
     "tolls.toml:3: [[toll]] #1: exit must be 4 hex digits in quotes, got None"),
    (table_with('entry = "0203"\nexit = "0007"'),
     "tolls.toml:3: [[toll]] #1: fen must map vehicle classes to tolls"),
    (table_with('entry = "0203"\nexit = "0007"\nfen = {}'),
     "tolls.toml:6: [[toll]] #1: fen must map vehicle classes to tolls"),
    (table_with('entry = "20300"\nexit = "0007"\nfen = { 1 = 1 }'),
     "tolls.toml:4: [[toll]] #1: entry must be 4 hex digits in quotes, got '20300'"),
    (table_with('entry = "02G3"\nexit = "0007"\nfen = { 1 = 1 }'),
     "tolls.toml:4: [[toll]] #1: entry must be 4 hex digits in quotes, got '02G3'"),
    (table_with('entry = 203\nexit = "0007"\nfen = { 1 = 1 }'),
     "tolls.toml:4: [[toll]] #1: entry must be 4 hex digits in quotes, got 203"),
    (table_with('entry = "0007"\nexit = "0007"\nfen = { 1 = 1 }'),
     "tolls.toml:5: [[toll]] #1: entry and exit are the same station"),
    (table_with('entry = "0203"\nexit = "0007"\nfen = { 1 = 1 }\nlane = 3'),
     "tolls.toml:7: [[toll]] #1: unknown entries lane"),
    (table_with('entry = "0203"\nexit = "0007"\nfen = { 0 = 1 }'),
     "tolls.toml:6: [[toll]] #1: vehicle class '0' is not 1..255"),
    (table_with('entry = "0203"\nexit = "0007"\nfen = { car = 1 }'),
     "tolls.toml:6: [[toll]] #1: vehicle class 'car' is not 1..255"),
    (table_with('entry = "0203"\nexit = "0007"\nfen = { 1 = -500 }'),
     f"tolls.toml:6: [[toll]] #1: toll for class 1 must be integer fen 0..{MAX_TOLL}, got -500"),
    (table_with('entry = "0203"\nexit = "0007"\nfen = { 1 = 12.5 }'),
     "tolls.toml:6: [[toll]] #1: toll for class 1 must be integer fen"),
    (table_with('entry = "0203"\nexit = "0007"\nfen = { 1 = true }'),
     "tolls.toml:6: [[toll]] #1: toll for class 1 must be integer fen"),
    (table_with(f'entry = "0203"\nexit = "0007"\nfen = {{ 1 = {MAX_TOLL + 1} }}'),
     "tolls.toml:6: [[toll]] #1: toll for class 1 must be integer fen"),
    ('network = "1101"\ntoll = [5]', "tolls.toml:2: [[toll]] #1 is not a table"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[
    re.sub(r"^tolls\.toml(:\d+)?: ", "", m).replace("[[toll]] #1: ", "")[:36] for _, m in ERRORS])
def test_errors_name_the_file_the_line_and_the_entry(text, message):
    with pytest.raises(TollTableError) as caught:
        parse_toll_table(text, "tolls.toml")
    assert str(caught.value).startswith(message)


def test_a_pair_listed_twice_names_the_second_entry():
    text = TABLE + '\n[[toll]]\nentry = "0011"\nexit = "0007"\nfen = { 2 = 8000, 1 = 5600 }\n'
    line = text.splitlines().index("fen = { 2 = 8000, 1 = 5600 }") + 1
    with pytest.raises(TollTableError, match=rf"^tolls.toml:{line}: \[\[toll\]\] #4: 0011 -> 0007 "
                                             "class 1 is listed twice$"):
        parse_toll_table(text, "tolls.toml")


def test_a_toll_table_error_is_a_value_error():
    assert issubclass(TollTableError, ValueError)


def test_an_unreadable_file_is_named(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(TollTableError, match=r"missing\.toml: cannot read the toll table: "):
        load_toll_table(missing)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "\xe9"\n')
    with pytest.raises(TollTableError, match=r"latin\.toml: the toll table is not UTF-8 "):
        load_toll_table(latin)


def test_errors_in_a_file_name_its_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(table_with('entry = "0203"\nexit = "0007"\nfen = { 1 = -1 }'), "utf-8")
    with pytest.raises(TollTableError, match=rf"^{path}:6: \[\[toll\]\] #1: toll for class 1"):
        load_toll_table(path)


@pytest.mark.parametrize("code", ["0x12", "-123", " 123", "1_23", "+1FF"])
def test_station_codes_are_exactly_four_hex_digits(code):
    with pytest.raises(TollTableError, match="entry must be 4 hex digits"):
        parse_toll_table(table_with(f'entry = "{code}"\nexit = "0007"\nfen = {{ 1 = 1 }}'))


def test_a_table_is_plain_data():
    table = TollTable(0x1101, tolls={(1, 2, 1): 300})
    assert table.toll(2, 1, 1) == 300 and table.longest_toll(2, 1) == 300


def test_a_large_table_parses_in_linear_time():
    """Lines are found only for an error, from one scan of the text: 5 000 tolls parse
    in well under a second (one scan per entry took minutes)."""
    import time

    text = 'network = "1101"\n' + "".join(
        f'[[toll]]\nentry = "{i // 100:04X}"\nexit = "{i % 100 + 0x1000:04X}"\n'
        f"fen = {{ 1 = {i} }}\n" for i in range(5000))
    started = time.process_time()
    table = parse_toll_table(text, "big.toml")
    assert len(table.tolls) == 5000 and time.process_time() - started < 2.0
    with pytest.raises(TollTableError, match=r"^big\.toml:20003: \[\[toll\]\] #5001: entry must"):
        parse_toll_table(text + '[[toll]]\nentry = "x"\nexit = "0001"\nfen = { 1 = 1 }\n',
                         "big.toml")
