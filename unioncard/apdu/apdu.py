"""Command and response APDUs (ISO/IEC 7816-4 §5.1, §5.2).

A command APDU is one of four cases: 1 (header only), 2 (Le), 3 (Lc + data),
4 (Lc + data + Le), each in short or extended length.  ``le`` is the number of
bytes the terminal expects, 1..256 (short) or 1..65536 (extended); 256 and
65536 are encoded as ``00`` and ``0000``.  An encoding that was extended stays
extended on re-encoding, even when its values would fit the short form, so
``to_bytes(from_bytes(b)) == b`` for every valid encoding.

>>> c = CommandAPDU.from_bytes(bytes.fromhex("00A404000E315041592E5359532E444446303100"))
>>> c.ins, c.data, c.le
(164, b'1PAY.SYS.DDF01', 256)
>>> ResponseAPDU.from_bytes(bytes.fromhex("6A82")).sw == 0x6A82
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unioncard.errors import DecodeError

__all__ = ["CommandAPDU", "ResponseAPDU"]

SHORT_MAX_LC = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_LC = 65535
EXTENDED_MAX_LE = 65536


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte (0..255), got {value!r}")


@dataclass(frozen=True, slots=True)
class CommandAPDU:
    """A command APDU; ``extended`` is set automatically when the values need it."""

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    le: int | None = None
    extended: bool = field(default=False, compare=True)

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            _check_byte(name, getattr(self, name))
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > EXTENDED_MAX_LC:
            raise ValueError(f"command data of {len(self.data)} bytes exceeds {EXTENDED_MAX_LC}")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX_LE:
            raise ValueError(f"Le must be 1..{EXTENDED_MAX_LE} or None, got {self.le}")
        needs_extended = len(self.data) > SHORT_MAX_LC or (
            self.le is not None and self.le > SHORT_MAX_LE
        )
        if needs_extended and not self.extended:
            object.__setattr__(self, "extended", True)
        if self.extended and not self.data and self.le is None:
            # Case 1 has no length field, so it cannot be extended.
            object.__setattr__(self, "extended", False)

    @property
    def case(self) -> int:
        """ISO 7816-4 case: 1 none, 2 Le, 3 Lc+data, 4 Lc+data+Le."""
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def with_le(self, le: int | None) -> CommandAPDU:
        """The same command asking for ``le`` bytes (used for a ``6Cxx`` re-send)."""
        return CommandAPDU(self.cla, self.ins, self.p1, self.p2, self.data, le, self.extended)

    def to_bytes(self) -> bytes:
        out = bytearray(self.header)
        if self.extended:
            if self.data:
                out += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
                if self.le is not None:
                    out += (self.le % EXTENDED_MAX_LE).to_bytes(2, "big")
            elif self.le is not None:
                out += b"\x00" + (self.le % EXTENDED_MAX_LE).to_bytes(2, "big")
        else:
            if self.data:
                out += bytes((len(self.data),)) + self.data
            if self.le is not None:
                out.append(self.le % SHORT_MAX_LE)
        return bytes(out)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CommandAPDU:
        """Parse any of the seven encodings; anything else raises `DecodeError`."""
        raw = bytes(raw)
        n = len(raw)
        if n < 4:
            raise DecodeError(f"command APDU of {n} bytes is shorter than its 4-byte header", n)
        cla, ins, p1, p2 = raw[:4]
        if n == 4:
            return cls(cla, ins, p1, p2)
        if n == 5:  # case 2S
            return cls(cla, ins, p1, p2, le=raw[4] or SHORT_MAX_LE)
        b5 = raw[4]
        if b5 != 0:  # case 3S or 4S
            if n == 5 + b5:
                return cls(cla, ins, p1, p2, raw[5:])
            if n == 6 + b5:
                return cls(cla, ins, p1, p2, raw[5:-1], raw[-1] or SHORT_MAX_LE)
            raise DecodeError(f"short Lc {b5} does not match a command of {n} bytes", 4)
        # extended: B5 = 00, then two length bytes
        if n < 7:
            raise DecodeError(f"extended length field truncated in a command of {n} bytes", 4)
        length = int.from_bytes(raw[5:7], "big")
        if n == 7:  # case 2E
            return cls(cla, ins, p1, p2, le=length or EXTENDED_MAX_LE, extended=True)
        if length == 0:
            raise DecodeError("extended Lc of 0000 is not allowed", 5)
        if n == 7 + length:  # case 3E
            return cls(cla, ins, p1, p2, raw[7:], extended=True)
        if n == 9 + length:  # case 4E
            le = int.from_bytes(raw[-2:], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, raw[7:-2], le, extended=True)
        raise DecodeError(f"extended Lc {length} does not match a command of {n} bytes", 5)

    def __str__(self) -> str:
        return self.to_bytes().hex(" ").upper()


@dataclass(frozen=True, slots=True)
class ResponseAPDU:
    """A response APDU: data, then the status word SW1 SW2."""

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        if not 0 <= self.sw <= 0xFFFF:
            raise ValueError(f"status word must be 0000..FFFF, got {self.sw!r}")

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseAPDU:
        raw = bytes(raw)
        if len(raw) < 2:
            raise DecodeError(f"response APDU of {len(raw)} bytes has no status word", len(raw))
        return cls(raw[:-2], int.from_bytes(raw[-2:], "big"))

    def __str__(self) -> str:
        return self.to_bytes().hex(" ").upper()
