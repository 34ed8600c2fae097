"""Shared fixtures of the simulator tests: the test keystore, a member, a card, a PSAM."""

import datetime as dt

import pytest

from unioncard.applet_sim import MemberData, issue_member_card, issue_psam
from unioncard.crypto import Keystore

TERMINAL_ID = bytes.fromhex("001122334455")


@pytest.fixture(scope="session")
def keys() -> Keystore:
    return Keystore.test()


@pytest.fixture(scope="session")
def member() -> MemberData:
    return MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                      dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x03)


@pytest.fixture
def card(keys, member):
    card = issue_member_card(member, keys, card_no=42, transit_balance=10_000,
                             etc_balance=20_000, plate="京A12345", random_source=1)
    card.power_on()
    return card


@pytest.fixture
def psam(keys):
    psam = issue_psam(keys, TERMINAL_ID, random_source=2)
    psam.power_on()
    return psam


def _tx(card, command: str | bytes) -> tuple[bytes, int]:
    """Send hex or bytes; return (data, sw)."""
    raw = bytes.fromhex(command.replace(" ", "")) if isinstance(command, str) else command
    response = card.transmit(raw)
    return response[:-2], int.from_bytes(response[-2:], "big")


@pytest.fixture(scope="session")
def tx():
    """``tx(card, "00A4...")`` -> (data, sw)."""
    return _tx
