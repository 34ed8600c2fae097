"""Offline data authentication for the kernel (EMV 4.3 Book 3 §10.3; PBOC fDDA).

Which method (CDA, else DDA, else SDA, as both the card's AIP and the
terminal support them; fDDA for qPBOC), the CA public key by RID and index
``8F`` (a key past its expiry date is reported, and used only when the
settings allow it), the issuer and ICC key recovery, and how a failure maps
to the TVR: the method's "failed" bit, plus "ICC data missing" when a data
element was absent.  The RSA work is `unioncard.crypto.oda`'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from unioncard.crypto import oda
from unioncard.terminal.emv.data import CardData
from unioncard.terminal.emv.flags import AIP, TVR
from unioncard.terminal.emv.settings import EmvSettings

__all__ = ["FAILED_BIT", "CapkStore", "Keys", "choose_method", "failure_tvr", "recover_keys"]

FAILED_BIT = {"sda": TVR.SDA_FAILED, "dda": TVR.DDA_FAILED, "fdda": TVR.DDA_FAILED,
              "cda": TVR.CDA_FAILED}


class CapkStore:
    """The terminal's CA public keys by (RID, index), from files checked on load."""

    def __init__(self, keys: Iterable[oda.CaPublicKey] = ()) -> None:
        self._keys = {(k.rid, k.index): k for k in keys}

    @classmethod
    def load(cls, *paths: str) -> CapkStore:
        keys: list[oda.CaPublicKey] = []
        for path in paths:
            keys += oda.load_capk_file(path)
        return cls(keys)

    def get(self, rid: bytes, index: int) -> oda.CaPublicKey | None:
        return self._keys.get((rid, index))

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class Keys:
    """What recovery gave: the issuer key, the ICC key (DDA, fDDA, CDA), and warnings."""

    issuer: oda.PublicKey
    icc: oda.PublicKey | None = None
    warnings: list[str] = field(default_factory=list)


def choose_method(aip: AIP, settings: EmvSettings, *, contactless: bool) -> str | None:
    """``cda``, ``dda``, ``sda`` (``fdda`` for qPBOC), or None: not performed."""
    if contactless:
        return "fdda" if aip & AIP.DDA_SUPPORTED and settings.supports_dda else None
    if aip & AIP.CDA_SUPPORTED and settings.supports_cda:
        return "cda"
    if aip & AIP.DDA_SUPPORTED and settings.supports_dda:
        return "dda"
    if aip & AIP.SDA_SUPPORTED and settings.supports_sda:
        return "sda"
    return None


def failure_tvr(method: str, failure: oda.OdaFailure) -> TVR:
    tvr = FAILED_BIT[method]
    if failure.reason is oda.OdaReason.DATA_MISSING:
        tvr |= TVR.ICC_DATA_MISSING
    return tvr


def _need(card: CardData, tag: int, what: str) -> bytes:
    value = card.get(tag)
    if value is None:
        raise oda.OdaFailure(what, oda.OdaReason.DATA_MISSING)
    return value


def recover_keys(card: CardData, aid: bytes, capks: CapkStore, settings: EmvSettings,
                 today: dt.date, *, static: bytes, icc: bool) -> Keys:
    """The CA key, then the issuer key, then (``icc``) the ICC key; `OdaFailure` else."""
    index = _need(card, 0x8F, "CA public key index")
    capk = capks.get(aid[:5], index[0])
    if capk is None:
        raise oda.OdaFailure(f"CA public key {aid[:5].hex().upper()} {index[0]:02X}",
                             oda.OdaReason.CAPK_MISSING)
    warnings = []
    if capk.expired(today):
        note = f"CA public key {capk.name} expired on {capk.expiry}"
        if not settings.accept_expired_capk:
            raise oda.OdaFailure(note, oda.OdaReason.CAPK_EXPIRED)
        warnings.append(f"{note}; used because the terminal accepts expired keys")
    pan = card.pan or ""
    issuer = oda.recover_issuer_key(
        capk, _need(card, 0x90, "issuer certificate"), card.get(0x92) or b"",
        _need(card, 0x9F32, "issuer public key exponent"), pan, today=today)
    keys = Keys(issuer, warnings=warnings)
    if icc:
        keys.icc = oda.recover_icc_key(
            issuer, _need(card, 0x9F46, "ICC certificate"), card.get(0x9F48) or b"",
            _need(card, 0x9F47, "ICC public key exponent"), pan, static, today=today)
    return keys
