"""Processing restrictions, terminal risk management and terminal action analysis.

Pure functions of the card's data, the settings and the transaction (EMV 4.3
Book 3 §10.4, §10.6, §10.7; PBOC electronic cash): each returns the TVR bits
it sets.

>>> s = EmvSettings(floor_limit=10_000)
>>> floor_limit(15_000, s.floor_limit) == TVR.EXCEEDS_FLOOR_LIMIT
True
>>> action_analysis(TVR.EXCEEDS_FLOOR_LIMIT, s, {}, online=True).name
'ARQC'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from unioncard.terminal.emv.commands import CryptogramType
from unioncard.terminal.emv.data import CardData
from unioncard.terminal.emv.flags import AUC, TVR
from unioncard.terminal.emv.settings import EmvSettings

__all__ = ["action_analysis", "floor_limit", "random_selection", "restrictions", "velocity"]


def restrictions(card: CardData, settings: EmvSettings, today: dt.date) -> TVR:
    """Book 3 §10.4: application versions, usage control for a purchase of goods at a
    non-ATM terminal, effective and expiry dates."""
    tvr = TVR(0)
    version = card.get(0x9F08)
    if version is not None and version.hex().upper() not in settings.application_versions:
        tvr |= TVR.DIFFERENT_APPLICATION_VERSIONS
    auc_raw = card.get(0x9F07)
    if auc_raw is not None and len(auc_raw) == 2:
        auc = AUC(int.from_bytes(auc_raw, "big"))
        country = card.get(0x5F28)
        domestic = country is not None and country.hex() == settings.terminal_country.lower()
        needed = AUC.DOMESTIC_GOODS if domestic else AUC.INTERNATIONAL_GOODS
        if not auc & AUC.NON_ATM_TERMINALS or (country is not None and not auc & needed):
            tvr |= TVR.SERVICE_NOT_ALLOWED
    effective = card.date(0x5F25, "application effective date")
    if effective is not None and today < effective:
        tvr |= TVR.APPLICATION_NOT_YET_EFFECTIVE
    expiry = card.date(0x5F24, "application expiration date")
    if expiry is not None and today > expiry:
        tvr |= TVR.EXPIRED_APPLICATION
    return tvr


def floor_limit(amount: int, limit: int) -> TVR:
    """Book 3 §10.6.1: the amount reaches the floor limit (the EC terminal limit for an
    electronic cash transaction)."""
    return TVR.EXCEEDS_FLOOR_LIMIT if amount >= limit else TVR(0)


def random_selection(amount: int, settings: EmvSettings, draw: int) -> TVR:
    """Book 3 §10.6.2: ``draw`` is the transaction's random number, 1..99 (an input); an
    offline-only terminal does not select transactions for online processing."""
    limit = settings.floor_limit
    if amount >= limit or not settings.random_max_target_percent \
            or not settings.online_capable:
        return TVR(0)
    target = settings.random_target_percent
    if amount >= settings.random_threshold and limit > settings.random_threshold:
        span = limit - settings.random_threshold
        extra = (settings.random_max_target_percent - target) * (
            amount - settings.random_threshold) / span
        target = int(target + extra)
    return TVR.RANDOMLY_SELECTED_ONLINE if draw <= target else TVR(0)


def velocity(card: CardData, atc: bytes | None, last_online: bytes | None) -> TVR:
    """Book 3 §10.6.3: consecutive offline transactions against LCOL ``9F14`` and UCOL
    ``9F23`` (both needed, one byte each), from the ATC and the last online ATC register
    read with GET DATA.  A register the card does not give, or an ATC not above the last
    online ATC, sets both limit bits; "new card" when the last online ATC is 0."""
    lower, upper = card.get(0x9F14), card.get(0x9F23)
    if lower is None or upper is None or len(lower) != 1 or len(upper) != 1:
        return TVR(0)
    both = TVR.LOWER_OFFLINE_LIMIT_EXCEEDED | TVR.UPPER_OFFLINE_LIMIT_EXCEEDED
    tvr = TVR(0)
    if last_online is not None and len(last_online) == 2 and not any(last_online):
        tvr |= TVR.NEW_CARD
    if atc is None or last_online is None or len(atc) != 2 or len(last_online) != 2:
        return tvr | both | TVR.ICC_DATA_MISSING
    count, online = int.from_bytes(atc, "big"), int.from_bytes(last_online, "big")
    if count <= online:
        return tvr | both
    offline = count - online
    if offline > lower[0]:
        tvr |= TVR.LOWER_OFFLINE_LIMIT_EXCEEDED
    if offline > upper[0]:
        tvr |= TVR.UPPER_OFFLINE_LIMIT_EXCEEDED
    return tvr


def _code(value: bytes | str | None, default: int) -> int:
    if value is None:
        return default
    raw = bytes.fromhex(value) if isinstance(value, str) else value
    return int.from_bytes(raw, "big") if len(raw) == 5 else default


ALL_ONES = (1 << 40) - 1


def action_analysis(tvr: TVR, settings: EmvSettings, iac: Mapping[str, bytes | None], *,
                    online: bool, unable_online: bool = False) -> CryptogramType:
    """Book 3 §10.7: the cryptogram the terminal asks for.

    ``iac`` maps ``denial``, ``online``, ``default`` to the card's Issuer Action
    Codes (``9F0E``, ``9F0F``, ``9F0D``); an absent IAC-Denial counts as zeros, the
    others as all ones.  ``online`` is whether the terminal can go online;
    ``unable_online`` decides with the default codes after a failed attempt.
    """
    value = int(tvr)
    denial = _code(settings.tac_denial, 0) | _code(iac.get("denial"), 0)
    if value & denial:
        return CryptogramType.AAC
    default = _code(settings.tac_default, 0) | _code(iac.get("default"), ALL_ONES)
    if unable_online or not online:
        return CryptogramType.AAC if value & default else CryptogramType.TC
    online_codes = _code(settings.tac_online, 0) | _code(iac.get("online"), ALL_ONES)
    return CryptogramType.ARQC if value & online_codes else CryptogramType.TC
