"""The EMV kernel against scripted card answers: every command checked byte for byte, and
the TVR, TSI and decision of each branch (EMV Book 3 §10; docs/emv-kernel.md)."""

from __future__ import annotations

import pytest
from emv_script import (  # tests/terminal is on the test path (pyproject.toml)
    AID,
    AID_SELECT,
    CA_INDEX,
    GPO_CONTACT,
    IMK,
    KEYS,
    MEMBER_SELECT,
    NOW,
    PAN,
    PSE_FCI,
    PSE_SELECT,
    UN,
    ScriptedCard,
    cdol1_data,
    drive,
    generate_ac,
    hexof,
    p,
    pin_ok,
    qpboc_gpo,
    qpboc_start,
    sale,
    start,
    t,
    velocity,
)

from unioncard.crypto import emv, oda
from unioncard.terminal.emv import CapkStore, EmvPurchase, EmvSettings
from unioncard.terminal.emv.flags import TSI, TVR
from unioncard.terminal.issuer_host import Account, SimulatedIssuer
from unioncard.terminal.session import Decision


def test_contact_sda_pin_online_approval_with_external_authenticate() -> None:
    card = ScriptedCard()
    first = cdol1_data("0200008000")
    arqc = card.cryptogram(first, 7)
    arpc = emv.arpc(card.session_key(7), arqc, b"00")
    second = bytes.fromhex("3030") + cdol1_data("0200008000")
    host = SimulatedIssuer(IMK)
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", first), card.ac_answer(0x80, 7, first)),
              ("008200000A" + arpc.hex().upper() + "3030", "9000"),
              (generate_ac("40", second), card.ac_answer(0x40, 7, second, card.cdol2))]
    outcome = drive(sale(pins=["1234"]), script, host)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    d = outcome.details
    assert (d["tvr"], d["tsi"]) == ("0200008000", "F800")
    assert d["cid"] == "40" and d["path"] == "online" and d["arc"] == "00"
    assert d["oda"] == "sda" and d["cvm_results"] == "010002"
    assert d["pan"] == "623012*********2345"
    request, answer = host.log[0]
    assert request.arqc == arqc and answer.arpc == arpc and request.cvr == card.cvr


def test_wrong_pin_until_blocked_is_declined_offline_by_the_iac_denial() -> None:
    card = ScriptedCard(iac_denial="0000200000")
    data = cdol1_data("0200A08000")
    script = [*start(card), ("80CA9F1700", "9F1701039000"),
              ("0020008008241111FFFFFFFFFF", "63C2"),
              ("0020008008242222FFFFFFFFFF", "63C1"),
              ("0020008008243333FFFFFFFFFF", "63C0"), *velocity(card),
              (generate_ac("00", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(pins=["1111", "2222", "3333", "1234"]), script)
    assert outcome.decision is Decision.DECLINED
    tvr = TVR.of(bytes.fromhex(outcome.details["tvr"]))
    assert tvr == (TVR.SDA_SELECTED | TVR.CARDHOLDER_VERIFICATION_FAILED
                   | TVR.PIN_TRY_LIMIT_EXCEEDED | TVR.EXCEEDS_FLOOR_LIMIT)
    assert outcome.details["tsi"] == "E800" and outcome.details["cvm_results"] == "010001"


def test_pin_not_entered_falls_to_signature() -> None:
    card = ScriptedCard(cvm_list="00000000000000004100" "1E00")
    data = cdol1_data("0200088000")
    script = [*start(card), ("80CA9F1700", "9F1701039000"), *velocity(card),
              (generate_ac("80", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(), script)
    assert outcome.details["tvr"] == "0200088000"  # PIN not entered; signature then
    assert outcome.details["cvm_results"] == "1E0000"
    assert outcome.decision is Decision.DECLINED and outcome.details["cid"] == "00"


def test_issuer_unreachable_decides_with_the_default_action_codes() -> None:
    card = ScriptedCard()
    first = cdol1_data("0200008000")
    second = b"Z3" + first

    class Down:
        def authorize(self, request: object) -> object:
            raise ConnectionError("no route to the issuer")

    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", first), card.ac_answer(0x80, 7, first)),
              (generate_ac("00", second), card.ac_answer(0x00, 7, second, card.cdol2))]
    outcome = drive(sale(pins=["1234"]), script, Down())
    assert outcome.decision is Decision.DECLINED
    assert outcome.details["arc"] == "Z3" and outcome.details["tsi"] == "E800"
    assert "could not be reached" in outcome.reason


def test_issuer_authentication_data_in_cdol2_and_a_declining_issuer() -> None:
    cdol2 = bytes.fromhex("8A02910A") + bytes.fromhex("9F02069F03069F1A0295055F2A029A039C01"
                                                        "9F3704")
    card = ScriptedCard(cdol2=cdol2)
    first = cdol1_data("0200008000")
    arqc = card.cryptogram(first, 7)
    arpc = emv.arpc(card.session_key(7), arqc, b"51")
    second = b"51" + arpc + b"51" + first
    host = SimulatedIssuer(IMK, accounts={PAN: Account(balance=5_000)})
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", first), card.ac_answer(0x80, 7, first)),
              (generate_ac("00", second), card.ac_answer(0x00, 7, second, cdol2))]
    outcome = drive(sale(pins=["1234"]), script, host)
    assert outcome.decision is Decision.DECLINED
    assert outcome.details["arc"] == "51" and "insufficient funds" in outcome.reason
    assert outcome.details["tsi"] == "F800"  # issuer authentication performed (91 in CDOL2)


def test_ec_offline_approval_uses_the_ec_limit_as_floor_limit() -> None:
    card = ScriptedCard()
    data = cdol1_data("0200000000", "000000005000")
    gpo = GPO_CONTACT.replace("000000010000", "000000005000")
    script = [*start(card, gpo), *pin_ok(), *velocity(card, "9F7906000000010000" "9000"),
              (generate_ac("40", data), card.ac_answer(0x40, 7, data))]
    outcome = drive(sale(5_000, pins=["1234"]), script)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert outcome.details["path"] == "ec offline" and outcome.details["ec_balance"] == 10_000
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0200000000", "E800")


def test_corrupted_issuer_certificate_fails_sda() -> None:
    card = ScriptedCard(corrupt_issuer_certificate=True)
    data = cdol1_data("4200008000")
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(pins=["1234"]), script)
    assert outcome.details["tvr"] == "4200008000"  # SDA failed, SDA selected, floor limit
    assert outcome.details["tsi"] == "E800"
    assert "issuer certificate" in outcome.details["oda_failure"]


def test_expired_capk_is_reported_and_refused_by_default_then_accepted_when_allowed() -> None:
    ca = KEYS.ca_rsa(AID[:5], CA_INDEX).capk
    old = oda.CaPublicKey(ca.rid, ca.index, ca.modulus, ca.exponent, "20241231")
    card = ScriptedCard()
    refused = cdol1_data("4200008000")
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", refused), card.ac_answer(0x00, 7, refused))]
    outcome = drive(sale(pins=["1234"], capks=CapkStore([old])), script)
    assert outcome.details["tvr"] == "4200008000"
    assert any("expired on 20241231" in w for w in outcome.warnings)
    accepted = cdol1_data("0200008000")
    script[-1] = (generate_ac("80", accepted), card.ac_answer(0x00, 7, accepted))
    outcome = drive(sale(pins=["1234"], capks=CapkStore([old]),
                         settings=EmvSettings(accept_expired_capk=True)), script)
    assert outcome.details["tvr"] == "0200008000"
    assert any("accepts expired keys" in w for w in outcome.warnings)


def test_expired_card_sets_expired_application() -> None:
    card = ScriptedCard(expiry="251231")
    data = cdol1_data("0240008000")
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(pins=["1234"]), script)
    assert outcome.details["tvr"] == "0240008000"
    assert outcome.decision is Decision.DECLINED


def test_velocity_new_card_and_upper_limit() -> None:
    card = ScriptedCard(atc=20, last_online_atc=0)
    data = cdol1_data("020800E000")
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(pins=["1234"]), script)
    assert outcome.details["tvr"] == "020800E000"


def test_a_record_the_afl_lists_missing_ends_the_transaction() -> None:
    card = ScriptedCard()
    script = [*start(card)[:-1], ("00B2011400", "6A83")]
    outcome = drive(sale(), script)
    assert outcome.decision is Decision.ERROR and "AFL" in outcome.reason


def test_without_pse_the_aid_list_is_used() -> None:
    card = ScriptedCard()
    settings = EmvSettings(aids=EmvSettings().aids[:1])
    script = [(MEMBER_SELECT, "6A82"), (PSE_SELECT, "6A82"), (AID_SELECT, card.fci()),
              (AID_SELECT, card.fci()), (GPO_CONTACT, "6985"),
              # 6985: selection starts over without that application, and none is left
              (PSE_SELECT, "6A82"), (AID_SELECT, card.fci())]
    outcome = drive(sale(settings=settings), script)
    assert outcome.decision is Decision.DECLINED and "6985" in outcome.reason


def test_card_pulled_during_generate_ac_is_an_error_not_an_approval() -> None:
    card = ScriptedCard()
    data = cdol1_data("0200008000")
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", data), "9000")]
    outcome = drive(sale(pins=["1234"]), script, lost_at=len(script) - 1)
    assert outcome.decision is Decision.ERROR and "GENERATE AC" in outcome.reason
    assert outcome.details["tvr"] == "0200008000" and outcome.details["tsi"] == "E800"


# --- CDA ---------------------------------------------------------------------------------

def cda_answer(card: ScriptedCard, cid: int, atc: int, data: bytes, pdol_data: bytes,
               *, tamper: bool = False) -> str:
    ac = card.cryptogram(data, atc)
    body = [p(0x9F27, bytes([cid])), p(0x9F36, atc.to_bytes(2, "big")), p(0x9F26, ac),
            p(0x9F10, card.iad)]
    digest = oda.cda_transaction_hash(pdol_data, data, b"".join(n.to_bytes() for n in body))
    signed_un = bytes(4) if tamper else UN
    sdad = oda.sign_cda(card.icc_key(), b"\x12\x34", cid, ac, digest, signed_un)
    return hexof(t(0x77, *body, p(0x9F4B, sdad))) + "9000"


def test_cda_signature_verifies_then_fails_when_tampered() -> None:
    card = ScriptedCard(aip="3D00")  # DDA, CV, TRM, IA, CDA
    pdol_data = bytes.fromhex(GPO_CONTACT[14:-2])
    data = cdol1_data("0000008000")
    for tamper, tvr in ((False, "0000008000"), (True, "0400008000")):
        script = [*start(card), *pin_ok(), *velocity(card),
                  (generate_ac("90", data), cda_answer(card, 0x00, 7, data, pdol_data,
                                                      tamper=tamper))]
        outcome = drive(sale(pins=["1234"]), script)
        assert outcome.details["tvr"] == tvr, tamper
        assert outcome.details["oda"] == "cda" and outcome.details["tsi"] == "E800"
        assert outcome.decision is Decision.DECLINED


# --- qPBOC --------------------------------------------------------------------------------

def test_qpboc_offline_approval_with_fdda() -> None:
    card = ScriptedCard(aip="7C00")
    outcome = drive(sale(5_000, contactless=True),
                    qpboc_start(card, qpboc_gpo(card, 0x40, "000000005000", "22000000")))
    assert outcome.decision is Decision.APPROVED, outcome.reason
    d = outcome.details
    assert (d["tvr"], d["tsi"], d["cid"], d["oda"]) == ("0000000000", "E000", "40", "fdda")
    assert d["path"] == "qpboc offline" and d["signature_required"] is False


def test_qpboc_fdda_failure_declines() -> None:
    card = ScriptedCard(aip="7C00")
    outcome = drive(sale(5_000, contactless=True), qpboc_start(
        card, qpboc_gpo(card, 0x40, "000000005000", "22000000", tamper=True)))
    assert outcome.decision is Decision.DECLINED
    assert outcome.details["tvr"] == "0800000000" and outcome.details["tsi"] == "E000"


def test_qpboc_over_the_ec_limit_asks_for_an_online_cryptogram() -> None:
    card = ScriptedCard(aip="7C00")
    host = SimulatedIssuer(IMK)
    # 2000.00 yuan: online cryptogram required (byte 2 b8) and CVM required (b7)
    outcome = drive(sale(200_000, contactless=True), qpboc_start(
        card, qpboc_gpo(card, 0x80, "000000200000", "22C00000")), host)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert outcome.details["path"] == "qpboc online"
    assert outcome.details["signature_required"] is True
    assert host.log[0][1].arc == b"00"


def test_contactless_over_the_contactless_limit_is_refused_before_the_card() -> None:
    outcome = drive(sale(600_000, contactless=True), [(MEMBER_SELECT, "6A82")])
    assert outcome.decision is Decision.DECLINED and "insert the card" in outcome.reason


def test_settings_and_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        sale(0)
    with pytest.raises(ValueError):
        EmvPurchase(100, now=NOW, unpredictable_number=b"12")
    with pytest.raises(ValueError):
        sale(pins=["12a4"])
    with pytest.raises(ValueError):
        EmvSettings(tac_online="00")
    assert TSI.of(bytes.fromhex("F800")) & TSI.ISSUER_AUTHENTICATION_PERFORMED


def test_priority_order_and_reselection_after_6985() -> None:
    credit = bytes.fromhex("A000000333010102")
    card = ScriptedCard()
    directory = hexof(t(0x70, t(0x61, p(0x4F, credit), p(0x50, b"UnionPay Credit"),
                                p(0x87, "02")),
                        t(0x61, p(0x4F, AID), p(0x50, b"UnionPay Debit"), p(0x87, "01")))) \
        + "9000"
    credit_fci = card.fci().replace(AID.hex().upper(), credit.hex().upper(), 1)
    credit_select = "00A4040008" + credit.hex().upper() + "00"
    pse = [(PSE_SELECT, PSE_FCI), ("00B2010C00", directory), ("00B2020C00", "6A83")]
    script = [(MEMBER_SELECT, "6A82"), *pse, (AID_SELECT, card.fci()), (GPO_CONTACT, "6985"),
              *pse, (credit_select, credit_fci), (GPO_CONTACT, "6985"), *pse]
    outcome = drive(sale(), script)
    assert outcome.decision is Decision.DECLINED and "6985" in outcome.reason


@pytest.mark.parametrize(("signed", "tvr"), [(UN, "0000008000"), (bytes(4), "0800008000")])
def test_dda_with_internal_authenticate(signed: bytes, tvr: str) -> None:
    card = ScriptedCard(aip="3C00")  # DDA, CV, TRM, IA: no CDA
    sdad = oda.sign_sdad(card.icc_key(), b"\x00\x07", signed)
    data = cdol1_data(tvr)
    script = [*start(card), ("008800000411223344" "00", hexof(p(0x80, sdad)) + "9000"),
              *pin_ok(), *velocity(card), (generate_ac("80", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(pins=["1234"]), script)
    assert (outcome.details["tvr"], outcome.details["tsi"], outcome.details["oda"]) == (
        tvr, "E800", "dda")
