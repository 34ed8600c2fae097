"""The purse application on the card: the docs/protocol.md vector end to end, every refusal's
status word, the profile's limits, the log, the proof and the CAPP cache."""

import calendar
import datetime as dt

import pytest

from unioncard.apdu import purse as cmd
from unioncard.apdu import records
from unioncard.applet_sim import PurseState, SimulatedCard
from unioncard.applet_sim.files import DF, EF, FileKind
from unioncard.applet_sim.layout import CardLayout
from unioncard.applet_sim.purse import LogRecord, PurseConfig
from unioncard.crypto import Keystore, derive_card_keys
from unioncard.crypto import purse as pc
from unioncard.crypto.keystore import CardKeys
from unioncard.terminal import Decision
from unioncard.terminal.etc import CHINA_STANDARD_TIME
from unioncard.testing.purse_rig import (
    PurseRig,
    expected_tac,
    prepare_credit,
    prepare_debit,
    select_application,
)

TRANSIT = "00A4040008A000000632010105"
VECTOR_DPK = bytes.fromhex("11223344556677888877665544332211")
TERMINAL_ID = bytes.fromhex("001122334455")  # the PSAM's (conftest.py)
WHEN = dt.datetime(2026, 3, 15, 8, 30)


def rig_for(card, psam, keys, app="transit"):
    """The terminal engine's rig on the card and the PSAM, with ``app`` selected."""
    rig = PurseRig.in_process(card, psam, keys)
    assert select_application(rig.card, app).sw == 0x9000
    return rig


def prepare(rig, app="transit", amount=100, **options):
    """INITIALIZE + PSAM MAC1 (`prepare_debit`): what DEBIT needs."""
    return prepare_debit(rig.card, rig.psam, app, amount, when=WHEN, **options)


def debit_answer(rig):
    """The card's answer to the last DEBIT, parsed: TAC and MAC2."""
    exchange = rig.answer_to(0x54)
    assert exchange is not None and exchange.response is not None
    return cmd.parse(cmd.DEBIT_RESPONSE, exchange.response.data)


def approved(outcome):
    """An approved transaction whose MAC2 the PSAM accepted and whose TAC verifies."""
    assert outcome.decision is Decision.APPROVED and not outcome.warnings, outcome.reason
    assert outcome.record.tac == expected_tac(Keystore.test(), outcome.record)
    return outcome


def test_purse_config_refuses_an_overdraft():
    """The profile's purses have no overdraft: a card image asking for one is refused."""
    keys = CardKeys(0x01, VECTOR_DPK, bytes(16), bytes(16), bytes(16))
    with pytest.raises(ValueError, match="overdraft_limit must be 0"):
        PurseConfig("transit", keys, overdraft_limit=1000)


# --- the public vector, through a card --------------------------------------------------------


def vector_card() -> SimulatedCard:
    keys = CardKeys(0x01, VECTOR_DPK, bytes(range(16)), bytes(range(16, 32)), bytes(16))
    app = PurseConfig("transit", keys, label="VECTOR")
    mf = DF(0x3F00, children=(DF(0x1002, bytes.fromhex("A000000632010105"), (
        EF(0x0015, FileKind.TRANSPARENT, 30, sfi=0x15),
        EF(0x0018, FileKind.CYCLIC, 23, 10, sfi=0x18)), app),))
    card = SimulatedCard(CardLayout("test", mf), random_source=lambda n: bytes.fromhex("11223344"))
    card.apps["3F00/1002"].personalize(balance=0x2000)
    card.power_on()
    return card


def test_public_purchase_vector_through_the_card(tx):
    card = vector_card()
    assert tx(card, TRANSIT)[1] == 0x9000
    init, status = tx(card, "805001020B 01 00001000 001122334455 0F".replace(" ", ""))
    assert status == 0x9000
    assert init.hex().upper() == "00002000" "0000" "000000" "01" "00" "11223344"
    data, status = tx(card, "805401000F 00000001 20120229 135100 F15CAB75 08".replace(" ", ""))
    assert status == 0x9000
    assert data[4:].hex().upper() == "56988A13"  # MAC2
    tac_key = pc.tac_key(bytes(range(16, 32)))
    assert data[:4] == pc.pboc_mac(tac_key, bytes.fromhex(
        "00001000 06 001122334455 00000001 20120229 135100".replace(" ", "")))
    assert tx(card, "805C000204") == (bytes.fromhex("00001000"), 0x9000)
    assert tx(card, "805A000602000108") == (data[4:] + data[:4], 0x9000)


# --- INITIALIZE refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "status"),
    [
        ("805001020B0200000064001122334455", 0x9403),  # key index 02
        ("805001010B0100000064001122334455", 0x6A81),  # ED: no passbook on this card
        ("805001030B0100000064001122334455", 0x6A86),
        ("805002020B0100000064001122334455", 0x6A86),  # cash withdrawal
        ("805001020A01000000640011223344", 0x6700),
        ("805001020B01000F4241001122334455", 0x9401),  # 1000.01 yuan > balance
        ("805000020B0100017319001122334455", 0x9402),  # load to 1000.01 yuan
        ("805001020B0100000064001122334455 05".replace(" ", ""), 0x6C0F),
        ("805000020B0100000064001122334455 05".replace(" ", ""), 0x6C10),
    ],
)
def test_initialize_refusals(card, tx, command, status):
    assert tx(card, TRANSIT)[1] == 0x9000
    assert tx(card, command) == (b"", status)
    assert card.purse("transit").balance == 10_000


def test_load_up_to_the_maximum_balance(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    assert approved(rig.load("transit", 90_000)).balance_after == 100_000
    assert tx(card, "805C000204") == ((100_000).to_bytes(4, "big"), 0x9000)
    assert tx(card, cmd.initialize_for_load(1, TERMINAL_ID).to_bytes()) == (b"", 0x9402)
    zero = prepare_credit(rig.card, keys, "transit", 0, when=WHEN, terminal_id=TERMINAL_ID)
    tac, status = tx(card, zero.command.to_bytes())
    dtk = derive_card_keys(keys.by_version(zero.key_version), zero.card.diversifier).tac
    assert status == 0x9000 and tac == pc.load_tac(dtk, 100_000, zero.online_seq, 0, 0x02,
                                                    TERMINAL_ID, zero.date, zero.time)
    assert card.purse("transit").balance == 100_000


def test_counter_limits(keys, member, psam, tx):
    from unioncard.applet_sim import issue_member_card

    card = issue_member_card(member, keys, card_no=9, transit_balance=500)
    card.purse("transit").personalize(balance=500, offline_seq=0xFFFF, online_seq=0xFFFF)
    rig = rig_for(card, psam, keys)
    purchase, load = (cmd.initialize_for_purchase(1, TERMINAL_ID).to_bytes(),
                      cmd.initialize_for_load(1, TERMINAL_ID).to_bytes())
    assert tx(card, purchase) == (b"", 0x9402)  # the offline seq does not wrap
    assert tx(card, load) == (b"", 0x9402)
    card.purse("transit").personalize(balance=500, offline_seq=0xFFFE, online_seq=0)
    assert approved(rig.purchase("transit", 1)).record.card_seq == 0xFFFE  # the last one
    assert tx(card, purchase) == (b"", 0x9402)


def test_short_le_refused_before_anything_changes(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    debit = prepare(rig).command
    assert debit.le == 8
    # the session is kept (DEBIT is session-safe)
    assert tx(card, debit.with_le(4).to_bytes()) == (b"", 0x6C08)
    data, status = tx(card, debit.to_bytes())
    assert status == 0x9000 and len(data) == 8
    assert card.purse("transit").balance == 9_900


def test_t0_purse_commands(card, psam, keys, tx):
    card.protocol = psam.protocol = "T=0"
    rig = rig_for(card, psam, keys)
    assert tx(card, "805001020B0100000064001122334455") == (b"", 0x610F)
    data, status = tx(card, "00C000000F")
    assert status == 0x9000 and len(data) == 15
    approved(rig.purchase("transit", 100))  # through Channel: 61xx for the card, 6108 the PSAM
    sam_answer = rig.answer_to(0x70, device="PSAM")
    assert sam_answer is not None and len(sam_answer.response.data) == 8
    balance = rig.card.transmit(cmd.get_balance())
    assert (balance.data, balance.sw) == ((9_900).to_bytes(4, "big"), 0x9000)


# --- DEBIT / CREDIT ---------------------------------------------------------------------------


def test_debit_without_session_and_after_other_commands(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    debit = prepare(rig).command
    assert tx(card, "0084000004")[1] == 0x9000  # any other command ends the session
    assert tx(card, debit.to_bytes()) == (b"", 0x6985)
    debit = prepare(rig).command
    assert tx(card, "805C000204")[1] == 0x9000  # GET BALANCE and reads keep it
    assert tx(card, "00B201C417")[1] == 0x6A83
    data, status = tx(card, debit.to_bytes())
    assert status == 0x9000 and len(data) == 8
    assert tx(card, debit.to_bytes()) == (b"", 0x6985)  # used up


@pytest.mark.parametrize(
    ("command", "status"),
    [
        ("805400000F" + "00" * 15, 0x6A86),
        ("805401000E" + "00" * 14, 0x6700),
        ("805201000B" + "00" * 11, 0x6A86),
        ("805200000A" + "00" * 10, 0x6700),
    ],
)
def test_debit_credit_format_refusals(card, tx, command, status):
    assert tx(card, TRANSIT)[1] == 0x9000
    assert tx(card, command) == (b"", status)


def test_mac_errors_reset_by_a_good_transaction_and_lock_at_three(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    purse = card.purse("transit")
    for _ in range(2):
        assert tx(card, prepare(rig).debit(mac1=bytes(4)).to_bytes()) == (b"", 0x9302)
    assert purse.mac_errors == 2
    approved(rig.load("transit", 1))  # a good MAC resets the counter
    assert purse.mac_errors == 0
    for expected_state in (PurseState.ACTIVE, PurseState.ACTIVE, PurseState.LOCKED):
        load = prepare_credit(rig.card, keys, "transit", 1, when=WHEN, terminal_id=TERMINAL_ID)
        assert tx(card, load.credit(mac2=bytes(4)).to_bytes()) == (b"", 0x9302)
        assert purse.state is expected_state
    for command in ("805C000204", "805001020B0100000001001122334455", "805A0006020001"):
        assert tx(card, command) == (b"", 0x9303)
    card.power_off()
    card.power_on()
    assert tx(card, TRANSIT) == (b"", 0x9303)  # SELECT refuses a purse locked for good
    assert tx(card, "805C000204") == (b"", 0x6D00)  # and nothing was selected
    assert purse.balance == 10_001


# --- log and proof ----------------------------------------------------------------------------


def test_cyclic_log_keeps_the_newest_ten(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    for amount in range(1, 13):
        approved(rig.purchase("transit", amount))
    log = card.purse("transit").log()
    assert [r.amount for r in log] == list(range(12, 2, -1))
    assert [r.seq for r in log] == list(range(11, 1, -1))

    def log_record(number):
        answer = rig.card.transmit(cmd.read_record(0x18, number, 23))
        assert answer.sw == 0x9000 and len(answer.data) == 23
        return LogRecord.from_bytes(answer.data)

    assert log_record(1) == log[0]
    assert log_record(10).amount == 3
    assert tx(card, "00B20BC417")[1] == 0x6A83


def test_transaction_prove_only_for_the_last_purchase(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    assert tx(card, "805A0006020001")[1] == 0x9406  # no purchase yet
    assert approved(rig.purchase("transit", 10)).record.card_seq == 0
    first = debit_answer(rig)
    approved(rig.load("transit", 10))  # a load does not replace the purchase proof
    proof = tx(card, "805A0006020001")
    assert proof == (first.mac2 + first.tac, 0x9000)
    approved(rig.purchase("transit", 20))
    second = debit_answer(rig)
    assert tx(card, "805A0006020001")[1] == 0x9406
    assert tx(card, "805A0006020002") == (second.mac2 + second.tac, 0x9000)
    assert tx(card, "805A0009020002")[1] == 0x9406
    assert tx(card, "805A0106020002")[1] == 0x6A86
    assert tx(card, "805A000603000200")[1] == 0x6700


# --- CAPP (ETC) -------------------------------------------------------------------------------


RECORD = "AA29" + "01" * 41


def test_update_capp_data_cache_refusals(card, psam, keys, tx):
    rig_for(card, psam, keys, "etc")
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x6985  # no CAPP session
    assert tx(card, cmd.initialize_for_capp_purchase(0, TERMINAL_ID).to_bytes())[1] == 0x9000
    assert tx(card, "80DCAAC92B" + RECORD)[1] == 0x6A86  # P2 low bits must be 000
    assert tx(card, "80DCAA002B" + RECORD)[1] == 0x6A86
    assert tx(card, "80DCAAC02B" + RECORD)[1] == 0x6A82  # SFI 18 is the log
    assert tx(card, "80DCBBC82B" + "BB29" + "01" * 41)[1] == 0x6A83
    assert tx(card, "80DCAAC82A" + RECORD[:-2])[1] == 0x6700
    assert tx(card, "80DCAAC82B" + "AB29" + "01" * 41)[1] == 0x6A80
    assert tx(card, "80DCAAC800")[1] == 0x6700
    assert tx(card, cmd.initialize_for_purchase(0, TERMINAL_ID).to_bytes())[1] == 0x9000
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x6985  # a plain purchase session


def test_capp_record_lands_only_with_the_debit(card, psam, keys, tx):
    rig = rig_for(card, psam, keys, "etc")
    debit = prepare(rig, "etc", 300, capp=True)
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x9000
    # bad MAC1: neither record nor debit
    assert tx(card, debit.debit(mac1=bytes(4)).to_bytes()) == (b"", 0x9302)
    assert tx(card, "00B201CC2B")[0] == b"\xaa\x29" + bytes(41)
    assert card.purse("etc").balance == 20_000
    outcome = approved(rig.purchase("etc", 300))  # an ETC exit: its record and its debit
    when = outcome.record.when.replace(tzinfo=CHINA_STANDARD_TIME)
    exit_record = records.build(
        records.CAPP_RECORD, lock=0, network=b"\x11\x01", station=b"\x00\x07", lane=4,
        unix_time=calendar.timegm(when.utctimetuple()), vehicle_class=1, status=0x04,
        marker_station=bytes(9), staff_no=bytes(3), shift=0, plate="京A12345",
        reserved=bytes(4))
    assert tx(card, "00B201CC2B")[0] == exit_record
    assert card.purse("etc").balance == 19_700
    assert card.purse("etc").log()[0].tx_type == 0x09
    proof = debit_answer(rig)
    assert tx(card, "805A000902" + (outcome.record.card_seq + 1).to_bytes(2, "big").hex()) == (
        proof.mac2 + proof.tac, 0x9000)


def test_last_cached_record_wins(card, psam, keys, tx):
    rig = rig_for(card, psam, keys, "etc")
    debit = prepare(rig, "etc", 0, capp=True)
    assert tx(card, "80DCAAC82B" + "AA29" + "02" * 41)[1] == 0x9000
    assert tx(card, "80DCAAC82B" + "AA29" + "03" * 41)[1] == 0x9000
    data, status = tx(card, debit.command.to_bytes())
    assert status == 0x9000 and len(data) == 8
    assert tx(card, "00B201CC2B")[0] == bytes.fromhex("AA29" + "03" * 41)


def test_capp_purchase_on_the_transit_purse_has_no_capp_file(card, psam, keys, tx):
    rig = rig_for(card, psam, keys, "transit")
    assert tx(card, cmd.initialize_for_capp_purchase(10, TERMINAL_ID).to_bytes())[1] == 0x9000
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x6A82
    assert approved(rig.purchase("transit", 10)).record.tx_type == 0x06
    debit = prepare(rig, "transit", 10, capp=True)
    assert debit.tx_type == 0x09
    data, status = tx(card, debit.command.to_bytes())
    assert status == 0x9000 and len(data) == 8
    assert card.purse("transit").log()[0].tx_type == 0x09


# --- maintenance ------------------------------------------------------------------------------


def test_block_unblock_and_permanent_block(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    assert tx(card, "841E00000400000000")[1] == 0x6985  # no challenge
    assert tx(card, "0084000004")[1] == 0x9000
    assert tx(card, "00B095001E")[1] == 0x9000
    assert tx(card, "841E00000400000000")[1] == 0x6985  # the challenge was for one command
    assert tx(card, "841E00020400000000")[1] == 0x6A86
    assert tx(card, "841E000003000000")[1] == 0x6700
    assert rig.maintenance("transit").sw == 0x9000
    assert card.purse("transit").state is PurseState.BLOCKED
    assert tx(card, "0020000003123456")[1] == 0x9000
    assert tx(card, "00D6960001AA")[1] == 0x6985  # no updates while blocked
    assert tx(card, "00B095001E")[1] == 0x9000  # reads still work
    assert rig.maintenance("transit", unblock=True).sw == 0x9000
    # unblocking an active purse is harmless
    assert rig.maintenance("transit", unblock=True).sw == 0x9000
    assert rig.maintenance("transit", permanent=True).sw == 0x9000
    assert card.purse("transit").state is PurseState.LOCKED
    assert rig.maintenance("transit", unblock=True).sw == 0x9303


def test_maintenance_mac_errors_count_toward_the_lockout(card, psam, keys, tx):
    """docs/protocol.md §1: 9302 for a maintenance MAC, three consecutive MAC errors lock (9303)."""
    rig = rig_for(card, psam, keys)
    rig.card_keys("transit")  # derived (and the purse selected) before the challenges
    purse = card.purse("transit")
    for count in (1, 2):
        assert tx(card, "0084000004")[1] == 0x9000
        assert tx(card, "841E00000400000000")[1] == 0x9302
        assert purse.mac_errors == count and purse.state is PurseState.ACTIVE
    # a right maintenance MAC clears the count: errors must be consecutive
    assert rig.maintenance("transit", unblock=True).sw == 0x9000
    assert purse.mac_errors == 0
    for _ in range(2):
        assert tx(card, "0084000004")[1] == 0x9000
        assert tx(card, "841E00000400000000")[1] == 0x9302
    debit = prepare(rig, amount=0).debit(mac1=bytes(4))
    assert tx(card, debit.to_bytes()) == (b"", 0x9302)  # the third in a row, of any kind
    assert purse.state is PurseState.LOCKED
    assert tx(card, "0084000004")[1] == 0x9000
    assert tx(card, "841800000400000000")[1] == 0x9303


def test_block_with_an_eight_byte_challenge(card, psam, keys, tx):
    rig = rig_for(card, psam, keys)
    maintenance_key = rig.card_keys("transit").maintenance
    assert select_application(rig.card, "transit").sw == 0x9000
    challenge, _ = tx(card, "0084000008")
    header = bytes.fromhex("841E000004")
    mac = pc.maintenance_mac(maintenance_key, challenge, header)
    # docs/protocol.md §2: IV = the first 4 random bytes ‖ 00000000
    assert mac == pc.maintenance_mac(maintenance_key, challenge[:4], header)
    assert tx(card, header + mac)[1] == 0x9000
    assert tx(card, TRANSIT)[1] == 0x6283


# --- the member application -------------------------------------------------------------------


def test_member_application(card, member, tx):
    from unioncard.apdu import tlv
    from unioncard.applet_sim.member import decode_member_template

    fci, status = tx(card, "00A404000AF0554E494F4E43415244")
    assert status == 0x9000 and tlv.find_path(tlv.decode(fci), "6F/A5/50").value == b"UNION MEMBER"
    data, status = tx(card, "00B0810000")
    assert status == 0x9000
    assert decode_member_template(data) == member.record
    assert tx(card, "00D6810001AA")[1] == 0x6982
    assert tx(card, "805C000204")[1] == 0x6D00
