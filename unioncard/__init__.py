"""unioncard: card-terminal transaction engine and smart-card simulator for
trade-union member cards (PBOC purse, ETC, member identity)."""

from unioncard.errors import (
    CardError,
    CryptoError,
    DecodeError,
    SettlementError,
    TariffError,
    TransportError,
    UnionCardError,
)

__version__ = "0.1.0"

__all__ = [
    "CardError",
    "CryptoError",
    "DecodeError",
    "SettlementError",
    "TariffError",
    "TransportError",
    "UnionCardError",
    "__version__",
]
