"""The reusable purse scenarios, in process, on T=1 and T=0 cards; and proof that they
catch a card that misbehaves."""

import pytest

from unioncard.applet_sim import issue_member_card, issue_psam
from unioncard.applet_sim.scenarios import (
    SCENARIOS,
    ScenarioFailure,
    capp_entry_record,
    run_scenario,
)

CASES = [(name, app) for name, s in SCENARIOS.items() for app in s.apps]


@pytest.fixture(params=["T=1", "T=0"])
def pair(request, keys, member):
    card = issue_member_card(member, keys, card_no=77, transit_balance=3_000, etc_balance=0,
                             protocol=request.param, random_source=11)
    psam = issue_psam(keys, "0A0B0C0D0E0F", protocol=request.param, random_source=12)
    card.power_on()
    psam.power_on()
    return card, psam


@pytest.mark.parametrize(("name", "app"), CASES)
def test_scenario(pair, keys, name, app):
    card, psam = pair
    result = run_scenario(name, card.transmit, psam.transmit, keys, app=app)
    assert result.name == name and result.app == app
    purse = card.purse(app)
    assert purse.balance == result.balance_after
    assert card.last_internal_error is None
    if SCENARIOS[name].destructive:
        assert purse.state.name == "LOCKED"
    else:
        assert purse.state.name == "ACTIVE" and purse.mac_errors == 0


def test_all_non_destructive_scenarios_in_a_row_on_one_card(pair, keys):
    card, psam = pair
    for name, app in CASES:
        if not SCENARIOS[name].destructive:
            run_scenario(name, card.transmit, psam.transmit, keys, app=app)
    assert card.purse("etc").offline_seq > 0 and card.purse("transit").online_seq > 0


@pytest.mark.parametrize("app", ["transit", "etc"])
def test_transaction_prove_across_a_reset(pair, keys, app):
    card, psam = pair
    run_scenario("transaction_prove", card.transmit, psam.transmit, keys, app=app,
                 power_cycle=card.reset)


def test_unknown_scenario_and_purse(pair, keys):
    card, psam = pair
    with pytest.raises(KeyError):
        run_scenario("refund", card.transmit, psam.transmit, keys)
    with pytest.raises(ValueError):
        run_scenario("capp_purchase", card.transmit, psam.transmit, keys, app="transit")


def tamper(transmit, match: bytes, change):
    """A card link whose answers to commands starting with ``match`` are altered."""
    def wrapped(command: bytes) -> bytes:
        response = transmit(command)
        return change(response) if command.startswith(match) else response
    return wrapped


def flip_first(response: bytes) -> bytes:
    return bytes([response[0] ^ 1]) + response[1:] if len(response) > 2 else response


@pytest.mark.parametrize(
    ("name", "match", "change", "message"),
    [
        ("purchase", bytes.fromhex("805401"), flip_first, "TAC"),
        ("purchase", bytes.fromhex("805C"), flip_first, "balance"),
        ("load", bytes.fromhex("8052"), flip_first, "load TAC"),
        ("load", bytes.fromhex("805000"), lambda r: r[:12] + bytes(4) + r[16:], "MAC1"),
        ("insufficient_balance", bytes.fromhex("805001"), lambda r: b"\x90\x00", "9401"),
        ("bad_mac1", bytes.fromhex("805401"), lambda r: b"\x90\x00", "9302"),
        ("transaction_prove", bytes.fromhex("805A"), flip_first, "proof"),
        ("blocked_application", bytes.fromhex("00A404"), lambda r: r[:-2] + b"\x90\x00", "6283"),
    ],
)
def test_scenarios_catch_a_misbehaving_card(keys, member, name, match, change, message):
    card = issue_member_card(member, keys, card_no=77, transit_balance=3_000)
    psam = issue_psam(keys, "0A0B0C0D0E0F")
    card.power_on()
    psam.power_on()
    bad = tamper(card.transmit, match, change)
    with pytest.raises(ScenarioFailure, match=message):
        run_scenario(name, bad, psam.transmit, keys, app="transit")


def test_capp_entry_record_layout():
    import datetime as dt

    record = capp_entry_record(network=0x1101, station=0x0203, lane=4,
                               when=dt.datetime(1970, 1, 2), vehicle_class=1, status=3,
                               plate="京A1")
    assert len(record) == 43 and record[:2] == b"\xaa\x29"
    assert record[3:8].hex() == "1101020304"
    assert int.from_bytes(record[8:12], "big") == 86_400
    assert record[12:14] == b"\x01\x03"
    assert record[27:39] == "京A1".encode("gbk") + bytes(8)
    with pytest.raises(ValueError):
        capp_entry_record(network=1, station=1, lane=1, when=dt.datetime(2026, 1, 1),
                          vehicle_class=1, status=3, plate="京A123456789012")
