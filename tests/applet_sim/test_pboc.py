"""The PBOC debit application, PSE and PPSE of the simulated card (docs/pboc.md): sweeps,
GPO, records, GET DATA, PIN, DDA, GENERATE AC with CDA, issuer authentication, qPBOC with
fDDA, EC top-up with a MAC, the log, and tearing during GENERATE AC."""

import datetime as dt

import pytest

from unioncard.apdu import CommandAPDU, dol
from unioncard.apdu.tlv import decode, find
from unioncard.applet_sim import issue_member_card
from unioncard.applet_sim.nvm import Step
from unioncard.applet_sim.pboc import (
    CDOL1,
    CDOL2,
    DEBIT_AID,
    PDOL,
    Decision,
    Flags,
    PbocApplication,
    bcd_amount,
)
from unioncard.applet_sim.pboc_issue import debit_pan
from unioncard.crypto import emv, oda
from unioncard.errors import TransportError
from unioncard.transport.base import Channel
from unioncard.transport.inprocess import InProcessTransport

TODAY = dt.date(2026, 12, 2)
PSE = b"1PAY.SYS.DDF01"
PPSE = b"2PAY.SYS.DDF01"
CARD_NO = 42


@pytest.fixture
def bank_card(keys, member):
    card = issue_member_card(member, keys, card_no=CARD_NO, ec_balance=50_00, random_source=7)
    card.power_on()
    return card


def app_of(card) -> PbocApplication:
    return next(a for a in card.apps.values() if isinstance(a, PbocApplication))


class Terminal:
    """A bare terminal over a Channel (T=0 answers followed)."""

    def __init__(self, card):
        self.card = card
        self.transport = InProcessTransport(card)
        self.transport.power_on()
        self.channel = Channel(self.transport)

    def send(self, cla, ins, p1, p2, data=b"", le=256):
        r = self.channel.transmit(CommandAPDU(cla, ins, p1, p2, data, le))
        return r.data, r.sw

    def select(self, name: bytes):
        return self.send(0x00, 0xA4, 0x04, 0x00, name)

    def read(self, sfi, n):
        return self.send(0x00, 0xB2, n, (sfi << 3) | 4)

    def gpo(self, values):
        data = dol.build(dol.parse(PDOL), values)
        return self.send(0x80, 0xA8, 0, 0, b"\x83" + bytes([len(data)]) + data)

    def gac(self, p1, cdol, values):
        return self.send(0x80, 0xAE, p1, 0, dol.build(dol.parse(cdol), values))


def terminal_values(amount=1000, ttq="26000000", un="11223344", ec_terminal=True):
    return {0x9F66: bytes.fromhex(ttq), 0x9F02: bcd_amount(amount), 0x9F03: bytes(6),
            0x9F1A: b"\x01\x56", 0x95: bytes(5), 0x5F2A: b"\x01\x56", 0x9A: b"\x26\x12\x02",
            0x9C: b"\x00", 0x9F37: bytes.fromhex(un), 0xDF60: b"\x00",
            0x9F7A: b"\x01" if ec_terminal else b"\x00",
            0x9F21: b"\x10\x30\x00", 0x9F4E: b"UNION SHOP"}


def tlvs(data: bytes) -> dict[int, bytes]:
    nodes = decode(data)
    out = {}
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.children:
            stack += node.children
        else:
            out[node.tag] = node.value
    return out


def icc_public_key(keys, term: Terminal):
    """Recover the ICC key the way a kernel does, from the card's records."""
    records = {(s, n): term.read(s, n)[0] for s, n in ((1, 1), (1, 2), (2, 1), (2, 2), (2, 3))}
    data = {}
    for record in records.values():
        data.update(tlvs(record))
    capk = next(k for k in oda.load_capk_file(oda.__file__.replace(
        "crypto/oda.py", "data/capk-test.json")) if k.index == data[0x8F][0])
    pan = data[0x5A].hex().upper().rstrip("F")
    static = oda.static_data([(1, records[1, 1]), (1, records[1, 2])], data[0x9F4A],
                             {0x82: b"\x7D\x00"})
    issuer = oda.recover_issuer_key(capk, data[0x90], data.get(0x92, b""), data[0x9F32], pan,
                                    today=TODAY)
    assert oda.verify_ssad(issuer, data[0x93], static) == b"\xDA\xC1"
    return oda.recover_icc_key(issuer, data[0x9F46], data.get(0x9F48, b""), data[0x9F47], pan,
                               static, today=TODAY)


def session_key(keys, atc: int) -> bytes:
    imk = keys.emv_issuer_keys(DEBIT_AID).ac_mk
    return emv.session_key(emv.derive_udk(imk, debit_pan(CARD_NO), "01"), atc)


# --- sweeping ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_pse_and_ppse_list_the_debit_application_only(bank_card, protocol):
    bank_card.protocol = protocol
    term = Terminal(bank_card)
    fci, status = term.select(PSE)
    assert status == 0x9000
    assert tlvs(fci)[0x88] == b"\x01"
    record, status = term.read(1, 1)
    entries = find(decode(record), 0x70).children
    assert status == 0x9000 and [e.tag for e in entries] == [0x61]
    entry = tlvs(entries[0].to_bytes())
    assert entry[0x4F] == DEBIT_AID and entry[0x50] == b"PBOC DEBIT" and entry[0x87] == b"\x01"
    assert term.read(1, 2)[1] == 0x6A83
    fci, status = term.select(PPSE)
    directory = find(find(find(decode(fci), 0x6F).children, 0xA5).children, 0xBF0C)
    assert status == 0x9000 and [tlvs(e.to_bytes())[0x4F] for e in directory.children] == [
        DEBIT_AID]
    fci, status = term.select(DEBIT_AID)
    proprietary = tlvs(fci)
    assert status == 0x9000 and proprietary[0x9F38] == PDOL and proprietary[0x50]
    assert proprietary[0x9F4D] == b"\x0B\x0A"


def test_records_without_gpo_and_outside_the_afl(bank_card, keys):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    assert term.read(1, 3)[1] == 0x6A83
    assert term.read(3, 1)[1] == 0x6A82
    record, status = term.read(1, 2)
    assert status == 0x9000 and tlvs(record)[0x5A].hex().upper().rstrip("F") == (
        debit_pan(CARD_NO))
    assert tlvs(record)[0x8C] == CDOL1 and tlvs(record)[0x8D] == CDOL2
    icc_public_key(keys, term)  # every certificate verifies against the test CAPK


def test_get_data(bank_card):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    expected = {0x9F36: "0000", 0x9F13: "0000", 0x9F17: "03", 0x9F79: "000000005000",
                0x9F77: "000000100000", 0x9F78: "000000050000", 0x9F6D: "000000010000"}
    for tag, value in expected.items():
        data, status = term.send(0x80, 0xCA, tag >> 8, tag & 0xFF)
        assert status == 0x9000 and tlvs(data)[tag].hex() == value
    assert term.send(0x80, 0xCA, 0x9F, 0x99)[1] == 0x6A88


# --- contact ----------------------------------------------------------------------------

def test_contact_gpo_format_1(bank_card):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    data, status = term.gpo(terminal_values(ttq="00000000"))
    assert status == 0x9000 and data == bytes.fromhex("800A7D000801020210010300")
    assert term.gpo(terminal_values(ttq="00000000"))[1] == 0x6985
    assert app_of(bank_card).atc == 1


def test_pin_verify_and_blocking(bank_card):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    block = bytes.fromhex("26123456FFFFFFFF")
    wrong = bytes.fromhex("26654321FFFFFFFF")
    assert term.send(0x00, 0x20, 0x00, 0x80, wrong)[1] == 0x63C2
    assert term.send(0x00, 0x20, 0x00, 0x80, block)[1] == 0x9000
    assert app_of(bank_card).pin_tries == 3
    statuses = [term.send(0x00, 0x20, 0x00, 0x80, wrong)[1] for _ in range(4)]
    assert statuses == [0x63C2, 0x63C1, 0x63C0, 0x6983]
    assert term.send(0x00, 0x20, 0x00, 0x80, block)[1] == 0x6983
    data, _ = term.send(0x80, 0xCA, 0x9F, 0x17)
    assert tlvs(data)[0x9F17] == b"\x00"


def test_dda(bank_card, keys):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    icc = icc_public_key(keys, term)
    data, status = term.send(0x00, 0x88, 0, 0, bytes.fromhex("CAFEBABE"))
    sdad = tlvs(data)[0x80]
    assert status == 0x9000 and len(oda.verify_sdad(icc, sdad, bytes.fromhex("CAFEBABE"))) == 8
    with pytest.raises(oda.OdaFailure):
        oda.verify_sdad(icc, sdad, bytes.fromhex("CAFEBABF"))


def online(term, keys, *, arc=b"00", arpc_ok=True, external=True, requested=Decision.TC):
    values = terminal_values(amount=200_00, ttq="00000000")  # above the EC limits: online
    term.select(DEBIT_AID)
    term.gpo(values)
    data, status = term.gac(Decision.TC, CDOL1, values)
    first = tlvs(data)
    assert status == 0x9000 and first[0x9F27] == bytes([Decision.ARQC])
    atc = int.from_bytes(first[0x9F36], "big")
    sk = session_key(keys, atc)
    iad = first[0x9F10]
    assert iad[:3] == b"\x07\x01\x01" and iad[7] == 0x01
    cvr = iad[3:7]
    expected = emv.application_cryptogram(sk, emv.ac_data(
        {**values, 0x82: b"\x7D\x00", 0x9F36: first[0x9F36]}, cvr))
    assert first[0x9F26] == expected
    arpc = emv.arpc(sk, first[0x9F26], arc)
    if not arpc_ok:
        arpc = bytes(8)
    issuer_data = arpc + arc
    if external:
        _, status = term.send(0x00, 0x82, 0, 0, issuer_data)
        assert status == (0x9000 if arpc_ok else 0x6300)
        issuer_data = bytes(10)
    second_values = {0x8A: arc, 0x91: issuer_data, 0x95: bytes(5), 0x9F37: b"\x55\x66\x77\x88"}
    data, status = term.gac(requested, CDOL2, second_values)
    assert status == 0x9000
    return first, tlvs(data), sk, values


def test_arqc_agrees_with_pyemv(bank_card, keys):
    import warnings

    from pyemv import ac, kd

    term = Terminal(bank_card)
    first, _, sk, values = online(term, keys)
    imk = keys.emv_issuer_keys(DEBIT_AID).ac_mk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        udk = kd.derive_icc_mk_a(imk, debit_pan(CARD_NO), "01")
        assert emv.same_key(udk, emv.derive_udk(imk, debit_pan(CARD_NO), "01"))
        data = emv.ac_data({**values, 0x82: b"\x7D\x00", 0x9F36: first[0x9F36]},
                           first[0x9F10][3:7])
        assert first[0x9F26] == ac.generate_ac(sk, data)
        assert emv.arpc(sk, first[0x9F26], b"00") == ac.generate_arpc_1(sk, first[0x9F26],
                                                                         b"00")


@pytest.mark.parametrize("external", [True, False])
def test_online_approval(bank_card, keys, external):
    term = Terminal(bank_card)
    first, second, _, _ = online(term, keys, external=external)
    assert first[0x9F10][3:7] == bytes.fromhex("03A01000")  # ARQC, new card
    assert second[0x9F27] == bytes([Decision.TC])
    assert second[0x9F10][3:7] == bytes.fromhex("03601000")
    app = app_of(bank_card)
    assert app.last_online_atc == app.atc == 1 and not app.flags
    assert app.log()[0][0x9F02] == bcd_amount(200_00)
    # the next transaction is no longer a new card
    first, _, _, _ = online(term, keys)
    assert first[0x9F10][3:7] == bytes.fromhex("03A00000")


def test_issuer_decline_and_failed_issuer_authentication(bank_card, keys):
    term = Terminal(bank_card)
    _, second, _, _ = online(term, keys, arc=b"05")
    assert second[0x9F27] == bytes([Decision.AAC])
    _, second, _, _ = online(term, keys, arpc_ok=False)
    assert second[0x9F27] == bytes([Decision.AAC])
    assert second[0x9F10][4] & 0x08  # issuer authentication failed
    assert app_of(bank_card).flags
    first, _, _, _ = online(term, keys)
    assert first[0x9F10][5] & 0x08  # failed on the last online transaction


def test_torn_online_transaction_is_reported_next_time(bank_card, keys):
    term = Terminal(bank_card)
    values = terminal_values(amount=200_00, ttq="00000000")
    term.select(DEBIT_AID)
    term.gpo(values)
    term.gac(Decision.TC, CDOL1, values)
    term.transport.power_off()
    term.transport.power_on()
    first, _, _, _ = online(term, keys)
    assert first[0x9F10][5] & 0x80  # last online transaction not completed


def test_ec_offline_approval_with_cda(bank_card, keys):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    icc = icc_public_key(keys, term)
    values = terminal_values(amount=12_34, ttq="00000000")
    term.gpo(values)
    pdol_values = dol.build(dol.parse(PDOL), values)
    cdol1_values = dol.build(dol.parse(CDOL1), values)
    data, status = term.gac(Decision.TC | 0x10, CDOL1, values)
    response = tlvs(data)
    assert status == 0x9000 and response[0x9F27] == bytes([Decision.TC])
    assert response[0x9F74] == b"ECC001" and 0x9F26 not in response
    tx_hash = oda.cda_transaction_hash(pdol_values, cdol1_values,
                                       oda.response_without_sdad(data))
    result = oda.verify_cda(icc, response[0x9F4B], values[0x9F37], Decision.TC, tx_hash)
    sk = session_key(keys, 1)
    assert result.cryptogram == emv.application_cryptogram(sk, emv.ac_data(
        {**values, 0x82: b"\x7D\x00", 0x9F36: b"\x00\x01"}, response[0x9F10][3:7]))
    app = app_of(bank_card)
    assert app.ec_balance == 50_00 - 12_34
    assert app.log()[0][0x9F4E].rstrip(b"\x00") == b"UNION SHOP"
    assert term.gac(Decision.TC, CDOL2, {})[1] == 0x6985  # no second GENERATE AC


def test_the_pdol_asks_for_the_ec_terminal_support_indicator():
    assert dol.parse(PDOL)[-1] == dol.DolEntry(0x9F7A, 1)


@pytest.mark.parametrize("ttq", ["00000000", "10000000"])  # none; contact PBOC
def test_no_electronic_cash_for_a_terminal_without_ec_support(bank_card, ttq):
    """JR/T 0025.13: the card makes a transaction an EC one at GPO only when the
    terminal's 9F7A is 01; otherwise a TC request within the EC balance gets an ARQC."""
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    values = terminal_values(amount=10_00, ttq=ttq, ec_terminal=False)
    term.gpo(values)
    data, status = term.gac(Decision.TC, CDOL1, values)
    assert status == 0x9000 and tlvs(data)[0x9F27] == bytes([Decision.ARQC])
    assert 0x9F74 not in tlvs(data) and app_of(bank_card).ec_balance == 50_00
    assert not app_of(bank_card).log()


def test_electronic_cash_is_for_the_amount_given_at_gpo(bank_card):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    term.gpo(terminal_values(amount=10_00, ttq="00000000"))
    values = terminal_values(amount=20_00, ttq="00000000")  # another amount in CDOL1
    data, _ = term.gac(Decision.TC, CDOL1, values)
    assert tlvs(data)[0x9F27] == bytes([Decision.ARQC]) and app_of(bank_card).ec_balance == 50_00


def test_amount_over_ec_limit_goes_online(bank_card):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    values = terminal_values(amount=50_01, ttq="00000000")  # above the EC balance
    term.gpo(values)
    data, _ = term.gac(Decision.TC, CDOL1, values)
    assert tlvs(data)[0x9F27] == bytes([Decision.ARQC])
    assert app_of(bank_card).ec_balance == 50_00


# --- contactless ------------------------------------------------------------------------

def test_qpboc_offline_with_fdda(bank_card, keys):
    term = Terminal(bank_card)
    term.select(PPSE)
    term.select(DEBIT_AID)
    values = terminal_values(amount=8_00)
    data, status = term.gpo(values)
    r = tlvs(data)
    assert status == 0x9000 and r[0x9F27] == bytes([Decision.TC]) and r[0x9F74] == b"ECC001"
    assert r[0x9F5D] == bcd_amount(42_00) and r[0x5F34] == b"\x01" and r[0x57]
    icc = icc_public_key(keys, term)
    terminal_data = values[0x9F37] + values[0x9F02] + values[0x5F2A] + r[0x9F69]
    assert oda.verify_sdad(icc, r[0x9F4B], terminal_data) == r[0x9F36]
    assert app_of(bank_card).ec_balance == 42_00


@pytest.mark.parametrize(("ttq", "amount", "cid"), [
    ("26800000", 8_00, Decision.ARQC),   # online cryptogram required
    ("26000000", 60_00, Decision.ARQC),  # above the EC balance
    ("2E000000", 60_00, Decision.AAC),   # offline-only reader
])
def test_qpboc_online_and_decline(bank_card, ttq, amount, cid):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    data, _ = term.gpo(terminal_values(amount=amount, ttq=ttq))
    r = tlvs(data)
    assert r[0x9F27] == bytes([cid]) and 0x9F4B not in r
    assert app_of(bank_card).ec_balance == 50_00


# --- EC top-up ----------------------------------------------------------------------------

def test_ec_top_up_by_put_data_with_mac(bank_card, keys):
    term = Terminal(bank_card)
    values = terminal_values(amount=200_00, ttq="00000000")
    term.select(DEBIT_AID)
    term.gpo(values)
    data, _ = term.gac(Decision.ARQC, CDOL1, values)
    arqc, atc = tlvs(data)[0x9F26], 1
    smi = emv.derive_udk(keys.emv_issuer_keys(DEBIT_AID).smi_mk, debit_pan(CARD_NO), "01")
    new = bcd_amount(80_00)
    header = bytes.fromhex("04DA9F790A")
    mac = emv.command_mac(emv.session_key(smi, atc), header, atc, arqc, new)
    assert term.send(0x04, 0xDA, 0x9F, 0x79, new + bytes(4))[1] == 0x6988
    assert term.send(0x04, 0xDA, 0x9F, 0x79, new + mac)[1] == 0x9000
    assert app_of(bank_card).ec_balance == 80_00
    too_much = bcd_amount(100_001)
    mac = emv.command_mac(emv.session_key(smi, atc), header, atc, arqc, too_much)
    assert term.send(0x04, 0xDA, 0x9F, 0x79, too_much + mac)[1] == 0x6A80
    data, _ = term.gac(Decision.TC, CDOL2, {0x8A: b"00", 0x91: emv.arpc(
        session_key(keys, atc), arqc, b"00") + b"00"})
    cvr = tlvs(data)[0x9F10][3:7]
    assert cvr[3] >> 4 == 2 and cvr[3] & 0x08  # two scripts, one failed


def test_put_data_needs_an_online_transaction(bank_card):
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    assert term.send(0x04, 0xDA, 0x9F, 0x79, bytes(10))[1] == 0x6985


# --- tearing ----------------------------------------------------------------------------

EC_STEPS = [Step.EMV_EC_BALANCE, Step.EMV_LOG, Step.EMV_LOG_POINTER, Step.COMMIT, Step.CLEAR]


@pytest.mark.parametrize("step", EC_STEPS)
@pytest.mark.parametrize("when", ["before", "after"])
def test_torn_ec_purchase_leaves_balance_log_and_atc_consistent(bank_card, step, when):
    term = Terminal(bank_card)
    app = app_of(bank_card)
    values = terminal_values(amount=10_00, ttq="00000000")
    term.select(DEBIT_AID)
    term.gpo(values)
    atc, logged = app.atc, len(app.log())
    cut = bank_card.faults.cut_before if when == "before" else bank_card.faults.cut_after
    cut(step)
    with pytest.raises(TransportError):
        term.gac(Decision.TC, CDOL1, values)
    bank_card.faults.disarm()
    term.transport.power_on()
    assert app.atc == atc  # the ATC was spent by GPO
    debited = app.ec_balance == 40_00
    assert debited == (len(app.log()) == logged + 1)
    assert app.ec_balance in (40_00, 50_00)
    # the journal decides: cut before its commit flag, nothing; after it, everything
    assert debited == (step is Step.CLEAR or (step is Step.COMMIT and when == "after"))


# --- issuance and images ---------------------------------------------------------------------

def test_keystores_without_debit_keys_issue_cards_without_it(keys, member):
    from unioncard.crypto import Keystore
    from unioncard.errors import CryptoError

    purse_only = Keystore(keys.purse, True, "purse keys only")
    card = issue_member_card(member, purse_only, card_no=5)
    assert not any(isinstance(a, PbocApplication) for a in card.apps.values())
    card.power_on()
    assert Terminal(card).select(PSE)[1] == 0x6A82
    with pytest.raises(CryptoError):
        issue_member_card(member, purse_only, card_no=5, debit=True)
    plain = issue_member_card(member, keys, card_no=5, debit=False)
    assert not any(isinstance(a, PbocApplication) for a in plain.apps.values())


def test_issuance_is_reproducible(keys, member):
    one = issue_member_card(member, keys, card_no=9, ec_balance=100)
    two = issue_member_card(member, keys, card_no=9, ec_balance=100)
    assert one.to_image() == two.to_image()


def test_image_round_trip_and_checks(bank_card, tmp_path):
    import json

    from unioncard.applet_sim import SimulatedCard
    from unioncard.errors import DecodeError

    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    values = terminal_values(amount=5_00, ttq="00000000")
    term.gpo(values)
    term.gac(Decision.TC, CDOL1, values)
    path = tmp_path / "card.json"
    bank_card.save(path)
    again = SimulatedCard.load(path)
    assert app_of(again).ec_balance == 45_00 and app_of(again).atc == 1
    assert len(app_of(again).log()) == 1
    doc = json.loads(path.read_text())
    cell = f"3F00/{DEBIT_AID.hex().upper()}:ec_balance"
    for bad, message in ((dict(doc, nvm={**doc["nvm"], "cells": {
            **doc["nvm"]["cells"], cell: "00000000ABCD"}}), "ec_balance"),):
        path.write_text(json.dumps(bad))
        with pytest.raises(DecodeError, match=message):
            SimulatedCard.load(path)
    broken = json.loads(json.dumps(doc))
    adf = next(c for c in broken["mf"]["children"] if c.get("aid") == DEBIT_AID.hex().upper())
    adf["app"]["afl"] = "08"
    path.write_text(json.dumps(broken))
    with pytest.raises(DecodeError, match=r"app\.afl must be 4 to 252 bytes"):
        SimulatedCard.load(path)


def test_card_summary_shows_the_debit_application_masked(bank_card):
    from unioncard.applet_sim.summary import card_summary

    debit = card_summary(bank_card)["debit"]
    pan = debit_pan(CARD_NO)
    assert debit["pan"] == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    assert (debit["ec_balance"], debit["atc"], debit["pin_tries"]) == (50_00, 0, 3)
    assert card_summary(bank_card, unmask=True)["debit"]["pan"] == pan


@pytest.mark.parametrize("protocol", ["T=1", "T=0"])
def test_cda_on_both_generate_ac(bank_card, keys, protocol):
    bank_card.protocol = protocol
    term = Terminal(bank_card)
    term.select(DEBIT_AID)
    icc = icc_public_key(keys, term)
    values = terminal_values(amount=300_00, ttq="00000000")
    term.gpo(values)
    pdol_values = dol.build(dol.parse(PDOL), values)
    cdol1_values = dol.build(dol.parse(CDOL1), values)
    data, status = term.gac(Decision.ARQC | 0x10, CDOL1, values)
    first = tlvs(data)
    assert status == 0x9000 and first[0x9F27] == bytes([Decision.ARQC])
    result = oda.verify_cda(icc, first[0x9F4B], values[0x9F37], Decision.ARQC,
                            oda.cda_transaction_hash(pdol_values, cdol1_values,
                                                     oda.response_without_sdad(data)))
    sk = session_key(keys, 1)
    second_values = {0x8A: b"00", 0x91: emv.arpc(sk, result.cryptogram, b"00") + b"00",
                     0x95: bytes(5), 0x9F37: bytes.fromhex("99887766")}
    cdol2_values = dol.build(dol.parse(CDOL2), second_values)
    data, status = term.gac(Decision.TC | 0x10, CDOL2, second_values)
    second = tlvs(data)
    assert status == 0x9000 and second[0x9F27] == bytes([Decision.TC])
    tx_hash = oda.cda_transaction_hash(pdol_values, cdol1_values,
                                       oda.response_without_sdad(data), cdol2_values)
    # the second GENERATE AC signs over the unpredictable number of CDOL2
    done = oda.verify_cda(icc, second[0x9F4B], second_values[0x9F37], Decision.TC, tx_hash)
    assert done.cryptogram != result.cryptogram
    # an AAC is never signed
    term.select(DEBIT_AID)
    term.gpo(values)
    data, _ = term.gac(Decision.AAC | 0x10, CDOL1, values)
    assert 0x9F4B not in tlvs(data) and tlvs(data)[0x9F26]


@pytest.mark.parametrize("step", [Step.EMV_ATC, Step.EMV_EC_BALANCE, Step.EMV_LOG,
                                  Step.EMV_LOG_POINTER, Step.COMMIT, Step.CLEAR])
def test_torn_qpboc_purchase_moves_atc_balance_and_log_together(bank_card, step):
    term = Terminal(bank_card)
    app = app_of(bank_card)
    term.select(DEBIT_AID)
    bank_card.faults.cut_after(step)
    with pytest.raises(TransportError):
        term.gpo(terminal_values(amount=10_00))
    bank_card.faults.disarm()
    term.transport.power_on()
    done = step in (Step.COMMIT, Step.CLEAR)
    assert (app.atc, app.ec_balance, len(app.log())) == (
        (1, 40_00, 1) if done else (0, 50_00, 0))


# --- personalization options -------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "ttq", "cid"), [
    (8_00, "26000000", Decision.TC), (60_00, "26000000", Decision.ARQC),
    (60_00, "2E000000", Decision.AAC)])
def test_qpboc_answer_without_cid_when_personalized_so(keys, member, tmp_path, amount, ttq,
                                                       cid):
    from unioncard.applet_sim import SimulatedCard

    card = issue_member_card(member, keys, card_no=CARD_NO, ec_balance=50_00,
                             random_source=7, qpboc_cid=False)
    card.save(tmp_path / "card.json")
    card = SimulatedCard.load(tmp_path / "card.json")  # the option survives the image
    assert app_of(card).config.qpboc_cid is False
    card.power_on()
    term = Terminal(card)
    term.select(DEBIT_AID)
    data, status = term.gpo(terminal_values(amount=amount, ttq=ttq))
    r = tlvs(data)
    assert status == 0x9000 and 0x9F27 not in r and r[0x9F26]
    assert (r[0x9F10][4] >> 4) & 0x03 == {Decision.AAC: 0, Decision.TC: 1,
                                          Decision.ARQC: 2}[cid]  # CVR byte 2 b6-b5


# --- APPLICATION BLOCK ---------------------------------------------------------------------------

def block_command(keys, atc: int, arqc: bytes, *, good_mac: bool = True) -> tuple:
    smi = emv.derive_udk(keys.emv_issuer_keys(DEBIT_AID).smi_mk, debit_pan(CARD_NO), "01")
    mac = emv.command_mac(emv.session_key(smi, atc), bytes.fromhex("841E000004"), atc, arqc,
                          b"")
    return 0x84, 0x1E, 0x00, 0x00, mac if good_mac else bytes(4)


def test_application_block_by_issuer_script(bank_card, keys):
    term = Terminal(bank_card)
    values = terminal_values(amount=200_00, ttq="00000000")
    term.select(DEBIT_AID)
    assert term.send(*block_command(keys, 0, bytes(8)))[1] == 0x6985  # not online
    term.gpo(values)
    data, _ = term.gac(Decision.TC, CDOL1, values)
    arqc = tlvs(data)[0x9F26]
    assert term.send(*block_command(keys, 1, arqc, good_mac=False))[1] == 0x6988
    assert not app_of(bank_card).flags & Flags.BLOCKED
    assert term.send(*block_command(keys, 1, arqc))[1] == 0x9000
    # the second GENERATE AC of this transaction is an AAC, whatever the issuer said
    data, status = term.gac(Decision.TC, CDOL2, {0x8A: b"00", 0x91: emv.arpc(
        session_key(keys, 1), arqc, b"00") + b"00"})
    assert status == 0x9000 and tlvs(data)[0x9F27] == bytes([Decision.AAC])
    assert tlvs(data)[0x9F10][6] == 0x18  # CVR byte 4: one script processed, one failed
    # from now on: SELECT 6283 with the FCI, GPO 6985; records and GET DATA still answer
    bank_card.power_off()
    bank_card.power_on()
    term = Terminal(bank_card)
    fci, status = term.select(DEBIT_AID)
    assert status == 0x6283 and tlvs(fci)[0x9F38] == PDOL
    assert term.gpo(values)[1] == 0x6985 and app_of(bank_card).atc == 1
    assert term.read(1, 2)[1] == 0x9000 and term.send(0x80, 0xCA, 0x9F, 0x36)[1] == 0x9000
    assert term.select(PSE)[1] == 0x9000  # the PSE still lists it (Book 1 §12.3)
