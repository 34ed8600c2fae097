"""Properties of the engine on generated rule sets, contexts and histories."""

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unioncard.tariffs import RuleSet, dumps, loads, quote, quote_sequence
from unioncard.tariffs.lint import shadowing
from unioncard.testing.tariff_strategies import context_lists, contexts, histories, rules, rulesets

PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(st.data())
def test_amount_invariants(data):
    ruleset = data.draw(rulesets())
    items = data.draw(context_lists(ruleset, max_size=20))
    book = data.draw(histories(ruleset, items))
    offline = [quote(c, ruleset) for c in items]
    settled = quote_sequence(items, ruleset, book)
    for context, result in zip(items * 2, offline + settled, strict=True):
        assert 0 <= result.charged_amount <= result.list_amount == context.amount
        assert result.list_amount == result.charged_amount + result.discount
        assert 0 <= result.rebate <= result.charged_amount
        assert sum(a.amount for a in result.applied) == result.discount + result.rebate
        assert len(set(result.rules)) == len(result.rules)
        assert result.reason and "\n" not in result.reason
        assert result.version == ruleset.version and result.rounding == ruleset.rounding
    for result in offline:  # an offline quote never applies a capped rule
        assert not any(ruleset.rule(r).capped for r in result.rules)


@PROPERTY
@given(st.data())
def test_rebates_never_change_what_the_terminal_charges(data):
    ruleset = data.draw(rulesets())
    items = data.draw(context_lists(ruleset, max_size=20))
    book = data.draw(histories(ruleset, items))
    without = RuleSet(tuple(r for r in ruleset.rules if not r.effect.is_rebate),
                      ruleset.rounding)
    for full, bare in zip(quote_sequence(items, ruleset, book.copy()),
                          quote_sequence(items, without, book.copy()), strict=True):
        assert full.charged_amount == bare.charged_amount
        assert [a for a in full.applied if a.kind == "discount"] == list(bare.applied)


@PROPERTY
@given(st.data())
def test_adding_a_rule_never_makes_the_benefit_worse(data):
    ruleset = data.draw(rulesets(max_rules=7))
    extra = data.draw(rules("extra"))
    position = data.draw(st.integers(0, len(ruleset.rules)))
    bigger = replace(ruleset, rules=(*ruleset.rules[:position], extra,
                                     *ruleset.rules[position:]))
    items = data.draw(st.lists(contexts(bigger), min_size=1, max_size=15))
    book = data.draw(histories(bigger, items))
    for context in items:
        before = quote(context, ruleset)
        after = quote(context, bigger)
        assert after.charged_amount <= before.charged_amount
        if not extra.stackable:  # the best single benefit alone
            assert after.discount >= before.discount
        settled_before = quote(context, ruleset, history=book)
        settled_after = quote(context, bigger, history=book)
        assert settled_after.charged_amount <= settled_before.charged_amount
        # settlement with history never charges more than the offline terminal did
        assert settled_after.charged_amount <= after.charged_amount


@PROPERTY
@given(st.data())
def test_shadowed_rules_never_apply(data):
    ruleset = data.draw(rulesets())
    pairs = shadowing(ruleset)
    shadowed = {b.id for b, _ in pairs}
    items = data.draw(context_lists(ruleset, max_size=20))
    book = data.draw(histories(ruleset, items))
    for result in [quote(c, ruleset) for c in items] + quote_sequence(items, ruleset, book):
        assert not shadowed & set(result.rules)


@PROPERTY
@given(rulesets())
def test_rule_files_round_trip(ruleset):
    text = dumps(ruleset)
    again = loads(text)
    assert again == ruleset
    assert again.version == ruleset.version
    assert dumps(again) == text
