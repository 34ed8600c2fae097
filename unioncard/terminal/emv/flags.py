"""The kernel's bit fields: TVR ``95``, TSI ``9B``, AIP ``82``, AUC ``9F07``, TTQ ``9F66``.

Each bit is defined once, here, by its byte and bit number as the
specifications write them (byte 1 leftmost, bit 8 the most significant):
EMV 4.3 Book 3 Annex C1 (AIP), C2 (AUC), C5 (TVR), C6 (TSI), and PBOC /
docs/protocol.md §5 (TTQ).  docs/emv-kernel.md lists them in the same order.

>>> tvr = TVR.ODA_NOT_PERFORMED | TVR.EXCEEDS_FLOOR_LIMIT
>>> tvr_bytes(tvr).hex().upper()
'8000008000'
>>> TVR.of(bytes.fromhex("0040000000"))
<TVR.EXPIRED_APPLICATION: 1073741824>
>>> tsi_bytes(TSI.ODA_PERFORMED | TSI.TRM_PERFORMED).hex().upper()
'8800'
"""

from __future__ import annotations

from enum import IntFlag

__all__ = ["AIP", "AUC", "TSI", "TTQ", "TVR", "bit", "names", "tsi_bytes", "tvr_bytes"]


def bit(byte: int, number: int, size: int) -> int:
    """The integer value of bit ``number`` (8 = msb) of byte ``byte`` (1 = leftmost) of a
    ``size``-byte field, as specifications name bits."""
    if not (1 <= byte <= size and 1 <= number <= 8):
        raise ValueError(f"no bit b{number} in byte {byte} of a {size}-byte field")
    return 1 << ((size - byte) * 8 + number - 1)


class _Field(IntFlag):
    """A fixed-size bit field read and written as big-endian bytes."""

    @classmethod
    def size(cls) -> int:
        return 5

    @classmethod
    def of(cls, raw: bytes) -> _Field:
        if len(raw) != cls.size():
            raise ValueError(f"{cls.__name__} has {cls.size()} bytes, got {len(raw)}")
        return cls(int.from_bytes(raw, "big"))

    def encoded(self) -> bytes:
        return int(self).to_bytes(self.size(), "big")


class TVR(_Field):
    """Terminal Verification Results (EMV Book 3 Annex C5), 5 bytes."""

    # byte 1: offline data authentication
    ODA_NOT_PERFORMED = bit(1, 8, 5)
    SDA_FAILED = bit(1, 7, 5)
    ICC_DATA_MISSING = bit(1, 6, 5)
    CARD_ON_EXCEPTION_FILE = bit(1, 5, 5)
    DDA_FAILED = bit(1, 4, 5)
    CDA_FAILED = bit(1, 3, 5)
    SDA_SELECTED = bit(1, 2, 5)
    # byte 2: processing restrictions
    DIFFERENT_APPLICATION_VERSIONS = bit(2, 8, 5)
    EXPIRED_APPLICATION = bit(2, 7, 5)
    APPLICATION_NOT_YET_EFFECTIVE = bit(2, 6, 5)
    SERVICE_NOT_ALLOWED = bit(2, 5, 5)
    NEW_CARD = bit(2, 4, 5)
    # byte 3: cardholder verification
    CARDHOLDER_VERIFICATION_FAILED = bit(3, 8, 5)
    UNRECOGNISED_CVM = bit(3, 7, 5)
    PIN_TRY_LIMIT_EXCEEDED = bit(3, 6, 5)
    PIN_PAD_NOT_PRESENT = bit(3, 5, 5)
    PIN_NOT_ENTERED = bit(3, 4, 5)
    ONLINE_PIN_ENTERED = bit(3, 3, 5)
    # byte 4: terminal risk management
    EXCEEDS_FLOOR_LIMIT = bit(4, 8, 5)
    LOWER_OFFLINE_LIMIT_EXCEEDED = bit(4, 7, 5)
    UPPER_OFFLINE_LIMIT_EXCEEDED = bit(4, 6, 5)
    RANDOMLY_SELECTED_ONLINE = bit(4, 5, 5)
    MERCHANT_FORCED_ONLINE = bit(4, 4, 5)
    # byte 5: issuer authentication and scripts
    DEFAULT_TDOL_USED = bit(5, 8, 5)
    ISSUER_AUTHENTICATION_FAILED = bit(5, 7, 5)
    SCRIPT_FAILED_BEFORE_FINAL_AC = bit(5, 6, 5)
    SCRIPT_FAILED_AFTER_FINAL_AC = bit(5, 5, 5)


class TSI(_Field):
    """Transaction Status Information (EMV Book 3 Annex C6), 2 bytes."""

    ODA_PERFORMED = bit(1, 8, 2)
    CARDHOLDER_VERIFICATION_PERFORMED = bit(1, 7, 2)
    CARD_RISK_MANAGEMENT_PERFORMED = bit(1, 6, 2)
    ISSUER_AUTHENTICATION_PERFORMED = bit(1, 5, 2)
    TRM_PERFORMED = bit(1, 4, 2)
    SCRIPT_PROCESSING_PERFORMED = bit(1, 3, 2)

    @classmethod
    def size(cls) -> int:
        return 2


class AIP(_Field):
    """Application Interchange Profile (EMV Book 3 Annex C1), 2 bytes."""

    SDA_SUPPORTED = bit(1, 7, 2)
    DDA_SUPPORTED = bit(1, 6, 2)
    CARDHOLDER_VERIFICATION_SUPPORTED = bit(1, 5, 2)
    TRM_TO_BE_PERFORMED = bit(1, 4, 2)
    ISSUER_AUTHENTICATION_SUPPORTED = bit(1, 3, 2)
    CDA_SUPPORTED = bit(1, 1, 2)

    @classmethod
    def size(cls) -> int:
        return 2


class AUC(_Field):
    """Application Usage Control (EMV Book 3 Annex C2), 2 bytes."""

    DOMESTIC_CASH = bit(1, 8, 2)
    INTERNATIONAL_CASH = bit(1, 7, 2)
    DOMESTIC_GOODS = bit(1, 6, 2)
    INTERNATIONAL_GOODS = bit(1, 5, 2)
    DOMESTIC_SERVICES = bit(1, 4, 2)
    INTERNATIONAL_SERVICES = bit(1, 3, 2)
    ATMS = bit(1, 2, 2)
    NON_ATM_TERMINALS = bit(1, 1, 2)
    DOMESTIC_CASHBACK = bit(2, 8, 2)
    INTERNATIONAL_CASHBACK = bit(2, 7, 2)

    @classmethod
    def size(cls) -> int:
        return 2


class TTQ(_Field):
    """Terminal Transaction Qualifiers (PBOC qPBOC; docs/protocol.md §5), 4 bytes."""

    MSD = bit(1, 8, 4)
    CONTACTLESS_PBOC = bit(1, 7, 4)
    QPBOC = bit(1, 6, 4)
    CONTACT_PBOC = bit(1, 5, 4)
    OFFLINE_ONLY = bit(1, 4, 4)
    ONLINE_PIN = bit(1, 3, 4)
    SIGNATURE = bit(1, 2, 4)
    ODA_FOR_ONLINE = bit(1, 1, 4)
    ONLINE_CRYPTOGRAM_REQUIRED = bit(2, 8, 4)
    CVM_REQUIRED = bit(2, 7, 4)

    @classmethod
    def size(cls) -> int:
        return 4


def tvr_bytes(tvr: TVR) -> bytes:
    return TVR(tvr).encoded()


def tsi_bytes(tsi: TSI) -> bytes:
    return TSI(tsi).encoded()


def names(flags: _Field) -> list[str]:
    """The names of the bits set, in specification order (for JSON and docs)."""
    return [member.name.lower() for member in type(flags) if member in flags and member.name]
