"""Field-by-field reading of the non-TLV APDUs of a purse transaction, for trace display.

Purse and PSAM commands carry fixed layouts rather than BER-TLV (JR/T 0025.7
purchase/load, the PSAM MAC1 convention, the T-Union EF 0015); PROTOCOL.md §1,
§3 and §4 give them.  `command_fields` and `response_fields` name those fields
so that ``trace decode`` shows "balance 20.00 yuan" instead of ``000007D0``.
Anything that does not fit its layout exactly is left as hex (no fields).

>>> command_fields(bytes.fromhex("805001020B0100000064000000001234"))
[('key index', '01'), ('amount', '1.00 yuan (100 fen)'), ('terminal id', '000000001234')]
"""

from __future__ import annotations

from collections.abc import Callable

from unioncard.apdu.records import CardType, MemberCategory

__all__ = ["command_detail", "command_fields", "response_fields", "yuan"]

Fields = list[tuple[str, str]]


def yuan(fen: int) -> str:
    """An amount in fen as yuan, exactly (money is integer fen)."""
    return f"{fen // 100}.{fen % 100:02d} yuan ({fen} fen)"


def _hex(b: bytes) -> str:
    return b.hex().upper()


def _date(b: bytes) -> str:
    text = b.hex()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 else text


def _time(b: bytes) -> str:
    text = b.hex()
    return f"{text[:2]}:{text[2:4]}:{text[4:6]}"


_TYPES = {1: "ED load", 2: "EP load", 3: "unload", 4: "cash withdrawal", 5: "ED purchase",
          6: "EP purchase", 7: "overdraft update", 9: "composite (CAPP) purchase"}
_CARD_TYPES: dict[int, str] = {CardType.UNION_MEMBER: "union member card",
                              CardType.ORDINARY: "ordinary card"}
_CATEGORIES = {MemberCategory.MODEL_WORKER: "model worker", MemberCategory.HARDSHIP: "hardship",
               MemberCategory.MUTUAL_AID: "mutual-aid participant"}

# (name, size, formatter) per layout, from PROTOCOL.md
Layout = list[tuple[str, int, Callable[[bytes], str]]]
_AMOUNT: Callable[[bytes], str] = lambda b: yuan(int.from_bytes(b, "big"))  # noqa: E731
_INT: Callable[[bytes], str] = lambda b: str(int.from_bytes(b, "big"))  # noqa: E731
_TYPE: Callable[[bytes], str] = lambda b: f"{b[0]:02X} ({_TYPES.get(b[0], 'unknown')})"  # noqa: E731

_INIT_CMD: Layout = [("key index", 1, _hex), ("amount", 4, _AMOUNT), ("terminal id", 6, _hex)]
_INIT_PURCHASE: Layout = [("balance", 4, _AMOUNT), ("offline seq", 2, _INT),
                          ("overdraft limit", 3, _AMOUNT), ("key version", 1, _hex),
                          ("algorithm id", 1, _hex), ("random", 4, _hex)]
_INIT_LOAD: Layout = [("balance", 4, _AMOUNT), ("online seq", 2, _INT), ("key version", 1, _hex),
                      ("algorithm id", 1, _hex), ("random", 4, _hex), ("MAC1", 4, _hex)]
_DEBIT_CMD: Layout = [("terminal seq", 4, _INT), ("date", 4, _date), ("time", 3, _time),
                      ("MAC1", 4, _hex)]
_DEBIT: Layout = [("TAC", 4, _hex), ("MAC2", 4, _hex)]
_CREDIT_LOAD_CMD: Layout = [("date", 4, _date), ("time", 3, _time), ("MAC2", 4, _hex)]
_SAM_CMD: Layout = [("random", 4, _hex), ("offline seq", 2, _INT), ("amount", 4, _AMOUNT),
                    ("type", 1, _TYPE), ("date", 4, _date), ("time", 3, _time),
                    ("key version", 1, _hex), ("algorithm id", 1, _hex),
                    ("card diversifier", 8, _hex)]
_SAM: Layout = [("terminal seq", 4, _INT), ("MAC1", 4, _hex)]
_MAC2: Layout = [("MAC2", 4, _hex)]
_BALANCE: Layout = [("balance", 4, _AMOUNT)]
_PROVE: Layout = [("MAC2", 4, _hex), ("TAC", 4, _hex)]
_TUNION_0015: Layout = [
    ("issuer", 8, _hex), ("application type", 1, _hex), ("version", 1, _hex),
    ("application serial", 10, _hex), ("valid from", 4, _date), ("valid until", 4, _date),
    ("card type", 1, lambda b: f"{b[0]:02X} ({_CARD_TYPES.get(b[0], 'other')})"),
    ("member categories", 1, lambda b: f"{b[0]:02X} (" + (", ".join(
        name for bit, name in _CATEGORIES.items() if b[0] & bit) or "none") + ")"),
]
_TERMINAL_ID: Layout = [("terminal id", 6, _hex)]


def _read(layout: Layout, data: bytes) -> Fields:
    if len(data) != sum(size for _, size, _ in layout):
        return []
    out: Fields = []
    pos = 0
    for name, size, show in layout:
        out.append((name, show(data[pos: pos + size])))
        pos += size
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
    if len(command) < 5 or not command[0] & 0x80:
        return []
    ins, p1 = command[1], command[2]
    data = _body(command)
    if ins == 0x50:
        return _read(_INIT_CMD, data)
    if ins == 0x54:
        return _read(_DEBIT_CMD, data)
    if ins == 0x52:
        return _read(_CREDIT_LOAD_CMD, data)
    if ins == 0x70 and p1 == 0x00:
        return _read(_SAM_CMD, data)
    if ins == 0x72:
        return _read(_MAC2, data)
    return []


def response_fields(command: bytes, data: bytes) -> Fields:
    """Fields of a response's data given the command it answers (or continues)."""
    if len(command) < 4 or not data:
        return []
    cla, ins, p1 = command[0], command[1], command[2]
    if ins == 0xB0 and p1 == 0x95:
        return _read(_TUNION_0015, data)
    if ins == 0xB0 and p1 == 0x96:
        return _read(_TERMINAL_ID, data)
    if not cla & 0x80:
        return []
    if ins == 0x50:
        return _read(_INIT_LOAD if p1 == 0x00 else _INIT_PURCHASE, data)
    if ins == 0x54:
        return _read(_DEBIT, data)
    if ins == 0x52:
        return _read([("TAC", 4, _hex)], data)
    if ins == 0x5C:
        return _read(_BALANCE, data)
    if ins == 0x5A:
        return _read(_PROVE, data)
    if ins == 0x70:
        return _read(_SAM, data)
    return []
