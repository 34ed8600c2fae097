"""The purse application on the card: the PROTOCOL.md vector end to end, every refusal's
status word, the profile's limits, the log, the proof and the CAPP cache."""

import pytest

from unioncard.apdu import CommandAPDU
from unioncard.applet_sim import PurseState, SimulatedCard
from unioncard.applet_sim.files import DF, EF, FileKind
from unioncard.applet_sim.layout import CardLayout
from unioncard.applet_sim.purse import LogRecord, PurseConfig
from unioncard.applet_sim.scenarios import PurseTerminal
from unioncard.crypto import purse as pc
from unioncard.crypto.keystore import CardKeys

TRANSIT = "00A4040008A000000632010105"
VECTOR_DPK = bytes.fromhex("11223344556677888877665544332211")


def terminal(card, psam, keys, app="transit"):
    t = PurseTerminal(card.transmit, psam.transmit, keys)
    t.select(app)
    return t


def purchase_then(t, tx, card):
    """INITIALIZE + PSAM MAC1: returns (init answer, terminal seq, MAC1)."""
    init = t.initialize(0x01, 100)
    seq, mac1 = t.mac1(init, 100, 0x06)
    return init, seq, mac1


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


def test_load_up_to_the_maximum_balance(card, psam, keys):
    t = terminal(card, psam, keys)
    t.load(90_000)
    assert t.balance() == 100_000
    t.initialize(0x00, 1, 0x9402)
    t.load(0)


def test_counter_limits(keys, member, psam, tx):
    from unioncard.applet_sim import issue_member_card

    card = issue_member_card(member, keys, card_no=9, transit_balance=500)
    card.purse("transit").personalize(balance=500, offline_seq=0xFFFF, online_seq=0xFFFF)
    card.power_on()
    t = terminal(card, psam, keys)
    t.initialize(0x01, 1, 0x9402)  # the offline seq does not wrap
    t.initialize(0x00, 1, 0x9402)
    card.purse("transit").personalize(balance=500, offline_seq=0xFFFE, online_seq=0)
    t.purchase(1)  # the last one
    t.initialize(0x01, 1, 0x9402)


def test_short_le_refused_before_anything_changes(card, psam, keys, tx):
    t = terminal(card, psam, keys)
    _init, seq, mac1 = purchase_then(t, tx, card)
    debit = "805401000F" + seq.to_bytes(4, "big").hex() + t.date.hex() + t.time.hex() + mac1.hex()
    assert tx(card, debit + "04") == (b"", 0x6C08)  # session is kept (DEBIT is session-safe)
    data, status = tx(card, debit + "08")
    assert status == 0x9000 and len(data) == 8
    assert card.purse("transit").balance == 9_900


def test_t0_purse_commands(card, psam, keys, tx):
    card.protocol = psam.protocol = "T=0"
    t = terminal(card, psam, keys)
    assert tx(card, "805001020B0100000064001122334455") == (b"", 0x610F)
    data, status = tx(card, "00C000000F")
    assert status == 0x9000 and len(data) == 15
    t.purchase(100)  # through Channel: 61xx for the card and 6108 for the PSAM
    assert t.balance() == 9_900


# --- DEBIT / CREDIT ---------------------------------------------------------------------------


def test_debit_without_session_and_after_other_commands(card, psam, keys, tx):
    t = terminal(card, psam, keys)
    _init, seq, mac1 = purchase_then(t, tx, card)
    assert tx(card, "0084000004")[1] == 0x9000  # any other command ends the session
    t.debit(seq, mac1, 0x6985)
    _init, seq, mac1 = purchase_then(t, tx, card)
    assert tx(card, "805C000204")[1] == 0x9000  # GET BALANCE and reads keep it
    assert tx(card, "00B201C417")[1] == 0x6A83
    t.debit(seq, mac1)
    t.debit(seq, mac1, 0x6985)  # used up


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
    t = terminal(card, psam, keys)
    purse = card.purse("transit")
    for _ in range(2):
        _init, seq, _mac1 = purchase_then(t, tx, card)
        t.debit(seq, bytes(4), 0x9302)
    assert purse.mac_errors == 2
    t.load(1)  # a good MAC resets the counter
    assert purse.mac_errors == 0
    for expected_state in (PurseState.ACTIVE, PurseState.ACTIVE, PurseState.LOCKED):
        t.initialize(0x00, 1)
        t.card.expect(CommandAPDU(0x80, 0x52, 0, 0, t.date + t.time + bytes(4)), 0x9302)
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
    t = terminal(card, psam, keys)
    for amount in range(1, 13):
        t.purchase(amount)
    log = card.purse("transit").log()
    assert [r.amount for r in log] == list(range(12, 2, -1))
    assert [r.seq for r in log] == list(range(11, 1, -1))
    assert LogRecord.from_bytes(t.log_record(1)) == log[0]
    assert LogRecord.from_bytes(t.log_record(10)).amount == 3
    assert tx(card, "00B20BC417")[1] == 0x6A83


def test_transaction_prove_only_for_the_last_purchase(card, psam, keys, tx):
    t = terminal(card, psam, keys)
    assert tx(card, "805A0006020001")[1] == 0x9406  # no purchase yet
    first = t.purchase(10)
    t.load(10)  # a load does not replace the purchase proof
    proof = tx(card, "805A0006020001")
    assert proof == (first.mac2 + first.tac, 0x9000)
    second = t.purchase(20)
    assert tx(card, "805A0006020001")[1] == 0x9406
    assert tx(card, "805A0006020002") == (second.mac2 + second.tac, 0x9000)
    assert tx(card, "805A0009020002")[1] == 0x9406
    assert tx(card, "805A0106020002")[1] == 0x6A86
    assert tx(card, "805A000603000200")[1] == 0x6700


# --- CAPP (ETC) -------------------------------------------------------------------------------


RECORD = "AA29" + "01" * 41


def test_update_capp_data_cache_refusals(card, psam, keys, tx):
    t = terminal(card, psam, keys, "etc")
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x6985  # no CAPP session
    t.initialize(0x03, 0)
    assert tx(card, "80DCAAC92B" + RECORD)[1] == 0x6A86  # P2 low bits must be 000
    assert tx(card, "80DCAA002B" + RECORD)[1] == 0x6A86
    assert tx(card, "80DCAAC02B" + RECORD)[1] == 0x6A82  # SFI 18 is the log
    assert tx(card, "80DCBBC82B" + "BB29" + "01" * 41)[1] == 0x6A83
    assert tx(card, "80DCAAC82A" + RECORD[:-2])[1] == 0x6700
    assert tx(card, "80DCAAC82B" + "AB29" + "01" * 41)[1] == 0x6A80
    assert tx(card, "80DCAAC800")[1] == 0x6700
    t.initialize(0x01, 0)
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x6985  # a plain purchase session


def test_capp_record_lands_only_with_the_debit(card, psam, keys, tx):
    t = terminal(card, psam, keys, "etc")
    record = bytes.fromhex(RECORD)
    init = t.initialize(0x03, 300)
    seq, _mac1 = t.mac1(init, 300, 0x09)
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x9000
    t.debit(seq, bytes(4), 0x9302)  # bad MAC1: neither record nor debit
    assert tx(card, "00B201CC2B")[0] == b"\xaa\x29" + bytes(41)
    assert card.purse("etc").balance == 20_000
    p = t.purchase(300, capp_record=record)
    assert tx(card, "00B201CC2B")[0] == record
    assert card.purse("etc").balance == 19_700
    assert card.purse("etc").log()[0].tx_type == 0x09
    assert tx(card, "805A000902" + (p.offline_seq + 1).to_bytes(2, "big").hex()) == (
        p.mac2 + p.tac, 0x9000)


def test_last_cached_record_wins(card, psam, keys, tx):
    t = terminal(card, psam, keys, "etc")
    init = t.initialize(0x03, 0)
    seq, mac1 = t.mac1(init, 0, 0x09)
    assert tx(card, "80DCAAC82B" + "AA29" + "02" * 41)[1] == 0x9000
    assert tx(card, "80DCAAC82B" + "AA29" + "03" * 41)[1] == 0x9000
    t.debit(seq, mac1)
    assert tx(card, "00B201CC2B")[0] == bytes.fromhex("AA29" + "03" * 41)


def test_capp_purchase_on_the_transit_purse_has_no_capp_file(card, psam, keys, tx):
    t = terminal(card, psam, keys, "transit")
    t.initialize(0x03, 10)
    assert tx(card, "80DCAAC82B" + RECORD)[1] == 0x6A82
    t.select("transit")
    p = t.purchase(10, capp_record=None)
    assert p.tx_type == 0x06
    init = t.initialize(0x03, 10)
    seq, mac1 = t.mac1(init, 10, 0x09)
    t.debit(seq, mac1)
    assert card.purse("transit").log()[0].tx_type == 0x09


# --- maintenance ------------------------------------------------------------------------------


def test_block_unblock_and_permanent_block(card, psam, keys, tx):
    t = terminal(card, psam, keys)
    assert tx(card, "841E00000400000000")[1] == 0x6985  # no challenge
    assert tx(card, "0084000004")[1] == 0x9000
    assert tx(card, "00B095001E")[1] == 0x9000
    assert tx(card, "841E00000400000000")[1] == 0x6985  # the challenge was for one command
    assert tx(card, "841E00020400000000")[1] == 0x6A86
    assert tx(card, "841E000003000000")[1] == 0x6700
    t.maintenance(0x1E)
    assert card.purse("transit").state is PurseState.BLOCKED
    assert tx(card, "0020000003123456")[1] == 0x9000
    assert tx(card, "00D6960001AA")[1] == 0x6985  # no updates while blocked
    assert tx(card, "00B095001E")[1] == 0x9000  # reads still work
    t.maintenance(0x18)
    t.maintenance(0x18)  # unblocking an active purse is harmless
    t.maintenance(0x1E, p2=0x01)
    assert card.purse("transit").state is PurseState.LOCKED
    t.maintenance(0x18, status=0x9303)


def test_maintenance_mac_errors_count_toward_the_lockout(card, psam, keys, tx):
    """PROTOCOL.md §1: 9302 for a maintenance MAC, three consecutive MAC errors lock (9303)."""
    t = terminal(card, psam, keys)
    purse = card.purse("transit")
    for count in (1, 2):
        assert tx(card, "0084000004")[1] == 0x9000
        assert tx(card, "841E00000400000000")[1] == 0x9302
        assert purse.mac_errors == count and purse.state is PurseState.ACTIVE
    t.maintenance(0x18)  # a right maintenance MAC clears the count: errors must be consecutive
    assert purse.mac_errors == 0
    for _ in range(2):
        assert tx(card, "0084000004")[1] == 0x9000
        assert tx(card, "841E00000400000000")[1] == 0x9302
    init = t.initialize(0x01, 0)
    seq, _mac1 = t.mac1(init, 0, 0x06)
    t.debit(seq, bytes(4), 0x9302)  # the third in a row, of any kind
    assert purse.state is PurseState.LOCKED
    assert tx(card, "0084000004")[1] == 0x9000
    assert tx(card, "841800000400000000")[1] == 0x9303


def test_block_with_an_eight_byte_challenge(card, psam, keys, tx):
    t = terminal(card, psam, keys)
    challenge, _ = tx(card, "0084000008")
    header = bytes.fromhex("841E000004")
    mac = pc.maintenance_mac(t.card_keys.maintenance, challenge, header)
    # PROTOCOL.md §2: IV = the first 4 random bytes ‖ 00000000
    assert mac == pc.maintenance_mac(t.card_keys.maintenance, challenge[:4], header)
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
