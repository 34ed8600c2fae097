"""`unioncard demo`: the live part pays member-priced fares with a simulated card."""

import re

from click.testing import CliRunner

from unioncard.cli import root


def test_demo_pays_a_bus_fare_and_a_toll_with_the_member_discounts():
    result = CliRunner().invoke(root, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0
    live = result.stdout.split("Live: a union member card in the simulator")[1]
    assert "T-Union purse card type 55 (union member)" in live
    assert "bus fare: list 2.00 yuan, charged 1.80 yuan (bus-member-10" in live
    assert "purse 50.00 yuan -> 48.20 yuan" in live
    assert "highway toll (CAPP): list 100.00 yuan, charged 95.00 yuan (etc-member-5" in live
    assert "purse 200.00 yuan -> 105.00 yuan" in live
    assert "EF 0019 record 1 read back: ETC exit, station 0007, lane 3, plate 京A12345" in live
    # both TACs were verified, and the PSAM's terminal seq advanced once per purchase
    assert re.findall(r"terminal seq (\d+), MAC2 verified by the PSAM, TAC [0-9A-F]{8} verified",
                      live) == ["1", "2"]


def test_demo_is_reproducible():
    first = CliRunner().invoke(root, ["demo"]).stdout
    assert CliRunner().invoke(root, ["demo"]).stdout == first
