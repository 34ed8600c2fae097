"""A scripted PBOC debit card for the kernel's sans-IO tests: its data, its records with a
real test PKI (the test keystore's CA, issuer and ICC keys), its cryptograms, and `drive`,
which feeds a session the scripted answers while checking every command it sends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from unioncard.apdu import ResponseAPDU, dol, tlv
from unioncard.apdu.tlv import Tlv
from unioncard.crypto import emv, oda
from unioncard.crypto.keystore import Keystore
from unioncard.terminal.emv import CapkStore, EmvPurchase
from unioncard.terminal.session import Authorize, Outcome, Send, Session

KEYS = Keystore.test()
AID = bytes.fromhex("A000000333010101")
PAN, PSN = "6230123456789012345", "01"
CA_INDEX = 0xF1
PDOL = bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C019F3704DF6001")
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
CDOL2 = bytes.fromhex("8A029F02069F03069F1A0295055F2A029A039C019F3704")
IMK = KEYS.emv_issuer_keys(AID).ac_mk
DKI = KEYS.emv_issuer_keys(AID).dki
MEMBER_SELECT = "00A404000AF0554E494F4E4341524400"
PSE_SELECT = "00A404000E315041592E5359532E444446303100"
PPSE_SELECT = "00A404000E325041592E5359532E444446303100"
AID_SELECT = "00A4040008A00000033301010100"


def p(tag: int, value: bytes | str) -> Tlv:
    return Tlv.primitive(tag, bytes.fromhex(value) if isinstance(value, str) else value)


def t(tag: int, *children: Tlv) -> Tlv:
    return Tlv.template(tag, children)


def hexof(node: Tlv | bytes) -> str:
    raw = node.to_bytes() if isinstance(node, Tlv) else node
    return raw.hex().upper()


@dataclass
class ScriptedCard:
    """The card's personalization: change a field, then ask for its answers."""

    aip: str = "5C00"
    expiry: str = "301231"
    effective: str = "200101"
    cvm_list: str = "000000000000000001001E031F03"  # PIN, else signature, else no CVM
    iac_denial: str = "0000000000"
    iac_online: str = "FC50ECA800"
    iac_default: str = "FC50ECA800"
    lcol: int = 5
    ucol: int = 10
    atc: int = 6
    last_online_atc: int = 4
    cdol1: bytes = CDOL1
    cdol2: bytes = CDOL2
    cvr: bytes = bytes.fromhex("03A0A000")
    afl: str = "08010202" "10010100"
    corrupt_issuer_certificate: bool = False
    extra: list[Tlv] = field(default_factory=list)

    @property
    def iad(self) -> bytes:
        return bytes([0x07, DKI, 0x01]) + self.cvr + b"\x01"

    # --- records ---------------------------------------------------------------------
    def signed_records(self) -> list[bytes]:
        one = t(0x70, p(0x57, PAN + "D" + self.expiry[:4] + "2201000000000F"),
                p(0x5F20, b"UNIONCARD/TEST"))
        two = t(0x70, p(0x5A, PAN + "F"), p(0x5F24, self.expiry), p(0x5F25, self.effective),
                p(0x5F28, "0156"), p(0x5F34, PSN), p(0x9F07, "FF00"), p(0x8E, self.cvm_list),
                p(0x8C, self.cdol1), p(0x8D, self.cdol2), p(0x9F0D, self.iac_default),
                p(0x9F0E, self.iac_denial), p(0x9F0F, self.iac_online), p(0x9F08, "0030"),
                p(0x9F42, "0156"), p(0x9F14, bytes([self.lcol])), p(0x9F23, bytes([self.ucol])),
                *self.extra)
        return [one.to_bytes(), two.to_bytes()]

    def static(self) -> bytes:
        return oda.static_data([(1, r) for r in self.signed_records()])

    def oda_record(self) -> bytes:
        ca = KEYS.ca_rsa(AID[:5], CA_INDEX).private
        issuer = KEYS.issuer_rsa(PAN)
        cert, remainder = oda.issuer_certificate(ca, issuer.private.public, issuer.issuer_id,
                                                 "1230", 1)
        if self.corrupt_issuer_certificate:
            cert = cert[:-1] + bytes([cert[-1] ^ 0x01])
        icc = self.icc_key()
        icc_cert, icc_rem = oda.icc_certificate(issuer.private, icc.public, PAN, "1230", 2,
                                                self.static())
        ssad = oda.sign_ssad(issuer.private, b"\xDA\xC1", self.static())
        nodes = [p(0x8F, bytes([CA_INDEX])), p(0x90, cert), p(0x9F32, issuer.private.public
                                                                 .exponent),
                 p(0x93, ssad), p(0x9F46, icc_cert), p(0x9F47, icc.public.exponent)]
        if remainder:
            nodes.append(p(0x92, remainder))
        if icc_rem:
            nodes.append(p(0x9F48, icc_rem))
        return t(0x70, *nodes).to_bytes()

    def icc_key(self) -> oda.PrivateKey:
        return KEYS.icc_rsa_key((PAN + PSN).encode())

    # --- answers ---------------------------------------------------------------------
    def fci(self) -> str:
        return hexof(t(0x6F, p(0x84, AID), t(0xA5, p(0x50, b"UnionPay Debit"), p(0x87, "01"),
                                            p(0x9F38, PDOL)))) + "9000"

    def gpo(self) -> str:
        return hexof(p(0x80, bytes.fromhex(self.aip + self.afl))) + "9000"

    def reads(self) -> list[tuple[str, str]]:
        one, two = self.signed_records()
        return [("00B2010C00", hexof(one) + "9000"), ("00B2020C00", hexof(two) + "9000"),
                ("00B2011400", hexof(self.oda_record()) + "9000")]

    def session_key(self, atc: int) -> bytes:
        return emv.session_key(emv.derive_udk(IMK, PAN, PSN), atc)

    def cryptogram(self, dol_data: bytes, atc: int, cdol: bytes = CDOL1) -> bytes:
        values = dol.split(dol.parse(cdol), dol_data)
        values.update({0x82: bytes.fromhex(self.aip), 0x9F36: atc.to_bytes(2, "big")})
        return emv.application_cryptogram(self.session_key(atc), emv.ac_data(values, self.cvr))

    def ac_answer(self, cid: int, atc: int, dol_data: bytes, cdol: bytes = CDOL1) -> str:
        value = (bytes([cid]) + atc.to_bytes(2, "big") + self.cryptogram(dol_data, atc, cdol)
                 + self.iad)
        return hexof(p(0x80, value)) + "9000"


# --- a sale against the scripted card --------------------------------------------

NOW = dt.datetime(2026, 12, 2, 10, 30, 0)
UN = bytes.fromhex("11223344")
CAPKS = CapkStore([KEYS.ca_rsa(AID[:5], CA_INDEX).capk])
PSE_FCI = hexof(t(0x6F, p(0x84, b"1PAY.SYS.DDF01"), t(0xA5, p(0x88, "01")))) + "9000"
DIRECTORY = hexof(t(0x70, t(0x61, p(0x4F, AID), p(0x50, b"UnionPay Debit"),
                            p(0x87, "01")))) + "9000"
# the PDOL data of a 100.00 yuan contact sale on 2026-12-02: TTQ (contact PBOC), amount,
# other amount, country 156, TVR zero, currency 156, date, type 00, UN, CAPP indicator 00
GPO_CONTACT = ("80A80000248322" "10000000" "000000010000" "000000000000" "0156" "0000000000"
               "0156" "261202" "00" "11223344" "00" "00")


def cdol1_data(tvr: str, amount: str = "000000010000") -> bytes:
    return bytes.fromhex(amount + "000000000000" "0156" + tvr + "0156" "261202" "00" "11223344")


def generate_ac(p1: str, data: bytes) -> str:
    return f"80AE{p1}00{len(data):02X}{data.hex().upper()}00"


def sale(amount: int = 10_000, **options: Any) -> EmvPurchase:
    options.setdefault("capks", CAPKS)
    return EmvPurchase(amount, now=NOW, unpredictable_number=UN, **options)


def start(card: ScriptedCard, gpo: str = GPO_CONTACT) -> list[tuple[str, object]]:
    """Member application absent, PSE with one entry, final SELECT, GPO, the AFL's records."""
    return [(MEMBER_SELECT, "6A82"), (PSE_SELECT, PSE_FCI), ("00B2010C00", DIRECTORY),
            ("00B2020C00", "6A83"), (AID_SELECT, card.fci()), (gpo, card.gpo()),
            *card.reads()]


def velocity(card: ScriptedCard, ec: str = "6A88") -> list[tuple[str, object]]:
    """GET DATA of the EC balance (none by default), the ATC and the last online ATC."""
    return [("80CA9F7900", ec), ("80CA9F3600", f"9F3602{card.atc:04X}9000"),
            ("80CA9F1300", f"9F1302{card.last_online_atc:04X}9000")]


def pin_ok() -> list[tuple[str, object]]:
    return [("80CA9F1700", "9F1701039000"), ("0020008008241234FFFFFFFFFF", "9000")]


PPSE_FCI = hexof(t(0x6F, p(0x84, b"2PAY.SYS.DDF01"), t(0xA5, t(0xBF0C, t(
    0x61, p(0x4F, AID), p(0x50, b"UnionPay Debit"), p(0x87, "01")))))) + "9000"


def qpboc_gpo(card: ScriptedCard, cid: int | None, amount: str, ttq: str, *,
              tamper: bool = False) -> tuple[str, str]:
    """The qPBOC GPO of ``amount`` with ``ttq`` and the card's answer: its cryptogram, the
    CID ``cid`` (None: no ``9F27``, the IAD's CVR tells), fDDA data."""
    pdol_data = bytes.fromhex(ttq + amount + "000000000000" "0156" "0000000000" "0156" "261202"
                              "00" "11223344" "00")
    related = bytes.fromhex("01" "1234" "00" "00")
    sdad = oda.sign_sdad(card.icc_key(), b"\x12\x34", UN + bytes.fromhex(amount)
                         + bytes.fromhex("0156") + (bytes(5) if tamper else related))
    values = dol.split(dol.parse(bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C01"
                                               "9F3704DF6001")), pdol_data)
    values.update({0x82: bytes.fromhex("7C00"), 0x9F36: b"\x00\x07"})
    ac = emv.application_cryptogram(card.session_key(7), emv.ac_data(values, card.cvr))
    answer = hexof(t(0x77, p(0x82, "7C00"), p(0x94, "0801020210010100"), p(0x9F36, "0007"),
                     p(0x9F26, ac), *([] if cid is None else [p(0x9F27, bytes([cid]))]),
                     p(0x9F10, card.iad), p(0x9F69, related), p(0x9F4B, sdad))) + "9000"
    return f"80A80000248322{pdol_data.hex().upper()}00", answer


def qpboc_start(card: ScriptedCard, gpo: tuple[str, str]) -> list[tuple[str, object]]:
    return [(MEMBER_SELECT, "6A82"), (PPSE_SELECT, PPSE_FCI), (AID_SELECT, card.fci()), gpo,
            *card.reads()]


Answer = str | Callable[[bytes], str]
"""A scripted answer: response hex, or a function of the command's data giving it."""


def drive(session: Session, script: Sequence[tuple[str, Answer]],
          host: object | None = None, *, lost_at: int | None = None) -> Outcome:
    """Run ``session`` against ``script``: each step's command must equal the expected hex
    (``"PREFIX*"`` matches a prefix); ``lost_at`` pulls the card at that step (0-based)."""
    step = session.start()
    index = 0
    while not isinstance(step, Outcome):
        if isinstance(step, Send):
            assert index < len(script), f"unexpected {step.what}: {step.apdu}"
            expected, answer = script[index]
            got = step.apdu.to_bytes().hex().upper()
            if expected.endswith("*"):
                assert got.startswith(expected[:-1]), (index, step.what, got)
            else:
                assert got == expected, (index, step.what, got, expected)
            if lost_at == index:
                step = session.fail(ConnectionError("card pulled"))
                index += 1
                continue
            text = answer(step.apdu.data) if callable(answer) else answer
            index += 1
            step = session.receive(ResponseAPDU.from_bytes(bytes.fromhex(text)))
        elif isinstance(step, Authorize):
            assert host is not None, "the session went online without a host"
            try:
                reply = host.authorize(step.request)  # type: ignore[attr-defined]
            except ConnectionError as exc:
                step = session.fail(exc)
                continue
            step = session.receive(reply)
        else:  # pragma: no cover - the EMV kernel journals nothing
            raise AssertionError(f"unexpected step {step}")
    assert index == len(script), f"stopped at {index} of {len(script)}: {step.reason}"
    return step


def find(raw: bytes, tag: int) -> bytes | None:
    node = tlv.find(tlv.decode(raw), tag)
    return None if node is None else node.value
