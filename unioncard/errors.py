"""The one exception hierarchy of unioncard.

Status words are data, not exceptions: a terminal branches on ``6A82`` or
``9401``.  Exceptions are for misuse and for malformed input.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CardError",
    "CommandError",
    "CryptoError",
    "DecodeError",
    "SettlementError",
    "TariffError",
    "TransportError",
    "UnionCardError",
]


class UnionCardError(Exception):
    """Root of every error raised by unioncard."""


class DecodeError(UnionCardError, ValueError):
    """Malformed input: carries the byte offset and what was decoded so far.

    ``offset`` is the position in the input where decoding failed and
    ``partial`` whatever the decoder had produced before it (a list of TLV
    nodes, a list of frames, ...), so a caller can show context.
    """

    def __init__(self, message: str, offset: int = 0, partial: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.partial = partial

    def __str__(self) -> str:
        return f"{self.message} (at offset {self.offset})"


class CardError(UnionCardError):
    """The card (or PSAM) misbehaved: a response that breaks the protocol."""


class TransportError(UnionCardError):
    """The link to a card failed: no reader, no card, connection lost."""


class CommandError(UnionCardError, ValueError):
    """A command APDU no card can take, refused before it is sent: a bug in the caller.

    ISO 7816-4 §5.1: a command is at least its 4-byte header CLA INS P1 P2.
    Not a `TransportError` (drivers take those for a pulled card) nor a
    `DecodeError` (a card's malformed answer): the link is fine, and a terminal
    that sends such a command should stop, not record an interrupted payment.
    """


class CryptoError(UnionCardError):
    """Bad key material or a cryptographic check used wrongly."""


class TariffError(UnionCardError):
    """An invalid tariff rule set, or a quote asked for impossible terms."""


class SettlementError(UnionCardError):
    """A settlement batch that cannot be processed."""
