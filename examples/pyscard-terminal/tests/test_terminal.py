"""The pyscard terminal against simulated cards served by unioncard's pytest plugin.

Only the plugin's fixtures are used: ``virtual_reader`` puts the simulated member
card in reader ``Virtual PCD 00 00`` and the PSAM in ``Virtual PCD 00 01`` of a
private pcscd; ``sim_card`` is that card (to check what it recorded); the
``sim_card``/``sim_psam`` markers choose their options; ``fault_injector`` cuts
the card's power at a chosen write.
"""

import datetime as dt

import pytest
from terminal import Reader, TerminalError, pay_fare, read_purse, wait_for_card

WHEN = dt.datetime(2026, 3, 15, 8, 30, 0)


@pytest.fixture
def card(virtual_reader):
    reader = Reader(virtual_reader.name)
    yield reader
    reader.close()


@pytest.fixture
def psam(virtual_reader):
    reader = Reader(virtual_reader.psam_name)
    yield reader
    reader.close()


def test_reads_the_member_purse(card, sim_card):
    info = read_purse(card)
    assert info.member
    assert info.balance == 10_000 == sim_card.purse("transit").balance
    assert len(info.serial) == 20


def test_pays_a_fare(card, psam, sim_card):
    fare = pay_fare(card, psam, 200, WHEN)
    assert fare.balance_after == 9_800
    assert len(fare.tac) == 4
    assert read_purse(card).balance == 9_800
    assert sim_card.purse("transit").log()[0].amount == 200


@pytest.mark.sim_card(transit_balance=150)
def test_refuses_a_fare_above_the_balance(card, psam):
    with pytest.raises(TerminalError, match="refused"):
        pay_fare(card, psam, 200, WHEN)
    assert read_purse(card).balance == 150


@pytest.mark.sim_card(protocol="T=0")
@pytest.mark.sim_psam(protocol="T=0")
def test_t0_cards(card, psam):
    assert pay_fare(card, psam, 50, WHEN).balance_after == 9_950


@pytest.mark.parametrize(("cut", "debited"), [("before", 0), ("after", 300)])
def test_power_cut_during_debit(virtual_reader, psam, fault_injector, cut, debited):
    card = Reader(virtual_reader.name)
    getattr(fault_injector, f"cut_{cut}")("nvm.commit")  # the card's commit of the DEBIT
    with pytest.raises(TerminalError, match="did not answer"):
        pay_fare(card, psam, 300, WHEN)
    card.close()
    # The card was torn out of the reader; the next tap finds it consistent.
    virtual_reader.transport.wait_for_card(5, present=False)
    wait_for_card(virtual_reader.name, 5)
    again = Reader(virtual_reader.name)
    try:
        assert read_purse(again).balance == 10_000 - debited
    finally:
        again.close()
