"""`unioncard demo`: the live part pays member-priced fares with a simulated card."""

import re

from click.testing import CliRunner

from unioncard.cli import root


def test_demo_runs_a_member_card_through_the_engine():
    result = CliRunner().invoke(root, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0
    live = result.stdout.split("Live: a union member card and a PSAM in the simulator")[1]
    assert "T-Union purse card type 55 (union member)" in live
    assert "bus fare, route K1: list 2.00 yuan, charged 1.80 yuan (bus-member-10" in live
    assert "purse 50.00 yuan -> 48.20 yuan" in live
    assert "highway entry, station 0203: entry recorded on the card" in live
    assert "list 100.00 yuan, charged 95.00 yuan (etc-member-5" in live
    assert "purse 200.00 yuan -> 105.00 yuan" in live
    assert "supermarket, 30.00 yuan (MCC 5411)" in live
    assert "purse 48.20 yuan -> 18.20 yuan" in live  # the sale
    assert "rebate left to settlement: consumption-subsidy" in live
    assert "purse 18.20 yuan -> 38.20 yuan" in live  # the load
    assert "union payment '2026年互助金' (gbk sheet)" in live
    assert "purse 38.20 yuan -> 88.20 yuan" in live
    assert "1 payment of another member waits for that member's card" in live
    assert "EF 0019 record 1: ETC exit, station 0007, lane 3, plate 京A12345" in live
    # every TAC verified with the keys; the PSAM's terminal seq advanced once per purchase,
    # and a load's is its number in the journal
    assert re.findall(r"terminal seq (\d+), TAC [0-9A-F]{8} verified", live) == \
        ["1", "2", "3", "4", "5", "6"]
    assert "exported 6 offline records in 2 batch files, 6 of 6 TACs verified" in live


def test_demo_is_reproducible():
    first = CliRunner().invoke(root, ["demo"]).stdout
    assert CliRunner().invoke(root, ["demo"]).stdout == first
