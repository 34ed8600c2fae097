"""Status words: every SW of docs/protocol.md named, and the value-carrying families."""

import re
from pathlib import Path

import pytest

from unioncard.apdu import INS, SW, command_name, describe

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "PROTOCOL.md"
"""The team's shared notes, when checked out beside the repository: an extra source."""


@pytest.mark.parametrize("source", [pytest.param(PROTOCOL, id="docs/protocol.md"),
                                    pytest.param(SHARED, id="shared PROTOCOL.md")])
def test_every_status_word_of_the_protocol_is_an_enum_member(source):
    if not source.exists():
        pytest.skip(f"{source} is not beside this checkout")
    table = source.read_text(encoding="utf-8")
    # a status word opens its table row: 6xxx or 9xxx (9Fxx rows are EMV tags)
    listed = {int(sw, 16) for sw in re.findall(r"^\s*\|\s*`([69](?!F)[0-9A-F]{3})`\s*\|",
                                               table, re.M)}
    assert len(listed) >= 15, f"no status word table found in {source.name}"
    missing = {f"{sw:04X}" for sw in listed} - {f"{sw:04X}" for sw in SW}
    assert not missing


@pytest.mark.parametrize(
    ("sw", "text"),
    [
        (0x9000, "9000: ok"),
        (0x6283, "6283: selected file or application is blocked (FCI returned)"),
        (0x9302, "9302: MAC error"),
        (0x9303, "9303: application permanently locked"),
        (0x9401, "9401: insufficient balance"),
        (0x9406, "9406: the requested proof or MAC is not available"),
        (0x6A83, "6A83: record not found"),
        (0x6110, "6110: 16 more bytes available; fetch with GET RESPONSE"),
        (0x6100, "6100: 256 more bytes available; fetch with GET RESPONSE"),
        (0x6C08, "6C08: wrong Le; re-send with Le = 8"),
        (0x63C2, "63C2: verification failed, 2 tries left"),
        (0x63C0, "63C0: verification failed, 0 tries left"),
        (0x1234, "1234: unknown status word"),
    ],
)
def test_describe(sw, text):
    assert describe(sw) == text


def test_every_enum_member_has_its_own_meaning():
    for sw in SW:
        assert "unknown" not in describe(sw)


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("00A404000E315041592E5359532E444446303100", "SELECT"),
        ("80A8000002830000", "GET PROCESSING OPTIONS"),
        ("00B2010C00", "READ RECORD"),
        ("805001020B0100000100112233445566", "INITIALIZE FOR PURCHASE"),
        ("805000020B0100000100112233445566", "INITIALIZE FOR LOAD"),
        ("805003020B0100000100112233445566", "INITIALIZE FOR CAPP PURCHASE"),
        ("805401000F0000000120120229135100F15CAB75", "DEBIT FOR PURCHASE"),
        ("805200000B2012022913510056988A13", "CREDIT FOR LOAD"),
        ("805A00060200010800", "GET TRANSACTION PROVE"),
        ("805C000204", "GET BALANCE"),
        ("80DCAAC82B" + "AA29" + "00" * 41, "UPDATE CAPP DATA CACHE"),
        ("8070000024" + "00" * 36, "INIT SAM FOR PURCHASE"),
        ("807200000456988A13", "CREDIT SAM FOR PURCHASE"),
        ("841E000004AABBCCDD", "APPLICATION BLOCK"),
        ("8418000004AABBCCDD", "APPLICATION UNBLOCK"),
        ("0084000004", "GET CHALLENGE"),
        ("00C0000008", "GET RESPONSE"),
        ("80AE80001D", "GENERATE AC"),
        ("0020000108", "VERIFY"),
        ("00", "MALFORMED"),
        ("00EE0000", "INS EE"),
    ],
)
def test_command_names(command, name):
    assert command_name(bytes.fromhex(command)) == name


def test_ins_enum_has_the_purse_instructions():
    assert (INS.INITIALIZE, INS.DEBIT_FOR_PURCHASE, INS.GET_TRANSACTION_PROVE) == (0x50, 0x54, 0x5A)
