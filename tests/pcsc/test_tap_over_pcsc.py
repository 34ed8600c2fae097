"""`unioncard tap`, `load` and `card read` on cards in PC/SC readers (pcscd + vpcd), and the
exclusive use a terminal takes of its card and PSAM while it transacts."""

from __future__ import annotations

import json
import threading
import time

from click.testing import CliRunner

from unioncard.cli import root
from unioncard.transport.pcsc import PcscTransport


def tap(*args: str):
    result = CliRunner().invoke(root, ["tap", *args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def test_tap_with_card_and_psam_on_readers(virtual_reader, sim_card, tmp_path):
    journal = str(tmp_path / "journal.sqlite")
    readers = ["--reader", virtual_reader.name, "--psam-reader", virtual_reader.psam_name]
    code, doc = tap("--mode", "bus", "--amount", "200", *readers, "--journal", journal,
                    "--at", "2026-05-01T08:30:00")
    assert code == 0 and doc["decision"] == "approved", doc["reason"]
    assert (doc["charged_amount"], doc["balance_after"]) == (180, 9820)
    with virtual_reader.bridge.lock:
        assert sim_card.purse("transit").balance == 9820
    code, doc = tap("--mode", "bus", "--amount", "200", "--reader", "0", "--psam-reader", "1",
                    "--journal", journal, "--at", "2026-05-01T08:31:00")  # readers by index
    assert code == 0 and doc["balance_after"] == 9640
    read = CliRunner().invoke(root, ["card", "read", "--reader", virtual_reader.name, "--json"])
    assert json.loads(read.stdout)["balances"]["transit"] == 9640


def test_a_card_held_exclusively_waits_for_other_programs(virtual_reader):
    """While a terminal holds the card (SCardBeginTransaction), another PC/SC program's
    command waits until it lets go: nothing slips between INITIALIZE and DEBIT."""
    get_balance = bytes.fromhex("805C000204")
    select = bytes.fromhex("00A4040008A000000632010105")
    holder = virtual_reader.transport
    holder.transmit(select)
    answered: list[float] = []
    with PcscTransport(virtual_reader.name) as other:
        other.power_on()
        with holder.exclusive():
            thread = threading.Thread(target=lambda: (other.transmit(get_balance),
                                                      answered.append(time.monotonic())))
            thread.start()
            time.sleep(0.5)
            assert answered == []  # still waiting
            released = time.monotonic()
        thread.join(10)
    assert answered and answered[0] >= released
