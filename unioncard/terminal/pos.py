"""A purchase at a partner merchant's POS, paid from the card's electronic purse.

The same purse purchase as a fare (`unioncard.terminal.purchase`), priced with
the merchant offers of the tariffs engine: a discount is taken off at the
counter, a rebate is owed to the member and paid by settlement (the outcome
says how much).  The offline record carries the merchant id and its MCC
(docs/records.md), which settlement re-prices the sale with.
"""

from __future__ import annotations

from typing import Any

from unioncard.apdu.member import MemberRecord
from unioncard.offline import OfflineRecord
from unioncard.tariffs import Mode
from unioncard.terminal.card import PurseCard
from unioncard.terminal.purchase import PurseSession, Sale
from unioncard.terminal.session import Flow

__all__ = ["MAX_MCC", "PosPurchase"]

MAX_MCC = 9999
"""A merchant category code has four decimal digits (ISO 18245)."""


class PosPurchase(PurseSession):
    """``amount`` fen at ``merchant`` (its id, 1 to 24 printable ASCII characters, as the
    tariff rules and the record name it) of category ``mcc``, from the transit purse."""

    flow_name = "pos"

    def __init__(self, amount: int, *, merchant: str, mcc: int | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError("a sale is a positive integer of fen")
        if mcc is not None and not 0 <= mcc <= MAX_MCC:
            raise ValueError(f"a merchant category code is 0..{MAX_MCC} (four digits)")
        self.amount = amount
        self.sale = Sale(Mode.POS, merchant=merchant, mcc=mcc)

    def same_sale(self, draft: OfflineRecord) -> bool:
        """The same amount at the same merchant: a customer paying again after a pulled card."""
        return (draft.mode == Mode.POS and draft.merchant == self.sale.merchant
                and draft.list_amount == self.amount)

    def transact(self, card: PurseCard, member: MemberRecord | None) -> Flow:
        priced = self.price(card, member, self.amount, self.sale)
        details: dict[str, Any] = {"merchant": self.sale.merchant, "mcc": self.sale.mcc,
                                   "rebate": priced.rebate}
        if priced.deferred:
            details["deferred_to_settlement"] = list(priced.deferred)
        return (yield from self.purchase(card, member, priced, self.sale, details=details))
