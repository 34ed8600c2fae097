"""The EMV POS kernel: a PBOC debit / qPBOC sale as a sans-IO session (docs/emv-kernel.md).

`EmvPurchase` follows EMV 4.3 Book 3 §10 and PBOC 2.0/3.0:

1. the member application is read when the card has one, and the sale priced
   with the tariffs engine (merchant discounts): the charged amount is the
   amount authorised ``9F02``;
2. application selection (`unioncard.terminal.emv.selection`);
3. GET PROCESSING OPTIONS with the PDOL data (TTQ ``9F66``, amounts, country,
   TVR, currency, date, type, unpredictable number, EC support ``9F7A``, CAPP
   indicator ``DF60``, ...); a qPBOC card answers with its cryptogram already;
4. READ RECORD over the AFL, the records signed for ODA kept;
5. offline data authentication: SDA, DDA (INTERNAL AUTHENTICATE), CDA (with
   GENERATE AC), fDDA (qPBOC);
6. processing restrictions, cardholder verification, terminal risk management
   (floor limit, or the EC terminal limit for electronic cash; random selection;
   velocity);
7. terminal action analysis with the TACs and IACs, first GENERATE AC, card
   action analysis (CID);
8. online: the issuer host verifies the ARQC and answers ARC and ARPC; issuer
   authentication (``91`` in CDOL2, or EXTERNAL AUTHENTICATE); second GENERATE AC.

Time (``now``), the unpredictable number, the random-selection draw, the PIN
entries and the terminal's settings are inputs.  TVR and TSI bits are those of
`unioncard.terminal.emv.flags`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Sequence
from typing import Any

from unioncard.apdu import SW, dol, records, tlv
from unioncard.apdu.masking import mask_digits
from unioncard.apdu.member import MemberRecord
from unioncard.apdu.status import describe as describe_sw
from unioncard.crypto import oda
from unioncard.errors import CardError, DecodeError
from unioncard.tariffs import Mode, Quote, QuoteContext, RuleSet, default_rules, quote
from unioncard.terminal.card import card_send, member_dict, membership_active, read_member
from unioncard.terminal.emv import commands as cmd
from unioncard.terminal.emv.authentication import (
    CapkStore,
    Keys,
    choose_method,
    failure_tvr,
    recover_keys,
)
from unioncard.terminal.emv.commands import CryptogramType
from unioncard.terminal.emv.cvm import CvmOutcome, contactless_cvm, verify_cardholder
from unioncard.terminal.emv.data import (
    CardData,
    bcd_amount,
    decode,
    parse_afl,
    parse_amount,
)
from unioncard.terminal.emv.flags import AIP, TSI, TTQ, TVR, names
from unioncard.terminal.emv.risk import (
    action_analysis,
    floor_limit,
    random_selection,
    restrictions,
    velocity,
)
from unioncard.terminal.emv.selection import select_application
from unioncard.terminal.emv.settings import EmvSettings
from unioncard.terminal.issuer_host import AuthorizationRequest, AuthorizationResponse
from unioncard.terminal.session import (
    Authorize,
    Decision,
    Flow,
    LinkLost,
    Outcome,
    Refused,
    Session,
    Step,
)

__all__ = ["DEFAULT_DDOL", "EmvPurchase"]

DEFAULT_DDOL = bytes.fromhex("9F3704")
"""The terminal's default DDOL: the unpredictable number (Book 3 §6.5.9)."""
UNABLE_ONLINE_APPROVED, UNABLE_ONLINE_DECLINED = b"Y3", b"Z3"
"""ARCs the terminal sets when it could not go online (Book 4 §A6)."""
CID_REASONS = {0: "", 1: "service not allowed", 2: "PIN try limit exceeded",
               3: "issuer authentication failed"}
"""The CID's reason codes, b3-b1 (Book 3 §6.5.5.4)."""
CTQ_ONLINE_IF_ODA_FAILS = 0x20
"""CTQ ``9F6C`` byte 1 b6: go online if offline data authentication fails and the reader is
online capable (JR/T 0025.12; EMV Contactless Book C-3 Annex A.2)."""
RANK = {CryptogramType.AAC: 0, CryptogramType.ARQC: 1, CryptogramType.TC: 2}
"""Book 3 §10.8: a card may answer the cryptogram asked for or one of lower rank (a TC
request may get an ARQC or an AAC, an ARQC request an AAC), never a higher one."""
AC_TAGS = (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x82, 0x9F36)
"""What a PBOC CVN 01 cryptogram covers (docs/protocol.md §5), for the issuer host."""

SubFlow = Generator[Step, Any, Any]


def _record_template(raw: bytes) -> tlv.Tlv | None:
    """The record's template ``70`` when the record is exactly one, else None."""
    try:
        nodes = tlv.decode(raw)
    except DecodeError:
        return None
    return nodes[0] if len(nodes) == 1 and nodes[0].tag == 0x70 else None


def _cryptogram_type(cid: int) -> CryptogramType:
    """The cryptogram type of a CID ``9F27`` (b8-b7); ``11`` (RFU) is a card error."""
    try:
        return CryptogramType.of_cid(cid)
    except ValueError as exc:
        raise CardError(str(exc)) from None


def _iad_cryptogram_type(iad: bytes | None) -> CryptogramType | None:
    """The card's decision in the PBOC IAD ``9F10`` (docs/protocol.md §5): CVR byte 2
    (IAD byte 5) bits 6-5, ``00`` AAC, ``01`` TC, ``10`` ARQC; None when it cannot tell."""
    if iad is None or len(iad) < 7 or iad[0] < 6 or iad[3] != 0x03:
        return None
    bits = (iad[4] >> 4) & 0x03
    return {0: CryptogramType.AAC, 1: CryptogramType.TC, 2: CryptogramType.ARQC}.get(bits)


class EmvPurchase(Session):
    """A sale of ``amount`` fen (before the member discount) on the card's PBOC debit or
    credit application, over the contact or contactless interface.

    ``now`` is the local wall-clock time; ``unpredictable_number`` 4 random bytes
    and ``random_draw`` a number 1..99 for random selection, both drawn by the
    caller; ``pins`` the PIN entries in the order the cardholder types them
    (none: the cardholder does not enter one); ``capks`` the CA public keys;
    ``chosen_aid`` the application the cardholder picked (None: the highest
    priority).  The issuer host answers the online step (`run`'s ``host``).
    """

    flow_name = "pos-emv"

    def __init__(self, amount: int, *, now: dt.datetime, unpredictable_number: bytes,
                 settings: EmvSettings | None = None, contactless: bool = False,
                 pins: Sequence[str] = (), random_draw: int = 99,
                 capks: CapkStore | None = None, rules: RuleSet | None = None,
                 merchant: str | None = None, chosen_aid: bytes | None = None,
                 read_member: bool = True) -> None:
        super().__init__()
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError("a sale is a positive integer of fen")
        if now.tzinfo is not None:
            raise ValueError("now is the local wall-clock time, a naive datetime")
        if len(unpredictable_number) != 4:
            raise ValueError("the unpredictable number has 4 bytes")
        if not 1 <= random_draw <= 99:
            raise ValueError("the random selection draw is 1..99")
        for pin in pins:
            cmd.plaintext_pin_block(pin)  # a malformed PIN is refused before any APDU
        self.amount = amount
        self.now = now.replace(microsecond=0)
        self.unpredictable = bytes(unpredictable_number)
        self.settings = settings or EmvSettings()
        self.contactless = contactless
        self.pins = tuple(pins)
        self.random_draw = random_draw
        self.capks = capks if capks is not None else CapkStore()
        self.rules = rules if rules is not None else default_rules()
        self.merchant = merchant
        self.chosen_aid = chosen_aid
        self.read_member = read_member
        self.tvr = TVR(0)
        self.tsi = TSI(0)
        self.card = CardData()
        self.details: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.signature_failed = False
        """A CDA signature of a GENERATE AC did not verify: the sale is declined (Book 3
        §10.8); a CDA that failed before (key recovery) only sets its TVR bit."""
        self.covered: dict[int, bytes] = {}
        """The AC data elements as the card got them (PDOL, CDOL1, CDOL2 data)."""
        self.cdol1_data = b""
        self.pdol_data = b""
        self.unsigned_records: list[str] = []
        """Records the AFL marks for ODA that are not a template ``70`` (SFI 11-30):
        offline data authentication fails (Book 3 §10.3)."""

    # --- the flow ----------------------------------------------------------------------

    def flow(self) -> Flow:
        member = (yield from read_member()) if self.read_member else None
        priced = self._price(member)
        self.charged = priced.charged_amount
        self.priced = priced
        self.details.update(interface="contactless" if self.contactless else "contact",
                            member=member_dict(member) if member else None)
        if self.charged <= 0:
            raise Refused("nothing to pay after the member discount", Decision.DECLINED,
                          **self._amounts())
        if self.contactless and self.charged > self.settings.contactless_limit:
            raise Refused(f"{self.charged} fen is over the contactless limit of "
                          f"{self.settings.contactless_limit} fen: insert the card",
                          **self._amounts())
        refused: set[bytes] = set()
        while True:
            selected = yield from select_application(
                self.settings, contactless=self.contactless, chosen=self.chosen_aid,
                exclude=frozenset(refused))
            self.selected = selected
            self.card = CardData()
            self.card.add(selected.fci)
            self.details.update(aid=selected.candidate.aid.hex().upper(),
                                label=selected.candidate.label, selection=selected.method)
            self.values = self._terminal_values()
            pdol_data = yield from self._gpo()
            if pdol_data is not None:
                break
            refused.add(selected.candidate.aid)  # 6985: back to selection without it
        self.pdol_data = pdol_data
        self._covers(0x9F38, pdol_data)
        signed = yield from self._read_records()
        self._mandatory()
        if self.card.get(0x9F26) is not None and self.contactless:
            return (yield from self._qpboc(signed))
        return (yield from self._contact(signed))

    # --- pricing -----------------------------------------------------------------------

    def _price(self, member: MemberRecord | None) -> Quote:
        active = membership_active(member, self.now.date())
        card_type = records.CardType.UNION_MEMBER if active else records.CardType.ORDINARY
        return quote(QuoteContext(
            mode=Mode.POS, amount=self.amount, card_type=int(card_type), at=self.now,
            member_categories=member.category_flags if member else 0,
            member_status=member.status if member else records.MemberStatus.ACTIVE,
            merchant_id=self.merchant, merchant_category=self.settings.mcc,
            organization=member.organization if member else None), self.rules)

    def _amounts(self) -> dict[str, Any]:
        return {"list_amount": self.amount, "charged_amount": self.charged,
                "rules": self.priced.rules, "details": self._details()}

    # --- GPO and records ---------------------------------------------------------------

    def _ttq(self) -> TTQ:
        s = self.settings
        if not self.contactless:
            return TTQ.CONTACT_PBOC
        ttq = TTQ.QPBOC | (TTQ.SIGNATURE if s.supports_signature else TTQ(0))
        if not s.online_capable:
            ttq |= TTQ.OFFLINE_ONLY
        if not s.ec_supported or self.charged >= s.ec_limit:
            ttq |= TTQ.ONLINE_CRYPTOGRAM_REQUIRED
        if self.charged >= s.contactless_cvm_limit:
            ttq |= TTQ.CVM_REQUIRED
        return ttq

    def _terminal_values(self) -> dict[int, bytes]:
        s = self.settings
        ec = s.ec_supported and self.charged < s.ec_limit
        return {
            0x9F66: self._ttq().encoded(), 0x9F02: bcd_amount(self.charged),
            0x9F03: bcd_amount(0), 0x9F1A: bytes.fromhex(s.terminal_country),
            0x95: self.tvr.encoded(), 0x5F2A: bytes.fromhex(s.currency),
            0x5F36: bytes((s.currency_exponent,)),
            0x9A: bytes.fromhex(self.now.strftime("%y%m%d")), 0x9C: b"\x00",
            0x9F21: bytes.fromhex(self.now.strftime("%H%M%S")), 0x9F37: self.unpredictable,
            0xDF60: b"\x00", 0x9F7A: b"\x01" if ec else b"\x00",
            0x9F7B: bcd_amount(s.ec_limit), 0x9F35: bytes((s.terminal_type,)),
            0x9F33: bytes.fromhex(s.capabilities),
            0x9F40: bytes.fromhex(s.additional_capabilities),
            0x9F1B: s.floor_limit.to_bytes(4, "big"), 0x9F1C: s.terminal_id.encode(),
            0x9F16: s.merchant_id.encode()[:15].ljust(15), 0x9F15: bytes.fromhex(f"{s.mcc:04d}"),
            0x9F4E: s.merchant_name.encode()[:40], 0x9F09: bytes.fromhex(
                s.application_versions[-1]), 0x9F34: b"\x3f\x00\x00", 0x9F4C: b"",
            0x8A: b"", 0x91: b"",
        }

    def _gpo(self) -> Generator[Step, Any, bytes | None]:
        """GET PROCESSING OPTIONS: the PDOL data sent, or None when the card answered
        ``6985`` (conditions of use not satisfied: another application is tried)."""
        raw_pdol = self.card.get(0x9F38)
        entries = dol.parse(raw_pdol) if raw_pdol else []
        data = dol.build(entries, self.values)
        answer = yield card_send(cmd.get_processing_options(data), "GET PROCESSING OPTIONS")
        if answer.sw == SW.CONDITIONS_NOT_SATISFIED:
            return None
        if answer.sw != SW.OK:
            raise Refused(f"GET PROCESSING OPTIONS refused: {describe_sw(answer.sw)}",
                          Decision.ERROR, **self._amounts())
        nodes = decode(answer.data, "GET PROCESSING OPTIONS")
        if len(nodes) != 1 or nodes[0].tag not in (0x80, 0x77):
            raise CardError("GET PROCESSING OPTIONS answered neither format 1 (80) nor 2 (77)")
        if nodes[0].tag == 0x80:
            if len(nodes[0].value) < 2 or (len(nodes[0].value) - 2) % 4:
                raise CardError("GET PROCESSING OPTIONS format 1 is not AIP then AFL")
            self.card.set(0x82, nodes[0].value[:2])
            self.card.set(0x94, nodes[0].value[2:])
        else:
            self.card.add(nodes[0].children, unique=True, what="GET PROCESSING OPTIONS")
        if self.card.get(0x82) is None or len(self.card[0x82]) != 2:
            raise CardError("GET PROCESSING OPTIONS gave no AIP")
        return data

    def _read_records(self) -> Generator[Step, Any, list[tuple[int, bytes]]]:
        afl = self.card.get(0x94)
        signed: list[tuple[int, bytes]] = []
        if not afl:
            return signed
        for entry in parse_afl(afl):
            for number, for_oda in entry.records():
                what = f"READ RECORD SFI {entry.sfi} #{number}"
                answer = yield card_send(cmd.read_record(entry.sfi, number), what)
                if answer.sw != SW.OK:
                    # Book 3 §10.2: a record the AFL lists must be there
                    raise Refused(f"the card cannot give a record its AFL lists ({what}: "
                                  f"{describe_sw(answer.sw)})", Decision.ERROR,
                                  **self._amounts())
                record = _record_template(answer.data)
                if record is not None:
                    self.card.add(record.children, unique=True, what=what)
                elif entry.sfi <= 10:  # Book 3 §10.2: SFI 1-10 records are templates 70
                    raise CardError(f"{what} is not a record template 70")
                elif for_oda:  # SFI 11-30: outside EMV, not parsed; ODA fails (§10.3)
                    self.unsigned_records.append(what)
                if for_oda:
                    signed.append((entry.sfi, answer.data))
        return signed

    def _mandatory(self) -> None:
        """Book 3 §10.2: without these the transaction ends."""
        needed = [(0x5F24, "expiry date")]
        if self.card.pan is None:
            needed.append((0x5A, "PAN"))
        if self.card.get(0x9F26) is None:
            needed += [(0x8C, "CDOL1"), (0x8D, "CDOL2")]
        missing = [f"{name} ({tag:X})" for tag, name in needed if self.card.get(tag) is None]
        if missing:
            raise Refused(f"the card lacks mandatory data: {', '.join(missing)}", Decision.ERROR,
                          **self._amounts())

    # --- offline data authentication ---------------------------------------------------

    def _static(self, signed: list[tuple[int, bytes]]) -> bytes:
        if self.unsigned_records:
            raise oda.OdaFailure(f"{self.unsigned_records[0]} (not a template 70)",
                                 oda.OdaReason.STATIC_DATA)
        return oda.static_data(signed, self.card.get(0x9F4A) or b"",
                               {0x82: self.card[0x82]})

    def _keys(self, method: str, signed: list[tuple[int, bytes]]) -> Keys | None:
        """The keys ``method`` needs, or None with its TVR bits set."""
        try:
            keys = recover_keys(self.card, self.selected.candidate.aid, self.capks,
                                self.settings, self.now.date(), static=self._static(signed),
                                icc=method != "sda")
        except oda.OdaFailure as failure:
            self._oda_failed(method, failure)
            return None
        self.warnings += keys.warnings
        return keys

    def _oda_failed(self, method: str, failure: oda.OdaFailure) -> None:
        self.tvr |= failure_tvr(method, failure)
        self.tsi |= TSI.ODA_PERFORMED
        self.details["oda_failure"] = str(failure)
        if failure.reason is oda.OdaReason.CAPK_EXPIRED:
            self.warnings.append(f"{failure.what}: not used (the terminal refuses expired "
                                 "CA keys)")

    def _authenticate(self, method: str | None, signed: list[tuple[int, bytes]]
                      ) -> Generator[Step, Any, Keys | None]:
        """SDA or DDA now; for CDA only the keys (the signature comes with GENERATE AC)."""
        self.details["oda"] = method or "none"
        if method is None:
            self.tvr |= TVR.ODA_NOT_PERFORMED
            return None
        if method == "sda":
            self.tvr |= TVR.SDA_SELECTED
        keys = self._keys(method, signed)
        if keys is None or method == "cda":
            return keys
        self.tsi |= TSI.ODA_PERFORMED
        try:
            if method == "sda":
                ssad = self.card.get(0x93)
                if ssad is None:
                    raise oda.OdaFailure("signed static data", oda.OdaReason.DATA_MISSING)
                self.card.set(0x9F45, oda.verify_ssad(keys.issuer, ssad, self._static(signed)))
            else:
                assert keys.icc is not None
                yield from self._dda(keys.icc)
        except oda.OdaFailure as failure:
            self._oda_failed(method, failure)
            return None
        return keys

    def _dda(self, icc: oda.PublicKey) -> SubFlow:
        entries = dol.parse(self.card.get(0x9F49) or DEFAULT_DDOL)
        if all(e.tag != 0x9F37 for e in entries):  # Book 2 §6.5.1
            raise oda.OdaFailure("DDOL without the unpredictable number 9F37",
                                 oda.OdaReason.FORMAT)
        data = dol.build(entries, self._dol_values())
        answer = yield card_send(cmd.internal_authenticate(data), "INTERNAL AUTHENTICATE")
        if answer.sw != SW.OK:
            raise oda.OdaFailure(f"INTERNAL AUTHENTICATE ({answer.sw:04X})",
                                 oda.OdaReason.DATA_MISSING)
        nodes = decode(answer.data, "INTERNAL AUTHENTICATE")
        sdad = (nodes[0].value if nodes and nodes[0].tag == 0x80
                else getattr(tlv.find(nodes, 0x9F4B), "value", None))
        if sdad is None:
            raise oda.OdaFailure("signed dynamic data", oda.OdaReason.DATA_MISSING)
        self.card.set(0x9F4C, oda.verify_sdad(icc, sdad, data))

    # --- contact -----------------------------------------------------------------------

    def _contact(self, signed: list[tuple[int, bytes]]) -> Flow:
        aip = AIP(int.from_bytes(self.card[0x82], "big"))
        method = choose_method(aip, self.settings, contactless=False)
        keys = yield from self._authenticate(method, signed)
        self.tvr |= restrictions(self.card, self.settings, self.now.date())
        cvm = yield from self._cvm(aip)
        ec = yield from self._risk(aip)
        iac = {"denial": self.card.get(0x9F0E), "online": self.card.get(0x9F0F),
               "default": self.card.get(0x9F0D)}
        kind = action_analysis(self.tvr, self.settings, iac,
                               online=self.settings.online_capable)
        cda = method == "cda" and keys is not None and kind is not CryptogramType.AAC
        first = yield from self._generate_ac(kind, 0x8C, cda=cda, keys=keys, first=True)
        cid_kind = _cryptogram_type(first[0x9F27][0])
        why = self._cid_facts(first[0x9F27][0])
        if RANK[cid_kind] > RANK[kind]:  # a card may only lower the request (Book 3 §10.8)
            raise CardError(f"GENERATE AC answered {cid_kind.name} to a request for "
                            f"{kind.name}")
        cda_failed = self.signature_failed
        if cid_kind is CryptogramType.TC and not cda_failed:
            path = "ec offline" if ec or 0x9F74 in first else "offline"
            return self._result(Decision.APPROVED, f"approved {path} by the card", cvm,
                                 path=path)
        if cid_kind is CryptogramType.ARQC and not cda_failed:
            return (yield from self._online(aip, cvm, keys, cda=method == "cda"))
        if cda_failed and cid_kind is CryptogramType.ARQC:
            yield from self._generate_ac(CryptogramType.AAC, 0x8D, cda=False, keys=None,
                                         first=False)
        reason = ("declined: the card's CDA signature does not verify" if cda_failed
                  else "declined offline by the card" + (f" ({why})" if why else ""))
        return self._result(Decision.DECLINED, reason, cvm, path="offline")

    def _cid_facts(self, cid: int) -> str:
        """The CID's advice bit and reason code (Book 3 §6.5.5.4, b4 and b3-b1): reported
        (``cid_reason``; this terminal sends no advices); the reason, '' when none."""
        reason = CID_REASONS.get(cid & 0x07, f"reason code {cid & 0x07} (RFU)")
        if reason:
            self.details["cid_reason"] = reason
        if cid & 0x08:
            self.warnings.append("the card asks for an advice; this terminal sends none")
        return reason

    def _cvm(self, aip: AIP) -> Generator[Step, Any, CvmOutcome]:
        if not aip & AIP.CARDHOLDER_VERIFICATION_SUPPORTED:
            return CvmOutcome(b"\x3f\x00\x00", TVR(0), False, False)
        cvm: CvmOutcome = yield from verify_cardholder(self.card, self.charged, self.settings,
                                                       self.pins)
        self.tvr |= cvm.tvr
        if cvm.performed:
            self.tsi |= TSI.CARDHOLDER_VERIFICATION_PERFORMED
        self.values[0x9F34] = cvm.results
        return cvm

    def _get_data(self, tag: int, what: str) -> Generator[Step, Any, bytes | None]:
        """The data object ``tag`` by GET DATA; None when the card does not give it (an
        error status, or an answer that is not that data object)."""
        answer = yield card_send(cmd.get_data(tag), f"GET DATA {what}")
        if answer.sw != SW.OK:
            return None
        try:
            found = tlv.find(tlv.decode(answer.data), tag)
        except DecodeError:
            found = None
        return None if found is None else found.value

    def _risk(self, aip: AIP) -> Generator[Step, Any, bool]:
        """Terminal risk management; True for an electronic cash transaction: the terminal
        supports EC, the amount is under its EC limit ``9F7B`` and within the card's EC
        balance ``9F79`` (GET DATA); the EC limit then stands for the floor limit."""
        s = self.settings
        ec = False
        if s.ec_supported and self.charged < s.ec_limit:  # an EC card tells its balance
            balance = yield from self._get_data(0x9F79, "EC balance")
            if balance is not None and len(balance) == 6 and balance.hex().isdigit():
                self.details["ec_balance"] = parse_amount(balance, "EC balance")
                ec = self.details["ec_balance"] >= self.charged
        self.details["ec"] = ec
        if not aip & AIP.TRM_TO_BE_PERFORMED:
            return ec
        self.tsi |= TSI.TRM_PERFORMED
        self.tvr |= floor_limit(self.charged, s.ec_limit if ec else s.floor_limit)
        if not ec:
            self.tvr |= random_selection(self.charged, s, self.random_draw)
        if self.card.get(0x9F14) is not None and self.card.get(0x9F23) is not None:
            atc = yield from self._get_data(0x9F36, "ATC")
            last = yield from self._get_data(0x9F13, "last online ATC")
            self.tvr |= velocity(self.card, atc, last)
        return ec

    def _generate_ac(self, kind: CryptogramType, dol_tag: int, *, cda: bool,
                     keys: Keys | None, first: bool) -> Generator[Step, Any, dict[int, bytes]]:
        """GENERATE AC (first with CDOL1 ``8C``, second with CDOL2 ``8D``); its answer by tag.

        A card that does not answer ends the transaction as an error; nothing is
        approved without a cryptogram (the card's own log and EC balance stay
        consistent by its atomic writes)."""
        self.values[0x95] = self.tvr.encoded()
        entries = dol.parse(self.card[dol_tag])
        data = dol.build(entries, self._dol_values())
        self._covers(dol_tag, data)
        if first:
            self.cdol1_data = data
        which = "first" if first else "second"
        try:
            answer = yield card_send(cmd.generate_ac(kind, data, cda=cda),
                                     f"GENERATE AC ({which}, {kind.name})")
        except LinkLost as lost:
            self.tsi |= TSI.CARD_RISK_MANAGEMENT_PERFORMED
            ec = " (an electronic cash purchase may be in the card's log)" \
                if self.details.get("ec") and first else ""
            raise Refused(f"the card was lost during the {which} GENERATE AC ({lost}): the "
                          f"transaction is not approved{ec}", Decision.ERROR,
                          **self._amounts()) from None
        if answer.sw != SW.OK:
            raise Refused(f"the {which} GENERATE AC was refused: {describe_sw(answer.sw)}",
                          Decision.ERROR, **self._amounts())
        self.tsi |= TSI.CARD_RISK_MANAGEMENT_PERFORMED
        got = self._ac_response(answer.data, which)
        self.card.discard(0x9F26)  # a CDA answer's AC is known once its signature verifies
        for tag, value in got.items():
            self.card.set(tag, value)
        unsigned_aac = got[0x9F27][0] & 0xC0 == CryptogramType.AAC and 0x9F4B not in got
        if cda and not unsigned_aac:  # an AAC comes unsigned: no CDA (Book 3 §10.8)
            self.tsi |= TSI.ODA_PERFORMED
            assert keys is not None and keys.icc is not None
            try:
                self._verify_cda(keys.icc, answer.data, got, data, first)
            except oda.OdaFailure as failure:
                self._oda_failed("cda", failure)
                self.signature_failed = True
        return got

    def _ac_response(self, raw: bytes, which: str) -> dict[int, bytes]:
        nodes = decode(raw, f"GENERATE AC ({which})")
        if len(nodes) != 1 or nodes[0].tag not in (0x80, 0x77):
            raise CardError(f"the {which} GENERATE AC answered neither format 1 nor 2")
        if nodes[0].tag == 0x80:
            value = nodes[0].value
            if len(value) < 11:
                raise CardError(f"the {which} GENERATE AC format 1 is too short")
            got = {0x9F27: value[:1], 0x9F36: value[1:3], 0x9F26: value[3:11]}
            if len(value) > 11:
                got[0x9F10] = value[11:]
            return got
        got = {n.tag: n.value for n in nodes[0].children}
        # with CDA the AC travels inside the signature 9F4B (Book 2 §6.6.1)
        for tag in (0x9F27, 0x9F36) if 0x9F4B in got else (0x9F27, 0x9F36, 0x9F26):
            if tag not in got:
                raise CardError(f"the {which} GENERATE AC lacks {tag:X}")
        return got

    def _verify_cda(self, icc: oda.PublicKey, raw: bytes, got: dict[int, bytes],
                    data: bytes, first: bool) -> None:
        sdad = got.get(0x9F4B)
        if sdad is None:
            raise oda.OdaFailure("CDA signature", oda.OdaReason.DATA_MISSING)
        digest = oda.cda_transaction_hash(
            self.pdol_data, self.cdol1_data, oda.response_without_sdad(raw),
            b"" if first else data)
        result = oda.verify_cda(icc, sdad, self.unpredictable, got[0x9F27][0], digest)
        if got.get(0x9F26, result.cryptogram) != result.cryptogram:
            raise oda.OdaFailure("CDA signature", oda.OdaReason.HASH)
        got[0x9F26] = result.cryptogram
        self.card.set(0x9F26, result.cryptogram)
        self.card.set(0x9F4C, result.dynamic_number)

    # --- online ------------------------------------------------------------------------

    def _dol_values(self) -> dict[int, bytes]:
        """What a DOL may name (Book 3 §5.4): the terminal's data, and the card's that the
        terminal knows (AIP, ATC, the ICC dynamic number of DDA, ...); an empty terminal
        value (no ARC yet) leaves the card's, if any."""
        card = dict(self.card.items())
        return {**card, **{t: v for t, v in self.values.items() if v or t not in card}}

    def _covers(self, dol_tag: int, data: bytes) -> None:
        """Remember the AC data elements as the card got them in this DOL's data."""
        raw = self.card.get(dol_tag)
        if raw:
            sent = dol.split(dol.parse(raw), data)
            self.covered.update({t: v for t, v in sent.items() if t in AC_TAGS})

    def _ac_values(self) -> dict[int, bytes]:
        """What the card's last cryptogram covers (docs/protocol.md §5): the values it got
        in the PDOL and CDOL data (the terminal's own for any it was not sent), its AIP
        and ATC."""
        values = {**{t: v for t, v in self.values.items() if t in AC_TAGS}, **self.covered,
                  0x82: self.card[0x82], 0x9F36: self.card[0x9F36]}
        return {t: values[t] for t in AC_TAGS if t in values}

    def _request(self) -> AuthorizationRequest:
        pan = self.card.pan or ""
        expiry = self.card.date(0x5F24, "application expiration date")
        return AuthorizationRequest(
            pan=pan, psn=self.card.psn, atc=int.from_bytes(self.card[0x9F36], "big"),
            arqc=self.card[0x9F26], values=self._ac_values(),
            iad=self.card.get(0x9F10) or b"", amount=self.charged, when=self.now,
            aid=self.selected.candidate.aid,
            terminal_id=self.settings.terminal_id, merchant_id=self.settings.merchant_id,
            expiry=expiry)

    def _ask_issuer(self) -> Generator[Step, Any, AuthorizationResponse | None]:
        """The issuer's answer, or None when it cannot be had: the issuer is not reached,
        or this terminal is offline-only (Book 3 §10.7: "unable to go online")."""
        if not self.settings.online_capable:
            self.warnings.append("the card asks to go online and this terminal is "
                                 "offline-only")
            return None
        try:
            response: AuthorizationResponse = yield Authorize(self._request())
        except LinkLost as lost:
            self.warnings.append(f"the issuer could not be reached: {lost}")
            return None
        self.details.update(arc=response.arc.decode("ascii", "replace"),
                            issuer_reason=response.reason,
                            authorization_code=response.authorization_code or None)
        return response

    def _online(self, aip: AIP, cvm: CvmOutcome, keys: Keys | None, *, cda: bool) -> Flow:
        response = yield from self._ask_issuer()
        if response is None:
            iac = {"denial": self.card.get(0x9F0E), "online": self.card.get(0x9F0F),
                   "default": self.card.get(0x9F0D)}
            kind = action_analysis(self.tvr, self.settings, iac, online=True,
                                   unable_online=True)
            arc = UNABLE_ONLINE_APPROVED if kind is CryptogramType.TC else UNABLE_ONLINE_DECLINED
            self.details["arc"] = arc.decode()
            issuer_data = b""
        else:
            kind = CryptogramType.TC if response.approved else CryptogramType.AAC
            arc, issuer_data = response.arc, response.issuer_authentication_data
        self.values[0x8A] = arc
        self.values[0x91] = issuer_data
        cdol2 = [e.tag for e in dol.parse(self.card[0x8D])]
        if issuer_data and aip & AIP.ISSUER_AUTHENTICATION_SUPPORTED:
            self.tsi |= TSI.ISSUER_AUTHENTICATION_PERFORMED
            if 0x91 not in cdol2:
                answer = yield card_send(cmd.external_authenticate(issuer_data),
                                         "EXTERNAL AUTHENTICATE")
                if answer.sw != SW.OK:
                    self.tvr |= TVR.ISSUER_AUTHENTICATION_FAILED
        second = yield from self._generate_ac(kind, 0x8D, cda=cda and keys is not None
                                              and kind is CryptogramType.TC, keys=keys,
                                              first=False)
        final = _cryptogram_type(second[0x9F27][0])
        self._cid_facts(second[0x9F27][0])
        if final is CryptogramType.ARQC or RANK[final] > RANK[kind]:
            raise CardError(f"the second GENERATE AC answered {final.name} to a request for "
                            f"{kind.name}")
        if final is CryptogramType.TC and not self.signature_failed:
            how = "online" if response is not None else "offline (unable to go online)"
            return self._result(Decision.APPROVED, f"approved {how}", cvm,
                                 path="online" if response is not None else "offline")
        if response is None:
            reason = ("declined: the issuer could not be reached"
                      if self.settings.online_capable
                      else "declined: the card asks to go online and this terminal is "
                           "offline-only")
        elif not response.approved:
            reason = f"declined by the issuer ({response.arc.decode('ascii', 'replace')}: " \
                     f"{response.reason})"
        elif self.signature_failed:
            reason = "declined: the card's CDA signature does not verify"
        else:
            reason = ("declined by the card after the issuer approved: issuer authentication "
                      "failed (the ARPC does not verify)")
        return self._result(Decision.DECLINED, reason, cvm, path="online")

    # --- qPBOC -------------------------------------------------------------------------

    def _qpboc(self, signed: list[tuple[int, bytes]]) -> Flow:
        """The card decided in GPO: TC offline (with fDDA), ARQC online, AAC declined."""
        self.tsi |= TSI.CARD_RISK_MANAGEMENT_PERFORMED
        kind = self._qpboc_kind()
        aip = AIP(int.from_bytes(self.card[0x82], "big"))
        available = self.card.get(0x9F5D)  # available offline spending amount (EC balance)
        if available is not None and len(available) == 6 and available.hex().isdigit():
            self.details["ec_balance"] = parse_amount(available)
        self.tvr |= restrictions(self.card, self.settings, self.now.date())
        cvm = contactless_cvm(self.charged, self.settings, self.card)
        if cvm.performed:
            self.tsi |= TSI.CARDHOLDER_VERIFICATION_PERFORMED
        self.values[0x9F34] = cvm.results
        method = choose_method(aip, self.settings, contactless=True)
        asked_online = TTQ.of(self.values[0x9F66]) & TTQ.ONLINE_CRYPTOGRAM_REQUIRED
        if kind is CryptogramType.TC and asked_online:
            # TTQ byte 2 b8 asked for an online cryptogram (amount from the EC limit)
            self.details["oda"] = "none"
            self.warnings.append("the card approved offline although the terminal asked for "
                                 "an online cryptogram")
            return self._result(Decision.DECLINED, "declined: the card answered a TC to a "
                                 "request for an online cryptogram", cvm, path="qpboc offline")
        if kind is CryptogramType.TC:
            self.details["oda"] = method or "none"
            if method is None:
                self.tvr |= TVR.ODA_NOT_PERFORMED
            else:
                self._fdda(signed)
            if self.tvr & (TVR.DDA_FAILED | TVR.ODA_NOT_PERFORMED):
                ctq = self.card.get(0x9F6C) or b"\x00"
                if ctq[0] & CTQ_ONLINE_IF_ODA_FAILS and self.settings.online_capable:
                    self.warnings.append("offline data authentication failed: the card's CTQ "
                                         "asks to go online with its TC")
                    return (yield from self._qpboc_online(cvm))
                return self._result(Decision.DECLINED, "declined: offline data authentication "
                                     "(fDDA) failed", cvm, path="qpboc offline")
            if self.tvr & TVR.EXPIRED_APPLICATION:
                return self._result(Decision.DECLINED, "declined: the card has expired", cvm,
                                     path="qpboc offline")
            return self._result(Decision.APPROVED, "approved offline (electronic cash)", cvm,
                                 path="qpboc offline")
        if kind is CryptogramType.AAC:
            why = self._cid_facts(self.card[0x9F27][0])
            return self._result(Decision.DECLINED, "declined offline by the card"
                                 + (f" ({why})" if why else ""), cvm, path="qpboc offline")
        self.details["oda"] = "none"
        return (yield from self._qpboc_online(cvm))

    def _qpboc_online(self, cvm: CvmOutcome) -> Flow:
        """The card's ARQC, or its TC when fDDA failed and its CTQ asks to go online, to
        the issuer host (no second GENERATE AC: the transaction completes at the host)."""
        response = yield from self._ask_issuer()
        if response is None:
            return self._result(Decision.DECLINED, "declined: the issuer could not be reached"
                                 if self.settings.online_capable else "declined: the card "
                                 "asks to go online and this terminal is offline-only", cvm,
                                 path="qpboc online")
        if response.approved:
            return self._result(Decision.APPROVED, "approved online", cvm, path="qpboc online")
        return self._result(Decision.DECLINED, f"declined by the issuer "
                             f"({response.arc.decode('ascii', 'replace')}: {response.reason})",
                             cvm, path="qpboc online")

    def _qpboc_kind(self) -> CryptogramType:
        """The card's decision in its GPO answer: the CID ``9F27``, or without one (it is
        optional in qPBOC) the IAD's CVR; a card that tells neither is in error."""
        cid = self.card.get(0x9F27)
        if cid:
            return _cryptogram_type(cid[0])
        kind = _iad_cryptogram_type(self.card.get(0x9F10))
        if kind is None:
            raise CardError("the qPBOC GPO answer has a cryptogram but neither a CID (9F27) "
                            "nor an IAD (9F10) telling its type")
        self.card.set(0x9F27, bytes((kind,)))
        self.details["cid_from"] = "iad"
        return kind

    def _fdda(self, signed: list[tuple[int, bytes]]) -> None:
        keys = self._keys("fdda", signed)
        if keys is None:
            return
        self.tsi |= TSI.ODA_PERFORMED
        assert keys.icc is not None
        try:
            sdad, related = self.card.get(0x9F4B), self.card.get(0x9F69)
            if sdad is None or related is None:
                raise oda.OdaFailure("fDDA data", oda.OdaReason.DATA_MISSING)
            terminal = (self.unpredictable + self.values[0x9F02] + self.values[0x5F2A]
                        + related)
            self.card.set(0x9F4C, oda.verify_sdad(keys.icc, sdad, terminal))
        except oda.OdaFailure as failure:
            self._oda_failed("fdda", failure)

    # --- the outcome -------------------------------------------------------------------

    def _details(self) -> dict[str, Any]:
        card = self.card
        pan = card.pan
        details = {
            **self.details,
            "tvr": self.tvr.encoded().hex().upper(), "tsi": self.tsi.encoded().hex().upper(),
            "tvr_bits": names(self.tvr), "tsi_bits": names(self.tsi),
            "pan": None if pan is None else mask_digits(pan),
        }
        for tag, name in ((0x9F27, "cid"), (0x9F26, "ac"), (0x9F36, "atc"), (0x9F10, "iad")):
            value = card.get(tag)
            details[name] = None if value is None else value.hex().upper()
        return details

    def _clearing(self) -> dict[str, Any]:
        """The approved sale's cryptogram with everything needed to verify it (docs/emv-
        kernel.md §Clearing data): the issuer recomputes it from these values."""
        card = self.card
        return {"pan": card.pan, "psn": card.psn, "aid": self.selected.candidate.aid.hex()
                .upper(), "atc": int.from_bytes(card[0x9F36], "big"),
                "cid": card[0x9F27].hex().upper(), "ac": card[0x9F26].hex().upper(),
                "iad": (card.get(0x9F10) or b"").hex().upper(),
                "values": {f"{t:X}": v.hex().upper() for t, v in self._ac_values().items()},
                "amount": self.charged, "currency": self.settings.currency,
                "when": self.now.isoformat(), "terminal_id": self.settings.terminal_id,
                "merchant_id": self.settings.merchant_id}

    def _result(self, decision: Decision, reason: str, cvm: CvmOutcome, *,
                 path: str) -> Outcome:
        self.details.update(path=path, cvm_results=cvm.results.hex().upper(),
                            signature_required=cvm.signature and decision is Decision.APPROVED)
        if decision is Decision.APPROVED and self.card.get(0x9F26) is not None:
            self.details["clearing"] = self._clearing()
        if self.priced.rebate:
            self.details["rebate"] = self.priced.rebate
        return Outcome(self.flow_name, decision, reason, list_amount=self.amount,
                       charged_amount=self.charged, rules=self.priced.rules,
                       warnings=tuple(self.warnings), details=self._details())
