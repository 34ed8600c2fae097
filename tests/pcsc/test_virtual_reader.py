"""Cards served over vpcd, used through a real pcscd with pyscard: ATR, power cycle,
reset, T=0 case handling, two slots, tears, pcscd restarts, reader errors."""

import time

import pytest
from loopback_card import LoopbackCard  # tests/terminal, on pytest's pythonpath

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.errors import TransportError
from unioncard.transport.base import Channel
from unioncard.transport.pcsc import PcscTransport, list_readers
from unioncard.transport.pcscd import PcscdDaemon, vpcd_reader_name

SELECT = bytes.fromhex("00A4040002AABB")
SELECTED = bytes.fromhex("6F048402AABB9000")


def echo(data: bytes) -> CommandAPDU:
    return CommandAPDU(0x80, 0xEE, 0, 0, data, le=256)


def test_pcscd_shows_both_vpcd_slots(pcscd_daemon):
    assert {vpcd_reader_name(0), vpcd_reader_name(1)} <= set(list_readers())


def test_power_on_answers_the_atr_and_apdus_reach_the_card(pcsc_serve):
    card = LoopbackCard()
    reader = pcsc_serve(card)
    assert reader.name == "Virtual PCD 00 00"
    assert reader.atr == card.atr
    assert reader.transport.active_protocol == "T=1"
    assert reader.transport.transmit(SELECT) == SELECTED
    data = bytes(range(200))
    assert reader.channel.transmit(echo(data)) == ResponseAPDU(data, 0x9000)
    assert card.commands == [SELECT, echo(data).to_bytes()]
    assert reader.bridge.commands(0) == 2  # presence polls (ATR requests) are not commands


def test_t0_card_61xx_and_6cxx_are_handled_by_the_channel(pcsc_serve):
    card = LoopbackCard("T=0")
    reader = pcsc_serve(card, protocol="T0")
    assert reader.transport.active_protocol == "T=0"
    channel = Channel(reader.transport)
    data = bytes(range(100, 140))
    assert channel.transmit(echo(data)) == ResponseAPDU(data, 0x9000)
    assert channel.transmit(CommandAPDU(0x80, 0xCA, 0, 7, le=1)).data == bytes(range(7))
    # pcscd passed 61xx and 6Cxx through; the channel sent GET RESPONSE and the re-send.
    assert card.commands[1:] == [
        bytes.fromhex("00C0000028"),
        bytes.fromhex("80CA000701"),
        bytes.fromhex("80CA000707"),
    ]


def test_power_off_power_on_and_reset(pcsc_serve):
    card = LoopbackCard()
    reader = pcsc_serve(card)
    transport = reader.transport
    assert transport.reset() == card.atr
    assert card.events[-1] == "reset"
    transport.power_off()
    # vpcd sends "power off" without waiting for an answer: the card sees it a moment later.
    deadline = time.monotonic() + 2
    while card.powered and time.monotonic() < deadline:
        time.sleep(0.005)
    assert card.events[-1] == "off" and not card.powered
    assert transport.power_on() == card.atr
    assert card.events[-1] == "on"
    assert transport.transmit(SELECT) == SELECTED


def test_card_and_psam_in_two_slots(pcsc_serve):
    card, psam = LoopbackCard(), LoopbackCard("T=0")
    reader = pcsc_serve(card, psam)
    assert reader.psam_name == "Virtual PCD 00 01"
    assert reader.psam_transport is not None
    assert reader.psam_transport.atr == psam.atr
    assert reader.psam_channel.transmit(CommandAPDU.from_bytes(SELECT)).data == SELECTED[:-2]
    assert reader.transport.transmit(SELECT) == SELECTED
    assert card.commands == [SELECT]
    assert psam.commands == [SELECT, bytes.fromhex("00C0000006")]


def test_a_power_cut_tears_the_card_and_power_on_recovers(pcsc_serve):
    card = LoopbackCard()
    reader = pcsc_serve(card)
    transport = reader.transport
    card.cut_power_next = True
    with pytest.raises(TransportError, match="did not answer"):
        transport.transmit(SELECT)
    with pytest.raises(TransportError, match="not powered on"):
        transport.transmit(SELECT)
    transport.wait_for_card(5, present=False)  # pcscd saw the card leave...
    transport.wait_for_card(5)  # ...and come back
    assert transport.power_on() == card.atr
    assert card.powered
    assert transport.transmit(SELECT) == SELECTED


def test_the_bridge_survives_a_pcscd_restart(pcscd_daemon, pcsc_serve):
    if not isinstance(pcscd_daemon, PcscdDaemon):
        pytest.skip("restarts only a pcscd of this test run")
    card = LoopbackCard()
    reader = pcsc_serve(card)
    first_pid = pcscd_daemon.pid
    pcscd_daemon.restart()
    assert pcscd_daemon.pid != first_pid
    assert reader.bridge.wait_attached(5, count=2)
    transport = reader.transport
    with pytest.raises(TransportError):
        transport.transmit(SELECT)  # the old handle died with the old pcscd
    transport.wait_for_card(5)
    transport.power_on()
    assert transport.transmit(SELECT) == SELECTED


def test_reader_errors_name_the_reader(pcsc_serve):
    pcsc_serve(LoopbackCard("T=0"))  # slot 1 stays empty
    with pytest.raises(TransportError) as info:
        PcscTransport("Nonexistent Reader 00 00").power_on()
    assert str(info.value) == (
        "no reader named 'Nonexistent Reader 00 00'; readers: "
        "Virtual PCD 00 00, Virtual PCD 00 01"
    )
    with pytest.raises(TransportError, match="no card in reader 'Virtual PCD 00 01'"):
        PcscTransport(vpcd_reader_name(1)).power_on()
    with pytest.raises(TransportError, match="no reader number 7; readers: Virtual PCD 00 00"):
        PcscTransport(7).power_on()
    with pytest.raises(TransportError, match="does not offer protocol T1"):
        PcscTransport(vpcd_reader_name(0), protocol="T1").power_on()
    with pytest.raises(TransportError, match=r"timed out after 0\.2 s waiting for a card"):
        PcscTransport(vpcd_reader_name(1)).wait_for_card(0.2)


def test_reader_by_index(pcsc_serve):
    card = LoopbackCard()
    pcsc_serve(card)
    with PcscTransport(0) as transport:
        assert transport.power_on() == card.atr
        assert transport.reader_name == vpcd_reader_name(0)


def test_command_hook_sees_every_exchange(pcsc_serve):
    seen = []
    reader = pcsc_serve(LoopbackCard(), on_command=lambda *call: seen.append(call))
    reader.transport.transmit(SELECT)
    assert seen == [(0, SELECT, SELECTED)]


def test_pyscard_high_level_api_sees_the_card(pcsc_serve):
    """Any PC/SC program sees the card: pyscard's own reader and connection classes."""
    from smartcard.System import readers

    card = LoopbackCard()
    pcsc_serve(card)
    reader = next(r for r in readers() if str(r) == vpcd_reader_name(0))
    connection = reader.createConnection()
    connection.connect()
    try:
        assert bytes(connection.getATR()) == card.atr
        data, sw1, sw2 = connection.transmit(list(SELECT))
        assert bytes(data) + bytes([sw1, sw2]) == SELECTED
    finally:
        connection.disconnect()
        connection.release()


class CountingCard(LoopbackCard):
    instances = 0

    def __init__(self) -> None:
        super().__init__()
        CountingCard.instances += 1


@pytest.fixture
def virtual_card():
    return CountingCard()


def test_virtual_reader_serves_the_virtual_card_fixture(virtual_reader, virtual_card, sim_psam):
    assert virtual_reader.card is virtual_card
    assert virtual_reader.psam is sim_psam  # virtual_psam's default
    assert virtual_reader.transport.transmit(SELECT) == SELECTED
    assert virtual_card.commands == [SELECT]
    assert virtual_reader.psam_channel.transmit(CommandAPDU.from_bytes(bytes.fromhex(
        "00B0960006"))).data == bytes.fromhex("001122334455")


@pytest.mark.parametrize("virtual_psam", [None])
def test_virtual_reader_without_psam(virtual_reader):
    assert virtual_reader.psam is None and virtual_reader.psam_transport is None
    with pytest.raises(TransportError, match="no PSAM"):
        virtual_reader.psam_channel  # noqa: B018


def test_a_card_gone_during_a_command_is_not_mistaken_for_the_next(pcsc_serve):
    """A card that vanishes mid-command; the next card served must be seen as new."""
    first = LoopbackCard("T=0")
    reader = pcsc_serve(first)
    reader.bridge.stop()  # gone without pcscd noticing: its presence poll has not run yet
    with pytest.raises(TransportError):
        reader.transport.transmit(SELECT)
    second = LoopbackCard()
    assert pcsc_serve(second).atr == second.atr != first.atr
