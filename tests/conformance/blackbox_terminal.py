#!/usr/bin/env python3
"""Black-box conformance terminal for union member cards over PC/SC.

Written from docs/protocol.md and its test keys only: it uses pyscard's low-level
``smartcard.scard`` API, ``cryptography`` for DES/3DES and the standard library,
and nothing of the unioncard package.  It connects to a card reader and a PSAM
reader and runs the acceptance sequence:

- T-Union transit purse (docs/protocol.md §1, §2, §4): select, EF ``0015`` card type
  ``55``, load with MAC1/MAC2/TAC verified, a load with a wrong MAC2 refused with
  ``9302``, a purchase whose MAC1 comes from the PSAM (§3) and whose MAC2 is
  verified by the PSAM (``80 72``) and recomputed, TAC recomputed, GET TRANSACTION
  PROVE (MAC2 then TAC), DEBIT without INITIALIZE refused with ``6985``, a
  purchase above the balance refused with ``9401``;
- ETC purse (§4): select MF then DF ``1001``, load, CAPP purchase with an UPDATE
  CAPP DATA CACHE record read back from EF ``0019``;
- member identity application (§4): select, read the member number.

It prints one JSON report on stdout (every step with its exchanges, status words
and verdict) and exits 0 only when every step passed.  Exit status 1: a step
failed; 2: bad command line.

Usage::

    python blackbox_terminal.py --card-reader "Virtual PCD 00 00" \\
        --psam-reader "Virtual PCD 00 01" [--member-no 20260001]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, modes
from smartcard import scard

try:  # cryptography >= 43 moved TripleDES to the "decrepit" namespace
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

__all__ = [
    "TEST_KEYS",
    "PurseKeys",
    "des_encrypt",
    "diversify",
    "load_session_key",
    "main",
    "pboc_mac",
    "purchase_session_key",
    "self_test",
    "tac_key",
    "tdes_encrypt",
]

# --------------------------------------------------------------------------
# Crypto (docs/protocol.md §2)
# --------------------------------------------------------------------------


def _ecb_encrypt(key24: bytes, block: bytes) -> bytes:
    encryptor = Cipher(TripleDES(key24), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def des_encrypt(key8: bytes, block: bytes) -> bytes:
    """Single DES, ECB, as 3DES with K||K||K."""
    if len(key8) != 8:
        raise ValueError("single DES key must be 8 bytes")
    return _ecb_encrypt(key8 * 3, block)


def tdes_encrypt(key16: bytes, block: bytes) -> bytes:
    """Two-key 3DES EDE, ECB (K1||K2||K1)."""
    if len(key16) != 16:
        raise ValueError("two-key 3DES key must be 16 bytes")
    return _ecb_encrypt(key16 + key16[:8], block)


def pboc_mac(key8: bytes, data: bytes) -> bytes:
    """PBOC MAC (§2): single-DES CBC-MAC, IV zero, always padded 80 00..; 4 bytes."""
    padded = data + b"\x80"
    padded += b"\x00" * (-len(padded) % 8)
    chain = bytes(8)
    for i in range(0, len(padded), 8):
        block = bytes(a ^ b for a, b in zip(chain, padded[i : i + 8], strict=True))
        chain = des_encrypt(key8, block)
    return chain[:4]


def diversify(master16: bytes, f8: bytes) -> bytes:
    """One-level card key diversification (§2): 3DES(MK, F) || 3DES(MK, F xor FF..)."""
    if len(f8) != 8:
        raise ValueError("diversifier must be 8 bytes")
    inverted = bytes(b ^ 0xFF for b in f8)
    return tdes_encrypt(master16, f8) + tdes_encrypt(master16, inverted)


def purchase_session_key(
    dpk: bytes, random4: bytes, offline_seq2: bytes, terminal_seq4: bytes
) -> bytes:
    """SESPK = 3DES(DPK, random || offline seq || terminal seq[2:4]) (§2)."""
    return tdes_encrypt(dpk, random4 + offline_seq2 + terminal_seq4[2:4])


def load_session_key(dlk: bytes, random4: bytes, online_seq2: bytes) -> bytes:
    """SESLK = 3DES(DLK, random || online seq || 80 00) (§2)."""
    return tdes_encrypt(dlk, random4 + online_seq2 + b"\x80\x00")


def tac_key(dtk: bytes) -> bytes:
    """TAC key = DTK[0:8] xor DTK[8:16] (§2)."""
    return bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:16], strict=True))


@dataclass(frozen=True, slots=True)
class PurseKeys:
    """Master keys of one purse application (docs/protocol.md §6, test keys)."""

    key_version: int
    mpk: bytes
    mlk: bytes
    mtk: bytes


TEST_KEYS: dict[str, PurseKeys] = {
    "transit": PurseKeys(
        0x01,
        bytes.fromhex("404142434445464748494A4B4C4D4E4F"),
        bytes.fromhex("505152535455565758595A5B5C5D5E5F"),
        bytes.fromhex("606162636465666768696A6B6C6D6E6F"),
    ),
    "etc": PurseKeys(
        0x02,
        bytes.fromhex("707172737475767778797A7B7C7D7E7F"),
        bytes.fromhex("808182838485868788898A8B8C8D8E8F"),
        bytes.fromhex("909192939495969798999A9B9C9D9E9F"),
    ),
}


def self_test() -> list[str]:
    """Check the §2 known-answer vector; return the list of mismatches (empty: ok)."""
    errors = []
    dpk = bytes.fromhex("11223344556677888877665544332211")
    sespk = purchase_session_key(
        dpk, bytes.fromhex("11223344"), bytes.fromhex("0000"), bytes.fromhex("00000001")
    )
    if sespk != bytes.fromhex("003238ABC57659DD"):
        errors.append(f"SESPK {sespk.hex().upper()} != 003238ABC57659DD")
    mac1 = pboc_mac(sespk, bytes.fromhex("00001000" "06" "001122334455" "20120229" "135100"))
    if mac1 != bytes.fromhex("F15CAB75"):
        errors.append(f"MAC1 {mac1.hex().upper()} != F15CAB75")
    mac2 = pboc_mac(sespk, bytes.fromhex("00001000"))
    if mac2 != bytes.fromhex("56988A13"):
        errors.append(f"MAC2 {mac2.hex().upper()} != 56988A13")
    return errors


# --------------------------------------------------------------------------
# PC/SC transport with T=0 case handling
# --------------------------------------------------------------------------


class StepFailed(Exception):
    """A check of the current step failed; the message is the reason."""


@dataclass(slots=True)
class Response:
    data: bytes
    sw: int

    @property
    def sw_hex(self) -> str:
        return f"{self.sw:04X}"


def _hex(b: bytes) -> str:
    return b.hex().upper()


def _with_le(apdu: bytes, le: int) -> bytes:
    """The short command APDU with its Le set to ``le`` (added when absent)."""
    if len(apdu) == 4:
        return apdu + bytes([le])
    if len(apdu) == 5:
        return apdu[:4] + bytes([le])
    lc = apdu[4]
    if len(apdu) == 5 + lc:
        return apdu + bytes([le])
    if len(apdu) == 6 + lc:
        return apdu[:-1] + bytes([le])
    raise ValueError(f"malformed short APDU {_hex(apdu)}")


class Reader:
    """One PC/SC reader; every exchange is appended to ``log`` (set per step)."""

    def __init__(self, context: Any, name: str, label: str) -> None:
        self.context = context
        self.name = name
        self.label = label
        self.card: Any = None
        self.protocol: int = 0
        self.atr = b""
        self.log: list[dict[str, str]] = []

    def connect(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the reader and a card in it, then connect."""
        deadline = time.monotonic() + timeout
        last = "reader not listed"
        while True:
            hr, readers = scard.SCardListReaders(self.context, [])
            if hr == scard.SCARD_S_SUCCESS and self.name in readers:
                hr, card, protocol = scard.SCardConnect(
                    self.context,
                    self.name,
                    scard.SCARD_SHARE_SHARED,
                    scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
                )
                if hr == scard.SCARD_S_SUCCESS:
                    self.card, self.protocol = card, protocol
                    hr, _reader, _state, _proto, atr = scard.SCardStatus(card)
                    self.atr = bytes(atr) if hr == scard.SCARD_S_SUCCESS else b""
                    return
                last = scard.SCardGetErrorMessage(hr)
            elif hr != scard.SCARD_S_SUCCESS:
                last = scard.SCardGetErrorMessage(hr)
            else:
                last = f"reader not listed (readers: {readers})"
            if time.monotonic() > deadline:
                raise StepFailed(f"no card in reader {self.name!r} after {timeout} s: {last}")
            time.sleep(0.05)

    def disconnect(self) -> None:
        if self.card is not None:
            scard.SCardDisconnect(self.card, scard.SCARD_UNPOWER_CARD)
            self.card = None

    @property
    def protocol_name(self) -> str:
        if self.protocol == scard.SCARD_PROTOCOL_T0:
            return "T=0"
        if self.protocol == scard.SCARD_PROTOCOL_T1:
            return "T=1"
        return f"0x{self.protocol:X}"

    def _raw(self, apdu: bytes) -> Response:
        if self.card is None:
            raise StepFailed(f"{self.label} reader is not connected")
        pci = scard.SCARD_PCI_T0 if self.protocol == scard.SCARD_PROTOCOL_T0 else scard.SCARD_PCI_T1
        hr, answer = scard.SCardTransmit(self.card, pci, list(apdu))
        if hr != scard.SCARD_S_SUCCESS:
            error = scard.SCardGetErrorMessage(hr)
            self.log.append({"reader": self.label, "command": _hex(apdu), "error": error})
            raise StepFailed(f"{self.label}: transmit of {_hex(apdu)} failed: {error}")
        raw = bytes(answer)
        self.log.append({"reader": self.label, "command": _hex(apdu), "response": _hex(raw)})
        if len(raw) < 2:
            raise StepFailed(f"{self.label}: response {_hex(raw)} to {_hex(apdu)} has no SW")
        return Response(raw[:-2], int.from_bytes(raw[-2:], "big"))

    def send(self, apdu: bytes) -> Response:
        """Send a command; 6Cxx re-sends with Le=xx, 61xx fetches with GET RESPONSE (§1)."""
        resp = self._raw(apdu)
        if resp.sw >> 8 == 0x6C:
            resp = self._raw(_with_le(apdu, resp.sw & 0xFF))
        data = resp.data
        for _ in range(64):
            if resp.sw >> 8 != 0x61:
                break
            resp = self._raw(bytes([0x00, 0xC0, 0x00, 0x00, resp.sw & 0xFF]))
            data += resp.data
        return Response(data, resp.sw)


# --------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------

SW_OK = 0x9000
TRANSIT_AID = bytes.fromhex("A000000632010105")
MEMBER_AID = bytes.fromhex("F0554E494F4E43415244")
KEY_INDEX = 0x01
TYPE_EP_LOAD = 0x02
TYPE_EP_PURCHASE = 0x06
TYPE_CAPP_PURCHASE = 0x09


def _bcd(text: str) -> bytes:
    return bytes.fromhex(text)


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def _expect_sw(resp: Response, expected: int, what: str, clause: str) -> None:
    if resp.sw != expected:
        raise StepFailed(
            f"{what}: SW {resp.sw_hex}, expected {expected:04X} ({clause})"
        )


def _expect_len(resp: Response, n: int, what: str, clause: str) -> None:
    if len(resp.data) != n:
        raise StepFailed(
            f"{what}: {len(resp.data)} data bytes ({_hex(resp.data)}), expected {n} ({clause})"
        )


def _expect_eq(got: bytes | int, want: bytes | int, what: str) -> None:
    if got != want:
        g = _hex(got) if isinstance(got, bytes) else str(got)
        w = _hex(want) if isinstance(want, bytes) else str(want)
        raise StepFailed(f"{what}: got {g}, expected {w}")


def parse_ber_tlv(data: bytes) -> list[tuple[int, bytes]]:
    """Parse a flat BER-TLV list into (tag, value) pairs."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        if data[i] in (0x00, 0xFF):  # padding between objects
            i += 1
            continue
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            while True:
                if i >= len(data):
                    raise StepFailed("TLV: tag runs past the end")
                tag = (tag << 8) | data[i]
                i += 1
                if not data[i - 1] & 0x80:
                    break
        if i >= len(data):
            raise StepFailed("TLV: missing length")
        length = data[i]
        i += 1
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 3 or i + n > len(data):
                raise StepFailed("TLV: bad length")
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        if i + length > len(data):
            raise StepFailed(f"TLV: tag {tag:X} value runs past the end")
        out.append((tag, data[i : i + length]))
        i += length
    return out


@dataclass(slots=True)
class PurseBook:
    """What the terminal knows of one purse: balance accounting and card identity."""

    name: str
    keys: PurseKeys
    diversifier: bytes = b""
    initial: int | None = None
    loaded: int = 0
    purchased: int = 0
    overdraft: int = 0
    card_final: int | None = None

    @property
    def expected(self) -> int | None:
        if self.initial is None:
            return None
        return self.initial + self.loaded - self.purchased

    def report(self) -> dict[str, Any]:
        return {
            "diversifier": _hex(self.diversifier),
            "initial": self.initial,
            "loaded": self.loaded,
            "purchased": self.purchased,
            "expected_final": self.expected,
            "card_final": self.card_final,
        }


@dataclass(slots=True)
class StepRecord:
    name: str
    passed: bool = False
    reason: str = ""
    exchanges: list[dict[str, str]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    ms: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "reason": self.reason,
            "commands": [e["command"] for e in self.exchanges],
            "sws": [e.get("response", "transmit error")[-4:] for e in self.exchanges],
            "exchanges": self.exchanges,
            "details": self.details,
            "ms": round(self.ms, 2),
        }


class Terminal:
    """Runs the acceptance sequence step by step and keeps the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context: Any = None
        self.card: Reader | None = None
        self.psam: Reader | None = None
        self.steps: list[StepRecord] = []
        self.current: StepRecord | None = None
        self.terminal_id = b""
        self.terminal_seqs: list[int] = []
        self.transit = PurseBook("transit", TEST_KEYS["transit"])
        self.etc = PurseBook("etc", TEST_KEYS["etc"])
        self.last_proof: dict[str, Any] = {}
        self.etc_file15 = b""
        self.member_no = ""

    # -- step machinery ---------------------------------------------------

    def step(self, name: str, fn: Callable[[], None], needs: Sequence[str] = ()) -> None:
        rec = StepRecord(name)
        self.steps.append(rec)
        failed = [s.name for s in self.steps if s.name in needs and not s.passed]
        if failed:
            rec.reason = "not run: needs " + ", ".join(repr(n) for n in failed)
            return
        self.current = rec
        for reader in (self.card, self.psam):
            if reader is not None:
                reader.log = rec.exchanges
        start = time.perf_counter()
        try:
            fn()
        except StepFailed as exc:
            rec.reason = str(exc)
        except Exception as exc:  # a bug or transport surprise must still give a report
            rec.reason = f"{type(exc).__name__}: {exc}"
        else:
            rec.passed = True
            rec.reason = "ok"
        rec.ms = (time.perf_counter() - start) * 1000

    def note(self, **items: Any) -> None:
        assert self.current is not None
        self.current.details.update(items)

    def _card(self) -> Reader:
        if self.card is None:
            raise StepFailed("card reader not connected")
        return self.card

    def _psam(self) -> Reader:
        if self.psam is None:
            raise StepFailed("PSAM reader not connected")
        return self.psam

    @staticmethod
    def _now() -> tuple[bytes, bytes, dt.datetime]:
        now = dt.datetime.now().replace(microsecond=0)
        return _bcd(now.strftime("%Y%m%d")), _bcd(now.strftime("%H%M%S")), now

    # -- steps --------------------------------------------------------------

    def s_self_test(self) -> None:
        errors = self_test()
        if errors:
            raise StepFailed("docs/protocol.md §2 known-answer vector: " + "; ".join(errors))
        self.note(vector="SESPK 003238ABC57659DD, MAC1 F15CAB75, MAC2 56988A13")

    def s_connect(self) -> None:
        hr, self.context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr != scard.SCARD_S_SUCCESS:
            raise StepFailed(f"SCardEstablishContext: {scard.SCardGetErrorMessage(hr)}")
        card = Reader(self.context, self.args.card_reader, "card")
        psam = Reader(self.context, self.args.psam_reader, "psam")
        card.connect(self.args.timeout)
        psam.connect(self.args.timeout)
        self.card, self.psam = card, psam
        self.note(
            card_atr=_hex(card.atr), card_protocol=card.protocol_name,
            psam_atr=_hex(psam.atr), psam_protocol=psam.protocol_name,
        )

    def s_psam_terminal_id(self) -> None:
        r = self._psam().send(bytes.fromhex("00B0960006"))
        _expect_sw(r, SW_OK, "PSAM READ BINARY EF 0016", "§3")
        _expect_len(r, 6, "PSAM terminal id", "§3: 6 bytes")
        self.terminal_id = r.data
        self.note(terminal_id=_hex(r.data))

    def _select_aid(self, aid: bytes, what: str) -> Response:
        r = self._card().send(bytes([0x00, 0xA4, 0x04, 0x00, len(aid)]) + aid)
        _expect_sw(r, SW_OK, f"SELECT {what} {_hex(aid)}", "§1: 9000; 6283 = blocked")
        return r

    def s_transit_select(self) -> None:
        r = self._select_aid(TRANSIT_AID, "T-Union purse")
        self.note(fci=_hex(r.data))

    def s_transit_ef15(self) -> None:
        r = self._card().send(bytes.fromhex("00B095001E"))
        _expect_sw(r, SW_OK, "READ BINARY EF 0015", "§4")
        _expect_len(r, 30, "T-Union EF 0015", "§4: 30 bytes")
        d = r.data
        serial = d[10:20]
        card_type, categories = d[28], d[29]
        self.note(
            issuer=_hex(d[0:8]), app_type=f"{d[8]:02X}", version=f"{d[9]:02X}",
            app_serial=_hex(serial), start=_hex(d[20:24]), expiry=_hex(d[24:28]),
            card_type=f"{card_type:02X}", category_flags=f"{categories:02X}",
        )
        self.transit.diversifier = serial[2:10]
        if card_type != 0x55:
            raise StepFailed(f"EF 0015 card type {card_type:02X}, expected 55 (union member, §4)")

    def _get_balance(self, book: PurseBook) -> int:
        r = self._card().send(bytes.fromhex("805C000204"))
        _expect_sw(r, SW_OK, "GET BALANCE", "§1")
        _expect_len(r, 4, "GET BALANCE", "§1: balance(4)")
        return int.from_bytes(r.data, "big")

    def s_initial_balance(self, book: PurseBook) -> None:
        book.initial = self._get_balance(book)
        self.note(balance=book.initial)

    def s_final_balance(self, book: PurseBook) -> None:
        book.card_final = self._get_balance(book)
        self.note(balance=book.card_final, expected=book.expected)
        _expect_eq(book.card_final, book.expected or 0,
                   f"{book.name} balance (initial + loads - purchases)")

    def _init_load(self, book: PurseBook, amount: int) -> tuple[bytes, bytes, int, bytes]:
        """INITIALIZE FOR LOAD; verifies MAC1.  Returns (SESLK, online seq, balance, DLK)."""
        data = bytes([KEY_INDEX]) + _u32(amount) + self.terminal_id
        r = self._card().send(bytes.fromhex("805000020B") + data + b"\x10")
        _expect_sw(r, SW_OK, "INITIALIZE FOR LOAD", "§1")
        _expect_len(r, 16, "INITIALIZE FOR LOAD", "§1: 16 bytes")
        d = r.data
        balance = int.from_bytes(d[0:4], "big")
        online_seq, key_version, alg_id, random4, mac1 = d[4:6], d[6], d[7], d[8:12], d[12:16]
        self.note(init_balance=balance, online_seq=_hex(online_seq),
                  key_version=f"{key_version:02X}", alg_id=f"{alg_id:02X}",
                  random=_hex(random4), mac1=_hex(mac1))
        _expect_eq(key_version, book.keys.key_version, f"{book.name} key version (§3 profile)")
        _expect_eq(balance, book.expected or 0, "balance in INITIALIZE FOR LOAD")
        dlk = diversify(book.keys.mlk, book.diversifier)
        seslk = load_session_key(dlk, random4, online_seq)
        want = pboc_mac(
            seslk, _u32(balance) + _u32(amount) + bytes([TYPE_EP_LOAD]) + self.terminal_id
        )
        _expect_eq(mac1, want, "load MAC1 (SESLK over old balance, amount, 02, terminal id)")
        return seslk, online_seq, balance, dlk

    def s_load(self, book: PurseBook, amount: int) -> None:
        seslk, online_seq, balance, _ = self._init_load(book, amount)
        date, tm, now = self._now()
        mac2 = pboc_mac(seslk, _u32(amount) + bytes([TYPE_EP_LOAD]) + self.terminal_id + date + tm)
        r = self._card().send(bytes.fromhex("805200000B") + date + tm + mac2 + b"\x04")
        _expect_sw(r, SW_OK, "CREDIT FOR LOAD", "§1")
        _expect_len(r, 4, "CREDIT FOR LOAD", "§1: TAC(4)")
        book.loaded += amount
        new_balance = balance + amount
        dtk = diversify(book.keys.mtk, book.diversifier)
        want_tac = pboc_mac(
            tac_key(dtk),
            _u32(new_balance) + online_seq + _u32(amount) + bytes([TYPE_EP_LOAD])
            + self.terminal_id + date + tm,
        )
        self.note(amount=amount, when=now.isoformat(), mac2=_hex(mac2), tac=_hex(r.data),
                  new_balance=new_balance)
        _expect_eq(r.data, want_tac, "load TAC")
        self.last_proof[f"{book.name}_online_seq"] = int.from_bytes(online_seq, "big")

    def s_load_wrong_mac2(self, book: PurseBook, amount: int) -> None:
        seslk, online_seq, balance, _ = self._init_load(book, amount)
        previous = self.last_proof.get(f"{book.name}_online_seq")
        if previous is not None:
            _expect_eq(int.from_bytes(online_seq, "big"), previous + 1,
                       "online seq after one successful load (§2: increments on each load)")
        date, tm, _ = self._now()
        good = pboc_mac(seslk, _u32(amount) + bytes([TYPE_EP_LOAD]) + self.terminal_id + date + tm)
        bad = bytes([good[0] ^ 0xFF]) + good[1:]
        r = self._card().send(bytes.fromhex("805200000B") + date + tm + bad + b"\x04")
        self.note(correct_mac2=_hex(good), sent_mac2=_hex(bad), sw=r.sw_hex)
        _expect_sw(r, 0x9302, "CREDIT FOR LOAD with a wrong MAC2", "§1: 9302 MAC error")
        after = self._get_balance(book)
        _expect_eq(after, balance, "balance after the refused load")

    def _purchase(self, book: PurseBook, amount: int, capp_record: bytes | None) -> None:
        card, psam = self._card(), self._psam()
        tx_type = TYPE_CAPP_PURCHASE if capp_record is not None else TYPE_EP_PURCHASE
        p1 = 0x03 if capp_record is not None else 0x01
        data = bytes([KEY_INDEX]) + _u32(amount) + self.terminal_id
        r = card.send(bytes([0x80, 0x50, p1, 0x02, 0x0B]) + data + b"\x0F")
        what = "INITIALIZE FOR " + ("CAPP PURCHASE" if capp_record is not None else "PURCHASE")
        _expect_sw(r, SW_OK, what, "§1")
        _expect_len(r, 15, what, "§1: 15 bytes")
        d = r.data
        balance = int.from_bytes(d[0:4], "big")
        offline_seq, overdraft = d[4:6], int.from_bytes(d[6:9], "big")
        key_version, alg_id, random4 = d[9], d[10], d[11:15]
        self.note(init_balance=balance, offline_seq=_hex(offline_seq), overdraft_limit=overdraft,
                  key_version=f"{key_version:02X}", alg_id=f"{alg_id:02X}", random=_hex(random4))
        _expect_eq(key_version, book.keys.key_version, f"{book.name} key version (§3 profile)")
        _expect_eq(balance, book.expected or 0, f"balance in {what}")
        book.overdraft = overdraft

        date, tm, now = self._now()
        sam_data = (random4 + offline_seq + _u32(amount) + bytes([tx_type]) + date + tm
                    + bytes([key_version, alg_id]) + book.diversifier)
        r = psam.send(bytes.fromhex("807000001C") + sam_data + b"\x08")
        _expect_sw(r, SW_OK, "PSAM INIT SAM FOR PURCHASE (80 70)", "§3")
        _expect_len(r, 8, "PSAM INIT SAM FOR PURCHASE", "§3: terminal seq(4) MAC1(4)")
        terminal_seq, mac1 = r.data[0:4], r.data[4:8]
        self.terminal_seqs.append(int.from_bytes(terminal_seq, "big"))
        self.note(terminal_seq=_hex(terminal_seq), mac1=_hex(mac1), when=now.isoformat())
        if len(self.terminal_seqs) > 1:
            _expect_eq(self.terminal_seqs[-1], self.terminal_seqs[-2] + 1,
                       "PSAM terminal seq after one MAC1 (§3: the PSAM increments it)")

        dpk = diversify(book.keys.mpk, book.diversifier)
        sespk = purchase_session_key(dpk, random4, offline_seq, terminal_seq)
        want_mac1 = pboc_mac(sespk, _u32(amount) + bytes([tx_type]) + self.terminal_id + date + tm)
        _expect_eq(mac1, want_mac1, "PSAM MAC1 recomputed with the card's purchase key")

        if capp_record is not None:
            r = card.send(bytes([0x80, 0xDC, 0xAA, 0xC8, len(capp_record)]) + capp_record)
            _expect_sw(r, SW_OK, "UPDATE CAPP DATA CACHE 80 DC AA C8 2B", "§1, §4")

        r = card.send(bytes.fromhex("805401000F") + terminal_seq + date + tm + mac1 + b"\x08")
        _expect_sw(r, SW_OK, "DEBIT FOR PURCHASE", "§1")
        _expect_len(r, 8, "DEBIT FOR PURCHASE", "§1: TAC(4) MAC2(4)")
        tac, mac2 = r.data[0:4], r.data[4:8]
        book.purchased += amount
        self.note(amount=amount, tac=_hex(tac), mac2=_hex(mac2))

        r = psam.send(bytes.fromhex("8072000004") + mac2)
        self.note(psam_mac2_sw=r.sw_hex)
        _expect_sw(r, SW_OK, "PSAM CREDIT SAM FOR PURCHASE (80 72) verifying MAC2", "§3")
        _expect_eq(mac2, pboc_mac(sespk, _u32(amount)),
                   "purchase MAC2 recomputed (SESPK over amount)")
        dtk = diversify(book.keys.mtk, book.diversifier)
        want_tac = pboc_mac(
            tac_key(dtk),
            _u32(amount) + bytes([tx_type]) + self.terminal_id + terminal_seq + date + tm,
        )
        _expect_eq(tac, want_tac, "purchase TAC recomputed")
        self.last_proof[book.name] = {
            "seq": (int.from_bytes(offline_seq, "big") + 1) & 0xFFFF,
            "type": tx_type, "mac2": mac2, "tac": tac,
        }

    def s_purchase(self, book: PurseBook, amount: int) -> None:
        self._purchase(book, amount, None)

    def s_prove(self, book: PurseBook) -> None:
        proof = self.last_proof[book.name]
        seq = int(proof["seq"]).to_bytes(2, "big")
        cmd = bytes([0x80, 0x5A, 0x00, proof["type"], 0x02]) + seq + b"\x08"
        r = self._card().send(cmd)
        _expect_sw(r, SW_OK, "GET TRANSACTION PROVE", "§1")
        _expect_len(r, 8, "GET TRANSACTION PROVE", "§1: MAC2(4) TAC(4)")
        self.note(seq=_hex(seq), mac2=_hex(r.data[0:4]), tac=_hex(r.data[4:8]))
        _expect_eq(r.data[0:4], proof["mac2"], "GET TRANSACTION PROVE MAC2 (first 4 bytes)")
        _expect_eq(r.data[4:8], proof["tac"], "GET TRANSACTION PROVE TAC (last 4 bytes)")

    def s_debit_without_init(self, book: PurseBook) -> None:
        self._select_aid(TRANSIT_AID, "T-Union purse (fresh, no INITIALIZE pending)")
        date, tm, _ = self._now()
        r = self._card().send(
            bytes.fromhex("805401000F") + bytes(4) + date + tm + bytes(4) + b"\x08"
        )
        _expect_sw(r, 0x6985, "DEBIT FOR PURCHASE without INITIALIZE", "§1: 6985")
        _expect_eq(self._get_balance(book), book.expected or 0, "balance after refused DEBIT")

    def s_over_balance(self, book: PurseBook) -> None:
        amount = (book.expected or 0) + book.overdraft + 1
        data = bytes([KEY_INDEX]) + _u32(amount) + self.terminal_id
        r = self._card().send(bytes.fromhex("805001020B") + data + b"\x0F")
        self.note(amount=amount, sw=r.sw_hex)
        _expect_sw(r, 0x9401, "INITIALIZE FOR PURCHASE above the balance", "§1: 9401")
        _expect_eq(self._get_balance(book), book.expected or 0, "balance after refused purchase")

    def s_etc_select(self) -> None:
        card = self._card()
        r = card.send(bytes.fromhex("00A40000023F00"))
        _expect_sw(r, SW_OK, "SELECT MF 3F00", "§4")
        r = card.send(bytes.fromhex("00A40000021001"))
        _expect_sw(r, SW_OK, "SELECT DF 1001", "§4")
        self.note(fci=_hex(r.data))

    def s_etc_ef15(self) -> None:
        r = self._card().send(bytes.fromhex("00B095002B"))
        _expect_sw(r, SW_OK, "READ BINARY ETC EF 0015", "§4")
        _expect_len(r, 43, "ETC EF 0015", "§4: 43 bytes")
        d = r.data
        self.etc_file15 = d
        self.etc.diversifier = d[12:20]
        self.note(issuer=_hex(d[0:8]), card_type=f"{d[8]:02X}", network=_hex(d[10:12]),
                  card_no=_hex(d[12:20]), plate=_hex(d[28:40]), user_type=f"{d[40]:02X}")
        if d[40] != 0x55:
            raise StepFailed(f"ETC EF 0015 user type {d[40]:02X}, expected 55 (§4 profile)")

    def _capp_record(self) -> bytes:
        f15 = self.etc_file15
        rec = (
            b"\xAA\x29"
            + b"\x00"                        # lock
            + f15[10:12]                     # network, from EF 0015
            + bytes.fromhex("0101")          # station
            + b"\x02"                        # lane
            + _u32(int(time.time()))         # unix time
            + b"\x01"                        # vehicle class
            + b"\x04"                        # status: ETC exit
            + bytes(9)                       # marker station
            + bytes.fromhex("000123")        # staff no
            + b"\x01"                        # shift
            + f15[28:40]                     # plate, from EF 0015
            + bytes(4)                       # reserved
        )
        if len(rec) != 43:
            raise StepFailed(f"internal: CAPP record is {len(rec)} bytes")
        return rec

    def s_capp_purchase(self, amount: int) -> None:
        rec = self._capp_record()
        self.last_proof["capp_record"] = rec
        self.note(record=_hex(rec))
        self._purchase(self.etc, amount, rec)

    def s_read_capp(self) -> None:
        r = self._card().send(bytes.fromhex("00B201CC2B"))
        _expect_sw(r, SW_OK, "READ RECORD EF 0019 record 1", "§4")
        self.note(record=_hex(r.data))
        _expect_eq(r.data, self.last_proof["capp_record"],
                   "EF 0019 record 1 after the CAPP purchase")

    def s_member_select(self) -> None:
        r = self._select_aid(MEMBER_AID, "member application")
        self.note(fci=_hex(r.data))

    def s_member_read(self) -> None:
        r = self._card().send(bytes.fromhex("00B0810000"))
        _expect_sw(r, SW_OK, "READ BINARY member EF (SFI 01)", "§4")
        outer = parse_ber_tlv(r.data)
        if not outer or outer[0][0] != 0x70:
            raise StepFailed(f"member EF does not start with template 70: {_hex(r.data)}")
        fields = dict(parse_ber_tlv(outer[0][1]))
        if 0xDF41 not in fields:
            raise StepFailed("member template 70 has no DF41 (member number)")
        number = fields[0xDF41].decode("ascii", "replace")
        self.member_no = number
        self.note(
            member_no=number,
            name=fields.get(0xDF42, b"").decode("utf-8", "replace"),
            organization=fields.get(0xDF43, b"").decode("utf-8", "replace"),
            categories=_hex(fields.get(0xDF44, b"")),
            status=_hex(fields.get(0xDF45, b"")),
            valid_from=_hex(fields.get(0xDF46, b"")),
            valid_until=_hex(fields.get(0xDF47, b"")),
        )
        if not number.isdigit():
            raise StepFailed(f"member number {number!r} is not ASCII digits (§4)")
        if self.args.member_no is not None and number != self.args.member_no:
            raise StepFailed(f"member number {number!r}, expected {self.args.member_no!r}")

    # -- sequence -----------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.args
        t, e = self.transit, self.etc
        conn = "connect card and PSAM readers"
        tid = "PSAM: read terminal id (00 B0 96 00 06)"
        sel = "T-Union: select purse A000000632010105"
        ef15 = "T-Union: read EF 0015, member card type 55"
        bal = "T-Union: get balance"
        load = "T-Union: load, MAC1/MAC2/TAC verified"
        buy = "T-Union: purchase, MAC1/MAC2 (PSAM 80 72 and recomputed)/TAC verified"
        esel = "ETC: select MF, then DF 1001"
        eef = "ETC: read EF 0015, card number and user type 55"
        ebal = "ETC: get balance"
        eload = "ETC: load, MAC1/MAC2/TAC verified"
        ebuy = "ETC: CAPP purchase with UPDATE CAPP DATA CACHE, MAC1/MAC2/TAC verified"
        msel = "member: select application F0554E494F4E43415244"
        base = (conn, tid, sel, ef15, bal)
        self.step("crypto self-test: docs/protocol.md §2 known-answer vector", self.s_self_test)
        self.step(conn, self.s_connect)
        self.step(tid, self.s_psam_terminal_id, needs=(conn,))
        self.step(sel, self.s_transit_select, needs=(conn,))
        self.step(ef15, self.s_transit_ef15, needs=(sel,))
        self.step(bal, lambda: self.s_initial_balance(t), needs=(sel,))
        self.step(load, lambda: self.s_load(t, a.transit_load), needs=base)
        self.step("T-Union: load with a wrong MAC2 refused (9302)",
                  lambda: self.s_load_wrong_mac2(t, a.transit_load), needs=base)
        self.step(buy, lambda: self.s_purchase(t, a.transit_purchase), needs=base)
        self.step("T-Union: GET TRANSACTION PROVE gives MAC2 then TAC",
                  lambda: self.s_prove(t), needs=(buy,))
        self.step("T-Union: DEBIT without INITIALIZE refused (6985)",
                  lambda: self.s_debit_without_init(t), needs=base)
        self.step("T-Union: purchase above the balance refused (9401)",
                  lambda: self.s_over_balance(t), needs=base)
        self.step("T-Union: final balance = initial + loads - purchases",
                  lambda: self.s_final_balance(t), needs=base)
        self.step(esel, self.s_etc_select, needs=(conn,))
        self.step(eef, self.s_etc_ef15, needs=(esel,))
        self.step(ebal, lambda: self.s_initial_balance(e), needs=(esel,))
        ebase = (conn, tid, esel, eef, ebal)
        self.step(eload, lambda: self.s_load(e, a.etc_load), needs=ebase)
        self.step(ebuy, lambda: self.s_capp_purchase(a.etc_purchase), needs=ebase)
        self.step("ETC: GET TRANSACTION PROVE (type 09) gives MAC2 then TAC",
                  lambda: self.s_prove(e), needs=(ebuy,))
        self.step("ETC: read back EF 0019 record 1 (00 B2 01 CC 2B)", self.s_read_capp,
                  needs=(ebuy,))
        self.step("ETC: final balance = initial + loads - purchases",
                  lambda: self.s_final_balance(e), needs=ebase)
        self.step(msel, self.s_member_select, needs=(conn,))
        self.step("member: read member number (00 B0 81 00 00, DF41)", self.s_member_read,
                  needs=(msel,))
        for reader in (self.card, self.psam):
            if reader is not None:
                reader.disconnect()
        if self.context is not None:
            scard.SCardReleaseContext(self.context)
        return {
            "reference": "docs/protocol.md",
            "passed": all(s.passed for s in self.steps),
            "failed_steps": [s.name for s in self.steps if not s.passed],
            "card_reader": a.card_reader,
            "psam_reader": a.psam_reader,
            "terminal_id": _hex(self.terminal_id),
            "member_no": self.member_no,
            "balances": {"transit": t.report(), "etc": e.report()},
            "steps": [s.report() for s in self.steps],
        }


def _amount(text: str) -> int:
    n = int(text)
    if not 0 < n <= 100000:
        raise argparse.ArgumentTypeError("amount must be 1..100000 fen")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--card-reader", required=True, help="PC/SC name of the card's reader")
    p.add_argument("--psam-reader", required=True, help="PC/SC name of the PSAM's reader")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for each reader and card (default 10)")
    p.add_argument("--transit-load", type=_amount, default=1000, help="fen (default 1000)")
    p.add_argument("--transit-purchase", type=_amount, default=250, help="fen (default 250)")
    p.add_argument("--etc-load", type=_amount, default=3000, help="fen (default 3000)")
    p.add_argument("--etc-purchase", type=_amount, default=1550, help="fen (default 1550)")
    p.add_argument("--member-no", help="expected member number (DF41)")
    args = p.parse_args(argv)
    report = Terminal(args).run()
    json.dump(report, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
