"""A POS terminal's EMV settings: what it is, what it supports, its limits and action codes.

Every value is an input of the kernel (`EmvSettings`), never read from the
environment.  The defaults describe an attended, online-capable merchant POS
in China (EMV Book 4 Annex A; PBOC 2.0/3.0; docs/emv-kernel.md §Settings):
country and currency 156, plaintext PIN, signature and no CVM, SDA, DDA and
CDA, electronic cash with a 1000 yuan terminal limit, contactless qPBOC with a
300 yuan CVM limit.  Amounts are fen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["UNIONPAY_AIDS", "AidEntry", "EmvSettings"]


@dataclass(frozen=True, slots=True)
class AidEntry:
    """An application the terminal accepts; ``partial`` allows a longer card AID
    starting with it (Application Selection Indicator, Book 1 §12.3.1)."""

    aid: bytes
    label: str
    partial: bool = True


UNIONPAY_AIDS: tuple[AidEntry, ...] = (
    AidEntry(bytes.fromhex("A000000333010101"), "UnionPay debit"),
    AidEntry(bytes.fromhex("A000000333010102"), "UnionPay credit"),
    AidEntry(bytes.fromhex("A000000333010103"), "UnionPay quasi-credit"),
    AidEntry(bytes.fromhex("A000000333010106"), "UnionPay electronic cash"),
)
"""docs/protocol.md §5."""


def _hex(value: str, size: int, name: str) -> bytes:
    raw = bytes.fromhex(value)
    if len(raw) != size:
        raise ValueError(f"{name} has {size} bytes, got {value!r}")
    return raw


@dataclass(frozen=True)
class EmvSettings:
    """The terminal's side of an EMV transaction.

    ``tac_*`` are the Terminal Action Codes (denial, online, default) as 10 hex
    digits; ``floor_limit`` the terminal floor limit ``9F1B``; ``ec_limit`` the
    electronic cash terminal transaction limit ``9F7B`` (an EC transaction uses
    it in place of the floor limit); ``random_*`` drive random transaction
    selection (Book 3 §10.6.2); ``contactless_cvm_limit`` is the amount from which
    a contactless transaction needs a CVM; ``contactless_limit`` the largest
    contactless transaction.  ``accept_expired_capk`` lets a CA key past its
    expiry date be used (it is reported either way).  ``online_capable`` False
    makes an offline-only terminal.
    """

    terminal_country: str = "0156"
    currency: str = "0156"
    currency_exponent: int = 2
    terminal_type: int = 0x22
    capabilities: str = "E0A8C8"
    additional_capabilities: str = "6000F0A001"
    application_versions: tuple[str, ...] = ("0020", "0030")
    terminal_id: str = "UCPOS001"
    merchant_id: str = "UNIONCARD000001"
    merchant_name: str = "UNIONCARD TEST MERCHANT"
    mcc: int = 5411
    floor_limit: int = 0
    ec_supported: bool = True
    ec_limit: int = 100_000
    contactless_limit: int = 500_000
    contactless_cvm_limit: int = 30_000
    random_threshold: int = 0
    random_target_percent: int = 0
    random_max_target_percent: int = 0
    tac_denial: str = "0010000000"
    tac_online: str = "DC40A4F800"
    tac_default: str = "DC40A0A800"
    pin_pad: bool = True
    online_capable: bool = True
    accept_expired_capk: bool = False
    confirm_application: bool = True
    aids: tuple[AidEntry, ...] = field(default=UNIONPAY_AIDS)

    def __post_init__(self) -> None:
        _hex(self.terminal_country, 2, "terminal country code")
        _hex(self.currency, 2, "currency code")
        _hex(self.capabilities, 3, "terminal capabilities")
        _hex(self.additional_capabilities, 5, "additional terminal capabilities")
        for name in ("tac_denial", "tac_online", "tac_default"):
            _hex(getattr(self, name), 5, name)
        for version in self.application_versions:
            _hex(version, 2, "application version")
        if len(self.terminal_id.encode()) != 8 or not self.terminal_id.isascii():
            raise ValueError("a terminal id (9F1C) has 8 ASCII characters")
        if not 0 <= self.mcc <= 9999:
            raise ValueError("a merchant category code has four digits")
        for name in ("floor_limit", "ec_limit", "contactless_limit", "contactless_cvm_limit",
                     "random_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a non-negative amount of fen")
        if not (0 <= self.random_target_percent <= self.random_max_target_percent <= 99):
            raise ValueError("random selection: 0 <= target % <= maximum target % <= 99")

    def capability(self, byte: int, mask: int) -> bool:
        """Terminal capabilities ``9F33`` byte ``byte`` (1-3) has every bit of ``mask``."""
        return bytes.fromhex(self.capabilities)[byte - 1] & mask == mask

    @property
    def supports_plaintext_pin(self) -> bool:
        return self.capability(2, 0x80) and self.pin_pad

    @property
    def supports_signature(self) -> bool:
        return self.capability(2, 0x20)

    @property
    def supports_no_cvm(self) -> bool:
        return self.capability(2, 0x08)

    @property
    def supports_sda(self) -> bool:
        return self.capability(3, 0x80)

    @property
    def supports_dda(self) -> bool:
        return self.capability(3, 0x40)

    @property
    def supports_cda(self) -> bool:
        return self.capability(3, 0x08)
