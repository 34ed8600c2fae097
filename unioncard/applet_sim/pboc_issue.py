"""Personalization of the PBOC debit application, the PSE and the PPSE (docs/pboc.md).

From a keystore's ``[emv]`` and ``[rsa]`` sections and a card number: the PAN
``623012`` ‖ card number (12 digits) ‖ Luhn digit, PSN ``01``; the card keys (option A
from the issuer master keys); the issuer certificate, the ICC certificate (the ICC key
drawn from the keystore's pool by PAN and PSN, so a card is made the same way every time)
and the signed static data over the records the AFL marks for ODA and the AIP.

>>> luhn_digit("7992739871"), debit_pan(1)
('3', '6230120000000000010')
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from unioncard.apdu.tlv import Tlv, encode
from unioncard.applet_sim.directory import (
    DIRECTORY_SFI,
    PPSE_NAME,
    PSE_NAME,
    DirectoryConfig,
    DirectoryEntry,
    pse_record,
)
from unioncard.applet_sim.files import DF, EF, FileKind
from unioncard.applet_sim.pboc import (
    AIP,
    CDOL1,
    CDOL2,
    DDOL,
    DEBIT_AID,
    LOG_RECORD_SIZE,
    LOG_RECORDS,
    LOG_SFI,
    PbocConfig,
    luhn_digit,
)
from unioncard.crypto import emv, oda
from unioncard.crypto.keystore import Keystore
from unioncard.errors import CryptoError

__all__ = [
    "DEBIT_BIN",
    "DebitParts",
    "debit_application",
    "debit_pan",
    "has_debit_keys",
    "luhn_digit",
    "track2",
]

DEBIT_BIN = "623012"
DATA_AUTH_CODE = b"\xDA\xC1"
CVM_LIST = bytes.fromhex("00000000" "00000000" "0103" "1E03" "1F03")
"""X = Y = 0: offline plaintext PIN, else signature, else no CVM (each if the terminal
supports it)."""
IAC_DEFAULT = bytes.fromhex("DC4000A800")
IAC_DENIAL = bytes.fromhex("0010000000")
IAC_ONLINE = bytes.fromhex("DC4004F800")
PSE_FID = 0x0001


def debit_pan(card_no: int, bin_: str = DEBIT_BIN) -> str:
    """The 19-digit PAN of card number ``card_no``."""
    body = f"{bin_}{card_no:012d}"
    return body + luhn_digit(body)


def _cn(digits: str) -> bytes:
    return bytes.fromhex(digits + ("F" if len(digits) % 2 else ""))


def track2(pan: str, expiry: dt.date, service_code: str = "220") -> bytes:
    """Track 2 equivalent data (``57``): PAN ``D`` YYMM service code, discretionary zeros."""
    return _cn(f"{pan}D{expiry:%y%m}{service_code}00000")


def _yymmdd(day: dt.date) -> bytes:
    return bytes.fromhex(f"{day:%y%m%d}")


def _record(*items: tuple[int, bytes]) -> bytes:
    return encode(Tlv.template(0x70, [Tlv.primitive(tag, value) for tag, value in items]))


@lru_cache(maxsize=16)
def _issuer_certificate(ca_pem: str, issuer_pem: str, issuer_id: str, expiry: str,
                        serial: int) -> tuple[bytes, bytes]:
    """The issuer certificate, the same for every card of the issuer key: made once."""
    issuer = oda.PrivateKey.from_pem(issuer_pem)
    return oda.issuer_certificate(oda.PrivateKey.from_pem(ca_pem), issuer.public, issuer_id,
                                  expiry, serial)


def has_debit_keys(keys: Keystore, card_no: int) -> bool:
    """Whether ``keys`` can personalize the debit application of this card."""
    try:
        keys.emv_issuer_keys(DEBIT_AID)
        issuer = keys.issuer_rsa(debit_pan(card_no))
        keys.ca_rsa(issuer.rid, issuer.ca_index)
        return bool(keys.rsa_icc)
    except CryptoError:
        return False


@dataclass(frozen=True, slots=True)
class DebitParts:
    """What the card gets: the PSE, PPSE and debit ADF, and the NVM values to lay."""

    pse: DF
    ppse: DF
    adf: DF
    pse_record: bytes
    values: dict[str, Any]


def debit_application(keys: Keystore, *, card_no: int, holder: str, effective: dt.date,
                      expiry: dt.date, pin: str, psn: str = "01", ec_balance: int = 0,
                      ec_balance_limit: int = 100000, ec_single_limit: int = 50000,
                      ec_reset_threshold: int = 10000, qpboc_cid: bool = True) -> DebitParts:
    """The debit application of card ``card_no``; `CryptoError` when the keystore lacks
    its EMV or RSA keys, ValueError for impossible values.  ``qpboc_cid`` false leaves the
    CID out of the qPBOC GPO answer (docs/pboc.md)."""
    pan = debit_pan(card_no)
    emv_keys = keys.emv_issuer_keys(DEBIT_AID)
    issuer = keys.issuer_rsa(pan)
    ca = keys.ca_rsa(issuer.rid, issuer.ca_index)
    icc = keys.icc_rsa_key((pan + psn).encode("ascii"))
    name = holder.encode("ascii", "replace")[:26] or b"UNION MEMBER"
    record1 = _record((0x57, track2(pan, expiry)), (0x5F20, name))
    record2 = _record(
        (0x5A, _cn(pan)), (0x5F34, bytes.fromhex(psn)), (0x5F24, _yymmdd(expiry)),
        (0x5F25, _yymmdd(effective)), (0x5F28, b"\x01\x56"), (0x9F07, b"\xFF\x00"),
        (0x9F08, b"\x00\x30"), (0x8E, CVM_LIST), (0x9F0D, IAC_DEFAULT),
        (0x9F0E, IAC_DENIAL), (0x9F0F, IAC_ONLINE), (0x8C, CDOL1), (0x8D, CDOL2),
        (0x9F49, DDOL), (0x9F4A, b"\x82"), (0x9F42, b"\x01\x56"), (0x9F44, b"\x02"))
    static = oda.static_data([(1, record1), (1, record2)], b"\x82", {0x82: AIP})
    issuer_pub, icc_pub = issuer.private.public, icc.public
    icert, irem = _issuer_certificate(ca.private_pem, issuer.private_pem, issuer.issuer_id,
                                      issuer.expiry, issuer.serial)
    ccert, crem = oda.icc_certificate(issuer.private, icc_pub, pan, f"{expiry:%m%y}",
                                      card_no % 0x1000000, static)
    ssad = oda.sign_ssad(issuer.private, DATA_AUTH_CODE, static)
    issuer_items = [(0x8F, bytes([ca.index])), (0x90, icert), (0x9F32, issuer_pub.exponent)]
    icc_items = [(0x9F46, ccert), (0x9F47, icc_pub.exponent)]
    records = {
        (1, 1): record1,
        (1, 2): record2,
        (2, 1): _record(*issuer_items, *([(0x92, irem)] if irem else [])),
        (2, 2): _record(*icc_items, *([(0x9F48, crem)] if crem else [])),
        (2, 3): _record((0x93, ssad)),
    }
    config = PbocConfig(
        pan, psn, emv_keys.dki, emv.derive_udk(emv_keys.ac_mk, pan, psn),
        emv.derive_udk(emv_keys.smi_mk, pan, psn), emv.derive_udk(emv_keys.smc_mk, pan, psn),
        icc.to_pem(), pin, afl=bytes.fromhex("0801020210010300"), qpboc_cid=qpboc_cid)
    entries = (DirectoryEntry(DEBIT_AID, config.label, config.priority),)
    record = pse_record(entries)
    pse = DF(None, PSE_NAME, (EF(PSE_FID, FileKind.LINEAR, len(record), 1, sfi=DIRECTORY_SFI,
                                 name="PSE directory"),),
             DirectoryConfig("pse", entries), "PSE 1PAY.SYS.DDF01")
    ppse = DF(None, PPSE_NAME, (), DirectoryConfig("ppse", entries), "PPSE 2PAY.SYS.DDF01")
    adf = DF(None, DEBIT_AID, (EF(LOG_SFI, FileKind.CYCLIC, LOG_RECORD_SIZE, LOG_RECORDS,
                                  sfi=LOG_SFI, name="PBOC transaction log"),),
             config, "PBOC debit")
    values = {"records": records, "ec_balance": ec_balance,
              "ec_balance_limit": ec_balance_limit, "ec_single_limit": ec_single_limit,
              "ec_reset_threshold": ec_reset_threshold}
    return DebitParts(pse, ppse, adf, record, values)
