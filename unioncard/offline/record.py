"""The offline record: one completed terminal transaction in 256 bytes (docs/records.md).

Every purchase and every load a terminal completes becomes one `OfflineRecord`;
its bytes (`OFFLINE_RECORD`, format version 1, big-endian) are what batch files
carry to settlement and to third parties.  The record holds everything needed
to verify its TAC (docs/protocol.md §2: amount, type, terminal id and seq, date,
time; for loads the balance and online seq) and to re-price it (the tariff
rules applied, the rule set's version hash and rounding mode).

The last 4 bytes are the CRC-32 (`zlib.crc32`) of bytes 0..251, so a damaged
record is refused, never misread.  `mode` and `rounding` stay plain ints so
that reading records does not import the tariff engine: mode 0 is a load,
1 bus, 2 metro, 3 coach, 4 ferry, 5 taxi, 6 etc, 7 pos (`tariffs.model.Mode`);
rounding 0 half-up, 1 half-even, 2 down (`tariffs.money.ROUNDING_CODES`).

>>> import datetime as dt
>>> record = OfflineRecord(
...     terminal_id=bytes.fromhex("310100001234"), terminal_seq=42,
...     issuer=bytes.fromhex("10000000FFFFFFFF"), diversifier=bytes.fromhex("5500000000000042"),
...     application=Application.TRANSIT, card_seq=5, key_version=1,
...     tx_type=TransactionType.EP_PURCHASE, mode=1, card_type=0x55,
...     list_amount=200, charged_amount=180, balance_after=1820, rules=(0,),
...     when=dt.datetime(2026, 5, 1, 8, 30), tac=bytes.fromhex("1A2B3C4D"))
>>> raw = record.to_bytes()
>>> len(raw), raw[:7].hex().upper(), raw[-4:].hex().upper() == f"{zlib.crc32(raw[:252]):08X}"
(256, '01310100001234', True)
>>> OfflineRecord.from_bytes(raw) == record, record.discount, record.is_load
(True, 20, False)
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import construct as c

from unioncard.apdu.purse import TransactionType
from unioncard.apdu.records import BcdDate
from unioncard.errors import DecodeError

if TYPE_CHECKING:
    from unioncard.offline.emv_record import EmvRecord

__all__ = [
    "CRC_OFFSET",
    "MAX_RULES",
    "NO_RULE",
    "OFFLINE_RECORD",
    "RECORD_LAYOUT",
    "RECORD_SIZE",
    "RECORD_TX_TYPES",
    "RECORD_VERSION",
    "Application",
    "OfflineRecord",
    "RecordFlags",
    "TransactionType",
    "build_record",
    "check_expiry",
    "check_frame",
    "check_rules",
    "check_sized_fields",
    "check_text",
    "check_when",
    "construct_record",
    "decode_record",
    "layout_of",
    "offsets_of",
    "parse_fields",
]

RECORD_SIZE = 256
"""Bytes in one offline record, in every format version."""

RECORD_VERSION = 1
"""The format version this module writes and the only one it reads."""

CRC_OFFSET = RECORD_SIZE - 4
"""Where the CRC-32 sits; it covers bytes ``0 .. CRC_OFFSET - 1``."""

MAX_RULES = 8
"""Rule slots in a record: at most this many tariff rules per transaction."""

NO_RULE = 0xFFFF
"""Value of an unused rule slot."""


class Application(IntEnum):
    """Which purse of the card the transaction used."""

    TRANSIT = 1
    ETC = 2


RECORD_TX_TYPES = frozenset({TransactionType.EP_LOAD, TransactionType.EP_PURCHASE,
                             TransactionType.CAPP_PURCHASE})
"""The purse transaction types a record carries: loads, purchases, composite purchases."""


class RecordFlags(IntFlag):
    """How a transaction was completed.

    RECOVERED: completed by the terminal's recovery after an interruption;
    NO_TAC: completed from the card's counters or log, so there is no TAC (the
    record's TAC is zeros); UNVERIFIED: completion inferred from the counters
    alone, the card's log no longer showed it (implies NO_TAC).
    """

    RECOVERED = 0x01
    NO_TAC = 0x02
    UNVERIFIED = 0x04


_NO_FLAGS = RecordFlags(0)
_R = TypeVar("_R")
_ALL_FLAGS = int(RecordFlags.RECOVERED | RecordFlags.NO_TAC | RecordFlags.UNVERIFIED)
_MIN_YEAR = 1000  # BCD dates are built with strftime("%Y"), four digits from year 1000
_ROUNDING_CODES = range(3)  # tariffs.money.ROUNDING_CODES: half-up, half-even, down


# --- construct pieces ------------------------------------------------------------------


class _PaddedText(c.Adapter):  # type: ignore[misc]
    """Text in a fixed field, right-padded with ``00``; a ``00`` inside the text is refused."""

    def __init__(self, size: int, encoding: str) -> None:
        super().__init__(c.Bytes(size))
        self.size, self.encoding = size, encoding

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        text = obj.rstrip(b"\x00")
        if b"\x00" in text:
            raise c.ValidationError("a 00 byte inside the text (padding only at the end)",
                                    path=path)
        try:
            return text.decode(self.encoding)
        except UnicodeDecodeError:
            raise c.ValidationError(f"not {self.encoding} text", path=path) from None

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        raw = obj.encode(self.encoding)
        if len(raw) > self.size:
            raise c.ValidationError(f"{obj!r} takes {len(raw)} bytes, the field holds "
                                    f"{self.size}", path=path)
        return raw + bytes(self.size - len(raw))


class _BcdTime(c.Adapter):  # type: ignore[misc]
    """BCD ``HHMMSS`` (3 bytes) ⇄ `datetime.time`."""

    def _decode(self, obj: bytes, context: Any, path: str) -> dt.time:
        text = obj.hex()
        try:
            if not text.isdigit():
                raise ValueError
            return dt.time(int(text[:2]), int(text[2:4]), int(text[4:6]))
        except ValueError:
            raise c.ValidationError(f"{text.upper()} is not a BCD time HHMMSS",
                                    path=path) from None

    def _encode(self, obj: dt.time, context: Any, path: str) -> bytes:
        return bytes.fromhex(obj.strftime("%H%M%S"))


class _RuleSlots(c.Adapter):  # type: ignore[misc]
    """Eight uint16 rule slots ⇄ a tuple of the used ones; unused slots (``FFFF``) come last."""

    def _decode(self, obj: list[int], context: Any, path: str) -> tuple[int, ...]:
        used = tuple(index for index in obj if index != NO_RULE)
        if obj[len(used):] != [NO_RULE] * (MAX_RULES - len(used)):
            raise c.ValidationError("a used rule slot after an unused one (FFFF)", path=path)
        return used

    def _encode(self, obj: tuple[int, ...], context: Any, path: str) -> list[int]:
        if len(obj) > MAX_RULES:
            raise c.ValidationError(f"{len(obj)} rules, a record holds {MAX_RULES}", path=path)
        return [*obj, *[NO_RULE] * (MAX_RULES - len(obj))]


class _Crc32(c.Construct):  # type: ignore[misc]
    """uint32 CRC-32 (`zlib.crc32`) of the ``span`` bytes before it in the stream.

    Building writes it; parsing checks it (`construct.ChecksumError`).
    """

    def __init__(self, span: int) -> None:
        super().__init__()
        self.span = span
        self.flagbuildnone = True  # computed, never given

    def _preceding(self, stream: Any, path: str) -> int:
        end = c.stream_tell(stream, path)
        if end < self.span:
            raise c.ChecksumError(f"the CRC covers {self.span} bytes, {end} precede it",
                                  path=path)
        c.stream_seek(stream, end - self.span, 0, path)
        covered = c.stream_read(stream, self.span, path)
        return zlib.crc32(covered)

    def _parse(self, stream: Any, context: Any, path: str) -> int:
        computed = self._preceding(stream, path)
        stored = int.from_bytes(c.stream_read(stream, 4, path), "big")
        if stored != computed:
            raise c.ChecksumError(f"CRC-32 mismatch: expected {computed:08X}, found "
                                  f"{stored:08X}", path=path)
        return stored

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> int:
        computed = self._preceding(stream, path)
        c.stream_write(stream, computed.to_bytes(4, "big"), 4, path)
        return computed

    def _sizeof(self, context: Any, path: str) -> int:
        return 4


OFFLINE_RECORD = c.Struct(
    "record_version" / c.Const(RECORD_VERSION, c.Int8ub),
    "terminal_id" / c.Bytes(6),
    "terminal_seq" / c.Int32ub,  # purchases: the PSAM's seq; loads: the journal's load counter
    "issuer" / c.Bytes(8),  # EF 0015 issuer id
    "diversifier" / c.Bytes(8),  # transit: app serial[-8:]; ETC: card number
    "application" / c.Int8ub,  # Application: 1 transit, 2 etc
    "card_seq" / c.Int16ub,  # offline seq (purchase) / online seq (load), as INITIALIZE gave it
    "key_version" / c.Int8ub,
    "tx_type" / c.Int8ub,  # TransactionType: 02 load, 06 purchase, 09 CAPP purchase
    "mode" / c.Int8ub,  # 0 load, else tariffs Mode
    "card_type" / c.Int8ub,  # 55 union member, 01 ordinary
    "category_flags" / c.Int8ub,  # 01 model worker, 02 hardship, 04 mutual aid
    "member_status" / c.Int8ub,  # 0 none, 01 active, 02 reported lost, 03 cancelled
    "organization" / _PaddedText(48, "utf-8"),
    "card_expiry" / BcdDate,  # 00000000 = unknown
    "list_amount" / c.Int32ub,
    "charged_amount" / c.Int32ub,
    "balance_after" / c.Int32ub,
    "rules" / _RuleSlots(c.Array(MAX_RULES, c.Int16ub)),
    "route" / _PaddedText(16, "ascii"),
    "station" / c.Int16ub,
    "entry_station" / c.Int16ub,
    "merchant" / _PaddedText(24, "ascii"),
    "vehicle_class" / c.Int8ub,
    "mcc" / c.Int16ub,
    "date" / BcdDate,
    "time" / _BcdTime(c.Bytes(3)),
    "tac" / c.Bytes(4),
    "flags" / c.Int8ub,
    "ruleset_version" / c.Bytes(32),
    "rounding" / c.Int8ub,
    "reserved" / c.Padding(44),  # writers write zeros, version-1 readers ignore them
    "crc" / _Crc32(CRC_OFFSET),
)
"""Format version 1 of the offline record, 256 bytes (docs/records.md).

Building computes the CRC; parsing checks it and the version byte.  Prefer
`OfflineRecord.to_bytes` / `OfflineRecord.from_bytes`, which also validate the
values and name the failing field and its offset.
"""


def layout_of(struct: c.Struct, name: str) -> tuple[tuple[str, int, int], ...]:
    """(field, offset, size) of every field of the record layout ``struct`` (called
    ``name``), in order; a layout that is not `RECORD_SIZE` bytes fails on import."""
    rows, offset = [], 0
    for sub in struct.subcons:
        size = sub.sizeof()
        rows.append((sub.name, offset, size))
        offset += size
    if offset != RECORD_SIZE:  # pragma: no cover - a wrong declaration fails on import
        raise RuntimeError(f"{name} is {offset} bytes, not {RECORD_SIZE}")
    return tuple(rows)


def offsets_of(layout: tuple[tuple[str, int, int], ...]) -> dict[str, int]:
    """Each field's offset by name, ``when`` at the date's (for errors that name a field)."""
    offsets = {name: offset for name, offset, _ in layout}
    offsets["when"] = offsets["date"]
    return offsets


RECORD_LAYOUT = layout_of(OFFLINE_RECORD, "OFFLINE_RECORD")
"""(field, offset, size) of every field of `OFFLINE_RECORD`, in order."""

_OFFSETS = offsets_of(RECORD_LAYOUT)
_PATH_FIELD = re.compile(r"-> (\w+)")


# --- the record --------------------------------------------------------------------------


class _FieldError(ValueError):
    """A `ValueError` that knows which field is wrong (so decoding can give its offset)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.field = name


def _fail(name: str, message: str) -> NoReturn:
    raise _FieldError(name, message)


_BYTES_FIELDS = {"terminal_id": 6, "issuer": 8, "diversifier": 8, "tac": 4,
                 "ruleset_version": 32}
_INT_FIELDS = {"terminal_seq": 4, "card_seq": 2, "key_version": 1, "tx_type": 1, "mode": 1,
               "card_type": 1, "category_flags": 1, "member_status": 1, "list_amount": 4,
               "charged_amount": 4, "balance_after": 4, "station": 2, "entry_station": 2,
               "vehicle_class": 1, "mcc": 2, "rounding": 1}
_TEXT_FIELDS = {"organization": 48, "route": 16, "merchant": 24}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(name: str, value: object, size: int, *, utf8: bool) -> None:
    """A text field: UTF-8 without control characters (``utf8``) or printable ASCII, at
    most ``size`` bytes (`ValueError` naming the field)."""
    if not isinstance(value, str):
        _fail(name, f"must be a str, got {type(value).__name__}")
    if utf8:
        if any(ch < " " or "\x7f" <= ch < "\xa0" for ch in value):
            _fail(name, "control characters are not allowed")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            _fail(name, "not encodable as UTF-8")
    else:
        if any(not " " <= ch <= "~" for ch in value):
            _fail(name, f"printable ASCII only, got {value!r}")
        raw = value.encode("ascii")
    if len(raw) > size:
        _fail(name, f"{len(raw)} bytes, the field holds {size}")


def check_when(when: object) -> None:
    """The transaction's date and time: naive local time, whole seconds, year 1000 on."""
    if not isinstance(when, dt.datetime):
        _fail("when", f"must be a datetime, got {type(when).__name__}")
    if when.tzinfo is not None:
        _fail("when", "must be naive local time (the card keeps no time zone)")
    if when.microsecond:
        _fail("when", "the record keeps whole seconds; drop the microseconds")
    if when.year < _MIN_YEAR:
        _fail("when", f"years before {_MIN_YEAR} are not supported")


def check_expiry(expiry: object) -> None:
    """A card expiry: a date (not a datetime) or None."""
    if expiry is not None and (not isinstance(expiry, dt.date)
                               or isinstance(expiry, dt.datetime)):
        _fail("card_expiry", f"must be a date or None, got {type(expiry).__name__}")
    if expiry is not None and expiry.year < _MIN_YEAR:
        _fail("card_expiry", f"years before {_MIN_YEAR} are not supported")


def check_rules(rules: object) -> tuple[int, ...]:
    """The tariff rule indexes applied: at most `MAX_RULES`, each 0..FFFE."""
    if not isinstance(rules, tuple | list):
        _fail("rules", f"must be a tuple of rule indexes, got {type(rules).__name__}")
    if len(rules) > MAX_RULES:
        _fail("rules", f"{len(rules)} rules, a record holds at most {MAX_RULES}")
    for index in rules:
        if not _is_int(index) or not 0 <= index < NO_RULE:
            _fail("rules", f"rule index {index!r} is not in 0..{NO_RULE - 1}")
    return tuple(int(index) for index in rules)


def check_sized_fields(record: object, bytes_fields: dict[str, int],
                       int_fields: dict[str, int]) -> None:
    """Check a record's fixed-size fields as its layout holds them: each of ``bytes_fields``
    bytes of exactly its size, each of ``int_fields`` an unsigned integer of its size in
    bytes (stored back as a plain int, so an `IntEnum` member becomes its value)."""
    for name, size in bytes_fields.items():
        value = getattr(record, name)
        if not isinstance(value, bytes):
            _fail(name, f"must be bytes, got {type(value).__name__}")
        if len(value) != size:
            _fail(name, f"must be {size} bytes, got {len(value)}")
    for name, size in int_fields.items():
        value = getattr(record, name)
        if not _is_int(value):
            _fail(name, f"must be an int, got {type(value).__name__}")
        if not 0 <= value < 1 << (8 * size):
            _fail(name, f"must be an unsigned {8 * size}-bit integer, got {value}")
        object.__setattr__(record, name, int(value))


def build_record(compiled: Any, values: dict[str, Any]) -> bytes:
    """The 256 bytes a compiled record layout builds from a record's field ``values``
    (``when`` split into the layout's date and time), CRC included."""
    when = values.pop("when")
    try:
        return bytes(compiled.build({**values, "date": when.date(), "time": when.time()}))
    except c.ConstructError as exc:  # pragma: no cover - __post_init__ validated it all
        raise ValueError(f"cannot build the record: {exc}") from None


def check_frame(raw: bytes, noun: str) -> bytes:
    """``raw`` as bytes once its size is `RECORD_SIZE` and its CRC-32 matches; `DecodeError`
    otherwise, naming ``noun`` ("an offline record") for a wrong size."""
    raw = bytes(raw)
    if len(raw) != RECORD_SIZE:
        raise DecodeError(f"{noun} is {RECORD_SIZE} bytes, got {len(raw)}",
                          min(len(raw), RECORD_SIZE))
    stored = int.from_bytes(raw[CRC_OFFSET:], "big")
    computed = zlib.crc32(raw[:CRC_OFFSET])
    if stored != computed:
        raise DecodeError(f"record CRC-32 mismatch: expected {computed:08X} (bytes "
                          f"0..{CRC_OFFSET - 1}), found {stored:08X}", CRC_OFFSET)
    return raw


def parse_fields(struct: c.Construct, compiled: Any, offsets: dict[str, int], raw: bytes,
                 names: list[str]) -> dict[str, Any]:
    """The fields ``names`` of a framed record parsed by ``compiled`` (``struct`` names the
    field when it refuses them), ``when`` joined from the date and time; `DecodeError`
    with the offset otherwise."""
    try:
        parsed = compiled.parse(raw)
    except c.ConstructError as fast_error:
        raise _decode_error_of(struct, offsets, raw, fast_error) from None
    if parsed.date is None:
        raise DecodeError("date: 00000000 is not a transaction date", offsets["date"])
    values = {name: parsed[name] for name in names if name != "when"}
    values["when"] = dt.datetime.combine(parsed.date, parsed.time)
    return values


def construct_record(cls: Callable[..., _R], offsets: dict[str, int],
                     values: dict[str, Any]) -> _R:
    """``cls(**values)``, a field it refuses as `DecodeError` at that field's offset."""
    try:
        return cls(**values)
    except _FieldError as exc:
        raise DecodeError(f"invalid record: {exc}", offsets[exc.field]) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class OfflineRecord:
    """One completed purchase or load, as settlement receives it (format version 1).

    Ids, the TAC and the rule set's version hash are bytes, amounts integer fen,
    ``when`` the naive local date and time sent to the card (whole seconds).
    Fields are keyword-only; those that may be absent (member data, route,
    station, merchant, flags, rule set, ...) default to "none".  Construction
    validates every field and raises `ValueError` naming it.
    """

    terminal_id: bytes
    terminal_seq: int
    issuer: bytes
    diversifier: bytes
    application: Application
    card_seq: int
    key_version: int
    tx_type: int
    mode: int
    card_type: int
    category_flags: int = 0
    member_status: int = 0
    organization: str = ""
    card_expiry: dt.date | None = None
    list_amount: int
    charged_amount: int
    balance_after: int
    rules: tuple[int, ...] = ()
    route: str = ""
    station: int = 0
    entry_station: int = 0
    merchant: str = ""
    vehicle_class: int = 0
    mcc: int = 0
    when: dt.datetime
    tac: bytes
    flags: RecordFlags = _NO_FLAGS
    ruleset_version: bytes = bytes(32)
    rounding: int = 0

    def __post_init__(self) -> None:
        check_sized_fields(self, _BYTES_FIELDS, _INT_FIELDS)
        self._check_enums()
        self._check_text()
        self._check_dates()
        self._check_rules()
        self._check_kind()

    def _check_enums(self) -> None:
        if not _is_int(self.application):
            _fail("application", f"must be an Application, got {self.application!r}")
        try:
            object.__setattr__(self, "application", Application(self.application))
        except ValueError:
            _fail("application", f"unknown application {self.application}")
        if not _is_int(self.flags) or self.flags & ~_ALL_FLAGS:
            _fail("flags", f"unknown flags {self.flags!r}")
        flags = RecordFlags(self.flags)
        object.__setattr__(self, "flags", flags)
        if flags & RecordFlags.UNVERIFIED and not flags & RecordFlags.NO_TAC:
            _fail("flags", "UNVERIFIED implies NO_TAC")
        if (self.tac == bytes(4)) != bool(flags & RecordFlags.NO_TAC):
            _fail("tac", "must be zeros exactly when the NO_TAC flag is set")
        if self.tx_type not in RECORD_TX_TYPES:
            _fail("tx_type", f"{self.tx_type:#04x} is not 02 (load), 06 (purchase) or "
                             "09 (CAPP purchase)")
        if self.rounding not in _ROUNDING_CODES:
            _fail("rounding", f"{self.rounding} is not 0 (half-up), 1 (half-even) or 2 (down)")

    def _check_text(self) -> None:
        for name, size in _TEXT_FIELDS.items():
            check_text(name, getattr(self, name), size, utf8=name == "organization")

    def _check_dates(self) -> None:
        check_when(self.when)
        check_expiry(self.card_expiry)

    def _check_rules(self) -> None:
        object.__setattr__(self, "rules", check_rules(self.rules))

    def _check_kind(self) -> None:
        if self.is_load:
            if self.mode != 0:
                _fail("mode", "a load has mode 0")
            if self.charged_amount != self.list_amount:
                _fail("charged_amount", "a load charges its list amount (the loaded amount)")
            if self.rules:
                _fail("rules", "a load applies no tariff rules")
            if self.ruleset_version != bytes(32):
                _fail("ruleset_version", "a load has no rule set (zeros)")
        else:
            if self.mode == 0:
                _fail("mode", "mode 0 is a load, a purchase has its tariff mode (1..255)")
            if self.charged_amount > self.list_amount:
                _fail("charged_amount", f"{self.charged_amount} exceeds the list amount "
                                        f"{self.list_amount}")

    # --- derived values -----------------------------------------------------------------

    @property
    def is_load(self) -> bool:
        """True for an EP load (tx_type 02), False for a purchase."""
        return self.tx_type == TransactionType.EP_LOAD

    @property
    def discount(self) -> int:
        """List amount minus charged amount, in fen (0 for loads)."""
        return self.list_amount - self.charged_amount

    def computed_tac(self, dtk: bytes) -> bytes:
        """The TAC the card computes over this record's fields with its TAC key ``dtk``
        (the load TAC or the purchase TAC, docs/protocol.md §2.4): what settlement checks
        ``tac`` against."""
        from unioncard.apdu.purse import bcd_datetime
        from unioncard.crypto import purse as pc

        date, time = bcd_datetime(self.when)
        if self.is_load:
            return pc.load_tac(dtk, self.balance_after, self.card_seq, self.charged_amount,
                               self.tx_type, self.terminal_id, date, time)
        return pc.purchase_tac(dtk, self.charged_amount, self.tx_type, self.terminal_id,
                               self.terminal_seq, date, time)

    # --- bytes --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The 256 bytes of the record, CRC included."""
        return build_record(_compiled(), {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_bytes(cls, raw: bytes) -> OfflineRecord:
        """Decode 256 bytes; `DecodeError` (with the offset) for a wrong size, a CRC
        mismatch, an unknown version or a field that is not valid."""
        raw = check_frame(raw, "an offline record")
        if raw[0] != RECORD_VERSION:
            raise DecodeError(f"unknown record_version {raw[0]} (this reader knows version "
                              f"{RECORD_VERSION})", 0)
        values = parse_fields(OFFLINE_RECORD, _compiled(), _OFFSETS, raw,
                              [f.name for f in fields(cls)])
        return construct_record(cls, _OFFSETS, values)

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: amounts and counters in integer fen and numbers, ids, codes,
        TAC and hashes in hex (bytes as 2 digits, station codes as 4), dates in ISO 8601,
        the application as its name, the flags as a list of names."""
        return {
            "record_version": RECORD_VERSION,
            "terminal_id": self.terminal_id.hex().upper(),
            "terminal_seq": self.terminal_seq,
            "issuer": self.issuer.hex().upper(),
            "diversifier": self.diversifier.hex().upper(),
            "application": self.application.name.lower(),
            "card_seq": self.card_seq,
            "key_version": f"{self.key_version:02X}",
            "tx_type": f"{self.tx_type:02X}",
            "mode": self.mode,
            "card_type": f"{self.card_type:02X}",
            "category_flags": f"{self.category_flags:02X}",
            "member_status": f"{self.member_status:02X}",
            "organization": self.organization,
            "card_expiry": None if self.card_expiry is None else self.card_expiry.isoformat(),
            "list_amount": self.list_amount,
            "charged_amount": self.charged_amount,
            "discount": self.discount,
            "balance_after": self.balance_after,
            "rules": list(self.rules),
            "route": self.route,
            "station": f"{self.station:04X}",
            "entry_station": f"{self.entry_station:04X}",
            "merchant": self.merchant,
            "vehicle_class": self.vehicle_class,
            "mcc": self.mcc,
            "when": self.when.isoformat(),
            "tac": self.tac.hex().upper(),
            "flags": [flag.name for flag in RecordFlags if flag in self.flags],
            "ruleset_version": self.ruleset_version.hex(),
            "rounding": self.rounding,
        }


@functools.cache
def _compiled() -> Any:
    """`OFFLINE_RECORD` compiled by construct (about twice as fast both ways), on first use."""
    return OFFLINE_RECORD.compile()


def _decode_error_of(struct: c.Construct, offsets: dict[str, int], raw: bytes,
                     fast_error: c.ConstructError) -> DecodeError:
    """The `DecodeError` for bytes the compiled parser refused: the reference parser
    names the field (compiled code loses the path)."""
    try:
        struct.parse(raw)
    except c.ConstructError as exc:
        name = _field_of(exc)
        return DecodeError(f"bad {name or 'field'}: {_message_of(exc)}", offsets.get(name, 0))
    return DecodeError(f"bad field: {_message_of(fast_error)}")  # pragma: no cover


def _field_of(exc: c.ConstructError) -> str:
    """The record field a construct error is about, from its path ("(parsing) -> route")."""
    match = _PATH_FIELD.search(str(getattr(exc, "path", "") or exc))
    return match.group(1) if match else ""


def _message_of(exc: c.ConstructError) -> str:
    text = str(exc)
    return text.split("\n", 1)[-1].strip() if "\n" in text else text


def decode_record(raw: bytes) -> OfflineRecord | EmvRecord:
    """Decode a record of either kind, by its first byte (docs/records.md, "Record kinds"):
    ``01`` a purse record (`OfflineRecord`), ``E1`` an EMV card sale (`EmvRecord`).
    `DecodeError` (with the offset) for a wrong size, a CRC mismatch, an unknown kind or
    version, or a field that is not valid."""
    raw = bytes(raw)
    if len(raw) == RECORD_SIZE and raw[0] != RECORD_VERSION and \
            int.from_bytes(raw[CRC_OFFSET:], "big") == zlib.crc32(raw[:CRC_OFFSET]):
        from unioncard.offline.emv_record import EMV_RECORD_VERSION, EmvRecord

        if raw[0] == EMV_RECORD_VERSION:
            return EmvRecord.from_bytes(raw)
        raise DecodeError(f"unknown record_version {raw[0]:02X} (this reader knows "
                          f"{RECORD_VERSION:02X}, a purse record, and "
                          f"{EMV_RECORD_VERSION:02X}, an EMV card sale)", 0)
    return OfflineRecord.from_bytes(raw)
