"""The kernel against the EMV Books where real cards differ from the simulated one: each case
a scripted card (every command checked byte for byte) and the exact TVR, TSI and decision.

Book 1 §12 (selection), Book 2 §6.5 (DDA), Book 3 §10.2-10.8 (records, ODA, velocity,
card action analysis), PBOC qPBOC (the card's decision in its IAD, the TTQ)."""

from __future__ import annotations

from emv_script import (  # tests/terminal is on the test path (pyproject.toml)
    AID,
    AID_SELECT,
    CDOL1,
    GPO_CONTACT,
    IMK,
    MEMBER_SELECT,
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

from unioncard.commands.card_emv import payment_lines
from unioncard.crypto import emv, oda
from unioncard.terminal.emv import EmvSettings
from unioncard.terminal.emv.flags import TVR
from unioncard.terminal.emv.risk import random_selection
from unioncard.terminal.issuer_host import SimulatedIssuer
from unioncard.terminal.session import Decision

EC_GPO = GPO_CONTACT.replace("000000010000", "000000005000")
EC_BALANCE = "9F7906000000010000" "9000"


def declined_by_the_card(card: ScriptedCard, tvr: str) -> list[tuple[str, object]]:
    """PIN, GET DATA for risk management, the first GENERATE AC (ARQC asked) answered AAC."""
    data = cdol1_data(tvr)
    return [*pin_ok(), *velocity(card), (generate_ac("80", data), card.ac_answer(0x00, 7, data))]


# --- Book 3 §10.8: card action analysis -----------------------------------------------------

def test_a_card_may_answer_an_arqc_to_a_tc_request_and_the_sale_goes_online() -> None:
    card = ScriptedCard()
    first = cdol1_data("0200000000", "000000005000")
    arqc = card.cryptogram(first, 7)
    second = b"00" + first
    host = SimulatedIssuer(IMK)
    script = [*start(card, EC_GPO), *pin_ok(), *velocity(card, EC_BALANCE),
              (generate_ac("40", first), card.ac_answer(0x80, 7, first)),
              ("008200000A" + emv.arpc(card.session_key(7), arqc, b"00").hex().upper() + "3030",
               "9000"),
              (generate_ac("40", second), card.ac_answer(0x40, 7, second, card.cdol2))]
    outcome = drive(sale(5_000, pins=["1234"]), script, host)
    assert outcome.decision is Decision.APPROVED, outcome.reason
    d = outcome.details
    assert (d["tvr"], d["tsi"], d["cid"], d["path"]) == ("0200000000", "F800", "40", "online")
    assert host.log[0][0].arqc == arqc


def test_an_offline_only_terminal_never_goes_online_it_decides_with_the_default_codes() -> None:
    card = ScriptedCard()
    first = cdol1_data("0200000000", "000000005000")
    second = b"Y3" + first
    script = [*start(card, EC_GPO), *pin_ok(), *velocity(card, EC_BALANCE),
              (generate_ac("40", first), card.ac_answer(0x80, 7, first)),
              (generate_ac("40", second), card.ac_answer(0x40, 7, second, card.cdol2))]
    outcome = drive(sale(5_000, pins=["1234"], settings=EmvSettings(online_capable=False)),
                    script)  # no host: an Authorize step fails the test
    assert outcome.decision is Decision.APPROVED, outcome.reason
    d = outcome.details
    assert (d["tvr"], d["tsi"], d["arc"], d["path"]) == ("0200000000", "E800", "Y3", "offline")
    assert any("offline-only" in w for w in outcome.warnings)


def test_a_cid_of_type_11_is_a_card_error_not_a_crash() -> None:
    card = ScriptedCard()
    data = cdol1_data("0200008000")
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", data), card.ac_answer(0xC0, 7, data))]
    outcome = drive(sale(pins=["1234"]), script)
    assert outcome.decision is Decision.ERROR and "reserved" in outcome.reason


def test_the_cid_reason_code_and_advice_bit_are_reported() -> None:
    card = ScriptedCard()
    data = cdol1_data("0200008000")
    script = [*start(card), *pin_ok(), *velocity(card),
              (generate_ac("80", data), card.ac_answer(0x0A, 7, data))]  # AAC, advice, 010
    outcome = drive(sale(pins=["1234"]), script)
    assert outcome.decision is Decision.DECLINED
    assert outcome.reason == "declined offline by the card (PIN try limit exceeded)"
    assert outcome.details["cid_reason"] == "PIN try limit exceeded"
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0200008000", "E800")
    assert any("advice" in w for w in outcome.warnings)


def test_random_selection_is_for_online_capable_terminals_only() -> None:
    online = EmvSettings(floor_limit=10_000, random_target_percent=50,
                         random_max_target_percent=99)
    offline = EmvSettings(floor_limit=10_000, random_target_percent=50,
                          random_max_target_percent=99, online_capable=False)
    assert random_selection(100, online, 1) == TVR.RANDOMLY_SELECTED_ONLINE
    assert random_selection(100, offline, 1) == TVR(0)


# --- Book 3 §10.6.3: velocity ---------------------------------------------------------------

def test_an_atc_not_above_the_last_online_atc_sets_both_offline_limit_bits() -> None:
    card = ScriptedCard(atc=4, last_online_atc=4)
    outcome = drive(sale(pins=["1234"]), [*start(card), *declined_by_the_card(card,
                                                                              "020000E000")])
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("020000E000", "E800")


def test_an_atc_the_card_does_not_give_with_a_zero_last_online_atc_is_a_new_card() -> None:
    card = ScriptedCard()
    data = cdol1_data("220800E000")
    script = [*start(card), *pin_ok(), ("80CA9F7900", "6A88"), ("80CA9F3600", "6A88"),
              ("80CA9F1300", "9F130200009000"),
              (generate_ac("80", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(pins=["1234"]), script)
    # ICC data missing, SDA selected; new card; both offline limits; floor limit
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("220800E000", "E800")


def test_a_get_data_answer_that_is_not_the_data_object_counts_as_not_given() -> None:
    card = ScriptedCard()
    data = cdol1_data("220000E000")
    script = [*start(card), *pin_ok(), ("80CA9F7900", "9F79" "9000"),
              ("80CA9F3600", "9F3602" "9000"), ("80CA9F1300", "9F130200049000"),
              (generate_ac("80", data), card.ac_answer(0x00, 7, data))]
    outcome = drive(sale(pins=["1234"]), script)
    assert outcome.decision is Decision.DECLINED, outcome.reason
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("220000E000", "E800")
    assert outcome.details["ec"] is False


# --- Book 3 §10.2-10.3: records -------------------------------------------------------------

PROPRIETARY = "0102030405"  # SFI 11-30 is outside EMV: not even BER-TLV here


def test_an_sfi_11_record_outside_template_70_is_not_parsed_and_fails_oda_when_signed() -> None:
    for oda_records, tvr in (("01", "4200008000"), ("00", "0200008000")):
        card = ScriptedCard(afl="08010202" "10010100" "580101" + oda_records)
        script = [*start(card), ("00B2015C00", PROPRIETARY + "9000"),
                  *declined_by_the_card(card, tvr)]
        outcome = drive(sale(pins=["1234"]), script)
        assert outcome.decision is Decision.DECLINED, outcome.reason
        assert (outcome.details["tvr"], outcome.details["tsi"]) == (tvr, "E800"), oda_records
        if oda_records == "01":  # SDA failed (and selected): the record is no template 70
            assert "not a template 70" in outcome.details["oda_failure"]


def test_a_record_may_repeat_an_fci_tag_but_not_another_records_tag() -> None:
    card = ScriptedCard(extra=[p(0x50, b"PBOC DEBIT")])  # the FCI's label is UnionPay Debit
    outcome = drive(sale(pins=["1234"]), [*start(card), *declined_by_the_card(card,
                                                                              "0200008000")])
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0200008000", "E800")
    twice = ScriptedCard(extra=[p(0x5F20, b"SOMEONE/ELSE")])  # record 1 has another 5F20
    outcome = drive(sale(), start(twice)[:-1])  # ends at record 2
    assert outcome.decision is Decision.ERROR and "5F20 appears twice" in outcome.reason


# --- Book 2 §6.5.1: the DDOL ----------------------------------------------------------------

def test_a_ddol_without_the_unpredictable_number_fails_dda_without_internal_authenticate(
) -> None:
    card = ScriptedCard(aip="3C00", extra=[p(0x9F49, "9F0206")])  # DDA, CV, TRM, IA
    outcome = drive(sale(pins=["1234"]), [*start(card), *declined_by_the_card(card,
                                                                              "0800008000")])
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0800008000", "E800")
    assert "9F37" in outcome.details["oda_failure"]


def test_a_cdol_may_name_card_data_the_icc_dynamic_number_of_dda() -> None:
    cdol1 = CDOL1 + bytes.fromhex("9F4C08" "8202")  # Book 3 §5.4: ICC data in a DOL
    card = ScriptedCard(aip="3C00", cdol1=cdol1)
    sdad = oda.sign_sdad(card.icc_key(), b"\x00\x07", UN)
    data = cdol1_data("0000008000") + bytes.fromhex("0007000000000000" "3C00")
    script = [*start(card), ("008800000411223344" "00", hexof(p(0x80, sdad)) + "9000"),
              *pin_ok(), *velocity(card),
              (generate_ac("80", data), card.ac_answer(0x00, 7, data, cdol1))]
    outcome = drive(sale(pins=["1234"]), script)
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0000008000", "E800")


# --- Book 1 §12: selection ------------------------------------------------------------------

QUASI, CREDIT = bytes.fromhex("A000000333010103"), bytes.fromhex("A000000333010102")


def _entry(aid: bytes, priority: str) -> object:
    return t(0x61, p(0x4F, aid), p(0x50, b"UnionPay"), p(0x87, priority))


def _select(aid: bytes) -> str:
    return f"00A40400{len(aid):02X}{aid.hex().upper()}00"


def test_final_select_errors_and_a_foreign_df_name_drop_the_candidate() -> None:
    card = ScriptedCard()
    directory = hexof(t(0x70, _entry(QUASI, "01"), _entry(CREDIT, "02"), _entry(AID, "03")))
    script = [(MEMBER_SELECT, "6A82"), (PSE_SELECT, PSE_FCI), ("00B2010C00", directory + "9000"),
              ("00B2020C00", "6A83"),
              (_select(QUASI), "6E00"),  # any error: the next candidate
              (_select(CREDIT), card.fci()),  # an FCI naming the debit DF: not this one
              (AID_SELECT, card.fci()), (GPO_CONTACT, card.gpo()), *card.reads(),
              *declined_by_the_card(card, "0200008000")]
    outcome = drive(sale(pins=["1234"]), script)
    assert outcome.decision is Decision.DECLINED, outcome.reason
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0200008000", "E800")
    assert outcome.details["aid"] == AID.hex().upper()


def test_6a81_to_a_select_of_the_aid_list_ends_the_transaction() -> None:
    script = [(MEMBER_SELECT, "6A82"), (PSE_SELECT, "6A82"), (AID_SELECT, "6A81")]
    outcome = drive(sale(), script)
    assert outcome.decision is Decision.DECLINED and "blocked" in outcome.reason


def test_a_directory_record_that_does_not_decode_is_skipped() -> None:
    card = ScriptedCard()
    directory = hexof(t(0x70, _entry(AID, "01"))) + "9000"
    script = [(MEMBER_SELECT, "6A82"), (PSE_SELECT, PSE_FCI), ("00B2010C00", "70FF0102" "9000"),
              ("00B2020C00", directory), ("00B2030C00", "6A83"), (AID_SELECT, card.fci()),
              (GPO_CONTACT, card.gpo()), *card.reads(), *declined_by_the_card(card,
                                                                             "0200008000")]
    outcome = drive(sale(pins=["1234"]), script)
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0200008000", "E800")
    assert outcome.details["selection"] == "pse"


# --- qPBOC ----------------------------------------------------------------------------------

def test_qpboc_without_a_cid_takes_the_decision_from_the_iad() -> None:
    tc = ScriptedCard(aip="7C00", cvr=bytes.fromhex("03100000"))  # CVR byte 2 b6-b5 01: TC
    outcome = drive(sale(5_000, contactless=True),
                    qpboc_start(tc, qpboc_gpo(tc, None, "000000005000", "22000000")))
    assert outcome.decision is Decision.APPROVED, outcome.reason
    d = outcome.details
    assert (d["tvr"], d["tsi"], d["cid"], d["path"]) == ("0000000000", "E000", "40",
                                                         "qpboc offline")
    aac = ScriptedCard(aip="7C00", cvr=bytes.fromhex("03000000"))  # 00: AAC, never online
    outcome = drive(sale(5_000, contactless=True),
                    qpboc_start(aac, qpboc_gpo(aac, None, "000000005000", "22000000")))
    assert outcome.decision is Decision.DECLINED
    assert (outcome.details["tvr"], outcome.details["tsi"], outcome.details["cid"]) == (
        "0000000000", "6000", "00")


def test_qpboc_tc_to_a_request_for_an_online_cryptogram_is_declined() -> None:
    card = ScriptedCard(aip="7C00")
    outcome = drive(sale(200_000, contactless=True), qpboc_start(
        card, qpboc_gpo(card, 0x40, "000000200000", "22C00000")))
    assert outcome.decision is Decision.DECLINED
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0000000000", "6000")


def test_qpboc_arqc_on_an_offline_only_reader_is_declined_without_going_online() -> None:
    card = ScriptedCard(aip="7C00")
    outcome = drive(sale(5_000, contactless=True, settings=EmvSettings(online_capable=False)),
                    qpboc_start(card, qpboc_gpo(card, 0x80, "000000005000", "2A000000")))
    assert outcome.decision is Decision.DECLINED and "offline-only" in outcome.reason
    assert (outcome.details["tvr"], outcome.details["tsi"]) == ("0000000000", "6000")


def test_qpboc_reports_the_available_offline_spending_amount() -> None:
    card = ScriptedCard(aip="7C00", extra=[p(0x9F5D, "000000004000")])
    outcome = drive(sale(5_000, contactless=True),
                    qpboc_start(card, qpboc_gpo(card, 0x40, "000000005000", "22000000")))
    assert outcome.decision is Decision.APPROVED, outcome.reason
    assert outcome.details["ec_balance"] == 4_000


def test_card_read_dates_of_the_last_century() -> None:
    lines = payment_lines([{"aid": AID.hex().upper(), "effective": "991231",
                            "expiry": "301231"}])
    assert "valid 1999-12-31 to 2030-12-31" in lines[0]
