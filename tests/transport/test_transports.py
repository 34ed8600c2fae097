"""Transports without pcscd: the in-process transport, its tear handling, and the
T=0 case handling of `Channel` on top of it; PC/SC argument checks and errors."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loopback_card import LoopbackCard, PowerCut

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.errors import TransportError
from unioncard.transport import InProcessTransport
from unioncard.transport.base import Channel, Transport, VirtualCard
from unioncard.transport.pcsc import PcscTransport, is_virtual_reader

ECHO = 0xEE


def test_loopback_card_and_transports_fit_the_protocols():
    card = LoopbackCard()
    assert isinstance(card, VirtualCard)
    assert isinstance(InProcessTransport(card), Transport)
    assert isinstance(PcscTransport("Virtual PCD 00 00"), Transport)


def test_power_on_returns_the_atr_and_commands_reach_the_card():
    card = LoopbackCard()
    transport = InProcessTransport(card)
    assert transport.power_on() == card.atr == transport.atr
    command = CommandAPDU(0x80, ECHO, 0, 0, b"\x01\x02\x03", le=256).to_bytes()
    assert transport.transmit(command) == b"\x01\x02\x03\x90\x00"
    assert card.commands == [command]
    assert card.events == ["on"]


def test_transmit_needs_power():
    transport = InProcessTransport(LoopbackCard())
    with pytest.raises(TransportError, match="not powered"):
        transport.transmit(bytes.fromhex("00A4040000"))
    transport.power_on()
    transport.power_off()
    with pytest.raises(TransportError, match="not powered"):
        transport.transmit(bytes.fromhex("00A4040000"))


def test_power_off_and_reset_reach_the_card():
    card = LoopbackCard()
    transport = InProcessTransport(card)
    transport.power_off()  # not powered: nothing to do
    assert card.events == []
    transport.power_on()
    assert transport.reset() == card.atr
    transport.power_off()
    assert card.events == ["on", "reset", "off"]


def test_reset_of_an_unpowered_card_is_a_cold_reset():
    card = LoopbackCard()
    InProcessTransport(card).reset()
    assert card.events == ["on"]


def test_a_card_that_raises_lost_power_and_power_on_recovers():
    card = LoopbackCard()
    seen = []
    transport = InProcessTransport(card, on_apdu=lambda c, r: seen.append((c, r)))
    transport.power_on()
    card.cut_power_next = True
    select = bytes.fromhex("00A4040002AABB")
    with pytest.raises(TransportError, match="lost power") as info:
        transport.transmit(select)
    assert isinstance(info.value.__cause__, PowerCut)
    assert not transport.powered
    assert seen == [(select, None)]  # the observer saw the command go unanswered
    with pytest.raises(TransportError, match="not powered"):
        transport.transmit(select)
    transport.power_on()
    assert transport.transmit(select).endswith(b"\x90\x00")
    assert seen[1:] == [(select, bytes.fromhex("6F048402AABB9000"))]


def test_a_card_that_fails_to_reset_is_reported():
    class Mute(LoopbackCard):
        def power_on(self) -> bytes:
            raise PowerCut("no answer to reset")

    transport = InProcessTransport(Mute())
    with pytest.raises(TransportError, match="did not answer to reset"):
        transport.power_on()
    assert not transport.powered


@given(st.binary(min_size=1, max_size=255))
def test_channel_gets_t0_data_with_get_response(data):
    card = LoopbackCard("T=0")
    transport = InProcessTransport(card)
    transport.power_on()
    response = Channel(transport).transmit(CommandAPDU(0x80, ECHO, 0, 0, data, le=256))
    assert response == ResponseAPDU(data, 0x9000)
    assert card.commands[-1] == CommandAPDU(0x00, 0xC0, 0, 0, le=len(data)).to_bytes()


def test_channel_resends_with_the_le_of_6cxx():
    card = LoopbackCard()
    transport = InProcessTransport(card)
    transport.power_on()
    response = Channel(transport).transmit(CommandAPDU(0x80, 0xCA, 0, 5, le=2))
    assert response == ResponseAPDU(bytes(range(5)), 0x9000)
    assert card.commands == [bytes.fromhex("80CA000502"), bytes.fromhex("80CA000505")]


def test_pcsc_protocol_names():
    assert PcscTransport(protocol="t=0").protocol == "T0"
    assert PcscTransport(protocol="T1").protocol == "T1"
    assert PcscTransport().protocol == "any"
    with pytest.raises(ValueError, match="T0, T1 or any"):
        PcscTransport(protocol="T=2")


def test_pcsc_transmit_before_power_on():
    with pytest.raises(TransportError, match="not powered on"):
        PcscTransport("Virtual PCD 00 00").transmit(b"\x00\xa4\x04\x00")


def test_virtual_reader_names():
    assert is_virtual_reader("Virtual PCD 00 01")
    assert not is_virtual_reader("ACS ACR1252 Dual Reader [ACR1252 Dual Reader PICC] 00 00")


def test_pcsc_without_pcscd_is_a_clear_error(tmp_path):
    # libpcsclite reads PCSCLITE_CSOCK_NAME once per process: use a process of its own.
    script = (
        "import json\n"
        "from unioncard.errors import TransportError\n"
        "from unioncard.transport.pcsc import PcscTransport, list_readers\n"
        "out = []\n"
        "for call in (list_readers, lambda: PcscTransport('Virtual PCD 00 00').power_on()):\n"
        "    try:\n"
        "        call()\n"
        "    except TransportError as exc:\n"
        "        out.append(str(exc))\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(tmp_path / "none.comm"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    errors = json.loads(result.stdout)
    assert len(errors) == 2
    for message in errors:
        assert "pcscd is not running or not reachable" in message
        assert str(tmp_path / "none.comm") in message
