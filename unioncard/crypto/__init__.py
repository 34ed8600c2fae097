"""Cryptography of the purse: DES/3DES blocks, PBOC and retail MACs, key
diversification, session keys, MAC1/MAC2/TAC, the maintenance MAC and the
master-key keystore (JR/T 0025; docs/protocol.md §2, §6).  Pure functions on bytes."""

from typing import TYPE_CHECKING, Any

from unioncard.crypto.des import (
    des_decrypt,
    des_encrypt,
    pad80,
    tdes_decrypt,
    tdes_encrypt,
    xor,
)
from unioncard.crypto.mac import pboc_mac, retail_mac
from unioncard.crypto.purse import (
    CardKeys,
    TransactionType,
    diversify,
    load_mac1,
    load_mac2,
    load_session_key,
    load_tac,
    maintenance_mac,
    purchase_mac1,
    purchase_mac2,
    purchase_session_key,
    purchase_tac,
    tac_key,
)

if TYPE_CHECKING:
    from unioncard.crypto.keystore import Keystore, PurseKeys, derive_card_keys


def __getattr__(name: str) -> Any:
    """The keystore's names, imported on first use (a tap on PC/SC readers or card images
    reads no keystore: its TOML and RSA sections cost start-up time)."""
    if name in ("Keystore", "PurseKeys", "derive_card_keys"):
        from unioncard.crypto import keystore

        return getattr(keystore, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CardKeys",
    "Keystore",
    "PurseKeys",
    "TransactionType",
    "derive_card_keys",
    "des_decrypt",
    "des_encrypt",
    "diversify",
    "load_mac1",
    "load_mac2",
    "load_session_key",
    "load_tac",
    "maintenance_mac",
    "pad80",
    "pboc_mac",
    "purchase_mac1",
    "purchase_mac2",
    "purchase_session_key",
    "purchase_tac",
    "retail_mac",
    "tac_key",
    "tdes_decrypt",
    "tdes_encrypt",
    "xor",
]
