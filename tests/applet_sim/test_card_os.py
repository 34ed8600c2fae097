"""The card OS: ATR, power, framing (T=0/T=1), SELECT, READ/UPDATE, GET CHALLENGE, VERIFY."""

import random

import pytest

from unioncard.apdu import CommandAPDU, tlv
from unioncard.applet_sim import CardUnpowered, PowerLoss, Step, build_atr, issue_member_card
from unioncard.applet_sim.iso import PIN_TRIES_CELL
from unioncard.transport.base import Channel

TRANSIT = "00A4040008A000000632010105"
ETC_FROM_MF = ["00A40000023F00", "00A40000021001"]
MEMBER = "00A404000AF0554E494F4E43415244"


def select_etc(card, tx):
    for cmd in ETC_FROM_MF:
        assert tx(card, cmd)[1] == 0x9000


# --- ATR and power ----------------------------------------------------------------------------


def parse_protocols(atr: bytes) -> list[int]:
    """The protocols an ATR offers (TDi low nibbles, T=0 implicit when TD1 is absent)."""
    assert atr[0] == 0x3B
    y, i, protocols = atr[1] >> 4, 2, []
    while True:
        i += bin(y & 0x7).count("1")  # TA, TB, TC
        if not y & 0x8:
            break
        td = atr[i]
        protocols.append(td & 0x0F)
        y, i = td >> 4, i + 1
    return protocols or [0]


def test_atr_offers_t0_and_t1_with_a_valid_checksum(card):
    atr = card.atr
    assert parse_protocols(atr) == [0, 1]
    check = 0
    for b in atr[1:]:
        check ^= b
    assert check == 0
    assert card.reset() == atr == card.power_on()
    assert len(atr) == 2 + 4 + (atr[1] & 0x0F) + 1


def test_atr_historical_bytes_limit():
    with pytest.raises(ValueError):
        build_atr(bytes(16))


def test_unpowered_card_refuses_commands(card, tx):
    card.power_off()
    with pytest.raises(CardUnpowered):
        card.transmit(bytes.fromhex(TRANSIT))
    card.power_on()
    assert tx(card, TRANSIT)[1] == 0x9000


def test_reset_loses_selection_and_pin_status(card, tx):
    assert tx(card, TRANSIT)[1] == 0x9000
    assert tx(card, "0020000003123456")[1] == 0x9000
    card.reset()
    assert tx(card, "00B095001E")[1] == 0x6A82  # the MF has no SFI 15
    assert tx(card, "0020000000")[1] == 0x63C3  # not verified any more


# --- classes and instructions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "status"),
    [
        ("00A4", 0x6700),  # shorter than a header
        ("00A4040008A0000006", 0x6700),  # Lc beyond the data
        ("10A4040000", 0x6E00),
        ("A0A4000002 3F00", 0x6E00),
        ("FFCA000000", 0x6E00),
        ("01A40000023F00", 0x6881),
        ("0CA40000023F00", 0x6882),
        ("00EE000000", 0x6D00),
        ("805C000204", 0x6D00),  # no purse in the MF
        ("00C0000004", 0x6985),  # nothing to get
    ],
)
def test_refusals_by_class_and_instruction(card, tx, command, status):
    assert tx(card, command) == (b"", status)


# --- SELECT -----------------------------------------------------------------------------------


def test_select_by_aid_returns_fci(card, tx):
    data, status = tx(card, TRANSIT)
    assert status == 0x9000
    fci = tlv.decode(data)
    assert tlv.find_path(fci, "6F/84").value == bytes.fromhex("A000000632010105")
    assert tlv.find_path(fci, "6F/A5/50").value == b"T-UNION TRANSIT"
    assert tlv.find_path(fci, "6F/A5/9F08").value == b"\x02"


def test_select_by_partial_aid_and_next_occurrence(card, tx):
    data, status = tx(card, "00A4040005A000000632")
    assert status == 0x9000 and bytes.fromhex("A000000632010105") in data
    assert tx(card, "00A4040205A000000632")[1] == 0x6A82  # no second one
    assert tx(card, "00A4040003F0554E")[1] == 0x9000


def test_select_by_fid_rules(card, tx):
    # from the MF: a child DF, then (from inside it) a sibling DF and the MF's FID
    select_etc(card, tx)
    data, status = tx(card, "00A40000021002")  # sibling (child of the parent)
    assert status == 0x9000 and tlv.find_path(tlv.decode(data), "6F/84") is not None
    assert tx(card, "00A40000020015")[1] == 0x9000  # EF of the current DF
    assert tx(card, "00B0000000")[0][:8].hex() == "10000000ffffffff"  # current EF
    assert tx(card, "00A40000021001")[1] == 0x9000  # sibling of the current DF's... DF
    assert tx(card, "00A40000020019")[1] == 0x9000


def test_select_variants(card, tx):
    assert tx(card, "00A4000000")[0].hex().upper() == "6F0483023F00"  # no data: the MF
    assert tx(card, "00A40100021001")[1] == 0x9000  # child DF
    assert tx(card, "00A40200020015")[1] == 0x9000  # child EF
    assert tx(card, "00A40100020016")[1] == 0x6A82  # P1 01 names a DF, 0016 is an EF
    assert tx(card, "00A4030000")[1] == 0x9000  # parent of DF 1001: the MF
    assert tx(card, "00A4030000")[1] == 0x6A82  # the MF has no parent
    assert tx(card, "00A408000410010016")[1] == 0x9000  # path from the MF
    assert tx(card, "00A40900020018")[1] == 0x9000  # path from the current DF
    assert tx(card, "00A40000025555")[1] == 0x6A82
    assert tx(card, "00A4000003001500")[1] == 0x6700
    assert tx(card, "00A40400")[1] == 0x6700
    assert tx(card, "00A4000C023F00") == (b"", 0x9000)  # no response data
    assert tx(card, "00A40050023F00")[1] == 0x6A86
    assert tx(card, "00A40500023F00")[1] == 0x6A86


def test_failed_select_keeps_the_current_file(card, tx):
    assert tx(card, TRANSIT)[1] == 0x9000
    assert tx(card, "00A4040008A000000632019999")[1] == 0x6A82
    assert tx(card, "00B095001E")[1] == 0x9000


def test_select_fcp(card, tx):
    fcp = tlv.decode(tx(card, "00A40404 08 A000000632010105".replace(" ", ""))[0])
    assert tlv.find_path(fcp, "62/82").value == b"\x38"
    assert tlv.find_path(fcp, "62/83").value == b"\x10\x02"
    ef = tlv.decode(tx(card, "00A40004020018")[0])
    assert tlv.find_path(ef, "62/82").value == bytes.fromhex("06210017") + b"\x0a"
    assert tlv.find_path(ef, "62/88").value == b"\x18"
    assert tx(card, "00A40000020018") == (b"", 0x9000)  # EFs answer no FCI


# --- READ BINARY / READ RECORD ----------------------------------------------------------------


def test_read_binary(card, tx):
    assert tx(card, TRANSIT)[1] == 0x9000
    info, status = tx(card, "00B095001E")
    assert status == 0x9000 and len(info) == 30
    assert info[28:] == bytes([0x55, 0x03])  # card type, category flags
    assert tx(card, "00B0950000") == (info, 0x9000)  # Le 00: up to the end
    assert tx(card, "00B0950A0A") == (info[10:20], 0x9000)  # offset in P2
    assert tx(card, "00B095001F") == (b"", 0x6C1E)
    assert tx(card, "00B0951E01")[1] == 0x6B00
    assert tx(card, "00B0000A02") == (info[10:12], 0x9000)  # SFI made it current
    assert tx(card, "00B0980017")[1] == 0x6981  # EF 0018 has records
    assert tx(card, "00B0870000")[1] == 0x6A82
    assert tx(card, "00B0E50000")[1] == 0x6A86
    assert tx(card, "00B095")[1] == 0x6700
    assert tx(card, "00B09500")[1] == 0x6700  # no Le
    assert tx(card, "00B09500" + "000100") == (info, 0x9000)  # extended Le 256
    assert tx(card, "00B09500" + "000010") == (info[:16], 0x9000)  # extended Le 16


def test_read_binary_without_current_ef(card, tx):
    assert tx(card, TRANSIT)[1] == 0x9000
    assert tx(card, "00B0000004")[1] == 0x6986


def test_read_record(card, tx):
    select_etc(card, tx)
    record, status = tx(card, "00B201CC2B")
    assert status == 0x9000 and record == b"\xaa\x29" + bytes(41)
    assert tx(card, "00B201CC00") == (record, 0x9000)
    assert tx(card, "00B201CC10") == (b"", 0x6C2B)
    assert tx(card, "00B202CC2B")[1] == 0x6A83
    assert tx(card, "00B2010400") == (record, 0x9000)  # the current EF (0019 after SFI)
    assert tx(card, "00B201C417")[1] == 0x6A83  # empty log
    assert tx(card, "00B201C800")[1] == 0x6A86  # P2 mode 000 is not supported
    assert tx(card, "00B200CC00")[1] == 0x6A86
    assert tx(card, "00B201AC00")[1] == 0x6981  # SFI 15 is transparent
    assert tx(card, "00B201FC00")[1] == 0x6A86
    assert tx(card, "00B201D400")[1] == 0x6A82


# --- UPDATE BINARY / UPDATE RECORD and access conditions --------------------------------------


def test_update_binary_needs_the_pin(card, tx):
    assert tx(card, TRANSIT)[1] == 0x9000
    assert tx(card, "00D6960002ABCD")[1] == 0x6982  # EF 0016: PIN
    assert tx(card, "0020000003123456")[1] == 0x9000
    assert tx(card, "00D6960002ABCD")[1] == 0x9000
    assert tx(card, "00B0960002") == (b"\xab\xcd", 0x9000)
    assert tx(card, "00D6950001FF")[1] == 0x6982  # EF 0015: never
    assert tx(card, "00D6963702ABCD")[1] == 0x6B00
    assert tx(card, "00D6963602ABCD")[1] == 0x6700
    assert tx(card, "00D6960000")[1] == 0x6700


def test_update_record_of_capp_file_is_refused(card, tx):
    select_etc(card, tx)
    assert tx(card, "0020000003123456")[1] == 0x9000
    record = "AA29" + "11" * 41
    assert tx(card, "00DC01CC2B" + record)[1] == 0x6982
    assert tx(card, "00DC01C417" + "00" * 23)[1] == 0x6981  # cyclic
    assert tx(card, "00DC01AC02ABCD")[1] == 0x6981  # transparent


# --- GET CHALLENGE, VERIFY --------------------------------------------------------------------


def test_get_challenge(card, tx):
    a, sa = tx(card, "0084000004")
    b, sb = tx(card, "0084000008")
    assert (sa, sb) == (0x9000, 0x9000) and len(a) == 4 and len(b) == 8 and a != b[:4]
    assert tx(card, "0084000005")[1] == 0x6700
    assert tx(card, "00840000")[1] == 0x6700
    assert tx(card, "0084010004")[1] == 0x6A86


def test_seeded_randomness_is_reproducible(keys, member, tx):
    def challenges(source):
        card = issue_member_card(member, keys, card_no=7, random_source=source)
        card.power_on()
        return [tx(card, "0084000008")[0] for _ in range(3)]

    assert challenges(5) == challenges(5) == challenges(random.Random(5))
    assert challenges(5) != challenges(6)
    assert challenges(lambda n: b"\x11" * n)[0] == b"\x11" * 8
    with pytest.raises(TypeError):
        challenges("seed")


def test_bad_random_source_answers_6f00(keys, member, tx):
    card = issue_member_card(member, keys, card_no=7, random_source=lambda n: b"\x00")
    card.power_on()
    assert tx(card, "0084000004") == (b"", 0x6F00)
    assert isinstance(card.last_internal_error, ValueError)


def test_verify_counts_down_and_blocks(card, tx):
    assert tx(card, "0020000000")[1] == 0x63C3
    assert tx(card, "0020000003999999")[1] == 0x63C2
    assert tx(card, "0020000003123456")[1] == 0x9000  # a good PIN restores the tries
    assert tx(card, "0020000000")[1] == 0x9000
    for left in (2, 1, 0):
        assert tx(card, "0020000003000000")[1] == 0x63C0 | left
    assert tx(card, "0020000003123456")[1] == 0x6983
    assert tx(card, "0020000000")[1] == 0x6983
    card.power_off()
    card.power_on()
    assert tx(card, "0020000003123456")[1] == 0x6983  # blocked for good
    assert tx(card, "0020010003123456")[1] == 0x6A86
    assert tx(card, "0020008103123456")[1] == 0x6A88
    assert tx(card, "002000000712345678901234")[1] == 0x6700


def test_verify_power_cut_never_saves_a_try(card, tx):
    card.faults.cut_before(Step.PIN_TRIES, occurrence=2)  # the restore after a match
    with pytest.raises(PowerLoss):
        card.transmit(bytes.fromhex("0020000003123456"))
    card.power_on()
    assert card.nvm.read(PIN_TRIES_CELL) == b"\x02"
    card.faults.cut_after(Step.COMMIT)  # a wrong PIN: the decrement is committed first
    with pytest.raises(PowerLoss):
        card.transmit(bytes.fromhex("0020000003000000"))
    card.power_on()
    assert tx(card, "0020000000")[1] == 0x63C1


# --- T=0 and T=1 framing ----------------------------------------------------------------------


def test_t0_answers_61xx_and_get_response(card, tx):
    card.protocol = "T=0"
    fci_t1 = None
    data, status = tx(card, TRANSIT)
    assert data == b"" and status >> 8 == 0x61
    length = status & 0xFF
    assert tx(card, f"00C00000{length + 1:02X}") == (b"", 0x6C00 | length)
    head, status = tx(card, "00C0000005")
    assert len(head) == 5 and status == 0x6100 | (length - 5)
    rest, status = tx(card, f"00C00000{length - 5:02X}")
    assert status == 0x9000
    card.protocol = "T=1"
    fci_t1 = tx(card, TRANSIT)[0]
    assert head + rest == fci_t1


def test_t0_case2_wrong_le_gets_6cxx(card, tx):
    card.protocol = "T=0"
    assert tx(card, TRANSIT)[1] >> 8 == 0x61
    assert tx(card, "00B0950000") == (b"", 0x6C1E)
    assert len(tx(card, "00B095001E")[0]) == 30
    assert tx(card, "805C000208") == (b"", 0x6C04)
    data, status = tx(card, "805C000204")
    assert status == 0x9000 and len(data) == 4


def test_t0_pending_data_is_dropped_by_another_command(card, tx):
    card.protocol = "T=0"
    assert tx(card, TRANSIT)[1] >> 8 == 0x61
    assert tx(card, "0084000004")[1] == 0x9000
    assert tx(card, "00C0000010")[1] == 0x6985


def test_t1_short_le_gets_6cxx_and_no_le_gets_everything(card, tx):
    data, status = tx(card, TRANSIT + "00")
    assert status == 0x9000
    assert tx(card, TRANSIT + "05") == (b"", 0x6C00 | len(data))
    assert tx(card, TRANSIT) == (data, 0x9000)


@pytest.mark.parametrize("protocol", ["T=0", "T=1"])
def test_shared_channel_handles_both_protocols(card, protocol):
    card.protocol = protocol
    channel = Channel(card)
    response = channel.transmit(CommandAPDU.from_bytes(bytes.fromhex(TRANSIT + "00")))
    assert response.ok and response.data.startswith(b"\x6f")
    response = channel.transmit(CommandAPDU.from_bytes(bytes.fromhex("00B0950000")))
    assert response.ok and len(response.data) == 30


def test_protocol_is_validated(card):
    with pytest.raises(ValueError):
        card.protocol = "T=2"


def test_internal_error_answers_6f00_and_aborts(card, tx, monkeypatch):
    from unioncard.applet_sim import iso

    def broken(card, cmd):
        card.nvm.write(Step.FILE_UPDATE, "3F00:scratch", b"\x01")
        raise RuntimeError("defect")

    monkeypatch.setitem(iso.HANDLERS, 0xA4, broken)
    assert tx(card, TRANSIT) == (b"", 0x6F00)
    assert isinstance(card.last_internal_error, RuntimeError)
    assert card.nvm.get("3F00:scratch") is None and card.nvm.journal == []
