"""The member's union organization as a rule condition, end to end: the rule file, the
reference quote, the batch path, the CLI, a tap on a simulated card (the organization is
read from the member application, DF43) and settlement re-pricing its offline record."""

import datetime as dt
import json

import numpy as np
import pytest
from click.testing import CliRunner

from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.cli import root
from unioncard.crypto import Keystore
from unioncard.offline.batch import encode_batch
from unioncard.settlement.analyze import context_batch, record_context
from unioncard.settlement.columns import decode_batch
from unioncard.tariffs import (
    ContextBatch,
    Mode,
    QuoteContext,
    RuleFileError,
    dumps,
    evaluate_batch,
    loads,
    quote,
)
from unioncard.testing.purse_rig import PurseRig

CITY, DISTRICT = "市总工会", "海淀区总工会"
RULES = f"""\
[[rule]]
id = "district-bus"
mode = "bus"
[rule.when]
card_types = [0x55]
organizations = ["{DISTRICT}"]
[rule.effect]
kind = "price"
price = 100

[[rule]]
id = "city-partner"
mode = "pos"
[rule.when]
organizations = ["{CITY}", "{DISTRICT}"]
merchants = ["EXAMPLE-PARTNER-0001"]
[rule.effect]
kind = "percent"
percent = "15"
"""
AT = dt.datetime(2026, 5, 1, 8, 30)


def bus(organization, amount=200):
    return QuoteContext(Mode.BUS, amount, 0x55, AT, organization=organization)


def test_a_rule_for_one_organization_applies_to_its_members_only():
    rules = loads(RULES)
    assert quote(bus(DISTRICT), rules).charged_amount == 100
    assert quote(bus(CITY), rules).charged_amount == 200
    assert quote(bus(None), rules).charged_amount == 200  # no member application
    shop = QuoteContext(Mode.POS, 10_000, 0x01, AT, merchant_id="EXAMPLE-PARTNER-0001",
                        organization=CITY)
    assert quote(shop, rules).rules == ("city-partner",)
    assert loads(dumps(rules)) == rules and loads(dumps(rules)).version == rules.version


def test_the_batch_path_matches_organizations_as_text_and_as_record_bytes():
    rules = loads(RULES)
    names = [DISTRICT, CITY, None, DISTRICT, "工" * 16]
    batch = ContextBatch.from_columns(mode="bus", amount=200, card_type=0x55, at=np.datetime64(AT),
                                      organization=names)
    as_bytes = ContextBatch.from_columns(
        mode="bus", amount=200, card_type=0x55, at=np.datetime64(AT),
        organization=np.asarray([(n or "").encode() for n in names], "S48"))
    want = [quote(batch.context(j), rules).charged_amount for j in range(len(batch))]
    assert want == [100, 200, 200, 100, 200]
    assert evaluate_batch(batch, rules).charged.tolist() == want
    assert evaluate_batch(as_bytes, rules).charged.tolist() == want


@pytest.mark.parametrize(("value", "message"), [
    ('["中国铁路北京局集团有限公司北京车辆段工会委员会"]',
     "is 69 bytes of UTF-8 and union organizations are compared as the offline record holds "
     "them, 48 bytes: write '中国铁路北京局集团有限公司北京车'"),
    ("[]", "is empty"),
    ("[12]", "union organizations are strings"),
    ('[" 市总工会"]', "without surrounding spaces"),
])
def test_bad_organizations_are_refused_with_their_line(value, message):
    text = RULES.replace(f'organizations = ["{DISTRICT}"]', f"organizations = {value}")
    with pytest.raises(RuleFileError) as refused:
        loads(text, "rules.toml")
    problem = refused.value.problems[0]
    assert (problem.line, problem.rule) == (6, "district-bus")
    assert problem.message.startswith("when.organizations: ") and message in problem.message


def test_quote_command_takes_the_organization(tmp_path, capsys):
    path = tmp_path / "rules.toml"
    path.write_text(RULES, encoding="utf-8")
    args = ["tariffs", "quote", "--mode", "bus", "--amount", "200", "--card-type", "0x55",
            "--at", "2026-05-01T08:30", "--rules", str(path), "--json"]
    result = CliRunner().invoke(root, [*args, "--organization", DISTRICT])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rules"] == ["district-bus"]
    assert json.loads(CliRunner().invoke(root, args).output)["charged_amount"] == 200
    from unioncard.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*args, "--organization", "工" * 17])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err == (
        "unioncard: error: organization must be None or a non-empty string of at most 48 "
        "bytes of UTF-8 without control characters\n")


@pytest.mark.parametrize(("organization", "charged"), [(DISTRICT, 100), (CITY, 200)])
def test_a_tap_prices_by_the_card_organization_and_settlement_agrees(organization, charged):
    keys = Keystore.test()
    member = MemberData("张三", "20260001", organization, "11010519491231002X",
                        dt.date(2026, 1, 1), dt.date(2030, 12, 31))
    card = issue_member_card(member, keys, card_no=42, transit_balance=10_000, random_source=1)
    psam = issue_psam(keys, bytes.fromhex("001122334455"), random_source=2)
    rules = loads(RULES)
    rig = PurseRig.in_process(card, psam, keys, rules=rules, start=AT)
    outcome = rig.purchase("transit", 200)
    record = outcome.record
    assert (outcome.charged_amount, record.organization) == (charged, organization)
    # Settlement re-prices the record with the organization it carries, both ways.
    assert quote(record_context(record), rules).charged_amount == charged
    decoded = decode_batch(encode_batch(record.terminal_id, 1, AT, [record]))
    when = np.asarray([record.when], "datetime64[s]")
    assert evaluate_batch(context_batch(decoded.records, when), rules).charged.tolist() == [
        charged]
