"""Warnings: shadowed rules and rules without a card condition."""

import pytest

from unioncard.tariffs import default_rules, lint, loads


def ruleset(*rules, rounding="half-up"):
    body = "".join(
        f'[[rule]]\nid = "{rid}"\nmode = "{mode}"\n{extra}\n[rule.when]\ncard_types = [0x55]\n'
        f"{when}\n[rule.effect]\n{effect}\n"
        for rid, mode, when, effect, extra in rules
    )
    return loads(f'[ruleset]\nrounding = "{rounding}"\n{body}', "rules.toml")


PCT10 = 'kind = "percent"\npercent = "10"'
PCT5 = 'kind = "percent"\npercent = "5"'


def warnings_of(rs):
    return [(p.rule, p.message) for p in lint(rs)]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("", PCT10), ("", PCT10)),  # an exact duplicate
        (("", PCT10), ("", PCT5)),  # a smaller rate
        (("", PCT10), ('routes = ["8"]', PCT10)),  # narrower conditions
        (("", PCT10), ('member_categories = ["hardship"]\nmin_amount = 100', PCT5)),
        (('days = ["weekdays"]', PCT10), ('days = ["mon", "fri"]', PCT10)),
        (('time_from = "22:00"\ntime_until = "06:00"', PCT10),
         ('time_from = "23:00"\ntime_until = "01:00"', PCT10)),
        (("valid_from = 2026-01-01", PCT10), ("valid_from = 2026-02-01\nvalid_until = 2026-03-01",
                                              PCT10)),
        (("", 'kind = "price"\nprice = 0'), ("", 'kind = "percent"\npercent = "50"')),
        (("", 'kind = "fixed"\namount = 100'), ("", 'kind = "threshold"\nthreshold = 1000\n'
                                                    "amount = 100")),
        (("", 'kind = "fixed"\namount = 100'), ("", f"{PCT10}\nmax_benefit = 100")),
        (("", PCT10), ("min_amount = 1000", 'kind = "fixed"\namount = 100')),  # 10% of ≥ 1000
        (("", 'kind = "price"\nprice = 100'), ("min_amount = 200", PCT10)),  # keeps ≥ 180 > 100
        (("", 'kind = "threshold"\nthreshold = 100\namount = 10\nrepeat = true'),
         ("", 'kind = "threshold"\nthreshold = 200\namount = 10\nrepeat = true')),
        (("", 'kind = "rebate"\npercent = "5"'), ("", 'kind = "rebate"\npercent = "2"')),
        (("", 'kind = "rebate"\namount = 500'), ("", 'kind = "rebate"\namount = 200')),
    ],
)
def test_shadowed_rules_are_reported(first, second):
    rs = ruleset(("a", "bus", *first, ""), ("b", "bus", *second, ""))
    found = warnings_of(rs)
    assert len(found) == 1
    rule_id, message = found[0]
    assert rule_id == "b"
    assert "never applies: rule 'a' (line 3)" in message
    assert lint(rs)[0].line == rs.rule("b").line


@pytest.mark.parametrize(
    ("first", "second", "extra_a", "extra_b", "mode_b"),
    [
        (("", PCT5), ("", PCT10), "", "", "bus"),  # the later one is better
        (('routes = ["8"]', PCT10), ("", PCT5), "", "", "bus"),  # the later one is wider
        (("", PCT10), ("", PCT10), "", "", "metro"),  # another mode
        (("", PCT10), ("", PCT5), "stackable = true", "", "bus"),  # a stackable never shadows
        (("", PCT10), ("", PCT5), "", "stackable = true", "bus"),  # nor is it shadowed
        (("", PCT10), ("", PCT5), "[rule.cap]\nmonthly_count = 1", "", "bus"),  # a can run out
        (("", PCT10), ("", 'kind = "rebate"\npercent = "5"'), "", "", "bus"),  # not rivals
        (("", f"{PCT10}\nmax_benefit = 10"), ("", PCT5), "", "", "bus"),  # limit may bite
        (("", 'kind = "fixed"\namount = 10'), ("", PCT5), "", "", "bus"),  # 5% can exceed 10
        (("", PCT10), ("", 'kind = "fixed"\namount = 10'), "", "", "bus"),  # at 50 fen: 5 < 10
        (('time_from = "07:00"\ntime_until = "09:00"', PCT10),
         ('time_from = "08:00"\ntime_until = "10:00"', PCT10), "", "", "bus"),
        (("", 'kind = "rebate"\npercent = "50"'), ("", 'kind = "rebate"\namount = 1'), "", "",
         "bus"),  # a rebate on a 0 fen charge gives 0
    ],
)
def test_rules_that_can_win_are_not_reported(first, second, extra_a, extra_b, mode_b):
    def place(extra):  # caps go after the effect, flags before the tables
        return ("", extra) if extra.startswith("[rule.cap]") else (extra, "")

    flag_a, cap_a = place(extra_a)
    flag_b, cap_b = place(extra_b)
    rs = ruleset(("a", "bus", first[0], first[1] + "\n" + cap_a, flag_a),
                 ("b", mode_b, second[0], second[1] + "\n" + cap_b, flag_b))
    assert warnings_of(rs) == []


def test_rule_without_card_condition_is_reported():
    rs = loads('[[rule]]\nid = "all"\nmode = "pos"\n[rule.effect]\nkind = "fixed"\namount = 1\n')
    (rule_id, message), = warnings_of(rs)
    assert rule_id == "all" and "ordinary cards get it too" in message


def test_shipped_rules_have_no_warnings():
    assert lint(default_rules()) == []
