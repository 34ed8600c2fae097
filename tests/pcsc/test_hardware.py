"""A physical reader with a card, through pcscd: power on, the ATR, one SELECT.
Skipped when no physical reader is attached (see the ``hardware`` marker in docs/pcsc.md)."""

import pytest

from unioncard.apdu import CommandAPDU
from unioncard.transport.base import Channel
from unioncard.transport.pcsc import PcscTransport, is_virtual_reader, list_readers

PPSE = b"2PAY.SYS.DDF01"


@pytest.mark.hardware
def test_a_physical_card_answers():
    reader = next(name for name in list_readers() if not is_virtual_reader(name))
    with PcscTransport(reader) as transport:
        transport.wait_for_card(30)  # time to put a card on the reader
        atr = transport.power_on()
        assert atr[0] in (0x3B, 0x3F) and len(atr) >= 2  # ISO 7816-3 TS: direct or inverse
        response = Channel(transport).transmit(CommandAPDU(0x00, 0xA4, 0x04, 0x00, PPSE, 256))
        assert response.sw1 in (0x90, 0x62, 0x63, 0x69, 0x6A)  # answered, whatever the card
