"""Message authentication codes of the PBOC purse (JR/T 0025) and ISO/IEC 9797-1.

- `pboc_mac`: single-DES CBC-MAC, IV zero unless given, padding method 2 (``80``
  then ``00``, always added), leftmost 4 bytes of the last block.  MAC1, MAC2 and
  TAC of the electronic purse use it with an 8-byte session key or TAC key.
- `retail_mac`: ISO/IEC 9797-1 MAC algorithm 3 with padding method 2 and a
  16-byte key ``KL‖KR``: single DES CBC with KL over every block, then the last
  block decrypted with KR and encrypted with KL.  Application maintenance
  commands (block/unblock) carry it.

>>> pboc_mac(bytes.fromhex("003238ABC57659DD"), bytes.fromhex("00001000")).hex().upper()
'56988A13'
"""

from __future__ import annotations

from unioncard.crypto.des import (
    BLOCK,
    des_cbc_encrypt,
    des_decrypt,
    des_encrypt,
    pad80,
)
from unioncard.errors import CryptoError

__all__ = ["MAC_LENGTH", "pboc_mac", "retail_mac"]

MAC_LENGTH = 4
"""MAC1, MAC2, TAC and the maintenance MAC are the leftmost 4 bytes."""

_ZERO = bytes(BLOCK)


def _length(length: int) -> int:
    if not 4 <= length <= BLOCK:
        raise CryptoError(f"a DES MAC has 4 to 8 bytes, asked for {length}")
    return length


def pboc_mac(key: bytes, data: bytes, *, iv: bytes = _ZERO, length: int = MAC_LENGTH) -> bytes:
    """Single-DES CBC-MAC with ``80`` padding (JR/T 0025 purse MAC); 8-byte key."""
    return des_cbc_encrypt(key, pad80(data), iv)[-BLOCK:][: _length(length)]


def retail_mac(key: bytes, data: bytes, *, iv: bytes = _ZERO, length: int = MAC_LENGTH) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3, padding method 2, 16-byte key ``KL‖KR``.

    >>> key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> retail_mac(key, bytes.fromhex("1234567890ABCDEF"), length=8).hex().upper()
    '912476C111DB4238'
    """
    if len(key) != 16:
        raise CryptoError(f"a retail MAC key has 16 bytes, got {len(key)}")
    left, right = bytes(key[:8]), bytes(key[8:])
    last = des_cbc_encrypt(left, pad80(data), iv)[-BLOCK:]
    return des_encrypt(left, des_decrypt(right, last))[: _length(length)]
