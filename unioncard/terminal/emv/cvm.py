"""Cardholder verification (EMV 4.3 Book 3 §10.5, Annex C3): the CVM list ``8E``, rule by rule.

Supported methods: fail CVM (``00``), offline plaintext PIN (``01``),
plaintext PIN and signature (``03``), signature (``1E``), no CVM required
(``1F``).  The PIN entries are inputs: each wrong one costs a try on the card
(``63Cx``) and the next entry is tried, until the card blocks the PIN
(``63C0``, ``6983``); no entry left is "PIN not entered".  Online and
enciphered PINs are recognised but this terminal does not support them.

The result is the CVM Results ``9F34`` (method, condition, result: ``00``
unknown, ``01`` failed, ``02`` successful) and the TVR bits of byte 3.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

from unioncard.apdu import SW, ResponseAPDU
from unioncard.terminal.card import SubFlow, card_send
from unioncard.terminal.emv import commands as cmd
from unioncard.terminal.emv.data import CardData, CvmRule, parse_cvm_list
from unioncard.terminal.emv.flags import TVR
from unioncard.terminal.emv.settings import EmvSettings
from unioncard.terminal.session import Send

__all__ = ["CvmOutcome", "Method", "contactless_cvm", "verify_cardholder"]


class Method:
    """CVM codes (b6-b1 of the first byte of a CV rule)."""

    FAIL = 0x00
    PLAINTEXT_PIN = 0x01
    ONLINE_PIN = 0x02
    PLAINTEXT_PIN_AND_SIGNATURE = 0x03
    ENCIPHERED_PIN = 0x04
    ENCIPHERED_PIN_AND_SIGNATURE = 0x05
    SIGNATURE = 0x1E
    NO_CVM = 0x1F
    KNOWN = frozenset({0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x1E, 0x1F})


UNKNOWN, FAILED, SUCCESSFUL = 0x00, 0x01, 0x02
NO_CVM_PERFORMED = 0x3F


@dataclass
class CvmOutcome:
    results: bytes
    """CVM Results ``9F34``."""
    tvr: TVR
    signature: bool
    """The receipt needs the cardholder's signature."""
    performed: bool
    """TSI "cardholder verification was performed"."""
    pin_tries: int | None = None
    """The card's PIN try counter after the last VERIFY (None: not read)."""


def _condition_met(rule: CvmRule, amount: int, x: int, y: int, same_currency: bool,
                   settings: EmvSettings) -> bool | None:
    """Book 3 Annex C3 conditions for a purchase; None: not understood."""
    c = rule.condition
    if c == 0x00:
        return True
    if c in (0x01, 0x04, 0x05):  # unattended cash, manual cash, purchase with cashback
        return False
    if c == 0x02:  # not unattended cash, not manual cash, not cashback: a purchase is
        return True
    if c == 0x03:
        return _supported(rule.method, settings)
    if c in (0x06, 0x07, 0x08, 0x09):
        if not same_currency:
            return False
        limit = x if c in (0x06, 0x07) else y
        return amount < limit if c in (0x06, 0x08) else amount > limit
    return None


def _supported(method: int, settings: EmvSettings) -> bool:
    if method in (Method.PLAINTEXT_PIN, Method.PLAINTEXT_PIN_AND_SIGNATURE):
        pin = settings.supports_plaintext_pin
        return pin and (method == Method.PLAINTEXT_PIN or settings.supports_signature)
    if method == Method.SIGNATURE:
        return settings.supports_signature
    if method == Method.NO_CVM:
        return settings.supports_no_cvm
    return method == Method.FAIL


def verify_cardholder(card: CardData, amount: int, settings: EmvSettings,
                      pins: Sequence[str]) -> SubFlow:
    """Run the CVM list against the card: a `CvmOutcome`."""
    raw = card.get(0x8E)
    if raw is None or len(raw) <= 8:
        # Book 3 §10.5: no CVM list, ICC data missing, not performed
        return CvmOutcome(bytes((NO_CVM_PERFORMED, 0x00, UNKNOWN)), TVR.ICC_DATA_MISSING,
                          False, False)
    x, y, rules = parse_cvm_list(raw)
    currency = card.get(0x9F42)
    same_currency = currency is not None and currency.hex() == settings.currency.lower()
    tvr = TVR(0)
    entries = list(pins)
    last: CvmRule | None = None
    tries: int | None = None
    for rule in rules:
        met = _condition_met(rule, amount, x, y, same_currency, settings)
        if not met:
            continue
        last = rule
        method = rule.method
        if method not in Method.KNOWN:
            tvr |= TVR.UNRECOGNISED_CVM
            ok = False
        elif not _supported(method, settings):
            ok = False
            if method in (Method.PLAINTEXT_PIN, Method.PLAINTEXT_PIN_AND_SIGNATURE,
                          Method.ONLINE_PIN, Method.ENCIPHERED_PIN,
                          Method.ENCIPHERED_PIN_AND_SIGNATURE) and not settings.pin_pad:
                tvr |= TVR.PIN_PAD_NOT_PRESENT
        elif method == Method.FAIL:
            ok = False
        elif method in (Method.PLAINTEXT_PIN, Method.PLAINTEXT_PIN_AND_SIGNATURE):
            ok, pin_tvr, tries = yield from _offline_pin(entries)
            tvr |= pin_tvr
            if ok:
                signature = method == Method.PLAINTEXT_PIN_AND_SIGNATURE
                result = UNKNOWN if signature else SUCCESSFUL
                return CvmOutcome(bytes((rule.code, rule.condition, result)), tvr, signature,
                                  True, tries)
        elif method == Method.SIGNATURE:
            return CvmOutcome(bytes((rule.code, rule.condition, UNKNOWN)), tvr, True, True)
        else:  # no CVM required
            return CvmOutcome(bytes((rule.code, rule.condition, SUCCESSFUL)), tvr, False, True)
        if not ok and not rule.continue_on_failure:
            break
    tvr |= TVR.CARDHOLDER_VERIFICATION_FAILED
    if last is None:
        return CvmOutcome(bytes((NO_CVM_PERFORMED, 0x00, FAILED)), tvr, False, True, tries)
    return CvmOutcome(bytes((last.code, last.condition, FAILED)), tvr, False, True, tries)


def _offline_pin(entries: list[str]) -> Generator[Send, ResponseAPDU, tuple[bool, TVR, int | None]]:
    """VERIFY with each PIN entry until one is right or the card blocks the PIN."""
    counter = yield card_send(cmd.get_data(0x9F17), "GET DATA PIN try counter")
    tries: int | None = None
    if counter.sw == SW.OK and len(counter.data) >= 4 and counter.data[:2] == b"\x9f\x17":
        tries = counter.data[3]
        if tries == 0:
            return False, TVR.PIN_TRY_LIMIT_EXCEEDED, 0
    while True:
        if not entries:
            return False, TVR.PIN_NOT_ENTERED, tries
        pin = entries.pop(0)
        answer = yield card_send(cmd.verify_plaintext_pin(pin), "VERIFY offline PIN")
        if answer.sw == SW.OK:
            return True, TVR(0), tries
        if answer.sw >> 4 == 0x63C:
            tries = answer.sw & 0x0F
            if tries == 0:
                return False, TVR.PIN_TRY_LIMIT_EXCEEDED, 0
            continue
        if answer.sw in (SW.AUTHENTICATION_METHOD_BLOCKED, SW.REFERENCED_DATA_INVALIDATED):
            return False, TVR.PIN_TRY_LIMIT_EXCEEDED, 0
        return False, TVR(0), tries  # any other answer: this CVM failed


def contactless_cvm(amount: int, settings: EmvSettings, card: CardData) -> CvmOutcome:
    """qPBOC: signature from the CVM limit (or when the card's CTQ ``9F6C`` asks for one),
    no CVM under it."""
    ctq = card.get(0x9F6C) or b"\x00\x00"
    if amount >= settings.contactless_cvm_limit or ctq[0] & 0x40:
        return CvmOutcome(bytes((Method.SIGNATURE, 0x00, UNKNOWN)), TVR(0), True, True)
    return CvmOutcome(bytes((Method.NO_CVM, 0x00, SUCCESSFUL)), TVR(0), False, True)

