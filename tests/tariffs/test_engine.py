"""The reference quote: shipped benefits, effects, combination policy, caps, conditions."""

from datetime import datetime

import numpy as np
import pytest

from unioncard.errors import TariffError
from unioncard.tariffs import (
    ContextBatch,
    MemberStatus,
    Mode,
    Period,
    QuoteContext,
    Rounding,
    UsageBook,
    default_rules,
    evaluate_batch,
    loads,
    period_key,
    quote,
    quote_sequence,
)

AT = datetime(2026, 5, 1, 8, 30)  # a Friday


def ctx(mode=Mode.BUS, amount=200, card_type=0x55, at=AT, **kw):
    return QuoteContext(mode, amount, card_type, at, **kw)


def rules(body, rounding="half-up"):
    return loads(f'[ruleset]\nrounding = "{rounding}"\n{body}')


def rule(rule_id, effect, when="", mode="bus", extra=""):
    return (f'[[rule]]\nid = "{rule_id}"\nmode = "{mode}"\n{extra}\n'
            f"[rule.when]\n{when}\n[rule.effect]\n{effect}\n")


# -- the shipped rule set --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "amount", "charged", "rule_id"),
    [
        (Mode.BUS, 200, 180, "bus-member-10"),
        (Mode.BUS, 150, 135, "bus-member-10"),
        (Mode.BUS, 155, 140, "bus-member-10"),
        (Mode.METRO, 400, 360, "metro-member-10"),
        (Mode.COACH, 4550, 4095, "coach-member-10"),
        (Mode.FERRY, 100, 90, "ferry-member-10"),
        (Mode.TAXI, 1300, 1170, "taxi-member-10"),
        (Mode.ETC, 10_000, 9500, "etc-member-5"),
        (Mode.ETC, 1, 1, None),  # 0.95 fen rounds back up to 1: nothing to give
    ],
)
def test_shipped_member_benefits(mode, amount, charged, rule_id):
    result = quote(ctx(mode, amount))
    assert result.charged_amount == charged
    assert result.discount == amount - charged
    assert result.rules == ((rule_id,) if rule_id else ())
    if rule_id:
        assert result.reason.startswith(f"{rule_id}: ")
    assert result.version == default_rules().version
    assert result.rounding is Rounding.HALF_UP


@pytest.mark.parametrize("mode", list(Mode))
def test_ordinary_card_pays_list_price_with_no_rule(mode):
    result = quote(ctx(mode, 200, card_type=0x01, merchant_id="EXAMPLE-PARTNER-0001",
                       merchant_category=5411))
    assert (result.charged_amount, result.discount, result.rebate, result.rules) == (200, 0, 0, ())
    assert result.reason.startswith("list price")


@pytest.mark.parametrize("status", [MemberStatus.REPORTED_LOST, MemberStatus.CANCELLED])
def test_lost_or_cancelled_member_pays_list_price(status):
    assert quote(ctx(member_status=status)).charged_amount == 200


def test_partner_threshold_offer_and_deferred_subsidy():
    partner = dict(mode=Mode.POS, merchant_id="EXAMPLE-PARTNER-0001", merchant_category=5411)
    below = quote(ctx(amount=9999, **partner))
    at = quote(ctx(amount=10_000, **partner))
    assert below.charged_amount == 9999 and below.rules == ()
    assert at.charged_amount == 9000 and at.rules == ("partner-example-100-10",)
    # the consumption subsidy is capped: offline it is left to settlement
    assert at.deferred == ("consumption-subsidy",)
    assert "left to settlement" in at.reason and at.rebate == 0


def test_consumption_subsidy_first_three_per_month_at_most_30_yuan():
    shop = dict(mode=Mode.POS, merchant_category=5812, member_id="m1")
    items = [ctx(amount=amount, at=datetime(2026, 5, day, 12), **shop)
             for day, amount in ((1, 5000), (2, 10_000), (3, 10_000), (4, 5000))]
    items.append(ctx(amount=5000, at=datetime(2026, 6, 1, 12), **shop))
    book = UsageBook()
    results = quote_sequence(items, default_rules(), book)
    # 20% back: 10.00, then 20.00 (reaches 30.00), then the amount cap is used up
    assert [r.rebate for r in results] == [1000, 2000, 0, 0, 1000]
    assert [r.charged_amount for r in results] == [5000, 10_000, 10_000, 5000, 5000]
    assert "cap reached: consumption-subsidy" in results[2].reason
    may = period_key(Period.MONTH, datetime(2026, 5, 1))
    assert book.usage("m1", "consumption-subsidy", Period.MONTH, may).amount == 3000


# -- rounding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rounding", "amount", "charged"),
    [
        ("half-up", 155, 140), ("half-even", 155, 140), ("down", 155, 139),
        ("half-up", 165, 149), ("half-even", 165, 148), ("down", 165, 148),
        ("half-up", 199, 179), ("half-even", 199, 179), ("down", 199, 179),
    ],
)
def test_rounding_modes_round_the_charged_amount(rounding, amount, charged):
    ten = rules(rule("ten", 'kind = "percent"\npercent = "10"'), rounding)
    result = quote(ctx(amount=amount), ten)
    assert result.charged_amount == charged
    assert result.rounding == Rounding(rounding)


def test_fractional_percent_is_exact():
    odd = rules(rule("odd", 'kind = "percent"\npercent = "12.3456"'))
    # 1 000 000 fen × 87.6544 % = 876 544 fen exactly
    assert quote(ctx(amount=1_000_000), odd).charged_amount == 876_544


# -- effects ----------------------------------------------------------------------------


def test_fixed_amount_never_goes_below_zero():
    five = rules(rule("five", 'kind = "fixed"\namount = 500'))
    assert quote(ctx(amount=300), five).charged_amount == 0
    assert quote(ctx(amount=800), five).charged_amount == 300


def test_price_override_never_raises_the_price():
    flat = rules(rule("flat", 'kind = "price"\nprice = 100'))
    assert quote(ctx(amount=300), flat).charged_amount == 100
    assert quote(ctx(amount=80), flat).rules == ()
    assert quote(ctx(amount=80), flat).charged_amount == 80


def test_threshold_offer_once_and_repeated():
    once = rules(rule("once", 'kind = "threshold"\nthreshold = 10000\namount = 1000'))
    each = rules(rule("each", 'kind = "threshold"\nthreshold = 10000\namount = 1000\n'
                              "repeat = true\nmax_benefit = 2500"))
    assert quote(ctx(amount=9999), once).charged_amount == 9999
    assert quote(ctx(amount=25_000), once).charged_amount == 24_000
    assert quote(ctx(amount=25_000), each).charged_amount == 23_000
    assert quote(ctx(amount=99_000), each).charged_amount == 96_500  # at most 25.00


def test_percent_with_a_maximum_benefit():
    capped = rules(rule("c", 'kind = "percent"\npercent = "50"\nmax_benefit = 300'))
    assert quote(ctx(amount=400), capped).charged_amount == 200
    assert quote(ctx(amount=4000), capped).charged_amount == 3700


# -- combination policy -----------------------------------------------------------------


def test_best_single_benefit_wins_and_ties_go_to_the_first_declared():
    body = (rule("pct", 'kind = "percent"\npercent = "10"')
            + rule("fix", 'kind = "fixed"\namount = 30')
            + rule("tie", 'kind = "fixed"\namount = 30'))
    ruleset = rules(body)
    assert quote(ctx(amount=200), ruleset).rules == ("fix",)  # 30 beats 20
    assert quote(ctx(amount=400), ruleset).rules == ("pct",)  # 40 beats 30
    assert quote(ctx(amount=300), ruleset).rules == ("pct",)  # 30 ties 30: first declared


def test_stackable_rules_apply_in_declared_order_on_the_running_amount():
    body = (rule("base", 'kind = "percent"\npercent = "10"')
            + rule("minus", 'kind = "fixed"\namount = 50', extra="stackable = true")
            + rule("half", 'kind = "percent"\npercent = "50"', extra="stackable = true"))
    result = quote(ctx(amount=1000), rules(body))
    # 1000 → 900 (best single) → 850 → 425
    assert result.charged_amount == 425
    assert [(a.rule_id, a.amount) for a in result.applied] == [
        ("base", 100), ("minus", 50), ("half", 425)
    ]
    assert result.reason.count(";") == 2


def test_stackable_rule_applies_without_a_non_stackable_one():
    only = rules(rule("s", 'kind = "fixed"\namount = 10', extra="stackable = true"))
    assert quote(ctx(amount=100), only).charged_amount == 90


def test_rebates_do_not_change_the_charge_and_never_exceed_it():
    body = (rule("ten", 'kind = "percent"\npercent = "10"')
            + rule("back", 'kind = "rebate"\npercent = "60"')
            + rule("back-more", 'kind = "rebate"\npercent = "70"')
            + rule("extra", 'kind = "rebate"\npercent = "60"', extra="stackable = true")
            + rule("extra2", 'kind = "rebate"\namount = 99999', extra="stackable = true"))
    ruleset = rules(body)
    result = quote(ctx(amount=1000), ruleset)
    assert result.charged_amount == 900
    # the best non-stackable rebate (70 % of 900), then stackable ones up to what was paid
    assert [(a.rule_id, a.kind, a.amount) for a in result.applied] == [
        ("ten", "discount", 100), ("back-more", "rebate", 630), ("extra", "rebate", 270)
    ]
    assert result.rebate == 900
    batch = evaluate_batch(ContextBatch.from_contexts([ctx(amount=1000)]), ruleset)
    assert (int(batch.charged[0]), int(batch.rebate[0])) == (900, 900)
    assert batch.applied(0) == ("ten", "back-more", "extra")


def test_zero_benefit_applies_no_rule():
    ten = rules(rule("ten", 'kind = "percent"\npercent = "10"'))
    result = quote(ctx(amount=4), ten)  # 3.6 rounds to 4
    assert result.rules == () and "give nothing" in result.reason


# -- caps -------------------------------------------------------------------------------

CAPPED = rule("first3", 'kind = "fixed"\namount = 50', extra="") + (
    "[rule.cap]\nmonthly_count = 3\ndaily_count = 2\n"
) + rule("day-amount", 'kind = "rebate"\namount = 80', mode="metro") + (
    "[rule.cap]\ndaily_amount = 100\n"
)


def test_capped_rules_are_left_to_settlement_offline():
    result = quote(ctx(member_id="m"), rules(CAPPED))
    assert result.charged_amount == 200 and result.deferred == ("first3",)
    assert "needs member history" in result.reason
    no_member = quote(ctx(), rules(CAPPED), history=UsageBook())
    assert no_member.deferred == ("first3",) and "needs a member id" in no_member.reason


def test_count_caps_per_day_and_month():
    ruleset = rules(CAPPED)
    times = [datetime(2026, 5, 1, 8), datetime(2026, 5, 1, 9), datetime(2026, 5, 1, 18),
             datetime(2026, 5, 2, 8), datetime(2026, 5, 3, 8), datetime(2026, 6, 1, 8)]
    items = [ctx(at=t, member_id="m") for t in times]
    book = UsageBook()
    results = quote_sequence(list(reversed(items)), ruleset, book)[::-1]
    # two a day, three a month: days 1, 1, (day cap), 2, (month cap), June again
    assert [r.charged_amount for r in results] == [150, 150, 200, 150, 200, 150]
    assert "cap reached: first3" in results[2].reason
    other = quote(ctx(at=times[0], member_id="n"), ruleset, history=book)
    assert other.charged_amount == 150  # caps are per member


def test_amount_cap_gives_what_remains():
    ruleset = rules(CAPPED)
    items = [ctx(Mode.METRO, 500, at=datetime(2026, 5, 1, h), member_id="m") for h in (8, 9, 10)]
    results = quote_sequence(items, ruleset, UsageBook())
    assert [r.rebate for r in results] == [80, 20, 0]


def test_quote_reads_history_and_record_counts():
    ruleset = rules(CAPPED)
    book = UsageBook()
    book.add("m", "first3", Period.MONTH, period_key(Period.MONTH, AT), count=3, amount=150)
    snapshot = book.copy()
    result = quote(ctx(member_id="m"), ruleset, history=book)
    assert result.charged_amount == 200 and book == snapshot
    fresh = UsageBook()
    first = quote(ctx(member_id="m"), ruleset, history=fresh)
    fresh.record(ctx(member_id="m"), first, ruleset)
    assert fresh.usage("m", "first3", Period.DAY, period_key(Period.DAY, AT)).count == 1


def test_batch_with_history_applies_caps_in_time_order():
    ruleset = rules(CAPPED)
    times = np.array(["2026-05-01T18:00", "2026-05-01T08:00", "2026-05-01T09:00"], "M8[s]")
    batch = ContextBatch.from_columns(mode="bus", amount=200, card_type=0x55, at=times,
                                      member_id="m")
    result = evaluate_batch(batch, ruleset, history=UsageBook())
    assert result.charged.tolist() == [200, 150, 150]  # the evening one is the third that day
    offline = evaluate_batch(batch, ruleset)
    assert offline.charged.tolist() == [200, 200, 200] and offline.deferred.all()


# -- conditions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "hit", "miss"),
    [
        ("valid_from = 2026-05-01\nvalid_until = 2026-05-31",
         dict(at=datetime(2026, 5, 31, 23, 59, 59)), dict(at=datetime(2026, 6, 1))),
        ("valid_from = 2026-05-01", dict(at=datetime(2026, 5, 1)),
         dict(at=datetime(2026, 4, 30, 23, 59, 59))),
        ('days = ["weekend"]', dict(at=datetime(2026, 5, 2)), dict(at=datetime(2026, 5, 1))),
        ('days = ["fri"]', dict(at=datetime(2026, 5, 1)), dict(at=datetime(2026, 5, 2))),
        ('time_from = "07:00"\ntime_until = "09:00"', dict(at=datetime(2026, 5, 1, 8, 59, 59)),
         dict(at=datetime(2026, 5, 1, 9))),
        ('time_from = "22:00"\ntime_until = "05:00"', dict(at=datetime(2026, 5, 1, 4, 59)),
         dict(at=datetime(2026, 5, 1, 5))),
        ('time_from = "22:00"\ntime_until = "05:00"', dict(at=datetime(2026, 5, 1, 22)),
         dict(at=datetime(2026, 5, 1, 21, 59, 59))),
        ('member_categories = ["model-worker", "hardship"]', dict(member_categories=0x06),
         dict(member_categories=0x04)),
        ('member_status = ["active", "lost"]', dict(member_status=MemberStatus.REPORTED_LOST),
         dict(member_status=MemberStatus.CANCELLED)),
        ('merchants = ["A"]', dict(merchant_id="A"), dict(merchant_id="B")),
        ('merchants = ["A"]', dict(merchant_id="A"), dict()),
        ('merchant_categories = ["5411"]', dict(merchant_category=5411),
         dict(merchant_category=5412)),
        ('routes = ["K12"]', dict(route="K12"), dict(route="K1")),
        ("vehicle_classes = [1, 2]", dict(vehicle_class=2), dict(vehicle_class=3)),
        ("min_amount = 150", dict(amount=150), dict(amount=149)),
        ("card_types = [0x55]", dict(card_type=0x55), dict(card_type=0x01)),
    ],
)
def test_each_condition_admits_and_refuses(when, hit, miss):
    ruleset = rules(rule("r", 'kind = "fixed"\namount = 10', when=when))
    assert quote(ctx(**hit), ruleset).rules == ("r",)
    assert quote(ctx(**miss), ruleset).rules == ()
    batch = evaluate_batch(ContextBatch.from_contexts([ctx(**hit), ctx(**miss)]), ruleset)
    assert (batch.applied(0), batch.applied(1)) == (("r",), ())


def test_rules_of_another_mode_never_apply():
    ruleset = rules(rule("r", 'kind = "fixed"\namount = 10', mode="metro"))
    result = quote(ctx(Mode.BUS), ruleset)
    assert result.rules == () and result.reason == "list price: no rule for bus"


# -- context validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(amount=-1), "amount"),
        (dict(amount=2**32), "amount"),
        (dict(amount=True), "amount"),
        (dict(amount=1.5), "amount"),
        (dict(mode=9), "mode"),
        (dict(card_type=256), "card_type"),
        (dict(member_status=4), "member status"),
        (dict(member_categories=-1), "member_categories"),
        (dict(merchant_id=""), "merchant_id"),
        (dict(route=" 8"), "route"),
        (dict(merchant_category=10_000), "merchant_category"),
        (dict(at=datetime(2026, 5, 1).astimezone()), "naive"),
        (dict(at="2026-05-01"), "datetime"),
    ],
)
def test_context_refuses_impossible_terms(kwargs, message):
    with pytest.raises(TariffError, match=message):
        ctx(**kwargs)


def test_context_normalizes_enums():
    context = ctx(mode=1, member_status=2)
    assert context.mode is Mode.BUS and context.member_status is MemberStatus.REPORTED_LOST
