"""Line numbers of TOML tables and keys."""

import textwrap

from unioncard.toml_lines import SourceMap

TEXT = textwrap.dedent('''\
    # header comment with [[rule]] inside
    [ruleset]
    name = "a # not a comment"

    [[rule]]
    id = "one"
    description = """
    [[rule]]
    id = "fake"
    """
    when.card_types = [
      0x55,
      [1, 2],
    ]
    [rule.effect]
    kind = "percent"
    'percent' = "10"

    [[ "rule" ]]
    id = 'two'
    when = { routes = ["8"], "min_amount" = 5, nested = { x = 1 } }
    list = [ { a = 1 }, { b = 2, c = 3 } ]
    [rule.cap]   # trailing comment
    monthly_count = 1
    literal = \'\'\'
    [[rule]]
    \'\'\'
    after = 1
''')


def test_tables_and_keys():
    smap = SourceMap(TEXT)
    expected = {
        ("ruleset",): 2,
        ("ruleset", "name"): 3,
        ("rule", 0): 5,
        ("rule", 0, "id"): 6,
        ("rule", 0, "description"): 7,
        ("rule", 0, "when", "card_types"): 11,
        ("rule", 0, "effect"): 15,
        ("rule", 0, "effect", "percent"): 17,
        ("rule", 1): 19,
        ("rule", 1, "id"): 20,
        ("rule", 1, "when", "routes"): 21,
        ("rule", 1, "when", "min_amount"): 21,
        ("rule", 1, "when", "nested", "x"): 21,
        ("rule", 1, "list", 1, "c"): 22,
        ("rule", 1, "cap"): 23,
        ("rule", 1, "cap", "monthly_count"): 24,
        ("rule", 1, "cap", "after"): 28,
    }
    assert {path: smap.exact(path) for path in expected} == expected
    assert smap.exact(("rule", 2)) is None  # the ones inside strings are not tables


def test_missing_paths_fall_back_to_the_nearest_ancestor():
    smap = SourceMap(TEXT)
    assert smap.line(("rule", 1, "effect", "kind")) == 19
    assert smap.line(("rule", 0, "when", "days")) == 11
    assert smap.line(("nothing",)) is None


def test_escaped_quotes_and_crlf():
    smap = SourceMap('[[rule]]\r\nid = "a\\"]"\r\n[rule.when]\r\nx = 1\r\n')
    assert smap.exact(("rule", 0, "when", "x")) == 4
