"""Rule files: validation with file, line and rule id; all or nothing; the version hash."""

import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from unioncard.errors import TariffError
from unioncard.tariffs import (
    Mode,
    QuoteContext,
    RuleFileError,
    default_rules,
    dumps,
    lint,
    load,
    loads,
    parse,
    quote,
)
from unioncard.tariffs.model import EffectKind

GOOD = textwrap.dedent("""\
    # a comment
    [ruleset]
    name = "test"
    rounding = "half-even"

    [[rule]]
    id = "bus-10"
    mode = "bus"
    description = "10% off"
    [rule.when]
    card_types = [0x55]
    member_status = ["active"]
    [rule.effect]
    kind = "percent"
    percent = "10"

    [[rule]]
    id = "etc-5"
    mode = "etc"
    [rule.when]
    card_types = ["union-member"]
    [rule.effect]
    kind = "percent"
    basis_points = 500
""")


def problems_of(text):
    ruleset, problems = parse(text, "rules.toml")
    assert ruleset is None
    with pytest.raises(RuleFileError) as caught:
        loads(text, "rules.toml")
    assert caught.value.problems == tuple(problems)
    return problems


def only_problem(text):
    problems = problems_of(text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def swap(old, new, text=GOOD):
    assert old in text
    return text.replace(old, new, 1)


def line_of(fragment, text):
    """Line of the first line holding ``fragment`` (``fragment#2``: the second one)."""
    fragment, _, nth = fragment.partition("#")
    hits = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return hits[int(nth or 1) - 1]


def test_good_file_loads():
    ruleset = loads(GOOD, "rules.toml")
    assert [r.id for r in ruleset.rules] == ["bus-10", "etc-5"]
    assert ruleset.rules[1].effect.rate == ruleset.rules[0].effect.rate // 2
    assert ruleset.rules[1].when.card_types == frozenset({0x55})
    assert ruleset.rule("bus-10").line == 6 and ruleset.rule("etc-5").line == 17
    assert ruleset.name == "test" and str(ruleset.rounding) == "half-even"


def test_default_rules_are_valid_and_cover_every_mode():
    ruleset = default_rules()
    assert {r.mode for r in ruleset.rules} == set(Mode)
    assert any(r.caps for r in ruleset.rules)
    assert any(r.effect.kind is EffectKind.REBATE for r in ruleset.rules)


@pytest.mark.parametrize(
    ("old", "new", "fragment", "rule", "message"),
    [
        ('percent = "10"', 'percent = "10"\npecent = "5"', "pecent", "bus-10",
         "unknown field 'effect.pecent'"),
        ('description = "10% off"', 'descripton = "x"', "descripton", "bus-10",
         "unknown field 'descripton'"),
        ("card_types = [0x55]\n", "card_types = [0x55]\ncard_type = 1\n", "card_type =",
         "bus-10", "unknown field 'when.card_type'"),
        ('percent = "10"', 'percent = "-10"', 'percent = "-10"', "bus-10", "negative rate"),
        ("basis_points = 500", "basis_points = -500", "basis_points", "etc-5", "negative rate"),
        ('percent = "10"', "percent = 10.0", "percent = 10.0", "bus-10",
         'float and rates must be exact; write percent = "10" or basis_points = 1000'),
        ('percent = "10"', "percent = 12.5", "percent = 12.5", "bus-10",
         'percent = "12.5" or basis_points = 1250'),
        ("basis_points = 500", "basis_points = 5.0", "basis_points", "etc-5", "float"),
        ('percent = "10"', "percent = 10", "percent = 10", "bus-10",
         'write the percentage as a string, percent = "10", or as integer basis_points = 1000'),
        ('percent = "10"', 'percent = "101"', "percent =", "bus-10", "above 100%"),
        ('percent = "10"', 'percent = "1.23456"', "percent =", "bus-10", "at most 4 decimals"),
        ('percent = "10"', 'percent = "0"', "percent =", "bus-10", "rate of 0"),
        ('mode = "bus"', 'mode = "tram"', "tram", "bus-10", "unknown mode 'tram'"),
        ('id = "etc-5"', 'id = "bus-10"', 'id = "bus-10"#2', "bus-10",
         "duplicate rule id (first defined at line 6)"),
        ('id = "etc-5"', 'id = "etc 5"', "etc 5", "etc 5", "must be 1-64 letters"),
        ("member_status", 'valid_from = "2026-13-01"\nmember_status', "valid_from", "bus-10",
         "'2026-13-01' is not a date"),
        ("member_status", "valid_from = 2026-05-01T08:00:00\nmember_status", "valid_from",
         "bus-10", "has a time of day"),
        ("member_status = [\"active\"]",
         "member_status = [\"active\"]\nvalid_from = 2026-05-02\nvalid_until = 2026-05-01",
         "valid_until", "bus-10", "valid_until 2026-05-01 is before valid_from 2026-05-02"),
        ("member_status = [\"active\"]", "member_status = [\"unknown\"]", "member_status", "bus-10",
         "unknown member status 'unknown'"),
        ("card_types = [0x55]", "card_types = [256]", "card_types", "bus-10", "out of range"),
        ("card_types = [0x55]", "card_types = []", "card_types", "bus-10", "is empty"),
        ("card_types = [0x55]", 'merchant_categories = ["54111"]', "merchant_categories",
         "bus-10", "4-digit MCC"),
        ("card_types = [0x55]", 'routes = [8]', "routes", "bus-10", "strings"),
        ("card_types = [0x55]", 'time_from = "25:00"', "time_from", "bus-10", "time of day"),
        ("card_types = [0x55]", 'time_from = "07:00"\ntime_until = "07:00"', "time_until",
         "bus-10", "empty time window"),
        ("card_types = [0x55]", 'days = ["moonday"]', "days", "bus-10", "unknown day"),
        ("card_types = [0x55]", "min_amount = -1", "min_amount", "bus-10", "negative"),
        ('kind = "percent"\npercent = "10"', 'kind = "discount"\npercent = "10"', "discount",
         "bus-10", "effect.kind 'discount' is not one of"),
        ('kind = "percent"\npercent = "10"', 'kind = "fixed"\npercent = "10"',
         'percent = "10"', "bus-10", "effect.percent is not used by a fixed effect"),
        ('kind = "percent"\npercent = "10"', 'kind = "fixed"', "[rule.effect]", "bus-10",
         "a fixed effect needs effect.amount"),
        ('kind = "percent"\npercent = "10"', 'kind = "rebate"\npercent = "1"\namount = 5',
         "amount = 5", "bus-10", "a rebate has a rate or an amount, not both"),
        ('kind = "percent"\npercent = "10"', 'kind = "percent"\npercent = "10"\nbasis_points = 1',
         "basis_points", "bus-10", "give one of percent and basis_points"),
        ('kind = "percent"\npercent = "10"', 'kind = "fixed"\namount = 1.5', "amount", "bus-10",
         "float; amounts are integer fen"),
        ('percent = "10"\n', 'percent = "10"\n[rule.cap]\nmonthly_count = 0\n', "monthly_count",
         "bus-10", "must be above 0"),
        ('percent = "10"\n', 'percent = "10"\n[rule.cap]\nyearly_count = 1\n', "yearly_count",
         "bus-10", "unknown field 'cap.yearly_count'"),
        ('rounding = "half-even"', 'rounding = "ceiling"', "rounding", None, "unknown rounding"),
        ('name = "test"', 'name = "test"\nowner = "x"', "owner", None,
         "unknown field 'ruleset.owner'"),
        ("# a comment", "[rules]\nx = 1", "[rules]", None, "unknown field 'rules'"),
        ('mode = "bus"\n', "", "[[rule]]", "bus-10", "missing mode"),
        ('id = "etc-5"\n', "", "[[rule]]", "#2", "missing id"),
    ],
)
def test_invalid_files_name_the_rule_and_line(old, new, fragment, rule, message):
    text = swap(old, new)
    problem = only_problem(text)
    assert message in problem.message
    assert problem.rule == rule
    assert problem.source == "rules.toml"
    if fragment == "[[rule]]":  # the table of the rule in question
        headers = [i for i, line in enumerate(text.splitlines(), 1) if line == "[[rule]]"]
        assert problem.line in headers
    else:
        assert problem.line == line_of(fragment, text)
    rendered = str(problem)
    assert rendered.startswith(f"rules.toml:{problem.line}: error: ")
    assert (f"rule {rule!r}" in rendered) == (rule is not None)


def test_every_problem_is_reported_and_nothing_is_loaded():
    text = swap('percent = "10"', "percent = 10.0")
    text = swap('mode = "etc"', 'mode = "toll"', text)
    text = swap("basis_points = 500", "basis_points = 500\nbonus = 1", text)
    problems = problems_of(text)
    assert [(p.rule, p.line) for p in problems] == [
        ("bus-10", line_of("percent = 10.0", text)),
        ("etc-5", line_of("toll", text)),
        ("etc-5", line_of("bonus", text)),
    ]
    with pytest.raises(RuleFileError, match=r"rules.toml:15: rule 'bus-10'.*\(and 2 more"):
        loads(text, "rules.toml")


def test_toml_syntax_errors_carry_the_line():
    text = swap("basis_points = 500", "basis_points = ")
    problem = only_problem(text)
    assert problem.line == line_of("basis_points", text)
    assert problem.message.startswith("not valid TOML")
    impossible = swap('member_status = ["active"]', "valid_from = 2026-02-30")
    assert only_problem(impossible).line == line_of("valid_from", impossible)


def test_inline_tables_and_dotted_keys_are_located():
    text = textwrap.dedent("""\
        [[rule]]
        id = "a"
        mode = "bus"
        effect = { kind = "fixed", amount = 10 }

        [[rule]]
        id = "b"
        mode = "bus"
        when.card_types = [0x55]
        when.days = ["someday"]
        effect = { kind = "fixed", amount = -3 }
    """)
    problems = problems_of(text)
    assert [(p.rule, p.line) for p in problems] == [("b", 10), ("b", 11)]
    assert "when.days" in problems[0].message and "effect.amount" in problems[1].message


def test_error_lines_survive_strings_that_look_like_tables():
    text = swap('description = "10% off"', 'description = """\n[[rule]]\nid = "x"\n"""')
    text = swap("basis_points = 500", "basis_points = -1", text)
    problem = only_problem(text)
    assert problem.line == line_of("basis_points", text) and problem.rule == "etc-5"


def test_load_reads_files(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(GOOD, encoding="utf-8")
    assert load(path) == loads(GOOD)
    assert load(path).source == str(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RuleFileError, match="not UTF-8"):
        load(path)
    with pytest.raises(RuleFileError, match=r"missing\.toml: cannot read the rule file"):
        load(tmp_path / "missing.toml")
    with pytest.raises(RuleFileError, match="a character device, not a regular file"):
        load("/dev/zero")


def test_rule_file_error_is_a_tariff_error():
    with pytest.raises(TariffError):
        loads("[[rule]]\n")


def test_empty_rule_file_is_a_valid_empty_set():
    assert len(loads("")) == 0


# -- version hash ----------------------------------------------------------------------


def test_version_ignores_comments_whitespace_key_order_and_descriptions():
    variant = GOOD.replace("# a comment", "# another comment\n\n")
    variant = variant.replace('description = "10% off"', 'description = "九折"')
    variant = variant.replace('kind = "percent"\npercent = "10"',
                              'percent = "10.000"\nkind = "percent"')
    variant = variant.replace("card_types = [0x55]", "card_types   =   [ 85 ]   # member")
    variant = variant.replace('name = "test"', 'name = "renamed"')
    assert loads(variant).canonical() == loads(GOOD).canonical()
    assert loads(variant).version == loads(GOOD).version
    assert loads(variant).rule("bus-10").description == "九折"
    assert loads(dumps(loads(GOOD))).version == loads(GOOD).version


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('percent = "10"', 'percent = "10.5"'),
        ('rounding = "half-even"', 'rounding = "half-up"'),
        ('id = "etc-5"', 'id = "etc-five"'),
        ("card_types = [0x55]", "card_types = [0x55, 0x01]"),
    ],
)
def test_version_changes_with_what_changes_a_quote(old, new):
    assert loads(swap(old, new)).version != loads(GOOD).version


def test_version_depends_on_rule_order():
    first, second = GOOD.split("[[rule]]")[1:]
    swapped = GOOD.split("[[rule]]")[0] + "[[rule]]" + second + "\n[[rule]]" + first
    assert loads(swapped).version != loads(GOOD).version
    assert {r.id for r in loads(swapped).rules} == {r.id for r in loads(GOOD).rules}


def test_shipped_version_is_pinned():
    # Settlement records carry this hash: a change to the shipped rules must be deliberate.
    assert default_rules().version == (
        "c02b5f2e7af80fd5c1118168a147d87f3c53e25cb92238a00a2de4751a27f36e"
    )


EVERY_CONDITION = Path(__file__).with_name("data") / "every-condition.toml"


@pytest.mark.parametrize(("text", "version"), [
    # Hashes computed before the conditions were declared in one table: a rule file keeps
    # its version across changes of the code (settlement re-prices records by it).
    (lambda: EVERY_CONDITION.read_text(encoding="utf-8"),
     "0c1ec42e07f62b4a300903af04c4d202005a2241c6e53f3ee00c7d265ff9514d"),
    (lambda: dumps(load(EVERY_CONDITION)),
     "0c1ec42e07f62b4a300903af04c4d202005a2241c6e53f3ee00c7d265ff9514d"),
    (lambda: dumps(default_rules()),
     "c02b5f2e7af80fd5c1118168a147d87f3c53e25cb92238a00a2de4751a27f36e"),
])
def test_rule_file_versions_are_pinned(text, version):
    assert loads(text()).version == version


def test_the_documented_example_rule_file_is_valid():
    docs = Path(__file__).resolve().parents[2] / "docs" / "tariffs.md"
    if not docs.exists():
        pytest.skip("docs/tariffs.md not in this checkout")
    text = docs.read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    ruleset = loads(block, "docs/tariffs.md")
    assert ruleset.version == "c2463611dc3917abc56143eb285d0629ebe74c5981a5da7f3b96a2f12642b31b"
    assert [r.id for r in ruleset.rules] == ["bus-member-10", "hardship-night-bus",
                                             "supermarket-first-3"]
    assert lint(ruleset) == []
    night = QuoteContext(Mode.BUS, 200, 0x55, datetime(2026, 5, 1, 23, 30), member_categories=2)
    assert quote(night, ruleset).charged_amount == 100
    saturday = QuoteContext(Mode.POS, 30_000, 0x55, datetime(2026, 5, 2, 10),
                            merchant_category=5411)
    assert quote(saturday, ruleset).deferred == ("supermarket-first-3",)
