"""Personalization: file contents byte by byte, card numbers, keys, member data."""

import datetime as dt

import pytest

from unioncard.applet_sim import CardNumbers, MemberData, MemberStatus, issue_member_card
from unioncard.applet_sim.files import read_transparent
from unioncard.applet_sim.member_sheet import read_sheet
from unioncard.crypto import derive_card_keys
from unioncard.errors import CryptoError


def content(card, path):
    return read_transparent(card.nvm, card.fs.node(path))


def test_card_numbers():
    n = CardNumbers(42, city_code="3100", etc_network="3201")
    assert n.transit_serial.hex() == "31005500000000000042"
    assert n.transit_diversifier.hex() == "5500000000000042"
    assert n.etc_card_no.hex() == "3201000000000042"
    assert n.transit_issuer.hex() == "31000000ffffffff"
    for bad in (dict(card_no=0), dict(card_no=10**12), dict(card_no=1, city_code="31A0"),
                dict(card_no=1, etc_network="123")):
        with pytest.raises(ValueError):
            CardNumbers(**bad)


def test_transit_ef_0015(card):
    info = content(card, "3F00/1002/0015")
    assert len(info) == 30
    assert info[0:8].hex() == "10000000ffffffff"
    assert info[8:10] == b"\x02\x02"  # app type, version
    assert info[10:20] == CardNumbers(42).transit_serial
    assert info[20:24].hex() == "20260101" and info[24:28].hex() == "20301231"
    assert info[28] == 0x55 and info[29] == 0x03


def test_etc_ef_0015_and_holder(card, member):
    info = content(card, "3F00/1001/0015")
    assert len(info) == 43
    assert info[8:10] == b"\x16\x40"
    assert info[10:12].hex() == "1101"
    assert info[12:20] == CardNumbers(42).etc_card_no
    assert info[20:28].hex() == "2026010120301231"
    assert info[28:40] == "京A12345".encode("gbk") + bytes(12 - 8)
    assert info[40] == 0x55 and info[41:43] == b"\x00\x00"
    holder = content(card, "3F00/1001/0016")
    assert len(holder) == 55 and holder == content(card, "3F00/1002/0016")
    assert holder[2:22].rstrip(b"\x00").decode("gbk") == member.name
    assert holder[22:54].rstrip(b"\x00").decode() == member.id_number
    assert holder[0] == holder[1] == holder[54] == 0


def test_card_keys_are_diversified_from_the_keystore(card, keys):
    n = CardNumbers(42)
    transit = card.purse("transit").config.keys
    etc = card.purse("etc").config.keys
    assert transit == derive_card_keys(keys.purse_keys("transit"), n.transit_diversifier)
    assert etc == derive_card_keys(keys.purse_keys("etc"), n.etc_card_no)
    assert (transit.key_version, etc.key_version) == (1, 2)


def test_initial_state(card):
    for app, balance in (("transit", 10_000), ("etc", 20_000)):
        purse = card.purse(app)
        assert (purse.balance, purse.online_seq, purse.offline_seq, purse.mac_errors) == (
            balance, 0, 0, 0)
        assert purse.log() == [] and purse.proof is None


def test_issue_refusals(keys, member):
    with pytest.raises(ValueError, match="transit balance"):
        issue_member_card(member, keys, card_no=1, transit_balance=100_001)
    with pytest.raises(ValueError, match="plate"):
        issue_member_card(member, keys, card_no=1, plate="京A123456789012")
    with pytest.raises(ValueError):
        issue_member_card(member, keys, card_no=1, pin="12")
    from unioncard.crypto import Keystore

    only_transit = Keystore(keys.purse[:1])
    with pytest.raises(CryptoError, match="etc"):
        issue_member_card(member, only_transit, card_no=1)


@pytest.mark.parametrize(
    "change",
    [
        dict(member_no="A1"),
        dict(name="x" * 21),
        dict(name="😀"),
        dict(category_flags=256),
        dict(valid_until=dt.date(2025, 1, 1)),
        dict(id_number=""),
        dict(status=9),
    ],
)
def test_member_data_validation(member, change):
    values = dict(name=member.name, member_no=member.member_no,
                  organization=member.organization, id_number=member.id_number,
                  valid_from=member.valid_from, valid_until=member.valid_until)
    values.update(change)
    with pytest.raises(ValueError):
        MemberData(**values)


def test_member_data_from_a_sheet_row():
    sheet = read_sheet("name,member_no,organization,category,id_number\n"
                       "王五,20260003,区总工会,model_worker;mutual_aid,11010519491231002X\n"
                       .encode())
    data = MemberData.from_row(sheet.members[0], valid_from=dt.date(2026, 1, 1),
                               valid_until=dt.date(2028, 12, 31))
    assert (data.name, data.member_no, data.category_flags, data.status) == (
        "王五", "20260003", 0x05, MemberStatus.ACTIVE)


def test_dates_can_differ_from_validity(keys, member):
    card = issue_member_card(member, keys, card_no=3, issue_date=dt.date(2026, 2, 1),
                             expiry=dt.date(2027, 2, 1))
    info = content(card, "3F00/1002/0015")
    assert info[20:28].hex() == "2026020120270201"
