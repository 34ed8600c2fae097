"""The transport interface, the observer hook, and the one place ``61xx``/``6Cxx`` are handled.

A transport carries raw APDU bytes to one card and back: the in-process
simulator, a PC/SC reader (real, or the simulator bridged in by vpcd), or a
recorded trace.  Terminal sessions never see a transport: the loop that drives
them calls `Channel.transmit`, which is the same for all of them.

Every transport has one observer hook, ``on_apdu(command, response)``, called
after each exchange; ``response`` is None when the card did not answer (pulled,
lost power), so a trace recorder sees the command that went unanswered.

ISO 7816-4 §5.3 / EMV Book 1 §9.3 (T=0 case handling): a ``61xx`` answer means
xx bytes wait to be fetched with GET RESPONSE; ``6Cxx`` means the Le was wrong
and the command must be re-sent with Le = xx.  `Channel` does both, so no
transport and no session ever does.

Every transport refuses a command shorter than `MIN_COMMAND_LENGTH` (the
header CLA INS P1 P2, ISO 7816-4 §5.1) with `CommandError` before sending it:
through vpcd a 1-byte command is read as a control code (docs/pcsc.md).
`Channel` needs no check: a `CommandAPDU` always has its header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from unioncard.apdu import CommandAPDU, ResponseAPDU
from unioncard.errors import CardError, CommandError

__all__ = [
    "MIN_COMMAND_LENGTH",
    "ApduObserver",
    "Channel",
    "Observed",
    "Transport",
    "VirtualCard",
    "short_command",
]

MAX_GET_RESPONSE_ROUNDS = 64

MIN_COMMAND_LENGTH = 4
"""CLA INS P1 P2 (ISO 7816-4 §5.1): no command APDU is shorter."""

ApduObserver = Callable[[bytes, "bytes | None"], None]
"""Called with (command, response) after each exchange; response None: no answer."""


@runtime_checkable
class Transport(Protocol):
    """Raw bytes to one card: power on (returns the ATR), transmit, power off."""

    def power_on(self) -> bytes:
        """Power the card up (cold reset) and return its ATR."""
        ...

    def transmit(self, command: bytes) -> bytes:
        """Send one command APDU; return the response APDU (data + SW1 SW2).

        A command shorter than `MIN_COMMAND_LENGTH` raises `CommandError`, unsent.
        """
        ...

    def power_off(self) -> None:
        """Remove power from the card."""
        ...


@runtime_checkable
class VirtualCard(Protocol):
    """The card side of the same link: what a simulated card offers a reader.

    The in-process transport and the vpcd bridge drive any object of this
    shape.  An exception from any method means the card lost power (a tear):
    readers treat it as an unresponsive card, and the next `power_on` recovers.
    """

    @property
    def atr(self) -> bytes:
        """The answer to reset (ISO 7816-3 §8)."""
        ...

    def power_on(self) -> bytes:
        """Cold reset: power up and return the ATR."""
        ...

    def reset(self) -> bytes:
        """Warm reset: return the ATR."""
        ...

    def power_off(self) -> None:
        """Remove power: volatile state (selected file, session) is lost."""
        ...

    def transmit(self, command: bytes) -> bytes:
        """One command APDU in, the response APDU (data + SW1 SW2) out."""
        ...


def short_command(command: bytes) -> CommandError:
    """The error a transport raises, unsent, for ``command`` shorter than its header.

    Transports test ``len(command) < MIN_COMMAND_LENGTH`` themselves (a length
    test is all the check costs per APDU) and build the error here.
    """
    size = f"{len(command)} byte{'' if len(command) == 1 else 's'}"
    shown = f" ({command.hex(' ').upper()})" if command else ""
    return CommandError(
        f"command APDU of {size}{shown} is shorter than its 4-byte header CLA INS P1 P2 "
        f"(ISO 7816-4 §5.1): not sent to the card"
    )


class Observed:
    """The observer hook every transport carries: ``on_apdu`` sees each exchange."""

    on_apdu: ApduObserver | None = None

    def _observe(self, command: bytes, response: bytes | None) -> None:
        if self.on_apdu is not None:
            self.on_apdu(command, response)


class Channel:
    """APDU-level access to a card through any `Transport`, with T=0 case handling."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        """Send ``command``; follow ``6Cxx`` once and ``61xx`` until the data is complete."""
        response = ResponseAPDU.from_bytes(self.transport.transmit(command.to_bytes()))
        if response.sw1 == 0x6C:
            command = command.with_le(response.sw2 or 256)
            response = ResponseAPDU.from_bytes(self.transport.transmit(command.to_bytes()))
        if response.sw1 != 0x61:
            return response
        data = bytearray(response.data)
        rounds = 0
        while response.sw1 == 0x61:
            rounds += 1
            if rounds > MAX_GET_RESPONSE_ROUNDS:
                raise CardError(f"card kept answering 61xx after {rounds - 1} GET RESPONSE")
            get_response = CommandAPDU(command.cla & 0x03, 0xC0, 0, 0, le=response.sw2 or 256)
            response = ResponseAPDU.from_bytes(self.transport.transmit(get_response.to_bytes()))
            data += response.data
        return ResponseAPDU(bytes(data), response.sw)
