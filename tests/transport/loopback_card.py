"""A tiny card for transport tests: SELECT, GET DATA, ECHO, under T=1 or T=0.

It is not a model of the purse card: it answers just enough to check that
bytes, power events and the T=0 case handling (``61xx``, ``6Cxx``) cross a
transport intact.
"""

from __future__ import annotations

from functools import reduce

from unioncard.apdu import CommandAPDU

HISTORICAL = b"LOOPBACK"


def _atr(protocol: str) -> bytes:
    if protocol == "T=0":
        # TS, T0 = 8 historical bytes and no interface bytes: T=0 implied, no TCK.
        return bytes([0x3B, 0x08]) + HISTORICAL
    # TS, T0 (TD1 follows, 8 historical bytes), TD1 = T=1, historical bytes, TCK.
    body = bytes([0x88, 0x01]) + HISTORICAL
    return b"\x3b" + body + bytes([reduce(lambda a, b: a ^ b, body)])


class PowerCut(RuntimeError):
    """Raised by the card when a test cuts its power during a command."""


class LoopbackCard:
    """``00 A4`` SELECT, ``80 CA 00 nn`` GET DATA (nn pattern bytes), ``80 EE`` ECHO.

    Under T=0 a case 4 command answers ``61xx`` and the data waits for GET
    RESPONSE; a wrong Le answers ``6Cxx`` under both protocols.
    """

    def __init__(self, protocol: str = "T=1") -> None:
        self.protocol = protocol
        self.atr = _atr(protocol)
        self.events: list[str] = []
        self.commands: list[bytes] = []
        self.powered = False
        self.selected: bytes | None = None
        self.pending = b""
        self.cut_power_next = False

    def power_on(self) -> bytes:
        self.events.append("on")
        self.powered = True
        self.selected, self.pending = None, b""
        return self.atr

    def reset(self) -> bytes:
        self.events.append("reset")
        self.powered = True
        self.selected, self.pending = None, b""
        return self.atr

    def power_off(self) -> None:
        self.events.append("off")
        self.powered = False

    def transmit(self, command: bytes) -> bytes:
        if self.cut_power_next:
            self.cut_power_next = False
            self.powered = False
            raise PowerCut("power cut during the command")
        if not self.powered:
            raise PowerCut("the card is not powered")
        self.commands.append(command)
        apdu = CommandAPDU.from_bytes(command)
        if apdu.ins == 0xA4:
            self.selected = apdu.data
            return self._out(b"\x6f" + bytes([len(apdu.data) + 2, 0x84, len(apdu.data)])
                             + apdu.data, apdu)
        if apdu.ins == 0xCA:
            data = bytes(range(apdu.p2))
            if apdu.le not in (None, len(data)) and not (apdu.le == 256 and not data):
                return bytes([0x6C, len(data)])
            return data + b"\x90\x00"
        if apdu.ins == 0xEE:
            return self._out(apdu.data, apdu)
        if apdu.ins == 0xC0 and self.protocol == "T=0":
            if not self.pending:
                return b"\x69\x85"
            n = apdu.le or 256
            chunk, self.pending = self.pending[:n], self.pending[n:]
            more = bytes([0x61, min(len(self.pending), 256) % 256]) if self.pending else b""
            return chunk + (more or b"\x90\x00")
        return b"\x6d\x00"

    def _out(self, data: bytes, apdu: CommandAPDU) -> bytes:
        if self.protocol == "T=0" and data:
            self.pending = data
            return bytes([0x61, len(data) % 256])
        return data + b"\x90\x00"
