"""DES and two-key triple-DES block operations on bytes (ISO/IEC 18033-3, ANSI X9.52).

Every call goes through `cryptography`.  Single DES is triple-DES with the key
``K‖K‖K`` and two-key triple-DES uses the three-key form ``K1‖K2‖K1``: those are
the forms `cryptography` keeps supporting (its 8- and 16-byte keys are deprecated).

>>> des_encrypt(bytes.fromhex("0123456789ABCDEF"), bytes.fromhex("4E6F772069732074")).hex().upper()
'3FA40E8A984D4815'
>>> tdes_encrypt(bytes(16), bytes(8)) == des_encrypt(bytes(8), bytes(8))
True
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 keeps triple-DES among the decrepit ciphers
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

from unioncard.errors import CryptoError

__all__ = [
    "BLOCK",
    "des_cbc_encrypt",
    "des_decrypt",
    "des_encrypt",
    "pad80",
    "tdes_cbc_encrypt",
    "tdes_decrypt",
    "tdes_encrypt",
    "xor",
]

BLOCK = 8
"""The DES block size in bytes."""

ZERO_IV = bytes(BLOCK)


def xor(a: bytes, b: bytes) -> bytes:
    """Byte-wise exclusive or of two strings of the same length."""
    if len(a) != len(b):
        raise CryptoError(f"cannot xor {len(a)} bytes with {len(b)} bytes")
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def pad80(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: ``80`` then ``00`` up to a multiple of 8, always.

    >>> pad80(bytes(8)).hex()
    '00000000000000008000000000000000'
    """
    padded = bytes(data) + b"\x80"
    return padded + bytes(-len(padded) % BLOCK)


@lru_cache(maxsize=256)
def _cipher(key24: bytes) -> Cipher[modes.ECB]:
    return Cipher(TripleDES(key24), modes.ECB())


def _single(key: bytes) -> bytes:
    if len(key) != 8:
        raise CryptoError(f"a DES key has 8 bytes, got {len(key)}")
    return bytes(key) * 3


def _double(key: bytes) -> bytes:
    if len(key) != 16:
        raise CryptoError(f"a two-key triple-DES key has 16 bytes, got {len(key)}")
    return bytes(key) + bytes(key[:8])


def _blocks(data: bytes) -> bytes:
    if len(data) % BLOCK:
        raise CryptoError(f"ECB data must be a multiple of 8 bytes, got {len(data)}")
    return bytes(data)


def _ecb(key24: bytes, data: bytes, decrypt: bool) -> bytes:
    cipher = _cipher(key24)
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(_blocks(data)) + ctx.finalize()


def des_encrypt(key: bytes, data: bytes) -> bytes:
    """Single-DES ECB encryption with an 8-byte key."""
    return _ecb(_single(key), data, decrypt=False)


def des_decrypt(key: bytes, data: bytes) -> bytes:
    """Single-DES ECB decryption with an 8-byte key."""
    return _ecb(_single(key), data, decrypt=True)


def tdes_encrypt(key: bytes, data: bytes) -> bytes:
    """Two-key triple-DES (EDE) ECB encryption with a 16-byte key."""
    return _ecb(_double(key), data, decrypt=False)


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    """Two-key triple-DES (EDE) ECB decryption with a 16-byte key."""
    return _ecb(_double(key), data, decrypt=True)


def _cbc(key24: bytes, data: bytes, iv: bytes) -> bytes:
    if len(iv) != BLOCK:
        raise CryptoError(f"a DES IV has 8 bytes, got {len(iv)}")
    ctx = Cipher(TripleDES(key24), modes.CBC(bytes(iv))).encryptor()
    return ctx.update(_blocks(data)) + ctx.finalize()


def des_cbc_encrypt(key: bytes, data: bytes, iv: bytes = ZERO_IV) -> bytes:
    """Single-DES CBC encryption (8-byte key), no padding."""
    return _cbc(_single(key), data, iv)


def tdes_cbc_encrypt(key: bytes, data: bytes, iv: bytes = ZERO_IV) -> bytes:
    """Two-key triple-DES CBC encryption (16-byte key), no padding."""
    return _cbc(_double(key), data, iv)
