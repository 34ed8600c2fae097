"""A third-party EMV reading tool sweeps the simulated card through pcscd + vpcd, as a
new user would: cardpeek (Debian package ``cardpeek``) runs its own ``emv.lua`` script in
console mode against the virtual reader, lists the applications of the PSE, selects the
debit application, gets its processing options and reads every record; its saved card
view must hold what the card carries (docs/pboc.md, "Reading the card with other tools").

Skipped when cardpeek is not installed (``apt-get install cardpeek``).
"""

import datetime as dt
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from unioncard.applet_sim import MemberData, issue_member_card
from unioncard.applet_sim.pboc_issue import debit_pan

CARDPEEK = shutil.which("cardpeek")
pytestmark = pytest.mark.skipif(CARDPEEK is None, reason="cardpeek is not installed")
CARD_NO = 7


def run_cardpeek(home: Path, done_when: Path, *args: str, answers: bytes = b"") -> str:
    """Run cardpeek in console mode with ``home`` as $HOME until it has written
    ``done_when`` (its console then waits for commands: it is stopped); its log back."""
    assert CARDPEEK is not None
    log = home / "cardpeek.log"
    with log.open("wb") as err:
        process = subprocess.Popen([CARDPEEK, "--console", *args], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=err, cwd=home,
                                   env={**os.environ, "HOME": str(home)})
        assert process.stdin is not None
        process.stdin.write(answers)
        process.stdin.close()
        deadline = time.monotonic() + 60
        try:
            while not done_when.exists() and process.poll() is None:
                assert time.monotonic() < deadline, "cardpeek did not finish in 60 s"
                time.sleep(0.1)
            time.sleep(0.5)  # let it finish writing
        finally:
            process.kill()
            process.wait()
    return log.read_text("utf-8", "replace")


def nodes(view: ET.Element):
    """(id, value hex, alt) of every node of a saved cardpeek view."""
    for node in view.iter("node"):
        attrs = {a.get("name"): (a.text or "") for a in node.findall("attr")}
        value = attrs.get("val", "")
        yield attrs.get("id", ""), value.split(":", 1)[-1].upper(), attrs.get("alt", "")


@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_cardpeek_lists_and_reads_the_debit_application(pcsc_serve, sim_keystore, tmp_path,
                                                         protocol):
    member = MemberData("李四", "20260007", "市总工会", "110105199001010011",
                        dt.date(2026, 1, 1), dt.date(2030, 12, 31))
    card = issue_member_card(member, sim_keystore, card_no=CARD_NO, ec_balance=12_34,
                             protocol=protocol, random_source=3)
    reader = pcsc_serve(card)
    reader.transport.power_off()  # the reader is the tool's now
    view = tmp_path / "view.xml"
    script = tmp_path / ".cardpeek" / "scripts" / "emv.lua"
    where = ("--reader", f"pcsc://{reader.name}")
    # the first run creates ~/.cardpeek ("1" yes, "1" OK), to be restarted; the second
    # answers "issue GET PROCESSING OPTIONS?" with yes
    run_cardpeek(tmp_path, script, *where, "--exec", "print()", answers=b"1\n1\n")
    log = run_cardpeek(tmp_path, view, *where, "--exec",
                       f'dofile("{script}"); ui.save_view("{view}")', answers=b"1\n")
    assert view.exists(), log[-3000:]
    if protocol == "T=0":  # the card answered 61xx and cardpeek fetched the data
        assert "send: 00C00000" in log
    assert "PSE contains application #A000000333010101" in log
    text = view.read_text("utf-8")
    found = list(nodes(ET.fromstring(text[text.index("?>") + 2:])))  # its XML declaration
    # is not well-formed (type= for encoding=)
    ids = {node_id for node_id, _, _ in found}
    values = {(node_id, value) for node_id, value, _ in found}
    # the PSE's directory entry, with its label
    assert ("4F", "A000000333010101") in values
    assert ("50", b"PBOC DEBIT".hex().upper()) in values
    # records of the AFL: the PAN, the certificates, the signed static data, the CDOLs
    pan = debit_pan(CARD_NO)
    assert ("5A", (pan + "F" * (len(pan) % 2))) in values
    assert {"57", "8C", "8D", "8E", "8F", "90", "9F32", "9F46", "9F47", "93"} <= ids
    # GET DATA answers cardpeek asks for: the ATC after its GPO, the log format
    assert ("9F36", "0001") in values and "9F4F" in ids
