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
loudly when they use one.  ``[emv]`` holds the EMV/PBOC issuer master keys (AC, SMI,
SMC) per AID and derivation key index (`EmvIssuerKeys`); ``[rsa]`` the offline data
authentication keys: CA keys by RID and index (`CaRsaKey`), issuer keys by issuer
identifier (`IssuerRsaKey`) and a pool of ICC keys that personalization draws from
(`Keystore.icc_rsa_key`).  ``[sm2]`` is reserved for the PBOC 3.0 SM variant and kept as
read.

Keys never appear in a repr or a log line.

>>> ks = Keystore.test()
>>> ks.test_keys, [p.application for p in ks.purse], ks.purse_keys("etc").key_version
(True, ['transit', 'etc'], 2)
>>> ks.emv_issuer_keys(bytes.fromhex("A000000333010101")).dki
1
>>> ks.issuer_rsa("6230123456789012345").issuer_id, ks.ca_rsa(ks.rsa_ca[0].rid, 0xF1).index
('623012', 241)
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from unioncard.bounded_read import KEYSTORE_LIMIT, read_utf8
from unioncard.crypto.oda import CaPublicKey, PrivateKey
from unioncard.crypto.purse import CardKeys, diversify
from unioncard.errors import CryptoError

__all__ = [
    "FORMAT",
    "RESERVED_SECTIONS",
    "TEST_KEYSTORE",
    "VERSION",
    "CaRsaKey",
    "CardKeys",
    "EmvIssuerKeys",
    "IssuerRsaKey",
    "Keystore",
    "PurseKeys",
    "derive_card_keys",
]

FORMAT = "unioncard-keystore"
VERSION = 1
RESERVED_SECTIONS = ("emv", "rsa", "sm2")
"""Sections whose entries not defined yet are accepted and kept as read (`Keystore.reserved`):
all of ``[sm2]``; in ``[emv]`` all but ``issuer``, in ``[rsa]`` all but ``ca``, ``issuer``,
``icc``."""
_INTERPRETED = {"emv": {"issuer"}, "rsa": {"ca", "issuer", "icc"}, "sm2": set()}
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
class EmvIssuerKeys:
    """The EMV/PBOC issuer master keys of one AID at one derivation key index (DKI):
    cards carry the option A derivations of these (`unioncard.crypto.emv.derive_udk`)."""

    aid: bytes
    dki: int
    ac_mk: bytes = field(repr=False)
    smi_mk: bytes = field(repr=False)
    smc_mk: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.aid, bytes) or not 5 <= len(self.aid) <= 16:
            raise CryptoError("an AID has 5 to 16 bytes")
        if not isinstance(self.dki, int) or not 0 <= self.dki <= 0xFF:
            raise CryptoError(f"a derivation key index is 0..255, got {self.dki!r}")
        for name in _EMV_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 16:
                raise CryptoError(f"EMV {self.aid.hex().upper()} {name} must be 16 bytes")


@lru_cache(maxsize=64)
def _private(pem: str) -> PrivateKey:
    return PrivateKey.from_pem(pem)


@dataclass(frozen=True, slots=True)
class CaRsaKey:
    """A certification authority RSA key (a test CA: real CA keys are never in a file)."""

    rid: bytes
    index: int
    expiry: str
    private_pem: str = field(repr=False)

    def __post_init__(self) -> None:
        self.capk  # noqa: B018 - checks RID, index, expiry and the key

    @property
    def private(self) -> PrivateKey:
        return _private(self.private_pem)

    @property
    def capk(self) -> CaPublicKey:
        """The public half as terminals hold it."""
        public = self.private.public
        return CaPublicKey(self.rid, self.index, public.modulus, public.exponent, self.expiry)


@dataclass(frozen=True, slots=True)
class IssuerRsaKey:
    """An issuer RSA key certified by the CA key ``rid``/``ca_index``, for the cards whose
    PAN starts with ``issuer_id`` (3-8 digits); ``expiry`` MMYY and ``serial`` go in the
    issuer certificate."""

    rid: bytes
    ca_index: int
    issuer_id: str
    expiry: str
    serial: int
    private_pem: str = field(repr=False)

    def __post_init__(self) -> None:
        if not (self.issuer_id.isdigit() and 3 <= len(self.issuer_id) <= 8):
            raise CryptoError(f"an issuer identifier is 3 to 8 digits, got {self.issuer_id!r}")
        if not (len(self.expiry) == 4 and self.expiry.isdigit()
                and 1 <= int(self.expiry[:2]) <= 12):
            raise CryptoError(f"an issuer certificate expiry is MMYY, got {self.expiry!r}")
        if not isinstance(self.serial, int) or not 0 <= self.serial <= 0xFFFFFF:
            raise CryptoError("an issuer certificate serial number is 0..FFFFFF")
        self.private  # noqa: B018 - the PEM must parse

    @property
    def private(self) -> PrivateKey:
        return _private(self.private_pem)


@dataclass(frozen=True, slots=True)
class Keystore:
    """A parsed keystore file."""

    purse: tuple[PurseKeys, ...]
    test_keys: bool = False
    description: str = ""
    reserved: Mapping[str, Any] = field(default_factory=dict, repr=False)
    emv: tuple[EmvIssuerKeys, ...] = ()
    rsa_ca: tuple[CaRsaKey, ...] = ()
    rsa_issuer: tuple[IssuerRsaKey, ...] = ()
    rsa_icc: tuple[str, ...] = field(default=(), repr=False)
    """The ICC key pool, PEM private keys."""

    def __post_init__(self) -> None:
        emv_seen = set()
        for emv in self.emv:
            if (emv.aid, emv.dki) in emv_seen:
                raise CryptoError(f"EMV keys of {emv.aid.hex().upper()} DKI {emv.dki:02X} "
                                  "are listed twice")
            emv_seen.add((emv.aid, emv.dki))
        if len({(k.rid, k.index) for k in self.rsa_ca}) != len(self.rsa_ca):
            raise CryptoError("a CA key (RID and index) is listed twice")
        for issuer in self.rsa_issuer:
            self.ca_rsa(issuer.rid, issuer.ca_index)
        for pem in self.rsa_icc:
            _private(pem)
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

    # --- EMV and RSA -------------------------------------------------------------------

    def emv_issuer_keys(self, aid: bytes, dki: int | None = None) -> EmvIssuerKeys:
        """The issuer master keys of ``aid``: at ``dki``, or its highest DKI."""
        found = [k for k in self.emv if k.aid == aid and (dki is None or k.dki == dki)]
        if not found:
            at = "" if dki is None else f" at DKI {dki:02X}"
            raise CryptoError(f"the keystore has no EMV keys for {aid.hex().upper()}{at}")
        return max(found, key=lambda k: k.dki)

    def ca_rsa(self, rid: bytes, index: int) -> CaRsaKey:
        for key in self.rsa_ca:
            if key.rid == rid and key.index == index:
                return key
        raise CryptoError(f"the keystore has no CA key {rid.hex().upper()} {index:02X}")

    def issuer_rsa(self, pan: str) -> IssuerRsaKey:
        """The issuer RSA key for a PAN: the entry with the longest matching issuer id."""
        found = [k for k in self.rsa_issuer if pan.startswith(k.issuer_id)]
        if not found:
            raise CryptoError(f"the keystore has no issuer RSA key for PAN {pan[:6]}…")
        return max(found, key=lambda k: len(k.issuer_id))

    def icc_rsa_key(self, seed: bytes) -> PrivateKey:
        """An ICC key from the pool, chosen by SHA-256 of ``seed`` (the card's PAN and PSN):
        the same card always gets the same key, so card images are reproducible."""
        if not self.rsa_icc:
            raise CryptoError("the keystore has no ICC RSA keys ([[rsa.icc]])")
        pick = int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") % len(self.rsa_icc)
        return _private(self.rsa_icc[pick])

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
        for name in RESERVED_SECTIONS:
            if not isinstance(doc.get(name, {}), dict):
                raise CryptoError(f"[{name}] must be a table")
        reserved = {name: rest for name in RESERVED_SECTIONS if name in doc
                    if (rest := {k: v for k, v in doc[name].items()
                                 if k not in _INTERPRETED[name]})}
        rsa = doc.get("rsa", {})
        return cls(tuple(purse), test_keys, description, reserved,
                   emv=_emv_entries(doc.get("emv", {})),
                   rsa_ca=tuple(_ca_entry(f"[[rsa.ca]] #{i}", e)
                                for i, e in _entries(rsa, "ca", "[[rsa.ca]]")),
                   rsa_issuer=tuple(_issuer_entry(f"[[rsa.issuer]] #{i}", e)
                                    for i, e in _entries(rsa, "issuer", "[[rsa.issuer]]")),
                   rsa_icc=tuple(_icc_entry(f"[[rsa.icc]] #{i}", e)
                                 for i, e in _entries(rsa, "icc", "[[rsa.icc]]")))

    def to_toml(self) -> str:
        """The keystore as a TOML document that `from_toml` reads back (what `reserved`
        holds is not written: it must be carried over by hand)."""
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
        for emv in self.emv:
            lines += ["", "[[emv.issuer]]", f'aid = "{emv.aid.hex().upper()}"',
                      f"dki = 0x{emv.dki:02X}"]
            lines += [f'{name} = "{getattr(emv, name).hex().upper()}"' for name in _EMV_FIELDS]
        for ca in self.rsa_ca:
            lines += ["", "[[rsa.ca]]", f'rid = "{ca.rid.hex().upper()}"',
                      f"index = 0x{ca.index:02X}", f'expiry = "{ca.expiry}"',
                      f'private_key = """\n{ca.private_pem.strip()}\n"""']
        for issuer in self.rsa_issuer:
            lines += ["", "[[rsa.issuer]]", f'rid = "{issuer.rid.hex().upper()}"',
                      f"ca_index = 0x{issuer.ca_index:02X}", f'issuer_id = "{issuer.issuer_id}"',
                      f'expiry = "{issuer.expiry}"', f"serial = 0x{issuer.serial:06X}",
                      f'private_key = """\n{issuer.private_pem.strip()}\n"""']
        for pem in self.rsa_icc:
            lines += ["", "[[rsa.icc]]", f'private_key = """\n{pem.strip()}\n"""']
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


_EMV_FIELDS = ("ac_mk", "smi_mk", "smc_mk")


def _entries(section: Mapping[str, Any], name: str, where: str) -> list[tuple[int, dict[str, Any]]]:
    items = section.get(name, [])
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        raise CryptoError(f"{where} must be an array of tables")
    return list(enumerate(items, 1))


def _fields(where: str, entry: Mapping[str, Any], names: tuple[str, ...]) -> None:
    extra = sorted(set(entry) - set(names))
    if extra:
        raise CryptoError(f"{where}: unknown entries {', '.join(extra)}")
    missing = [n for n in names if n not in entry]
    if missing:
        raise CryptoError(f"{where}: missing {', '.join(missing)}")


def _hex(where: str, value: Any) -> bytes:
    try:
        return bytes.fromhex(value) if isinstance(value, str) else bytes.fromhex("?")
    except ValueError:
        raise CryptoError(f"{where}: not a hex string") from None


def _str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise CryptoError(f"{where}: must be a string")
    return value


def _emv_entries(section: Mapping[str, Any]) -> tuple[EmvIssuerKeys, ...]:
    out = []
    for i, entry in _entries(section, "issuer", "[[emv.issuer]]"):
        where = f"[[emv.issuer]] #{i}"
        _fields(where, entry, ("aid", "dki", *_EMV_FIELDS))
        keys = {n: _key(f"{where} {n}", entry[n]) for n in _EMV_FIELDS}
        out.append(EmvIssuerKeys(_hex(f"{where} aid", entry["aid"]), entry["dki"], **keys))
    return tuple(out)


def _ca_entry(where: str, entry: Mapping[str, Any]) -> CaRsaKey:
    _fields(where, entry, ("rid", "index", "expiry", "private_key"))
    try:
        return CaRsaKey(_hex(f"{where} rid", entry["rid"]), entry["index"],
                        _str(f"{where} expiry", entry["expiry"]),
                        _str(f"{where} private_key", entry["private_key"]))
    except (CryptoError, TypeError) as exc:
        raise CryptoError(f"{where}: {exc}") from None


def _issuer_entry(where: str, entry: Mapping[str, Any]) -> IssuerRsaKey:
    _fields(where, entry, ("rid", "ca_index", "issuer_id", "expiry", "serial", "private_key"))
    try:
        return IssuerRsaKey(_hex(f"{where} rid", entry["rid"]), entry["ca_index"],
                            _str(f"{where} issuer_id", entry["issuer_id"]),
                            _str(f"{where} expiry", entry["expiry"]), entry["serial"],
                            _str(f"{where} private_key", entry["private_key"]))
    except (CryptoError, TypeError) as exc:
        raise CryptoError(f"{where}: {exc}") from None


def _icc_entry(where: str, entry: Mapping[str, Any]) -> str:
    _fields(where, entry, ("private_key",))
    pem = _str(f"{where} private_key", entry["private_key"])
    try:
        _private(pem)
    except CryptoError as exc:
        raise CryptoError(f"{where}: {exc}") from None
    return pem


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
