"""``unioncard tap --mode pos-emv`` and the payment applications of ``unioncard card read``,
on a card image in process (docs/emv-kernel.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from unioncard.applet_sim import MemberData, issue_member_card
from unioncard.cli import root
from unioncard.crypto import Keystore

KEYS = Keystore.test()
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x03)
AT = "2026-12-02T10:30:00"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "card.json"
    issue_member_card(MEMBER, KEYS, card_no=42, ec_balance=50_000, random_source=1).save(path)
    return path


def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(root, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def tap(image: Path, *args: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    status, out = invoke("tap", "--mode", "pos-emv", "--card", image, "--at", AT, "--json",
                         *args)
    return status, json.loads(out)


def test_ec_offline_then_online_then_card_read(image: Path) -> None:
    status, doc = tap(image, "--amount", 3000, "--pin", "123456")
    assert status == 0, doc
    assert (doc["decision"], doc["tvr"], doc["tsi"], doc["cid"], doc["path"]) == (
        "approved", "0000000000", "E800", "40", "ec offline")
    assert doc["pan"].startswith("623012*********") and len(doc["ac"]) == 16
    assert doc["clearing"]["pan"] == doc["pan"] and doc["clearing"]["ac"] == doc["ac"]
    status, doc = tap(image, "--amount", 150000, "--pin", "123456")
    assert (status, doc["path"], doc["arc"], doc["tsi"]) == (0, "online", "00", "F800")
    status, doc = tap(image, "--amount", 2000, "--contactless")
    assert (status, doc["path"], doc["oda"]) == (0, "qpboc offline", "fdda")
    status, out = invoke("card", "read", "--card", image, "--json")
    [app] = json.loads(out)["payment_applications"]
    assert app["ec_balance"] == 50_000 - 3_000 - 2_000 and app["pan"].count("*") == 9
    status, out = invoke("card", "read", "--card", image)
    assert status == 0 and "EC balance 450.00 yuan" in out and "log: 2026-12-02 30.00" in out
    status, out = invoke("card", "read", "--card", image, "--unmask")
    assert "PAN 623012000000000042" in out


def test_text_output_and_declines(image: Path) -> None:
    status, out = invoke("tap", "--mode", "pos-emv", "--card", image, "--at", AT,
                         "--amount", 3000, "--pin", "000000", "--pin", "111111",
                         "--pin", "222222")
    assert status == 1, out
    assert "declined by the issuer (75" in out and "TVR 0000A00000  TSI F800  CID 00" in out


@pytest.mark.parametrize(("args", "message"), [
    (("--amount", 100, "--station", "0001"), "--station has no meaning for --mode pos-emv"),
    (("--amount", 100, "--journal", "no-such-journal.sqlite"),
     "the first EMV sale on a journal needs --terminal-id"),
    (("--amount", 100, "--terminal-id", "310100001234"), "give --journal FILE too"),
    (("--amount", 100, "--terminal-id", "3101"), "a terminal id is 12 hex digits"),
    ((), "a sale needs --amount"),
    (("--amount", 100, "--pin", "12"), "a PIN has 4 to 12 digits"),
    (("--amount", 100, "--aid", "A0"), "an AID is 5 to 16 bytes"),
])
def test_usage_errors(image: Path, args: tuple[object, ...], message: str) -> None:
    status, out = invoke("tap", "--mode", "pos-emv", "--card", image, *args)
    assert status == 2 and message in out, out


def test_emv_options_mean_nothing_for_purse_modes(image: Path) -> None:
    status, out = invoke("tap", "--mode", "bus", "--card", image, "--amount", 200,
                         "--contactless")
    assert status == 2 and "--contact/--contactless has no meaning for --mode bus" in out


def test_an_expired_capk_file_is_reported(image: Path, tmp_path: Path) -> None:
    key = KEYS.ca_rsa(bytes.fromhex("A000000333"), 0xF1).capk
    from unioncard.crypto import oda

    old = oda.CaPublicKey(key.rid, key.index, key.modulus, key.exponent, "20241231")
    path = tmp_path / "capk.json"
    path.write_text(json.dumps({"keys": [old.to_json()]}))
    status, doc = tap(image, "--amount", 3000, "--pin", "123456", "--capk", path)
    assert doc["tvr"] == "0400000000" and doc["path"] == "online"
    assert any("expired on 20241231" in w for w in doc["warnings"])
    status, doc = tap(image, "--amount", 3000, "--pin", "123456", "--capk", path,
                      "--accept-expired-capk")
    assert doc["tvr"] == "0000000000" and doc["path"] == "ec offline"
    bad = json.loads(path.read_text())
    bad["keys"][0]["checksum_sha1"] = "00" * 20
    path.write_text(json.dumps(bad))
    status, out = invoke("tap", "--mode", "pos-emv", "--card", image, "--amount", 3000,
                         "--capk", path)
    assert status == 2 and "checksum" in out


def test_trace_records_the_sale(image: Path, tmp_path: Path) -> None:
    trace = tmp_path / "sale.txt"
    status, doc = tap(image, "--amount", 3000, "--pin", "123456", "--trace", trace)
    assert status == 0, doc
    text = trace.read_text()
    assert "> 80 AE 50 00" in text and "> 00 20 00 80 08" in text  # GENERATE AC TC+CDA, VERIFY
