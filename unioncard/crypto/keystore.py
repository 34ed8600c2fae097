"""Master-key files: the TOML keystore of purse master keys (docs/keystore.md).

A keystore holds, per purse application and key version, the purchase, load,
TAC and maintenance master keys (MPK, MLK, MTK and the application maintenance
key).  Cards carry keys diversified from these (`derive_card_keys`); the PSAM
carries the purchase master keys, one per key version.  Key versions are unique
per issuer: an entry without ``issuer`` applies to the cards of any issuer, an
entry naming an issuer (the 8-byte issuer id of the card's EF 0015) wins for that
issuer's cards, so one keystore serves the cards of several city unions
(`Keystore.for_card`, what settlement uses).

``test_keys = true`` marks a file of published test keys: tools must warn
loudly when they use one.  The sections ``[emv]``, ``[rsa]`` and ``[sm2]`` are
reserved for issuer master keys and public-key material of later versions; they
are kept as read and not interpreted yet.

Keys never appear in a repr or a log line.

>>> ks = Keystore.test()
>>> ks.test_keys, [p.application for p in ks.purse], ks.purse_keys("etc").key_version
(True, ['transit', 'etc'], 2)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unioncard.bounded_read import KEYSTORE_LIMIT, read_utf8
from unioncard.crypto.purse import diversify
from unioncard.errors import CryptoError

__all__ = [
    "FORMAT",
    "RESERVED_SECTIONS",
    "TEST_KEYSTORE",
    "VERSION",
    "CardKeys",
    "Keystore",
    "PurseKeys",
    "derive_card_keys",
]

FORMAT = "unioncard-keystore"
VERSION = 1
RESERVED_SECTIONS = ("emv", "rsa", "sm2")
TEST_KEYSTORE = "test-keystore.toml"
"""The shipped test keystore, in package data ``unioncard/data/``."""

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_KEY_FIELDS = ("purchase_mk", "load_mk", "tac_mk", "maintenance_mk")


def _key(where: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise CryptoError(f"{where}: a key is a hex string, got {type(value).__name__}")
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise CryptoError(f"{where}: not a hex string") from None
    if len(key) != 16:
        raise CryptoError(f"{where}: a double-length DES key has 16 bytes, got {len(key)}")
    return key


@dataclass(frozen=True, slots=True)
class PurseKeys:
    """The master keys of one purse application at one key version, for the cards of
    ``issuer`` (8 bytes) or, when None, of any issuer."""

    application: str
    key_version: int
    purchase_mk: bytes = field(repr=False)
    load_mk: bytes = field(repr=False)
    tac_mk: bytes = field(repr=False)
    maintenance_mk: bytes = field(repr=False)
    issuer: bytes | None = None

    def __post_init__(self) -> None:
        if self.issuer is not None and (not isinstance(self.issuer, bytes)
                                        or len(self.issuer) != 8):
            raise CryptoError(f"{self.application} issuer must be 8 bytes (16 hex digits)")
        if not _NAME.match(self.application):
            raise CryptoError(f"application name {self.application!r} must match {_NAME.pattern}")
        if not isinstance(self.key_version, int) or not 0 <= self.key_version <= 0xFF:
            raise CryptoError(f"key version must be 0..255, got {self.key_version!r}")
        for name in _KEY_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 16:
                raise CryptoError(f"{self.application} {name} must be 16 bytes")


@dataclass(frozen=True, slots=True)
class CardKeys:
    """One card application's keys, diversified from a `PurseKeys`: DPK, DLK, DTK, maintenance."""

    key_version: int
    purchase: bytes = field(repr=False)
    load: bytes = field(repr=False)
    tac: bytes = field(repr=False)
    maintenance: bytes = field(repr=False)


def derive_card_keys(keys: PurseKeys, diversifier: bytes) -> CardKeys:
    """The card's DPK, DLK, DTK and maintenance key for the 8-byte diversifier
    (docs/protocol.md §2)."""
    return CardKeys(
        keys.key_version,
        diversify(keys.purchase_mk, diversifier),
        diversify(keys.load_mk, diversifier),
        diversify(keys.tac_mk, diversifier),
        diversify(keys.maintenance_mk, diversifier),
    )


@dataclass(frozen=True, slots=True)
class Keystore:
    """A parsed keystore file."""

    purse: tuple[PurseKeys, ...]
    test_keys: bool = False
    description: str = ""
    reserved: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        seen: dict[tuple[bytes | None, int], str] = {}
        for keys in self.purse:
            where = (keys.issuer, keys.key_version)
            if where in seen:
                whose = ("" if keys.issuer is None
                         else f" of issuer {keys.issuer.hex().upper()}")
                raise CryptoError(
                    f"key version {keys.key_version:02X}{whose} is used by both "
                    f"{seen[where]} and {keys.application}"
                )
            seen[where] = keys.application
        unknown = set(self.reserved) - set(RESERVED_SECTIONS)
        if unknown:
            raise CryptoError(f"unknown keystore sections: {', '.join(sorted(unknown))}")

    @property
    def applications(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k.application for k in self.purse))

    def purse_keys(self, application: str, key_version: int | None = None) -> PurseKeys:
        """The keys of ``application``: at ``key_version``, or its highest version."""
        found = [k for k in self.purse if k.application == application]
        if key_version is not None:
            found = [k for k in found if k.key_version == key_version]
        if not found:
            version = "" if key_version is None else f" at key version {key_version:02X}"
            raise CryptoError(f"the keystore has no keys for application {application!r}{version}")
        return max(found, key=lambda k: k.key_version)

    def by_version(self, key_version: int) -> PurseKeys:
        """The purse keys of one key version (how a PSAM chooses them): the entry for any
        issuer, else the one issuer's entry of that version."""
        found = [k for k in self.purse if k.key_version == key_version]
        generic = [k for k in found if k.issuer is None]
        if generic:
            return generic[0]
        if len(found) == 1:
            return found[0]
        if not found:
            raise CryptoError(f"the keystore has no key version {key_version:02X}")
        raise CryptoError(f"key version {key_version:02X} belongs to {len(found)} issuers: "
                          "name the card's issuer (for_card)")

    def for_card(self, issuer: bytes, key_version: int) -> PurseKeys:
        """The keys of a card of ``issuer`` at ``key_version``: the issuer's own entry, else
        the entry for any issuer; `CryptoError` when neither exists."""
        generic = None
        for keys in self.purse:
            if keys.key_version != key_version:
                continue
            if keys.issuer == issuer:
                return keys
            if keys.issuer is None:
                generic = keys
        if generic is None:
            raise CryptoError(f"the keystore has no key version {key_version:02X} for issuer "
                              f"{issuer.hex().upper()}")
        return generic

    def purchase_master_keys(self) -> dict[int, bytes]:
        """Key version → purchase master key: what a PSAM is loaded with (`by_version` of
        each version)."""
        return {v: self.by_version(v).purchase_mk
                for v in sorted({k.key_version for k in self.purse})}

    # --- the file format -------------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str) -> Keystore:
        """Parse a keystore document; raises `CryptoError` naming what is wrong."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CryptoError(f"keystore is not valid TOML: {exc}") from None
        except RecursionError:
            raise CryptoError("keystore is not valid TOML: arrays or tables nested too "
                              "deeply") from None
        return cls.from_mapping(doc)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> Keystore:
        if doc.get("format") != FORMAT:
            raise CryptoError(f"not a keystore: expected format = {FORMAT!r}")
        if doc.get("version") != VERSION:
            raise CryptoError(f"unsupported keystore version {doc.get('version')!r} "
                              f"(this release reads version {VERSION})")
        test_keys = doc.get("test_keys", False)
        if not isinstance(test_keys, bool):
            raise CryptoError("test_keys must be true or false")
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise CryptoError("description must be a string")
        known = {"format", "version", "test_keys", "description", "purse", *RESERVED_SECTIONS}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise CryptoError(f"unknown keystore entries: {', '.join(unknown)}")
        entries = doc.get("purse", [])
        if not isinstance(entries, list):
            raise CryptoError("purse must be an array of tables ([[purse]])")
        purse = []
        for i, entry in enumerate(entries, 1):
            where = f"[[purse]] #{i}"
            if not isinstance(entry, dict):
                raise CryptoError(f"{where} is not a table")
            extra = sorted(set(entry) - {"application", "key_version", "issuer",
                                         *_KEY_FIELDS})
            if extra:
                raise CryptoError(f"{where}: unknown entries {', '.join(extra)}")
            missing = [k for k in ("application", "key_version", *_KEY_FIELDS) if k not in entry]
            if missing:
                raise CryptoError(f"{where}: missing {', '.join(missing)}")
            app = entry["application"]
            if not isinstance(app, str):
                raise CryptoError(f"{where}: application must be a string")
            keys = {name: _key(f"{where} ({app}) {name}", entry[name]) for name in _KEY_FIELDS}
            purse.append(PurseKeys(app, entry["key_version"], **keys,
                                   issuer=_issuer(f"{where} ({app})", entry.get("issuer"))))
        reserved = {name: doc[name] for name in RESERVED_SECTIONS if name in doc}
        return cls(tuple(purse), test_keys, description, reserved)

    def to_toml(self) -> str:
        """The keystore as a TOML document that `from_toml` reads back (reserved sections
        are not written: they must be carried over by hand until they are interpreted)."""
        lines = [
            f'format = "{FORMAT}"',
            f"version = {VERSION}",
            f"test_keys = {'true' if self.test_keys else 'false'}",
            f"description = {_toml_string(self.description)}",
        ]
        for keys in self.purse:
            lines += ["", "[[purse]]", f'application = "{keys.application}"',
                      f"key_version = 0x{keys.key_version:02X}"]
            if keys.issuer is not None:
                lines.append(f'issuer = "{keys.issuer.hex().upper()}"')
            lines += [f'{name} = "{getattr(keys, name).hex().upper()}"' for name in _KEY_FIELDS]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> Keystore:
        """Read a keystore file: UTF-8 TOML of at most `KEYSTORE_LIMIT` bytes; `CryptoError`
        names the file and the problem."""
        text = read_utf8(path, limit=KEYSTORE_LIMIT, what="keystore", error=CryptoError)
        try:
            return cls.from_toml(text)
        except CryptoError as exc:
            raise CryptoError(f"{path}: {exc}") from None

    @classmethod
    def test(cls) -> Keystore:
        """The shipped test keystore (docs/protocol.md §6 test keys; ``test_keys = true``)."""
        text = (Path(__file__).parent.parent / "data" / TEST_KEYSTORE).read_text("utf-8")
        return cls.from_toml(text)


def _issuer(where: str, value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        issuer = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        issuer = b""
    if len(issuer) != 8:
        raise CryptoError(f"{where} issuer: the issuer id of the card's EF 0015, 16 hex digits")
    return issuer


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
