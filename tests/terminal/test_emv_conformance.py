"""EMV level-2 style conformance cases: the kernel against the simulated PBOC debit card,
in process, each case asserting the exact TVR and TSI bytes, the cryptogram and the
decision (docs/emv-kernel.md; the card: docs/pboc.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from unioncard.apdu import tlv
from unioncard.applet_sim import MemberData, issue_member_card
from unioncard.crypto import Keystore, emv, oda
from unioncard.terminal import run
from unioncard.terminal.emv import CapkStore, EmvPurchase, commands
from unioncard.terminal.issuer_host import (
    Account,
    AuthorizationRequest,
    AuthorizationResponse,
    SimulatedIssuer,
)
from unioncard.terminal.session import Decision
from unioncard.transport import Channel
from unioncard.transport.inprocess import InProcessTransport

KEYS = Keystore.test()
AID = bytes.fromhex("A000000333010101")
NOW = dt.datetime(2026, 12, 2, 10, 30)
PIN = "123456"
EC_START = 50_000
CAPKS = CapkStore([KEYS.ca_rsa(AID[:5], 0xF1).capk])
MEMBER = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
                    dt.date(2026, 1, 1), dt.date(2030, 12, 31), category_flags=0x03)
UN = iter(range(1, 1_000_000))


class Bench:
    """One simulated member card with its debit application, in a reader, and the issuer."""

    def __init__(self, *, expiry: dt.date | None = None, host: Any = None,
                 protocol: str = "T=1", ec_balance: int = EC_START, **issue: Any) -> None:
        self.card = issue_member_card(MEMBER, KEYS, card_no=42, ec_balance=ec_balance,
                                      random_source=1, expiry=expiry, protocol=protocol,
                                      **issue)
        self.app = self.card.apps["3F00/" + AID.hex().upper()]
        self.host = host or SimulatedIssuer.from_keystore(KEYS)
        self.insert()

    def insert(self) -> None:
        self.transport = InProcessTransport(self.card)
        self.transport.power_on()
        self.link = Channel(self.transport)

    def sale(self, amount: int, *, contactless: bool = False, pins: tuple[str, ...] = (PIN,),
             **options: Any) -> Any:
        session = EmvPurchase(amount, now=NOW, capks=CAPKS, contactless=contactless,
                              pins=pins, unpredictable_number=next(UN).to_bytes(4, "big"),
                              **options)
        return run(session, card=self.link, host=self.host)

    def get_data(self, tag: int) -> bytes:
        self.link.transmit(commands.select(AID))
        answer = self.link.transmit(commands.get_data(tag))
        assert answer.sw == 0x9000, f"{answer.sw:04X}"
        node = tlv.find(tlv.decode(answer.data), tag)
        assert node is not None
        return node.value

    def ec_balance(self) -> int:
        return int(self.get_data(0x9F79).hex())

    def atc(self) -> int:
        return int.from_bytes(self.get_data(0x9F36), "big")

    def log_count(self) -> int:
        """Records in the card's transaction log (SFI 0B), read until 6A83."""
        self.link.transmit(commands.select(AID))
        count = 0
        while self.link.transmit(commands.read_record(0x0B, count + 1)).sw == 0x9000:
            count += 1
        return count

    def record(self, sfi: int, number: int) -> bytes:
        return self.card.nvm.read(self.app.cell(f"rec.{sfi:02X}.{number}"))

    def replace_record(self, sfi: int, number: int, record: bytes) -> None:
        self.card.nvm.format(self.app.cell(f"rec.{sfi:02X}.{number}"), record)


def expect(outcome: Any, decision: Decision, tvr: str, tsi: str, cid: str, path: str) -> None:
    d = outcome.details
    got = (outcome.decision, d["tvr"], d["tsi"], d["cid"], d["path"])
    assert got == (decision, tvr, tsi, cid, path), (outcome.reason, d)


# --- approvals -----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_online_approval_contact_with_pin_and_cda(protocol: str) -> None:
    bench = Bench(protocol=protocol)  # T=0: 61xx and 6Cxx answered by the channel
    outcome = bench.sale(150_000)
    expect(outcome, Decision.APPROVED, "0000008000", "F800", "40", "online")
    d = outcome.details
    assert (d["oda"], d["cvm_results"], d["arc"]) == ("cda", "010302", "00")
    request, answer = bench.host.log[0]
    # the ARQC the host accepted is the card's, recomputed with the card's own keys
    udk = emv.derive_udk(KEYS.emv_issuer_keys(AID).ac_mk, request.pan, request.psn)
    sk = emv.session_key(udk, request.atc)
    assert emv.application_cryptogram(sk, emv.ac_data(request.values, request.cvr)) == \
        request.arqc
    assert answer.arpc == emv.arpc(sk, request.arqc, b"00")
    assert bench.ec_balance() == EC_START


def test_ec_offline_approval_contact_debits_the_ec_balance() -> None:
    bench = Bench()
    atc = bench.atc()
    outcome = bench.sale(3_000)
    expect(outcome, Decision.APPROVED, "0000000000", "E800", "40", "ec offline")
    assert outcome.details["ec_balance"] == EC_START and not bench.host.log
    assert bench.ec_balance() == EC_START - 3_000 and bench.atc() == atc + 1


def test_ec_offline_approval_contactless_qpboc_with_fdda() -> None:
    bench = Bench()
    outcome = bench.sale(3_000, contactless=True, pins=())
    expect(outcome, Decision.APPROVED, "0000000000", "E000", "40", "qpboc offline")
    assert outcome.details["oda"] == "fdda" and outcome.details["cvm_results"] == "1F0002"
    assert bench.ec_balance() == EC_START - 3_000


@pytest.mark.parametrize(("amount", "tsi", "cid", "path", "decision"), [
    (3_000, "E000", "40", "qpboc offline", Decision.APPROVED),
    (100_000, "6000", "80", "qpboc online", Decision.APPROVED)])
def test_qpboc_card_without_cid_is_read_from_the_iad(amount: int, tsi: str, cid: str,
                                                      path: str, decision: Decision) -> None:
    # many qPBOC cards leave the CID 9F27 out of the GPO answer: CVR byte 2 b6-b5 tell
    bench = Bench(qpboc_cid=False)
    outcome = bench.sale(amount, contactless=True, pins=())
    expect(outcome, decision, "0000000000", tsi, cid, path)
    assert outcome.details["cid_from"] == "iad"
    assert bench.ec_balance() == (EC_START - amount if cid == "40" else EC_START)
    clearing = outcome.details["clearing"]
    assert clearing["cid"] == cid
    assert SimulatedIssuer.from_keystore(KEYS).verifies(
        AuthorizationRequest.from_clearing(clearing))


@pytest.mark.parametrize(("contactless", "tsi", "cid", "path"), [
    (False, "F800", "40", "online"), (True, "6000", "80", "qpboc online")])
def test_amount_over_the_ec_limit_goes_online(contactless: bool, tsi: str, cid: str,
                                              path: str) -> None:
    bench = Bench()
    outcome = bench.sale(100_000, contactless=contactless, pins=() if contactless else (PIN,))
    tvr = "0000000000" if contactless else "0000008000"
    expect(outcome, Decision.APPROVED, tvr, tsi, cid, path)
    assert bench.host.log[0][1].arc == b"00" and bench.ec_balance() == EC_START


def test_ec_balance_short_goes_online() -> None:
    bench = Bench()
    outcome = bench.sale(EC_START + 1)
    expect(outcome, Decision.APPROVED, "0000008000", "F800", "40", "online")


def test_a_tc_request_over_the_cards_ec_single_limit_is_answered_arqc_and_goes_online() -> None:
    # the terminal sees an EC sale (under its EC limit, within the EC balance) and asks a
    # TC; the card's single-transaction limit 9F78 (500 yuan) sends it online (Book 3 §10.8)
    bench = Bench(ec_balance=90_000)
    outcome = bench.sale(60_000)
    expect(outcome, Decision.APPROVED, "0000000000", "F800", "40", "online")
    assert outcome.details["ec"] is True and bench.host.log[0][1].arc == b"00"
    assert bench.ec_balance() == 90_000  # not an EC purchase after all


def test_a_terminal_without_electronic_cash_gets_no_ec_purchase() -> None:
    # under its floor limit the terminal asks a TC, but its 9F7A says no EC support: the
    # card does not make it an EC purchase (JR/T 0025.13) and answers an ARQC
    from unioncard.terminal.emv import EmvSettings

    bench = Bench()
    outcome = bench.sale(3_000, settings=EmvSettings(ec_supported=False, floor_limit=10_000))
    expect(outcome, Decision.APPROVED, "0000000000", "F800", "40", "online")
    assert outcome.details["ec"] is False and bench.host.log[0][1].arc == b"00"
    assert bench.ec_balance() == EC_START and bench.log_count() == 1  # the online sale


# --- refusals ------------------------------------------------------------------------------

def test_expired_card() -> None:
    bench = Bench(expiry=dt.date(2025, 12, 31))
    outcome = bench.sale(3_000)
    # expired application; its ICC certificate (MMYY 1225) has expired too: CDA failed
    expect(outcome, Decision.DECLINED, "0440000000", "F800", "00", "online")
    assert outcome.details["arc"] == "54" and bench.ec_balance() == EC_START


def test_corrupted_issuer_certificate_fails_oda_and_forbids_offline_approval() -> None:
    bench = Bench()
    corrupt_issuer_certificate(bench)
    outcome = bench.sale(3_000)
    expect(outcome, Decision.APPROVED, "0400000000", "F800", "40", "online")
    assert "issuer certificate" in outcome.details["oda_failure"]
    assert bench.ec_balance() == EC_START  # went online instead of electronic cash


def corrupt_issuer_certificate(bench: Bench) -> None:
    record = tlv.decode(bench.record(2, 1))[0]
    nodes = [tlv.Tlv.primitive(n.tag, n.value[:-1] + bytes([n.value[-1] ^ 0x01]))
             if n.tag == 0x90 else n for n in record.children]
    bench.replace_record(2, 1, tlv.Tlv.template(0x70, nodes).to_bytes())


@pytest.mark.parametrize(("balance", "online_capable", "decision", "path", "arc"), [
    (None, True, Decision.APPROVED, "qpboc online", "00"),
    (1_000, True, Decision.APPROVED, "qpboc online", "00"),  # EC: not the account's money
    (None, False, Decision.DECLINED, "qpboc offline", None)])
def test_qpboc_fdda_failure_goes_online_as_the_ctq_asks(balance: int | None,
                                                        online_capable: bool,
                                                        decision: Decision, path: str,
                                                        arc: str | None) -> None:
    """The card's offline TC fails fDDA; its CTQ 9F6C byte 1 b6 says "go online if offline
    data authentication fails and the reader is online capable" (JR/T 0025.12, as qVSDC):
    an online reader sends the TC to the issuer, which approves or declines it; an
    offline-only reader declines.  The card debited its EC balance with the TC either way;
    the issuer does not take the amount from the account again."""
    from unioncard.terminal.emv import EmvSettings

    host = SimulatedIssuer.from_keystore(KEYS, accounts={})
    bench = Bench(host=host)
    host.accounts[bench.app.config.pan] = Account(balance=balance)
    corrupt_issuer_certificate(bench)
    outcome = bench.sale(3_000, contactless=True, pins=(),
                         settings=EmvSettings(online_capable=online_capable))
    expect(outcome, decision, "0800000000", "E000", "40", path)
    assert "issuer certificate" in outcome.details["oda_failure"]
    assert outcome.details.get("arc") == arc and len(host.log) == (1 if arc else 0)
    assert bench.ec_balance() == EC_START - 3_000
    assert host.accounts[bench.app.config.pan].balance == balance
    if arc:
        request = host.log[0][0]
        assert request.arqc == bytes.fromhex(outcome.details["ac"]) and request.cvr[1] & 0x30 \
            == 0x10  # the card's TC
        assert outcome.details["clearing"]["cid"] == "40"


def test_qpboc_fdda_failure_declined_by_the_issuer() -> None:
    host = SimulatedIssuer.from_keystore(KEYS, accounts={})
    bench = Bench(host=host)
    host.accounts[bench.app.config.pan] = Account(blocked=True)
    corrupt_issuer_certificate(bench)
    outcome = bench.sale(3_000, contactless=True, pins=())
    expect(outcome, Decision.DECLINED, "0800000000", "E000", "40", "qpboc online")
    assert outcome.details["arc"] == "62" and "clearing" not in outcome.details


def test_cda_signature_failure_declines() -> None:
    bench = Bench()
    # the ICC certificate now certifies another key of the pool: the card's CDA signature,
    # made with its own key, does not verify under the certified one
    record = tlv.decode(bench.record(2, 2))[0]
    pan, psn = bench.app.config.pan, bench.app.config.psn
    other = next(k for k in (oda.PrivateKey.from_pem(pem) for pem in KEYS.rsa_icc)
                 if k.public != KEYS.icc_rsa_key((pan + psn).encode()).public)
    static = oda.static_data([(1, bench.record(1, 1)), (1, bench.record(1, 2))], b"\x82",
                             {0x82: bytes.fromhex("7D00")})
    cert, remainder = oda.icc_certificate(KEYS.issuer_rsa(pan).private, other.public, pan,
                                          "1230", 42, static)
    nodes = [tlv.Tlv.primitive(0x9F46, cert), tlv.Tlv.primitive(0x9F47, other.public.exponent)]
    if remainder:
        nodes.append(tlv.Tlv.primitive(0x9F48, remainder))
    assert record.children[0].tag == 0x9F46
    bench.replace_record(2, 2, tlv.Tlv.template(0x70, nodes).to_bytes())
    outcome = bench.sale(150_000)
    expect(outcome, Decision.DECLINED, "0400008000", "E800", "00", "offline")
    assert "CDA signature" in outcome.details["oda_failure"] and not bench.host.log


def test_wrong_pin_until_blocked() -> None:
    bench = Bench()
    outcome = bench.sale(3_000, pins=("000000", "111111", "222222", PIN))
    expect(outcome, Decision.DECLINED, "0000A00000", "F800", "00", "online")
    assert outcome.details["cvm_results"] == "010301" and outcome.details["arc"] == "75"
    assert bench.get_data(0x9F17) == b"\x00"
    again = bench.sale(3_000)  # blocked: VERIFY is not even tried
    expect(again, Decision.DECLINED, "0000A00000", "F800", "00", "online")


def test_issuer_declines_insufficient_funds() -> None:
    host = SimulatedIssuer.from_keystore(KEYS, accounts={})
    bench = Bench(host=host)
    host.accounts[bench.app.config.pan] = Account(balance=1_000)
    outcome = bench.sale(150_000)
    expect(outcome, Decision.DECLINED, "0000008000", "F800", "00", "online")
    assert outcome.details["arc"] == "51" and "insufficient funds" in outcome.reason


class WrongArpc:
    """An issuer host whose ARPC does not match: a forged or garbled answer."""

    def __init__(self, host: SimulatedIssuer) -> None:
        self.host = host
        self.log = host.log

    def authorize(self, request: Any) -> AuthorizationResponse:
        answer = self.host.authorize(request)
        return dataclasses.replace(answer, arpc=bytes(b ^ 0xFF for b in answer.arpc))


def test_arpc_mismatch_the_card_declines_after_the_issuer_approved() -> None:
    bench = Bench(host=WrongArpc(SimulatedIssuer.from_keystore(KEYS)))
    outcome = bench.sale(150_000)
    expect(outcome, Decision.DECLINED, "0000008000", "F800", "00", "online")
    assert outcome.details["arc"] == "00" and "issuer authentication failed" in outcome.reason


def block_by_issuer_script(bench: Bench) -> None:
    """An online transaction whose issuer script blocks the application: APPLICATION BLOCK
    (EMV Book 3 §6.5.1) with its MAC (SMI session key) before the second GENERATE AC, as
    an issuer host sends it (this kernel sends no scripts: the test is the issuer here)."""
    from unioncard.apdu import CommandAPDU, dol
    from unioncard.applet_sim.pboc import CDOL1, CDOL2, PDOL
    from unioncard.terminal.emv.commands import CryptogramType

    link = bench.link
    assert link.transmit(commands.select(AID)).sw == 0x9000
    values = {0x9F02: bytes.fromhex("000000150000"), 0x5F2A: b"\x01\x56", 0x9F1A: b"\x01\x56",
              0x9A: bytes.fromhex("261202"), 0x9F37: bytes(4), 0x9F7A: b"\x01"}
    link.transmit(commands.get_processing_options(dol.build(dol.parse(PDOL), values)))
    first = link.transmit(commands.generate_ac(CryptogramType.ARQC,
                                               dol.build(dol.parse(CDOL1), values)))
    found = {n.tag: n.value for n in tlv.decode(first.data)[0].children}
    atc, arqc = int.from_bytes(found[0x9F36], "big"), found[0x9F26]
    pan, psn = bench.app.config.pan, bench.app.config.psn
    smi = emv.derive_udk(KEYS.emv_issuer_keys(AID).smi_mk, pan, psn)
    mac = emv.command_mac(emv.session_key(smi, atc), bytes.fromhex("841E000004"), atc, arqc,
                          b"")
    assert link.transmit(CommandAPDU(0x84, 0x1E, 0x00, 0x00, mac)).sw == 0x9000
    second = link.transmit(commands.generate_ac(CryptogramType.AAC, dol.build(
        dol.parse(CDOL2), {0x8A: b"05"})))
    assert second.sw == 0x9000


@pytest.mark.parametrize("contactless", [False, True])
def test_application_blocked_by_the_issuer_is_not_used(contactless: bool) -> None:
    bench = Bench()
    block_by_issuer_script(bench)
    atc = bench.app.atc
    outcome = bench.sale(3_000, contactless=contactless, pins=())
    # Book 1 §12.4: the final SELECT answers 6283 (FCI returned): the candidate is
    # dropped, and with no other application the transaction ends; no GPO was sent
    assert outcome.decision is Decision.DECLINED, outcome.reason
    assert outcome.reason == ("no application of the card can be used (A000000333010101 "
                              "(6283: selected file or application is blocked (FCI returned)))")
    assert bench.app.atc == atc and bench.ec_balance() == EC_START and not bench.host.log
    from unioncard.terminal import CardRead  # a reader still lists it, marked blocked

    read = run(CardRead(payment_applications=True), card=bench.link)  # through the PSE
    [app] = read.details["payment_applications"]
    assert app["blocked"] is True and app["aid"] == AID.hex().upper() and app["atc"] == atc


# --- a card torn during GENERATE AC ----------------------------------------------------------

def test_card_torn_during_generate_ac_keeps_ec_balance_and_atc_consistent() -> None:
    """The power is cut at every NVM write the card makes during GENERATE AC (before and
    after each), then the card is presented again."""
    amount = 3_000
    clean = Bench()
    clean.card.faults.start_trace()
    clean.sale(amount)
    trace = [str(point) for point in clean.card.faults.trace]
    first = next(i for i, point in enumerate(trace, 1) if point.startswith("emv.ec_balance"))
    seen = set()
    for n in range(first, len(trace) + 1):
        for after in (False, True):
            bench = Bench()
            atc_before = bench.atc()
            bench.card.faults.cut_at_write(n, after=after)
            outcome = bench.sale(amount)
            assert bench.card.faults.fired is not None
            bench.card.faults.disarm()
            bench.insert()  # the card is presented again: power-up recovers its NVM
            where = (trace[n - 1], after)
            assert outcome.decision is Decision.ERROR, where
            assert "first GENERATE AC" in outcome.reason, where
            # the card answered no cryptogram: its CDA never verified (no ODA performed)
            assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0000000000", "6800")
            balance, atc = bench.ec_balance(), bench.atc()
            assert atc == atc_before + 1, where
            # all of the EC purchase or none of it: balance and log record go together
            state = (balance, bench.log_count())
            assert state in ((EC_START, 0), (EC_START - amount, 1)), where
            seen.add(state)
            # the next sale sees a consistent card: a fresh ATC, the balance it reports
            again = bench.sale(amount)
            expect(again, Decision.APPROVED, "0000000000", "E800", "40", "ec offline")
            assert bench.ec_balance() == balance - amount and bench.atc() == atc + 1
    assert seen == {(EC_START, 0), (EC_START - amount, 1)}  # both sides of the commit


def test_member_discount_is_taken_before_gpo() -> None:
    bench = Bench()
    outcome = bench.sale(15_000, merchant="EXAMPLE-PARTNER-0001")
    expect(outcome, Decision.APPROVED, "0000000000", "E800", "40", "ec offline")
    assert (outcome.list_amount, outcome.charged_amount) == (15_000, 14_000), outcome.rules
    assert outcome.details["member"]["member_no"] == "20260001"
    assert bench.ec_balance() == EC_START - 14_000  # the card was asked for the charged amount
    plain = Bench().sale(15_000, merchant="ANOTHER-SHOP")
    assert plain.charged_amount == 15_000


def test_card_read_lists_the_payment_application_after_a_sale() -> None:
    from unioncard.terminal import CardRead

    bench = Bench()
    bench.sale(3_000)
    atc = bench.atc()
    outcome = run(CardRead(payment_applications=True), card=bench.link)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    [app] = outcome.details["payment_applications"]
    assert app["aid"] == AID.hex().upper() and app["pan"].startswith("623012*********")
    assert (app["ec_balance"], app["pin_tries"], app["atc"]) == (EC_START - 3_000, 3, atc)
    assert "read_after_gpo" not in app and bench.atc() == atc  # read without GPO
    [entry] = app["log"]
    assert entry["9F02"] == "000000003000" and entry["9A"] == "261202"
    unmasked = run(CardRead(payment_applications=True, unmask=True), card=bench.link)
    assert unmasked.details["payment_applications"][0]["pan"] == bench.app.config.pan
    assert "payment_applications" not in run(CardRead(), card=bench.link).details


@pytest.mark.parametrize(("amount", "contactless", "path"), [
    (3_000, False, "ec offline"), (150_000, False, "online"), (3_000, True, "qpboc offline"),
    (150_000, True, "qpboc online")])
def test_approved_sales_carry_clearing_data_the_issuer_verifies(amount: int,
                                                                contactless: bool,
                                                                path: str) -> None:
    from unioncard.terminal.issuer_host import AuthorizationRequest

    bench = Bench()
    outcome = bench.sale(amount, contactless=contactless, pins=() if contactless else (PIN,))
    assert outcome.details["path"] == path
    clearing = outcome.details["clearing"]
    assert clearing["ac"] == outcome.details["ac"] and clearing["amount"] == amount
    issuer = SimulatedIssuer.from_keystore(KEYS)
    assert issuer.verifies(AuthorizationRequest.from_clearing(clearing))
    forged = {**clearing, "values": {**clearing["values"], "9F02": f"{amount + 1:012d}"}}
    assert not issuer.verifies(AuthorizationRequest.from_clearing(forged))
    assert "clearing" not in bench.sale(3_000, pins=("0000", "1111", "2222")).details


@pytest.mark.parametrize(("capabilities", "oda", "tvr"), [
    ("E0A8C8", "cda", "0000008000"), ("E0A8C0", "dda", "0000008000"),
    ("E0A880", "sda", "0200008000"), ("E0A800", "none", "8000008000")])
def test_oda_method_follows_the_terminal_capabilities(capabilities: str, oda: str,
                                                     tvr: str) -> None:
    from unioncard.terminal.emv import EmvSettings

    bench = Bench()
    outcome = bench.sale(150_000, settings=EmvSettings(capabilities=capabilities))
    tsi = "7800" if oda == "none" else "F800"
    expect(outcome, Decision.APPROVED, tvr, tsi, "40", "online")
    assert outcome.details["oda"] == oda
