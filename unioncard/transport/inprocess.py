"""A card object in this process: the simulator, or any `VirtualCard`.

>>> class Card:
...     atr = bytes.fromhex("3B00")
...     def power_on(self): return self.atr
...     def reset(self): return self.atr
...     def power_off(self): pass
...     def transmit(self, command): return b"\\x90\\x00"
>>> t = InProcessTransport(Card())
>>> t.power_on().hex()
'3b00'
>>> t.transmit(bytes.fromhex("00A4040000")).hex()
'9000'
"""

from __future__ import annotations

from collections.abc import Callable

from unioncard.errors import TransportError
from unioncard.transport.base import (
    MIN_COMMAND_LENGTH,
    ApduObserver,
    Observed,
    VirtualCard,
    short_command,
)

__all__ = ["InProcessTransport"]


class InProcessTransport(Observed):
    """A card object in this process (the simulator, or any `VirtualCard`).

    An exception from the card means it lost power (a tear): it becomes a
    `TransportError`, the card counts as unpowered, and the next `power_on`
    recovers, as with a card pulled from a reader.  ``on_apdu`` sees every
    exchange (`unioncard.transport.base.Observed`), e.g. to record a trace.  A
    command shorter than its 4-byte header raises `CommandError` and never
    reaches the card, as with every transport.
    """

    def __init__(self, card: VirtualCard, *, on_apdu: ApduObserver | None = None) -> None:
        self.card = card
        self.on_apdu = on_apdu
        self.powered = False
        self.atr: bytes | None = None

    def power_on(self) -> bytes:
        return self._answer_to_reset(self.card.power_on)

    def reset(self) -> bytes:
        """Warm reset (a cold one when the card is not powered); returns the ATR."""
        return self._answer_to_reset(self.card.reset if self.powered else self.card.power_on)

    def _answer_to_reset(self, restart: Callable[[], bytes]) -> bytes:
        try:
            self.atr = bytes(restart())
        except Exception as exc:
            self.powered = False
            raise TransportError(f"the card did not answer to reset: {exc}") from exc
        self.powered = True
        return self.atr

    def transmit(self, command: bytes) -> bytes:
        """Send one command APDU to the card; shorter than 4 bytes: `CommandError`, unsent."""
        command = bytes(command)
        if len(command) < MIN_COMMAND_LENGTH:
            raise short_command(command)
        if not self.powered:
            raise TransportError("the card is not powered on")
        try:
            response = bytes(self.card.transmit(command))
        except Exception as exc:
            self.powered = False
            self._observe(command, None)
            raise TransportError(f"the card did not answer (it lost power): {exc}") from exc
        self._observe(command, response)
        return response

    def power_off(self) -> None:
        was_powered, self.powered = self.powered, False
        if was_powered:
            self.card.power_off()

    def __repr__(self) -> str:
        return f"InProcessTransport({type(self.card).__name__}, powered={self.powered})"
