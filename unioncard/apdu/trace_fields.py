"""Field-by-field reading of the non-TLV APDUs of a purse transaction, for trace display.

Purse and PSAM commands, and the purse and transit files, carry fixed layouts
rather than BER-TLV (docs/protocol.md §1, §3, §4).  Those layouts are declared once,
as construct structs, in `unioncard.apdu.purse` and `unioncard.apdu.records`;
here each struct field becomes a display name and a formatter chosen by its
name, so that ``trace decode`` shows "balance 20.00 yuan" instead of
``000007D0``.  Anything that does not fit its layout exactly is left as hex
(no fields).  The holder's id number (EF 0016) is masked like a PAN unless
``unmask``.

>>> command_fields(bytes.fromhex("805001020B0100000064000000001234"))
[('key index', '01'), ('amount', '1.00 yuan (100 fen)'), ('terminal id', '000000001234')]
>>> log = response_fields(bytes.fromhex("00B201C417"), bytes.fromhex(
...     "0005" "000000" "00000064" "06" "310100001234" "20250318" "074210"))
>>> log[:3]
[('seq', '5'), ('overdraft limit', '0.00 yuan (0 fen)'), ('amount', '1.00 yuan (100 fen)')]
>>> log[3:5]
[('type', '06 (EP purchase)'), ('terminal id', '310100001234')]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import construct as c

from unioncard.apdu import purse as ap
from unioncard.apdu import records
from unioncard.apdu.masking import mask_digits, mask_positions
from unioncard.apdu.records import CardType, MemberCategory, TransitRecordType

__all__ = [
    "command_detail",
    "command_fields",
    "hidden_nibbles",
    "mask_digits",
    "mask_positions",
    "response_fields",
    "yuan",
]

Fields = list[tuple[str, str]]
Show = Callable[[bytes], str]


def yuan(fen: int) -> str:
    """An amount in fen as yuan, exactly (money is integer fen)."""
    return f"{fen // 100}.{fen % 100:02d} yuan ({fen} fen)"


# --- formatters, by field name -----------------------------------------------------------------


def _hex(b: bytes) -> str:
    return b.hex().upper()


def _int(b: bytes) -> str:
    return str(int.from_bytes(b, "big"))


def _amount(b: bytes) -> str:
    return yuan(int.from_bytes(b, "big"))


def _date(b: bytes) -> str:
    text = b.hex()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 else text


def _time(b: bytes) -> str:
    text = b.hex()
    return f"{text[:2]}:{text[2:4]}:{text[4:6]}"


def _date_time(b: bytes) -> str:
    """BCD ``YYYYMMDDhhmmss`` as ``YYYY-MM-DD hh:mm:ss``."""
    return f"{_date(b[:4])} {_time(b[4:])}"


def _unix_time(b: bytes) -> str:
    seconds = int.from_bytes(b, "big")
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{seconds} ({when:%Y-%m-%d %H:%M:%S} UTC)"


def _meaning(names: dict[int, str], unknown: str = "unknown") -> Show:
    return lambda b: f"{b[0]:02X} ({names.get(b[0], unknown)})"


def _text(encoding: str) -> Show:
    """Zero-padded text; hex when it is not printable text."""
    def show(b: bytes) -> str:
        try:
            text = b.rstrip(b"\x00").decode(encoding)
        except UnicodeDecodeError:
            return _hex(b)
        return (text or "(empty)") if text.isprintable() else _hex(b)
    return show


def _categories(b: bytes) -> str:
    names = ", ".join(name for bit, name in _CATEGORIES.items() if b[0] & bit)
    return f"{b[0]:02X} ({names or 'none'})"


_TYPES = {1: "ED load", 2: "EP load", 3: "unload", 4: "cash withdrawal", 5: "ED purchase",
          6: "EP purchase", 7: "overdraft update", 9: "composite (CAPP) purchase"}
_CARD_TYPES: dict[int, str] = {CardType.UNION_MEMBER: "union member card",
                               CardType.ORDINARY: "ordinary card"}
_CATEGORIES = {MemberCategory.MODEL_WORKER: "model worker", MemberCategory.HARDSHIP: "hardship",
               MemberCategory.MUTUAL_AID: "mutual-aid participant"}
_TRANSIT_TYPES: dict[int, str] = {TransitRecordType.SINGLE_RIDE: "single ride",
                                  TransitRecordType.ENTRY: "entry", TransitRecordType.EXIT: "exit"}
_CAPP_STATUS = {1: "MTC entry", 2: "MTC exit", 3: "ETC entry", 4: "ETC exit"}

_SHOW: dict[str, Show] = {
    "amount": _amount, "balance": _amount, "balance_after": _amount,
    "overdraft": _amount, "overdraft_limit": _amount,
    "date": _date, "start": _date, "expiry": _date, "time": _time,
    "when": _date_time, "unix_time": _unix_time,
    "tx_type": _meaning(_TYPES),
    "card_type": _meaning(_CARD_TYPES, "other"), "user_type": _meaning(_CARD_TYPES, "other"),
    "category_flags": _categories,
    "transit_type": _meaning({1: "metro"}),
    "status": _meaning(_CAPP_STATUS),
    "plate": _text("gbk"), "name": _text("gbk"), "id_number": _text("ascii"),
}
"""Formatter by field name (``seq`` and ``*_seq`` are decimal); any other field is hex."""

_NAMES = {
    "mac": "MAC", "mac1": "MAC1", "mac2": "MAC2", "tac": "TAC", "alg_id": "algorithm id",
    "app_serial": "application serial", "app_type": "application type",
    "app_version": "version", "start": "valid from", "expiry": "valid until",
    "category_flags": "member categories", "diversifier": "card diversifier",
    "overdraft": "overdraft limit", "tx_type": "type", "card_no": "card number",
    "line_station": "line/station", "when": "date-time", "institution": "institution id",
    "staff_no": "staff number",
}
"""Display name by field name; any other is the field name with spaces."""

_SECRET = frozenset({"id_number"})
"""Fields masked like a PAN unless ``unmask``."""


# --- layouts from the structs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    size: int
    show: Show
    const: bytes | None  # the bytes a `c.Const` field must hold
    secret: bool


Layout = tuple[_Field, ...]
Reading = dict[int, Layout]
"""The layouts a payload may have, by their size."""


def _layout(struct: Any, **special: tuple[str, Show]) -> Layout:
    """Display fields of a construct struct; ``special`` overrides (name, formatter) by field."""
    out = []
    for sub in struct.subcons:
        name, show = special.get(sub.name) or (
            _NAMES.get(sub.name, sub.name.replace("_", " ")),
            _int if sub.name == "seq" or sub.name.endswith("_seq") else _SHOW.get(sub.name, _hex))
        const = sub.subcon.value if isinstance(sub.subcon, c.Const) else None
        out.append(_Field(name, sub.sizeof(), show, const, sub.name in _SECRET))
    return tuple(out)


def _reading(*layouts: Any) -> Reading:
    """Layouts by size; a struct stands for its `_layout`."""
    built = [item if isinstance(item, tuple) else _layout(item) for item in layouts]
    return {sum(f.size for f in layout): layout for layout in built}


_NONE: Reading = {}
_ETC_INFO = _layout(records.ETC_INFO, card_type=("card type", _hex),
                    user_type=("user type", _meaning(_CARD_TYPES, "other")))
_TRANSIT_RECORD = _layout(records.TRANSIT_RECORD,
                          tx_type=("transaction type", _meaning(_TRANSIT_TYPES)))
_MAINTENANCE = _reading(ap.MAINTENANCE_COMMAND)

_TABLE: dict[tuple[int, int, int | None], tuple[Reading, Reading]] = {
    # (class 00/80, INS, P1 or None for any): (command data, response data)
    (0x80, 0x50, 0x00): (_reading(ap.INITIALIZE_COMMAND), _reading(ap.INIT_LOAD_RESPONSE)),
    (0x80, 0x50, None): (_reading(ap.INITIALIZE_COMMAND), _reading(ap.INIT_PURCHASE_RESPONSE)),
    (0x80, 0x52, None): (_reading(ap.CREDIT_FOR_LOAD_COMMAND),
                         _reading(ap.CREDIT_FOR_LOAD_RESPONSE)),
    (0x80, 0x54, None): (_reading(ap.DEBIT_COMMAND), _reading(ap.DEBIT_RESPONSE)),
    (0x80, 0x5A, None): (_reading(ap.PROVE_COMMAND), _reading(ap.PROVE_RESPONSE)),
    (0x80, 0x5C, None): (_NONE, _reading(ap.BALANCE_RESPONSE)),
    (0x80, 0xDC, None): (_reading(records.CAPP_RECORD), _NONE),
    (0x80, 0x1E, None): (_MAINTENANCE, _NONE),  # APPLICATION BLOCK (CLA 84)
    (0x80, 0x18, None): (_MAINTENANCE, _NONE),  # APPLICATION UNBLOCK (CLA 84)
    (0x80, 0x70, 0x00): (_reading(ap.SAM_PURCHASE_COMMAND), _reading(ap.SAM_PURCHASE_RESPONSE)),
    (0x80, 0x70, None): (_NONE, _reading(ap.SAM_PURCHASE_RESPONSE)),
    (0x80, 0x72, None): (_reading(ap.SAM_CREDIT_COMMAND), _NONE),
    # READ BINARY by SFI: EF 0015 (T-Union 30 bytes, ETC 43), EF 0016 (PSAM 6, holder 55)
    (0x00, 0xB0, 0x95): (_NONE, _reading(records.TRANSIT_INFO, _ETC_INFO)),
    (0x00, 0xB0, 0x96): (_NONE, _reading(ap.TERMINAL_ID_RESPONSE, records.HOLDER)),
    # READ RECORD: the SFI (P2 >> 3) stands in for P1, the record number
    (0x00, 0xB2, 0x18): (_NONE, _reading(records.STORED_LOG_RECORD)),
    (0x00, 0xB2, 0x19): (_NONE, _reading(records.CAPP_RECORD)),
    (0x00, 0xB2, 0x1E): (_NONE, _reading(_TRANSIT_RECORD)),
}


def _readings(command: bytes) -> tuple[Reading, Reading]:
    if len(command) < 4:
        return _NONE, _NONE
    cla, ins, p1, p2 = command[:4]
    cls = cla & 0x80  # 84 is 80 with secure messaging; channels ignored
    key = (cls, ins, p2 >> 3 if ins == 0xB2 else p1)
    return _TABLE.get(key) or _TABLE.get((cls, ins, None)) or (_NONE, _NONE)


def _hidden(raw: bytes) -> range:
    """Byte positions of a secret field that masking hides (its zero padding aside)."""
    return mask_positions(len(raw.rstrip(b"\x00")))


def _read(reading: Reading, data: bytes, unmask: bool) -> Fields:
    layout = reading.get(len(data))
    if layout is None:
        return []
    out: Fields = []
    pos = 0
    for f in layout:
        raw = data[pos: pos + f.size]
        pos += f.size
        if f.const is not None and raw != f.const:
            return []
        if f.secret and not unmask:
            hide = _hidden(raw)
            raw = raw[:hide.start] + b"*" * len(hide) + raw[hide.stop:]
        out.append((f.name, f.show(raw)))
    return out


def _body(command: bytes) -> bytes:
    """The data field of a short case 3/4 command, or b''."""
    if len(command) > 5 and command[4] and len(command) in (5 + command[4], 6 + command[4]):
        return command[5: 5 + command[4]]
    return b""


def command_detail(command: bytes) -> str | None:
    """A short reading of P1/P2 and data: the AID selected, the record read, ..."""
    if len(command) < 4:
        return None
    cla, ins, p1, p2 = command[:4]
    data = _body(command)
    if ins == 0xA4 and data:
        if p1 == 0x04:
            text = data.decode("latin-1")
            shown = f" '{text}'" if text.isprintable() and text.isascii() else ""
            return f"by name {_hex(data)}{shown}"
        return f"file {_hex(data)}"
    if ins == 0xB2:
        return f"record {p1}, SFI {p2 >> 3}" if p2 >> 3 else f"record {p1}, current file"
    if ins == 0xB0:
        if p1 & 0x80:
            return f"SFI {p1 & 0x1F} (EF 00{p1 & 0x1F:02X}), offset {p2}"
        return f"offset {(p1 << 8) | p2}"
    if ins == 0xCA:
        return f"tag {p1:02X}{p2:02X}"
    if cla & 0x80 and ins == 0x50:
        return {1: "ED (passbook)", 2: "EP (purse)"}.get(p2)
    return None


def command_fields(command: bytes) -> Fields:
    """Fields of a command's data (purse, PSAM, UPDATE CAPP DATA CACHE, maintenance)."""
    if len(command) < 5:
        return []
    return _read(_readings(command)[0], _body(command), True)


def response_fields(command: bytes, data: bytes, unmask: bool = False) -> Fields:
    """Fields of a response's data given the command it answers (or continues)."""
    if not data:
        return []
    return _read(_readings(command)[1], data, unmask)


def hidden_nibbles(command: bytes, data: bytes) -> set[int]:
    """Nibble positions of the response data that masking hides (the holder's id number).

    >>> holder = bytes(22) + b"110105194912310021".ljust(32, b"\\0") + bytes(1)
    >>> hidden = hidden_nibbles(bytes.fromhex("00B0960037"), holder)
    >>> min(hidden), len(hidden)
    (56, 16)
    """
    layout = _readings(command)[1].get(len(data))
    hidden: set[int] = set()
    pos = 0
    for f in layout or ():
        if f.secret:
            hidden |= {2 * (pos + i) + k for i in _hidden(data[pos: pos + f.size]) for k in (0, 1)}
        pos += f.size
    return hidden
