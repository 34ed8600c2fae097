"""An independent member card and PSAM written from docs/protocol.md alone.

These are test fixtures: a terminal engine that follows docs/protocol.md must work with
them exactly as with the project's own simulator.  Nothing here comes from the
``unioncard`` package; the crypto uses ``cryptography`` (DES/3DES in ECB) and the
standard library only.

Both classes have the shape of a virtual card: ``atr``, ``protocol`` (``"T=0"`` or
``"T=1"``, settable), ``power_on()``, ``reset()``, ``power_off()`` and
``transmit(command) -> response``.

Deliberate, protocol-allowed differences from a typical simulator, so that a
terminal leaning on one simulator's quirks fails:

- SELECT answers a minimal FCI: ``6F`` holding ``84`` (DF name) only;
- EF ``0016`` (holder data) is absent from both purses (``6A82``);
- the card's random numbers come from a seeded :class:`random.Random`;
- the purse's alg id byte is ``00``;
- T=0 is strict: case-4 answers come as ``61xx`` + GET RESPONSE, a case-2 command
  whose Le differs from the answer (``Le 00`` included) answers ``6Cxx``;
- a pending INITIALIZE is cancelled by any other command (only UPDATE CAPP DATA
  CACHE may come between INITIALIZE FOR CAPP PURCHASE and DEBIT), and a GET
  CHALLENGE random serves the very next command only;
- log records carry the seq returned by INITIALIZE (before the increment).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 moved TripleDES to the "decrepit" namespace
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore

__all__ = [
    "CAPP_AID_RECORD_ID",
    "ETC_KEYS",
    "MAX_BALANCE",
    "MEMBER_AID",
    "TRANSIT_AID",
    "TRANSIT_KEYS",
    "CardError",
    "CardNotPowered",
    "CardRemoved",
    "ProtocolCard",
    "ProtocolPsam",
    "des_encrypt",
    "diversify",
    "load_session_key",
    "pboc_mac",
    "purchase_session_key",
    "retail_mac",
    "tac_key",
    "tdes_encrypt",
    "transit_record",
]

# --------------------------------------------------------------------------
# Crypto (docs/protocol.md §2)
# --------------------------------------------------------------------------


def _ecb(key24: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key24), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(block) + ctx.finalize()


def des_encrypt(key8: bytes, block: bytes) -> bytes:
    """Single DES in ECB, computed as 3DES with K||K||K."""
    if len(key8) != 8:
        raise ValueError("single DES key must be 8 bytes")
    return _ecb(key8 * 3, block)


def _des_decrypt(key8: bytes, block: bytes) -> bytes:
    return _ecb(key8 * 3, block, decrypt=True)


def tdes_encrypt(key16: bytes, block: bytes) -> bytes:
    """Two-key 3DES EDE in ECB on one block (§2)."""
    if len(key16) != 16:
        raise ValueError("two-key 3DES key must be 16 bytes")
    return _ecb(key16 + key16[:8], block)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _pad80(data: bytes) -> bytes:
    padded = data + b"\x80"
    return padded + b"\x00" * (-len(padded) % 8)


def pboc_mac(key8: bytes, data: bytes) -> bytes:
    """PBOC MAC (§2): DES CBC-MAC, IV zero, always ``80 00..`` padded; leftmost 4 bytes."""
    chain = bytes(8)
    padded = _pad80(data)
    for i in range(0, len(padded), 8):
        chain = des_encrypt(key8, _xor(chain, padded[i : i + 8]))
    return chain[:4]


def retail_mac(key16: bytes, data: bytes, iv: bytes = bytes(8)) -> bytes:
    """ISO 9797-1 algorithm 3 with ``80`` padding (§2, block/unblock); 4 bytes."""
    if len(key16) != 16:
        raise ValueError("retail MAC key must be 16 bytes")
    k1, k2 = key16[:8], key16[8:]
    chain = iv
    padded = _pad80(data)
    for i in range(0, len(padded), 8):
        chain = des_encrypt(k1, _xor(chain, padded[i : i + 8]))
    return des_encrypt(k1, _des_decrypt(k2, chain))[:4]


def diversify(master16: bytes, f8: bytes) -> bytes:
    """One-level diversification (§2): 3DES(MK, F) || 3DES(MK, F xor FF..FF)."""
    if len(f8) != 8:
        raise ValueError("diversifier must be 8 bytes")
    return tdes_encrypt(master16, f8) + tdes_encrypt(master16, bytes(b ^ 0xFF for b in f8))


def purchase_session_key(dpk: bytes, random4: bytes, offline_seq2: bytes, tseq4: bytes) -> bytes:
    """SESPK = 3DES(DPK, random(4) || offline seq(2) || terminal seq[2:4]) (§2)."""
    return tdes_encrypt(dpk, random4 + offline_seq2 + tseq4[2:4])


def load_session_key(dlk: bytes, random4: bytes, online_seq2: bytes) -> bytes:
    """SESLK = 3DES(DLK, random(4) || online seq(2) || 80 00) (§2)."""
    return tdes_encrypt(dlk, random4 + online_seq2 + b"\x80\x00")


def tac_key(dtk: bytes) -> bytes:
    """TAC key = DTK[0:8] xor DTK[8:16] (§2)."""
    return _xor(dtk[:8], dtk[8:16])


# --------------------------------------------------------------------------
# Profile constants (docs/protocol.md §1, §4, §6)
# --------------------------------------------------------------------------

TRANSIT_AID = bytes.fromhex("A000000632010105")
MEMBER_AID = bytes.fromhex("F0554E494F4E43415244")
MF_NAME = b"1PAY.SYS.DDF01"
ETC_FID = bytes.fromhex("1001")
CAPP_AID_RECORD_ID = 0xAA  # first byte of the EF 0019 record (§4)
MAX_BALANCE = 100000  # fen (§1 profile)
MAX_MAC_ERRORS = 3  # §1 profile
KEY_INDEX = 0x01  # §2 profile
ALG_ID = 0x00  # deliberate: any alg id byte is protocol-allowed

TYPE_EP_LOAD = 0x02
TYPE_EP_PURCHASE = 0x06
TYPE_CAPP_PURCHASE = 0x09

#: §6 test master keys: (key version, MPK, MLK, MTK, maintenance MK).
TRANSIT_KEYS = (
    0x01,
    bytes.fromhex("404142434445464748494A4B4C4D4E4F"),
    bytes.fromhex("505152535455565758595A5B5C5D5E5F"),
    bytes.fromhex("606162636465666768696A6B6C6D6E6F"),
    bytes.fromhex("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"),
)
ETC_KEYS = (
    0x02,
    bytes.fromhex("707172737475767778797A7B7C7D7E7F"),
    bytes.fromhex("808182838485868788898A8B8C8D8E8F"),
    bytes.fromhex("909192939495969798999A9B9C9D9E9F"),
    bytes.fromhex("B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF"),
)

SW_OK = 0x9000

# --------------------------------------------------------------------------
# Small encoders
# --------------------------------------------------------------------------


def _bytes(value: bytes | str, n: int, what: str) -> bytes:
    """``value`` as exactly ``n`` bytes (hex strings accepted)."""
    raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
    if len(raw) != n:
        raise ValueError(f"{what} must be {n} bytes, got {len(raw)}")
    return raw


def _bcd(digits: str, n: int, what: str) -> bytes:
    if not digits.isdigit() or len(digits) != 2 * n:
        raise ValueError(f"{what} must be {2 * n} decimal digits, got {digits!r}")
    return bytes.fromhex(digits)


def _tlv(tag: int, value: bytes) -> bytes:
    """One BER-TLV object (definite length, short or long form)."""
    tag_bytes = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82]) + n.to_bytes(2, "big")
    return tag_bytes + length + value


def transit_record(
    kind: int,
    amount: int,
    balance_after: int,
    when: str,
    *,
    terminal_id: bytes | str = "0000100100000001",
    transit_type: int = 0x01,
    line_station: bytes | str = "01000100000000",
    city: str = "1000",
    institution: bytes | str = "0000000000000000",
) -> bytes:
    """One 48-byte EF 001E transit record (§4); ``when`` is BCD ``YYYYMMDDhhmmss``."""
    record = (
        bytes([kind])
        + _bytes(terminal_id, 8, "terminal id")
        + bytes([transit_type])
        + _bytes(line_station, 7, "line/station")
        + amount.to_bytes(4, "big")
        + balance_after.to_bytes(4, "big")
        + _bcd(when, 7, "date-time")
        + _bcd(city, 2, "city code")
        + _bytes(institution, 8, "institution id")
        + bytes(6)
    )
    assert len(record) == 48
    return record


# --------------------------------------------------------------------------
# APDU and the virtual-card transport (§1 61xx / 6Cxx)
# --------------------------------------------------------------------------


class CardError(Exception):
    """Base class of the errors a virtual card raises instead of answering."""


class CardNotPowered(CardError):
    """``transmit`` on a card that is not powered."""


class CardRemoved(CardError):
    """The card left the field during a command (see ``pull_at``)."""


@dataclass(frozen=True, slots=True)
class Apdu:
    """A parsed short command APDU; ``le`` is None when absent."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None

    @classmethod
    def parse(cls, raw: bytes) -> Apdu:
        if len(raw) < 4:
            raise ValueError("APDU shorter than its header")
        cla, ins, p1, p2 = raw[:4]
        if len(raw) == 4:
            return cls(cla, ins, p1, p2, b"", None)
        if len(raw) == 5:
            return cls(cla, ins, p1, p2, b"", raw[4])
        lc = raw[4]
        if lc == 0:
            raise ValueError("extended length not supported")
        if len(raw) == 5 + lc:
            return cls(cla, ins, p1, p2, raw[5:], None)
        if len(raw) == 6 + lc:
            return cls(cla, ins, p1, p2, raw[5:-1], raw[-1])
        raise ValueError("Lc does not match the APDU length")


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


@dataclass(slots=True)
class _Pull:
    ins: int
    when: str
    skip: int
    error: BaseException | type[BaseException] | None


def _atr(protocol: str, historical: bytes) -> bytes:
    """ATR: T=0 ``3B 6K 00 00 hist``; T=1 ``3B 8K 80 01 hist TCK``."""
    k = len(historical)
    if protocol == "T=0":
        return bytes([0x3B, 0x60 | k, 0x00, 0x00]) + historical
    body = bytes([0x80 | k, 0x80, 0x01]) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


class _VirtualCard:
    """Power, ATR, T=0/T=1 case handling and card pulls shared by card and PSAM.

    Subclasses keep every piece of mutable state in ``self._st`` (restored when a
    command must be refused with ``6Cxx``) and implement ``_process`` and
    ``_power_reset``.
    """

    _historical = b""
    _st: Any

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self._powered = False
        self._response: tuple[bytes, int] | None = None  # T=0 data awaiting GET RESPONSE
        self._pulls: list[_Pull] = []

    # -- virtual-card shape ------------------------------------------------

    @property
    def protocol(self) -> str:
        return self._protocol

    @protocol.setter
    def protocol(self, value: str) -> None:
        if value not in ("T=0", "T=1"):
            raise ValueError(f"protocol must be 'T=0' or 'T=1', not {value!r}")
        self._protocol = value

    @property
    def atr(self) -> bytes:
        return _atr(self._protocol, self._historical)

    @property
    def powered(self) -> bool:
        return self._powered

    def power_on(self) -> bytes:
        """Cold reset: volatile state cleared, the MF selected; returns the ATR."""
        self._powered = True
        self._response = None
        self._power_reset()
        return self.atr

    def reset(self) -> bytes:
        """Warm reset: same effect as ``power_on``."""
        return self.power_on()

    def power_off(self) -> None:
        self._powered = False
        self._response = None
        self._power_reset()

    def pull_at(
        self,
        ins: int,
        when: str = "before",
        *,
        skip: int = 0,
        error: BaseException | type[BaseException] | None = None,
    ) -> None:
        """Make the card leave the field at the next command with INS ``ins``.

        ``when="before"``: the command does not execute; ``"after"``: it commits its
        effect and the answer is lost.  Either way ``transmit`` raises ``error``
        (default :class:`CardRemoved`) and the card stays unpowered until
        ``power_on()``.  ``skip`` lets that many matching commands through first.
        """
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self._pulls.append(_Pull(ins & 0xFF, when, skip, error))

    def transmit(self, command: bytes) -> bytes:
        """Answer one command APDU with response data + SW1 SW2."""
        command = bytes(command)
        if not self._powered:
            raise CardNotPowered("the card is not powered")
        pull = self._take_pull(command)
        if pull is not None and pull.when == "before":
            self._pull(pull)
        answer = self._exchange(command)
        if pull is not None:
            self._pull(pull)
        return answer

    # -- internals ---------------------------------------------------------

    def _take_pull(self, command: bytes) -> _Pull | None:
        if len(command) < 2:
            return None
        for pull in self._pulls:
            if pull.ins == command[1]:
                if pull.skip:
                    pull.skip -= 1
                    return None
                self._pulls.remove(pull)
                return pull
        return None

    def _pull(self, pull: _Pull) -> None:
        self.power_off()
        error = pull.error
        if error is None:
            error = CardRemoved(f"card removed at INS {pull.ins:02X} ({pull.when})")
        raise error

    def _exchange(self, command: bytes) -> bytes:
        try:
            apdu = Apdu.parse(command)
        except ValueError:
            self._response = None
            return _sw(0x6700)
        if apdu.cla == 0x00 and apdu.ins == 0xC0:
            return self._get_response(apdu)
        self._response = None
        # A 6Cxx answer means "not executed": keep a copy to roll back.
        may_refuse = (not apdu.data) if self._protocol == "T=0" else bool(apdu.le)
        snapshot = copy.deepcopy(self._st) if may_refuse else None
        data, sw = self._process(apdu)
        if not data or not (sw == SW_OK or sw >> 8 in (0x62, 0x63)):
            return _sw(sw)
        if self._protocol == "T=0":
            if apdu.data:  # case 4: the data waits for GET RESPONSE
                self._response = (data, sw)
                return _sw(0x6100 | (len(data) & 0xFF))
            if (apdu.le or 256) != len(data):
                self._st = snapshot
                return _sw(0x6C00 | (len(data) & 0xFF))
            return data + _sw(sw)
        if apdu.le and apdu.le < len(data):
            self._st = snapshot
            return _sw(0x6C00 | (len(data) & 0xFF))
        return data + _sw(sw)

    def _get_response(self, apdu: Apdu) -> bytes:
        """GET RESPONSE ``00 C0 00 00 xx`` (§1, T=0)."""
        if apdu.p1 or apdu.p2:
            return _sw(0x6A86)
        if self._response is None or apdu.data:
            self._response = None
            return _sw(0x6985)
        data, sw = self._response
        wanted = apdu.le or 256
        if wanted > len(data):
            return _sw(0x6C00 | (len(data) & 0xFF))
        if wanted < len(data):
            self._response = (data[wanted:], sw)
            return data[:wanted] + _sw(0x6100 | ((len(data) - wanted) & 0xFF))
        self._response = None
        return data + _sw(sw)

    def _process(self, apdu: Apdu) -> tuple[bytes, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _power_reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _fci(name: bytes) -> bytes:
    """Minimal FCI: ``6F`` with the DF name ``84`` only (deliberate)."""
    return _tlv(0x6F, _tlv(0x84, name))


# --------------------------------------------------------------------------
# The member card
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Purse:
    """One EP application's purse (§1, §2) and its files."""

    key_version: int
    dpk: bytes
    dlk: bytes
    dtk: bytes
    dmk: bytes
    diversifier: bytes
    balance: int
    offline_seq: int
    online_seq: int
    ef0015: bytes
    log: list[bytes] = field(default_factory=list)  # newest first
    blocked: bool = False
    locked: bool = False
    mac_errors: int = 0
    proof: tuple[int, int, bytes, bytes] | None = None  # seq, type, MAC2, TAC


@dataclass(slots=True)
class _Pending:
    """An INITIALIZE waiting for its CREDIT / DEBIT (volatile)."""

    kind: str  # "load" | "purchase" | "capp"
    app: str
    amount: int
    terminal_id: bytes
    random: bytes
    seq: int
    cache: dict[int, bytes] = field(default_factory=dict)  # CAPP record id -> record


@dataclass(slots=True)
class _CardState:
    purses: dict[str, _Purse]
    capp_records: list[bytes] | None  # EF 0019 of the ETC application
    transit_records: list[bytes] | None  # EF 001E, newest first; None: no such EF
    member_file: bytes | None
    rng: random.Random
    log_capacity: int
    current: str = "mf"  # "mf" | "transit" | "etc" | "member"
    pending: _Pending | None = None
    challenge: bytes | None = None


def _log_record(
    seq: int, amount: int, kind: int, terminal_id: bytes, date: bytes, time: bytes
) -> bytes:
    """EF 0018 record (§4): seq(2) overdraft(3) amount(4) type(1) tid(6) date(4) time(3)."""
    return (
        seq.to_bytes(2, "big")
        + bytes(3)
        + amount.to_bytes(4, "big")
        + bytes([kind])
        + terminal_id
        + date
        + time
    )


class ProtocolCard(_VirtualCard):
    """A union member card per docs/protocol.md §1-§4, §6: T-Union purse, ETC, member app."""

    _historical = b"PROTOCOL-CARD"

    def __init__(
        self,
        *,
        transit_balance: int = 5000,
        etc_balance: int = 2000,
        transit_offline_seq: int = 0,
        transit_online_seq: int = 0,
        etc_offline_seq: int = 0,
        etc_online_seq: int = 0,
        card_type: int = 0x55,
        categories: int = 0x00,
        start_date: str = "20260101",
        expiry_date: str = "20351231",
        app_serial: bytes | str = "31000000000020260001",
        etc_card_no: bytes | str = "1101260000000001",
        plate: str = "京A12345",
        transit_issuer: bytes | str = "0200310000000000",
        transit_app_type: int = 0x02,
        transit_app_version: int = 0x01,
        etc_issuer: bytes | str = "B1B1BEA911010001",
        etc_card_type: int = 0x16,
        etc_card_version: int = 0x40,
        etc_network: bytes | str = "1101",
        etc_user_type: int | None = None,
        etc: bool = True,
        member_app: bool | None = None,
        member_no: str = "20260001",
        member_name: str = "张三",
        member_org: str = "北京市总工会",
        member_categories: int | None = None,
        member_status: int = 0x01,
        member_valid_from: str = "20260101",
        member_valid_until: str = "20301231",
        transit_records: Sequence[bytes] | None = None,
        ef_001e: bool = True,
        transit_log: Sequence[bytes] = (),
        etc_log: Sequence[bytes] = (),
        log_capacity: int = 10,
        protocol: str = "T=1",
        seed: int = 0,
    ) -> None:
        """Personalize the card.

        ``member_app=None`` installs the member application iff ``card_type`` is
        ``0x55``; ``etc_user_type=None`` is ``0x55`` for a member card, else ``00``;
        ``member_categories=None`` repeats ``categories``; ``transit_records=None``
        prefills EF 001E with an entry and an exit (pass ``()`` for an empty EF,
        ``ef_001e=False`` for no EF at all).  Logs are given newest first.
        """
        super().__init__(protocol)
        for value, what in ((transit_balance, "transit"), (etc_balance, "ETC")):
            if not 0 <= value <= MAX_BALANCE:
                raise ValueError(f"{what} balance {value} outside 0..{MAX_BALANCE}")
        serial = _bytes(app_serial, 10, "app serial")
        card_no = _bytes(etc_card_no, 8, "ETC card number")
        start = _bcd(start_date, 4, "start date")
        expiry = _bcd(expiry_date, 4, "expiry date")

        transit_0015 = (
            _bytes(transit_issuer, 8, "transit issuer")
            + bytes([transit_app_type, transit_app_version])
            + serial
            + start
            + expiry
            + bytes([card_type, categories])
        )
        purses = {
            "transit": self._purse(
                TRANSIT_KEYS,
                serial[-8:],
                transit_balance,
                transit_offline_seq,
                transit_online_seq,
                transit_0015,
                transit_log,
                log_capacity,
            )
        }
        capp_records = None
        if etc:
            plate_bytes = plate.encode("gbk")
            if len(plate_bytes) > 12:
                raise ValueError("plate longer than 12 bytes in GBK")
            user_type = etc_user_type
            if user_type is None:
                user_type = 0x55 if card_type == 0x55 else 0x00
            etc_0015 = (
                _bytes(etc_issuer, 8, "ETC issuer")
                + bytes([etc_card_type, etc_card_version])
                + _bytes(etc_network, 2, "ETC network")
                + card_no
                + start
                + expiry
                + plate_bytes.ljust(12, b"\x00")
                + bytes([user_type])
                + bytes(2)
            )
            purses["etc"] = self._purse(
                ETC_KEYS,
                card_no,
                etc_balance,
                etc_offline_seq,
                etc_online_seq,
                etc_0015,
                etc_log,
                log_capacity,
            )
            capp_records = [bytes([CAPP_AID_RECORD_ID, 0x29]) + bytes(41)]

        if member_app is None:
            member_app = card_type == 0x55
        member_file = None
        if member_app:
            cats = categories if member_categories is None else member_categories
            member_file = _tlv(
                0x70,
                _tlv(0xDF41, member_no.encode("ascii"))
                + _tlv(0xDF42, member_name.encode("utf-8"))
                + _tlv(0xDF43, member_org.encode("utf-8"))
                + _tlv(0xDF44, bytes([cats]))
                + _tlv(0xDF45, bytes([member_status]))
                + _tlv(0xDF46, _bcd(member_valid_from, 4, "member valid from"))
                + _tlv(0xDF47, _bcd(member_valid_until, 4, "member valid until")),
            )

        records: list[bytes] | None = None
        if ef_001e:
            if transit_records is None:
                # A real T-Union card after a metro ride: exit (newest) then entry.
                transit_records = (
                    transit_record(
                        0x04, 300, transit_balance, "20260301083512", line_station="02001200000000"
                    ),
                    transit_record(0x03, 0, transit_balance + 300, "20260301080105"),
                )
            records = [_bytes(r, 48, "transit record") for r in transit_records]

        self._st = _CardState(
            purses=purses,
            capp_records=capp_records,
            transit_records=records,
            member_file=member_file,
            rng=random.Random(seed),
            log_capacity=log_capacity,
        )
        self._pending_in: _Pending | None = None
        self._challenge_in: bytes | None = None

    @staticmethod
    def _purse(keys, f8, balance, offline, online, ef0015, log, capacity) -> _Purse:
        version, mpk, mlk, mtk, mmk = keys
        records = [_bytes(r, 23, "log record") for r in log][:capacity]
        return _Purse(
            key_version=version,
            dpk=diversify(mpk, f8),
            dlk=diversify(mlk, f8),
            dtk=diversify(mtk, f8),
            dmk=diversify(mmk, f8),
            diversifier=f8,
            balance=balance,
            offline_seq=offline,
            online_seq=online,
            ef0015=ef0015,
            log=records,
        )

    # -- inspection for tests ----------------------------------------------

    def _app(self, app: str) -> _Purse:
        try:
            return self._st.purses[app]
        except KeyError:
            raise KeyError(f"no purse application {app!r} (use 'transit' or 'etc')") from None

    def balance(self, app: str = "transit") -> int:
        return self._app(app).balance

    def offline_seq(self, app: str = "transit") -> int:
        return self._app(app).offline_seq

    def online_seq(self, app: str = "transit") -> int:
        return self._app(app).online_seq

    def log(self, app: str = "transit") -> list[bytes]:
        """Raw 23-byte EF 0018 records, newest first."""
        return list(self._app(app).log)

    def blocked(self, app: str = "transit") -> bool:
        return self._app(app).blocked

    def locked(self, app: str = "transit") -> bool:
        """Permanently locked after too many MAC errors (``9303``)."""
        return self._app(app).locked

    def diversifier(self, app: str = "transit") -> bytes:
        return self._app(app).diversifier

    def capp_record(self) -> bytes | None:
        """The 43-byte EF 0019 record (None without the ETC application)."""
        records = self._st.capp_records
        return records[0] if records else None

    def transit_records(self) -> list[bytes] | None:
        records = self._st.transit_records
        return None if records is None else list(records)

    # -- dispatch ------------------------------------------------------------

    def _power_reset(self) -> None:
        self._st.current = "mf"
        self._st.pending = None
        self._st.challenge = None

    _COMMANDS: ClassVar[dict[tuple[int, int], str]] = {
        (0x00, 0xA4): "_select",
        (0x00, 0xB0): "_read_binary",
        (0x00, 0xB2): "_read_record",
        (0x00, 0x84): "_get_challenge",
        (0x80, 0x50): "_initialize",
        (0x80, 0x52): "_credit_for_load",
        (0x80, 0x54): "_debit",
        (0x80, 0x5C): "_get_balance",
        (0x80, 0x5A): "_get_transaction_prove",
        (0x80, 0xDC): "_update_capp_data_cache",
        (0x84, 0x1E): "_application_block",
        (0x84, 0x18): "_application_unblock",
    }

    def _process(self, apdu: Apdu) -> tuple[bytes, int]:
        st = self._st
        # A pending INITIALIZE and a challenge serve the very next command only.
        self._pending_in, st.pending = st.pending, None
        self._challenge_in, st.challenge = st.challenge, None
        name = self._COMMANDS.get((apdu.cla, apdu.ins))
        if name is None:
            known = any(ins == apdu.ins for _, ins in self._COMMANDS)
            return b"", 0x6E00 if known else 0x6D00
        return getattr(self, name)(apdu)

    def _purse_here(self, *, maintenance: bool = False) -> tuple[_Purse | None, int]:
        """The selected application's purse, or the SW refusing a purse command."""
        purse = self._st.purses.get(self._st.current)
        if purse is None:
            return None, 0x6985
        if purse.locked:
            return None, 0x9303
        if purse.blocked and not maintenance:
            return None, 0x6985
        return purse, SW_OK

    def _mac_error(self, purse: _Purse) -> tuple[bytes, int]:
        """§1 profile: three consecutive MAC errors lock the application (9303)."""
        purse.mac_errors += 1
        if purse.mac_errors >= MAX_MAC_ERRORS:
            purse.locked = True
            return b"", 0x9303
        return b"", 0x9302

    def _append_log(self, purse: _Purse, record: bytes) -> None:
        purse.log.insert(0, record)
        del purse.log[self._st.log_capacity :]

    # -- ISO commands ----------------------------------------------------------

    def _select(self, apdu: Apdu) -> tuple[bytes, int]:
        """SELECT (§4): MF ``3F00``, DF ``1001`` by FID; purse / member app by AID."""
        st = self._st
        if apdu.p2 not in (0x00, 0x0C):
            return b"", 0x6A86
        target = None
        if apdu.p1 == 0x00:
            if apdu.data in (b"", b"\x3f\x00"):
                target = "mf"
            elif apdu.data == ETC_FID and "etc" in st.purses:
                target = "etc"
        elif apdu.p1 == 0x04:
            if apdu.data == TRANSIT_AID:
                target = "transit"
            elif apdu.data == MEMBER_AID and st.member_file is not None:
                target = "member"
        else:
            return b"", 0x6A86
        if target is None:
            return b"", 0x6A82
        st.current = target
        name = {"mf": MF_NAME, "etc": ETC_FID, "transit": TRANSIT_AID, "member": MEMBER_AID}
        fci = _fci(name[target]) if apdu.p2 == 0x00 else b""
        purse = st.purses.get(target)
        if purse is not None and (purse.blocked or purse.locked):
            return fci, 0x6283
        return fci, SW_OK

    def _transparent_files(self) -> dict[int, bytes]:
        st = self._st
        if st.current in st.purses:
            return {0x15: st.purses[st.current].ef0015}  # no EF 0016 (deliberate)
        if st.current == "member" and st.member_file is not None:
            return {0x01: st.member_file}
        return {}

    def _read_binary(self, apdu: Apdu) -> tuple[bytes, int]:
        """READ BINARY by SFI: ``00 B0 (80|SFI) offset Le`` (§4)."""
        if apdu.data:
            return b"", 0x6700
        if not apdu.p1 & 0x80:
            return b"", 0x6986  # no current EF: files are read by SFI only
        if apdu.p1 & 0x60:
            return b"", 0x6A86
        content = self._transparent_files().get(apdu.p1 & 0x1F)
        if content is None:
            return b"", 0x6A82
        if apdu.p2 >= len(content):
            return b"", 0x6B00
        wanted = apdu.le or 256
        return content[apdu.p2 : apdu.p2 + wanted], SW_OK

    def _record_files(self) -> dict[int, list[bytes]]:
        st = self._st
        if st.current == "transit":
            files = {0x18: st.purses["transit"].log}
            if st.transit_records is not None:
                files[0x1E] = st.transit_records
            return files
        if st.current == "etc":
            return {0x18: st.purses["etc"].log, 0x19: st.capp_records or []}
        return {}

    def _read_record(self, apdu: Apdu) -> tuple[bytes, int]:
        """READ RECORD ``00 B2 nn (SFI<<3|4) Le``, record 1 the newest (§4)."""
        if apdu.data:
            return b"", 0x6700
        if apdu.p2 & 0x07 != 0x04 or apdu.p1 == 0:
            return b"", 0x6A86
        sfi = apdu.p2 >> 3
        if sfi == 0:
            return b"", 0x6986
        records = self._record_files().get(sfi)
        if records is None:
            return b"", 0x6A82
        if apdu.p1 > len(records):
            return b"", 0x6A83
        return records[apdu.p1 - 1], SW_OK

    def _get_challenge(self, apdu: Apdu) -> tuple[bytes, int]:
        """GET CHALLENGE ``00 84 00 00 04|08`` (§1); valid for the next command only."""
        if apdu.p1 or apdu.p2:
            return b"", 0x6A86
        if apdu.data or apdu.le not in (4, 8):
            return b"", 0x6700
        challenge = self._st.rng.randbytes(apdu.le)
        self._st.challenge = challenge
        return challenge, SW_OK

    # -- purse commands (§1, §2) -------------------------------------------------

    def _initialize(self, apdu: Apdu) -> tuple[bytes, int]:
        """INITIALIZE FOR LOAD / PURCHASE / CAPP PURCHASE ``80 50 P1 02 0B``."""
        kind = {0x00: "load", 0x01: "purchase", 0x03: "capp"}.get(apdu.p1)
        if kind is None or apdu.p2 != 0x02:  # EP only: no ED (P2 01) on this card
            return b"", 0x6A86
        if len(apdu.data) != 11:
            return b"", 0x6700
        purse, sw = self._purse_here()
        if purse is None:
            return b"", sw
        if apdu.data[0] != KEY_INDEX:
            return b"", 0x9403
        amount = int.from_bytes(apdu.data[1:5], "big")
        terminal_id = apdu.data[5:11]
        if kind == "load":
            if purse.balance + amount > MAX_BALANCE or purse.online_seq >= 0xFFFF:
                return b"", 0x9402
            rnd = self._st.rng.randbytes(4)
            seq2 = purse.online_seq.to_bytes(2, "big")
            old = purse.balance.to_bytes(4, "big")
            seslk = load_session_key(purse.dlk, rnd, seq2)
            mac1 = pboc_mac(seslk, old + apdu.data[1:5] + bytes([TYPE_EP_LOAD]) + terminal_id)
            self._st.pending = _Pending(
                "load", self._st.current, amount, terminal_id, rnd, purse.online_seq
            )
            return old + seq2 + bytes([purse.key_version, ALG_ID]) + rnd + mac1, SW_OK
        if purse.offline_seq >= 0xFFFF:
            return b"", 0x9402
        if amount > purse.balance:
            return b"", 0x9401
        rnd = self._st.rng.randbytes(4)
        self._st.pending = _Pending(
            kind, self._st.current, amount, terminal_id, rnd, purse.offline_seq
        )
        return (
            purse.balance.to_bytes(4, "big")
            + purse.offline_seq.to_bytes(2, "big")
            + bytes(3)  # overdraft limit
            + bytes([purse.key_version, ALG_ID])
            + rnd
        ), SW_OK

    def _credit_for_load(self, apdu: Apdu) -> tuple[bytes, int]:
        """CREDIT FOR LOAD ``80 52 00 00 0B``: date time MAC2 -> TAC (§1, §2)."""
        if apdu.p1 or apdu.p2:
            return b"", 0x6A86
        if len(apdu.data) != 11:
            return b"", 0x6700
        purse, sw = self._purse_here()
        if purse is None:
            return b"", sw
        pending = self._pending_in
        if pending is None or pending.kind != "load" or pending.app != self._st.current:
            return b"", 0x6985
        date, time, mac2 = apdu.data[0:4], apdu.data[4:7], apdu.data[7:11]
        amount4 = pending.amount.to_bytes(4, "big")
        seq2 = pending.seq.to_bytes(2, "big")
        seslk = load_session_key(purse.dlk, pending.random, seq2)
        tail = bytes([TYPE_EP_LOAD]) + pending.terminal_id + date + time
        if pboc_mac(seslk, amount4 + tail) != mac2:
            return self._mac_error(purse)
        purse.mac_errors = 0
        purse.balance += pending.amount
        purse.online_seq += 1
        self._append_log(
            purse,
            _log_record(pending.seq, pending.amount, TYPE_EP_LOAD, pending.terminal_id, date, time),
        )
        tac = pboc_mac(tac_key(purse.dtk), purse.balance.to_bytes(4, "big") + seq2 + amount4 + tail)
        return tac, SW_OK

    def _debit(self, apdu: Apdu) -> tuple[bytes, int]:
        """DEBIT FOR PURCHASE / CAPP PURCHASE ``80 54 01 00 0F`` -> TAC MAC2 (§1, §2)."""
        if (apdu.p1, apdu.p2) != (0x01, 0x00):
            return b"", 0x6A86
        if len(apdu.data) != 15:
            return b"", 0x6700
        purse, sw = self._purse_here()
        if purse is None:
            return b"", sw
        pending = self._pending_in
        if (
            pending is None
            or pending.kind not in ("purchase", "capp")
            or pending.app != self._st.current
        ):
            return b"", 0x6985
        tseq, date, time, mac1 = (apdu.data[0:4], apdu.data[4:8], apdu.data[8:11], apdu.data[11:15])
        kind = TYPE_CAPP_PURCHASE if pending.kind == "capp" else TYPE_EP_PURCHASE
        amount4 = pending.amount.to_bytes(4, "big")
        sespk = purchase_session_key(
            purse.dpk, pending.random, pending.seq.to_bytes(2, "big"), tseq
        )
        if pboc_mac(sespk, amount4 + bytes([kind]) + pending.terminal_id + date + time) != mac1:
            return self._mac_error(purse)
        if pending.amount > purse.balance:  # pragma: no cover - INITIALIZE checked it
            return b"", 0x9401
        # Commit: the cached CAPP record and the debit together (§1).
        purse.mac_errors = 0
        purse.balance -= pending.amount
        purse.offline_seq += 1
        records = self._st.capp_records
        for rid, record in pending.cache.items():
            assert records is not None
            for i, old in enumerate(records):
                if old[0] == rid:
                    records[i] = record
        self._append_log(
            purse, _log_record(pending.seq, pending.amount, kind, pending.terminal_id, date, time)
        )
        mac2 = pboc_mac(sespk, amount4)
        tac = pboc_mac(
            tac_key(purse.dtk), amount4 + bytes([kind]) + pending.terminal_id + tseq + date + time
        )
        purse.proof = (pending.seq + 1, kind, mac2, tac)
        return tac + mac2, SW_OK

    def _get_balance(self, apdu: Apdu) -> tuple[bytes, int]:
        """GET BALANCE ``80 5C 00 02 04`` (§1)."""
        if apdu.p1 != 0x00 or apdu.p2 != 0x02:
            return b"", 0x6A86
        if apdu.data:
            return b"", 0x6700
        purse, sw = self._purse_here()
        if purse is None:
            return b"", sw
        return purse.balance.to_bytes(4, "big"), SW_OK

    def _get_transaction_prove(self, apdu: Apdu) -> tuple[bytes, int]:
        """GET TRANSACTION PROVE ``80 5A 00 TT 02 seq`` -> MAC2 TAC (§1)."""
        if apdu.p1 != 0x00:
            return b"", 0x6A86
        if len(apdu.data) != 2:
            return b"", 0x6700
        purse, sw = self._purse_here()
        if purse is None:
            return b"", sw
        proof = purse.proof
        seq = int.from_bytes(apdu.data, "big")
        if proof is None or proof[0] != seq or proof[1] != apdu.p2:
            return b"", 0x9406
        return proof[2] + proof[3], SW_OK

    def _update_capp_data_cache(self, apdu: Apdu) -> tuple[bytes, int]:
        """UPDATE CAPP DATA CACHE ``80 DC id (SFI<<3) Lc record`` (§1, §4)."""
        if apdu.p2 & 0x07:
            return b"", 0x6A86
        purse, sw = self._purse_here()
        if purse is None:
            return b"", sw
        pending = self._pending_in
        if pending is None or pending.kind != "capp" or pending.app != self._st.current:
            return b"", 0x6985
        records = self._record_files().get(apdu.p2 >> 3)
        if apdu.p2 >> 3 != 0x19 or not records:
            return b"", 0x6A82
        old = next((r for r in records if r[0] == apdu.p1), None)
        if old is None:
            return b"", 0x6A83
        if len(apdu.data) != len(old):
            return b"", 0x6700
        if apdu.data[0] != apdu.p1:
            return b"", 0x6A80
        pending.cache[apdu.p1] = apdu.data
        self._st.pending = pending  # the CAPP purchase goes on
        return b"", SW_OK

    def _maintenance(self, apdu: Apdu, block: bool) -> tuple[bytes, int]:
        """APPLICATION BLOCK / UNBLOCK with the retail MAC of §2."""
        if apdu.p1 or apdu.p2:
            return b"", 0x6A86
        if len(apdu.data) != 4:
            return b"", 0x6700
        purse, sw = self._purse_here(maintenance=True)
        if purse is None:
            return b"", sw
        challenge = self._challenge_in
        if challenge is None:
            return b"", 0x6985
        header = bytes([apdu.cla, apdu.ins, apdu.p1, apdu.p2, len(apdu.data)])
        if retail_mac(purse.dmk, header, challenge[:4] + bytes(4)) != apdu.data:
            return self._mac_error(purse)
        purse.mac_errors = 0
        purse.blocked = block
        return b"", SW_OK

    def _application_block(self, apdu: Apdu) -> tuple[bytes, int]:
        return self._maintenance(apdu, True)

    def _application_unblock(self, apdu: Apdu) -> tuple[bytes, int]:
        return self._maintenance(apdu, False)


# --------------------------------------------------------------------------
# The PSAM (§3)
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _PsamState:
    terminal_seq: int
    session: tuple[bytes, bytes] | None = None  # SESPK, amount(4): awaits MAC2


class ProtocolPsam(_VirtualCard):
    """A PSAM per docs/protocol.md §3: MF, EF 0016 terminal id, MAC1 and MAC2 check."""

    _historical = b"PROTOCOL-PSAM"

    def __init__(
        self,
        *,
        terminal_id: bytes | str = "A1B2C3D4E5F6",
        terminal_seq: int = 1,
        purchase_keys: dict[int, bytes] | None = None,
        protocol: str = "T=1",
    ) -> None:
        """``purchase_keys``: key version -> 16-byte purchase master key (default §6)."""
        super().__init__(protocol)
        self._terminal_id = _bytes(terminal_id, 6, "terminal id")
        if purchase_keys is None:
            purchase_keys = {TRANSIT_KEYS[0]: TRANSIT_KEYS[1], ETC_KEYS[0]: ETC_KEYS[1]}
        self._keys = {v: _bytes(k, 16, "purchase master key") for v, k in purchase_keys.items()}
        self._st = _PsamState(terminal_seq & 0xFFFFFFFF)

    @property
    def terminal_id(self) -> bytes:
        return self._terminal_id

    @property
    def terminal_seq(self) -> int:
        """The terminal seq the next MAC1 will use."""
        return self._st.terminal_seq

    def _power_reset(self) -> None:
        self._st.session = None

    def _process(self, apdu: Apdu) -> tuple[bytes, int]:
        key = (apdu.cla, apdu.ins)
        if key == (0x00, 0xA4):
            return self._select(apdu)
        if key == (0x00, 0xB0):
            return self._read_binary(apdu)
        if key == (0x80, 0x70):
            return self._init_sam_for_purchase(apdu)
        if key == (0x80, 0x72):
            return self._credit_sam_for_purchase(apdu)
        if apdu.ins in (0xA4, 0xB0, 0x70, 0x72):
            return b"", 0x6E00
        return b"", 0x6D00

    def _select(self, apdu: Apdu) -> tuple[bytes, int]:
        if apdu.p1 != 0x00 or apdu.p2 not in (0x00, 0x0C):
            return b"", 0x6A86
        if apdu.data not in (b"", b"\x3f\x00"):
            return b"", 0x6A82
        return (_fci(b"\x3f\x00") if apdu.p2 == 0x00 else b""), SW_OK

    def _read_binary(self, apdu: Apdu) -> tuple[bytes, int]:
        """``00 B0 96 00 06``: the terminal id in EF 0016 (§3)."""
        if apdu.data:
            return b"", 0x6700
        if not apdu.p1 & 0x80:
            return b"", 0x6986
        if apdu.p1 & 0x1F != 0x16 or apdu.p1 & 0x60:
            return b"", 0x6A82
        if apdu.p2 >= 6:
            return b"", 0x6B00
        return self._terminal_id[apdu.p2 : apdu.p2 + (apdu.le or 256)], SW_OK

    def _init_sam_for_purchase(self, apdu: Apdu) -> tuple[bytes, int]:
        """INIT SAM FOR PURCHASE ``80 70 00 00 1C`` -> terminal seq(4) MAC1(4) (§3)."""
        if apdu.p1 or apdu.p2:
            return b"", 0x6A86
        if len(apdu.data) != 0x1C:  # one diversification level (§3 profile)
            return b"", 0x6700
        self._st.session = None
        d = apdu.data
        rnd, seq2, amount4, kind = d[0:4], d[4:6], d[6:10], d[10]
        date, time, version, f8 = d[11:15], d[15:18], d[18], d[20:28]
        mpk = self._keys.get(version)
        if mpk is None:
            return b"", 0x9403
        tseq = self._st.terminal_seq.to_bytes(4, "big")
        self._st.terminal_seq = (self._st.terminal_seq + 1) & 0xFFFFFFFF
        sespk = purchase_session_key(diversify(mpk, f8), rnd, seq2, tseq)
        mac1 = pboc_mac(sespk, amount4 + bytes([kind]) + self._terminal_id + date + time)
        self._st.session = (sespk, amount4)
        return tseq + mac1, SW_OK

    def _credit_sam_for_purchase(self, apdu: Apdu) -> tuple[bytes, int]:
        """CREDIT SAM FOR PURCHASE ``80 72 00 00 04 MAC2`` -> 9000 or 9302 (§3)."""
        if apdu.p1 or apdu.p2:
            return b"", 0x6A86
        if len(apdu.data) != 4:
            return b"", 0x6700
        session, self._st.session = self._st.session, None
        if session is None:
            return b"", 0x6985
        sespk, amount4 = session
        return b"", SW_OK if pboc_mac(sespk, amount4) == apdu.data else 0x9302
