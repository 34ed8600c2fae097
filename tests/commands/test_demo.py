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
    assert "purse 48.20 yuan -> 68.20 yuan" in live  # the load
    assert "EF 0019 record 1: ETC exit, station 0007, lane 3, plate 京A12345" in live
    # every TAC verified with the keys; the PSAM's terminal seq advanced once per purchase
    assert re.findall(r"terminal seq (\d+), TAC [0-9A-F]{8} verified", live) == \
        ["1", "2", "3", "4"]
    assert "exported 4 offline records in 2 batch files, 4 of 4 TACs verified" in live


def test_demo_is_reproducible():
    first = CliRunner().invoke(root, ["demo"]).stdout
    assert CliRunner().invoke(root, ["demo"]).stdout == first
