"""Taking a card out of its virtual reader and putting it back: `VpcdBridge.remove` and
`insert` in this process, and SIGUSR1/SIGUSR2 to ``unioncard sim serve`` in another,
with a purchase torn by the removal."""

import datetime as dt
import signal
import subprocess
import sys
import time

import pytest
from loopback_card import LoopbackCard

from unioncard.apdu import CommandAPDU
from unioncard.errors import TransportError
from unioncard.tariffs import Mode
from unioncard.terminal import Decision, TransactionJournal, TransitPurchase, run
from unioncard.terminal.card import TRANSIT_AID
from unioncard.transport import Channel
from unioncard.transport.pcsc import PcscTransport
from unioncard.transport.pcscd import PcscdDaemon, vpcd_reader_name
from unioncard.transport.vpcd import VpcdBridge

SELECT = bytes.fromhex("00A4040002AABB")
SELECTED = bytes.fromhex("6F048402AABB9000")
WAIT = 10.0
NOW = dt.datetime(2026, 3, 15, 8, 30)
# The CLI, dying with the test process even when that is killed (PR_SET_PDEATHSIG).
CLI = ("import ctypes, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
       "from unioncard.cli import main; sys.argv[0] = 'unioncard'; main()")


def watch(slot: int = 0) -> PcscTransport:
    """A second PC/SC client on the reader, to see the card leave and come back."""
    return PcscTransport(vpcd_reader_name(slot))


def test_remove_and_insert_a_served_card(pcsc_serve):
    card, psam = LoopbackCard(), LoopbackCard("T=0")
    reader = pcsc_serve(card, psam)
    bridge, transport = reader.bridge, reader.transport
    assert transport.transmit(SELECT) == SELECTED
    with watch() as watcher:
        bridge.remove(0)
        watcher.wait_for_card(WAIT, present=False)
        assert bridge.removed(0) and not bridge.connected(0)
        assert card.events[-1] == "off" and not card.powered  # out of the field: no power
        with pytest.raises(TransportError, match="removed from reader 'Virtual PCD 00 00'"):
            transport.transmit(SELECT)
        assert reader.psam_transport is not None
        assert reader.psam_transport.transmit(bytes.fromhex("00C0000000"))  # the PSAM stays
        bridge.remove(0)  # already out: nothing happens
        time.sleep(bridge.tear_seconds + 0.5)
        assert not bridge.connected(0)  # out until put back, however long
        connections = bridge.connections(0)
        bridge.insert(0)
        watcher.wait_for_card(WAIT)
    assert not bridge.removed(0) and bridge.connections(0) == connections + 1
    assert transport.power_on() == card.atr
    assert transport.transmit(SELECT) == SELECTED
    assert card.events[-1] == "on"


def test_a_quick_removal_and_insertion_is_still_seen(pcsc_serve):
    card = LoopbackCard()
    reader = pcsc_serve(card)
    transport = reader.transport
    reader.bridge.remove(0)
    reader.bridge.insert(0)  # at once: the card still stays out for tear_seconds
    with pytest.raises(TransportError, match=r"removed|did not answer"):
        for _ in range(200):  # until the removal lands
            transport.transmit(SELECT)
            time.sleep(0.01)
    transport.wait_for_card(WAIT, present=False)  # pcscd saw it leave...
    transport.wait_for_card(WAIT)  # ...and come back
    assert transport.power_on() == card.atr
    assert transport.transmit(SELECT) == SELECTED


def test_remove_names_the_slots_it_serves():
    bridge = VpcdBridge({0: LoopbackCard()}, port=1)
    try:
        with pytest.raises(ValueError, match="no slot 1; the bridge serves slots 0"):
            bridge.remove(1)
    finally:
        bridge.start()
        bridge.stop()


# -- unioncard sim serve, signalled ------------------------------------------------------------


class Served:
    """``unioncard sim serve`` in a process of its own, with the card and PSAM readers."""

    def __init__(self, daemon, card_image, psam_image) -> None:
        if not isinstance(daemon, PcscdDaemon):
            pytest.skip("needs a pcscd of this test run")
        self.card, self.psam, self.watcher = watch(0), watch(1), watch(0)
        self.card.wait_for_card(WAIT, present=False)  # an earlier card has left
        self.psam.wait_for_card(WAIT, present=False)
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLI, "sim", "serve", str(card_image), "--psam",
             str(psam_image), "--port", str(daemon.vpcd_port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for transport in (self.card, self.psam):
                transport.wait_for_card(15)
                transport.power_on()
        except TransportError as exc:
            raise AssertionError(f"{exc}; sim serve said:\n{self.stop()}") from exc

    def remove(self) -> None:
        self.process.send_signal(signal.SIGUSR1)
        self.watcher.wait_for_card(WAIT, present=False)

    def insert(self) -> None:
        self.process.send_signal(signal.SIGUSR2)
        self.watcher.wait_for_card(WAIT)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=10)
        for transport in (self.card, self.psam, self.watcher):
            transport.close()
        return err


@pytest.fixture
def served(pcscd_daemon, tmp_path, sim_card, sim_psam):
    sim_card.save(tmp_path / "card.json")
    sim_psam.save(tmp_path / "psam.json")
    process = Served(pcscd_daemon, tmp_path / "card.json", tmp_path / "psam.json")
    yield process
    if process.process.poll() is None:
        process.stop()


def test_sigusr1_takes_the_card_out_and_sigusr2_puts_it_back(served):
    select = CommandAPDU(0x00, 0xA4, 0x04, 0x00, TRANSIT_AID, 256)
    assert Channel(served.card).transmit(select).sw == 0x9000
    served.remove()
    with pytest.raises(TransportError, match="removed from reader"):
        served.card.transmit(select.to_bytes())
    served.insert()
    served.card.power_on()
    assert Channel(served.card).transmit(select).sw == 0x9000
    err = served.stop()
    assert served.process.returncode == 0, err
    assert "SIGUSR1 takes the card out" in err
    assert "slot 0: card out of the reader (removed; out until put back)" in err
    assert "slot 0: card put back into the reader" in err


class PullBeforeDebit:
    """A card link that has the card pulled just before DEBIT is sent, and keeps the error."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.channel = Channel(served.card)
        self.error: Exception | None = None

    def transmit(self, command: CommandAPDU):
        if command.cla == 0x80 and command.ins == 0x54:
            self.served.remove()
        try:
            return self.channel.transmit(command)
        except TransportError as exc:
            self.error = exc
            raise


def test_a_purchase_torn_by_the_removal(served, tmp_path):
    link = PullBeforeDebit(served)
    journal = TransactionJournal(tmp_path / "journal.sqlite")
    try:
        outcome = run(TransitPurchase(Mode.BUS, 200, route="42", now=NOW,
                                      pending=journal.pending()),
                      card=link, psam=Channel(served.psam), journal=journal)
        assert outcome.decision is Decision.INTERRUPTED, outcome.reason
        assert "removed from reader" in str(link.error)
        assert len(journal.pending()) == 1
        served.insert()
        served.card.power_on()
        # The DEBIT never reached the card: the next tap voids it and charges once.
        again = run(TransitPurchase(Mode.BUS, 200, route="42", now=NOW + dt.timedelta(minutes=1),
                                    pending=journal.pending()),
                    card=Channel(served.card), psam=Channel(served.psam), journal=journal)
        assert again.decision is Decision.APPROVED, again.reason
        assert again.balance_before == 10_000  # sim_card's purse, untouched by the torn tap
        assert again.balance_after == 10_000 - again.charged_amount
        assert not journal.pending()
    finally:
        journal.close()
