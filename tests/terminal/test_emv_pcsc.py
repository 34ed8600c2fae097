"""The EMV kernel through pcscd + vpcd: ``unioncard tap --mode pos-emv --reader`` completes
contact sales over T=1 and T=0 and a contactless one, as with a card in a real reader."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from unioncard.applet_sim import MemberData, issue_member_card
from unioncard.cli import root

MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31))


def tap(reader: str, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = CliRunner().invoke(root, ["tap", "--mode", "pos-emv", "--reader", reader,
                                       "--at", "2026-12-02T10:30:00", "--json", *args],
                                catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_contact_and_contactless_sales_on_a_virtual_reader(pcsc_serve, sim_keystore,
                                                           protocol: str) -> None:
    card = issue_member_card(MEMBER, sim_keystore, card_no=9, ec_balance=10_000,
                             protocol=protocol, random_source=5)
    reader = pcsc_serve(card)
    reader.transport.power_off()  # the reader is the command's
    code, doc = tap(reader.name, "--amount", "150000", "--pin", "123456")
    assert (code, doc["path"], doc["tvr"], doc["tsi"], doc["cid"]) == (
        0, "online", "0000008000", "F800", "40"), doc["reason"]
    code, doc = tap(reader.name, "--amount", "2500", "--pin", "123456")
    assert (code, doc["path"], doc["tvr"], doc["tsi"]) == (0, "ec offline", "0000000000",
                                                           "E800"), doc["reason"]
    code, doc = tap(reader.name, "--amount", "1500", "--contactless")
    assert (code, doc["path"], doc["oda"], doc["tsi"]) == (0, "qpboc offline", "fdda",
                                                           "E000"), doc["reason"]
    result = CliRunner().invoke(root, ["card", "read", "--reader", reader.name, "--json"])
    [app] = json.loads(result.stdout)["payment_applications"]
    assert app["ec_balance"] == 10_000 - 2_500 - 1_500
    assert [entry["9F02"] for entry in app["log"]] == [  # newest first
        "000000001500", "000000002500", "000000150000"]
