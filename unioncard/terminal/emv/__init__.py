"""The EMV / PBOC POS kernel (docs/emv-kernel.md): a sans-IO session like the purse flows.

`EmvPurchase` is one sale; `EmvSettings` the terminal's side; `CapkStore` its
CA public keys; the issuer host is `unioncard.terminal.issuer_host`.  Modules:
``flags`` (TVR, TSI, AIP, AUC, TTQ bits), ``commands`` (APDUs), ``selection``,
``data`` (the card's data elements), ``authentication`` (ODA), ``cvm``,
``risk`` (restrictions, terminal risk management, action analysis), ``kernel``.
"""

from unioncard.terminal.emv.authentication import CapkStore
from unioncard.terminal.emv.flags import TSI, TVR
from unioncard.terminal.emv.kernel import EmvPurchase
from unioncard.terminal.emv.settings import AidEntry, EmvSettings

__all__ = ["TSI", "TVR", "AidEntry", "CapkStore", "EmvPurchase", "EmvSettings"]
