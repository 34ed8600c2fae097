"""Personalization: issue member cards and PSAMs as `SimulatedCard` objects.

A member card carries (docs/simulator.md has every byte):

- the T-Union transit purse, ADF ``1002``, AID ``A000000632010105``, key version
  ``01``: EF ``0015`` (30 bytes, card type ``55``, category flags), EF ``0016``
  (holder), cyclic log EF ``0018``;
- the ETC application, DF ``1001`` under the MF, key version ``02``: EF ``0015``
  (43 bytes, user type ``55``), EF ``0016`` (holder), EF ``0018``, and the CAPP
  file EF ``0019`` with its ``AA 29 00…00`` record;
- the member identity application, ADF ``1003``, AID ``F0554E494F4E43415244``,
  EF ``0001`` (SFI ``01``) with template ``70``;
- the PBOC debit application (AID ``A000000333010101``) with electronic cash and qPBOC,
  listed in the PSE ``1PAY.SYS.DDF01`` and the PPSE ``2PAY.SYS.DDF01``, when the keystore
  holds its EMV and RSA keys (`unioncard.applet_sim.pboc_issue`, docs/pboc.md).

Numbers come from one issuance number (`CardNumbers`): the transit application
serial is BCD ``<city code 4><55><00><card no 12>`` and its diversifier F the
rightmost 8 bytes; the ETC card number is BCD ``<network 4><card no 12>`` and is
the ETC purse's diversifier.  Card keys are diversified from a `Keystore`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unioncard.apdu import records
from unioncard.applet_sim.card import RandomSource, SimulatedCard
from unioncard.applet_sim.directory import PSE_NAME
from unioncard.applet_sim.files import (
    DF,
    EF,
    Access,
    FileKind,
    personalize_binary,
    personalize_records,
)
from unioncard.applet_sim.iso import PIN_TRIES_CELL
from unioncard.applet_sim.layout import CardLayout, Pin
from unioncard.applet_sim.member import (
    MEMBER_AID,
    MEMBER_SFI,
    MemberConfig,
    MemberRecord,
    MemberStatus,
    encode_member_template,
)
from unioncard.applet_sim.pboc import DEBIT_AID
from unioncard.applet_sim.pboc_issue import PSE_FID, debit_application, has_debit_keys
from unioncard.applet_sim.psam import PsamConfig
from unioncard.applet_sim.purse import LOG_RECORD_SIZE, PurseConfig
from unioncard.crypto.keystore import Keystore, derive_card_keys

if TYPE_CHECKING:
    from unioncard.applet_sim.member_sheet import MemberRow

__all__ = [
    "CAPP_RECORD_SIZE",
    "CARD_TYPE_MEMBER",
    "DEFAULT_PIN",
    "ETC_DF_FID",
    "MEMBER_DF_FID",
    "TRANSIT_AID",
    "TRANSIT_DF_FID",
    "CardNumbers",
    "MemberData",
    "etc_holder_record",
    "initial_capp_record",
    "issue_member_card",
    "issue_psam",
]

TRANSIT_AID = bytes.fromhex("A000000632010105")
TRANSIT_DF_FID = 0x1002
ETC_DF_FID = 0x1001
MEMBER_DF_FID = 0x1003
MEMBER_EF_FID = 0x0001
PSAM_DF_FID = 0x1001

CARD_TYPE_MEMBER = records.CardType.UNION_MEMBER
"""EF 0015 card type (transit) and user type (ETC) of a union member card."""
TRANSIT_APP_TYPE = 0x02
TRANSIT_APP_VERSION = 0x02
ETC_CARD_TYPE = 0x16  # GB/T 20851: 22, stored-value user card
ETC_CARD_VERSION = 0x40
CAPP_RECORD_SIZE = records.CAPP_RECORD.sizeof()
LOG_RECORDS = 10
CAPP_RECORDS = 3
DEFAULT_PIN = "123456"


def _bcd(digits: str, size: int) -> bytes:
    if not (digits.isascii() and digits.isdigit()) or len(digits) != 2 * size:
        raise ValueError(f"{digits!r} is not {2 * size} decimal digits")
    return bytes.fromhex(digits)


@dataclass(frozen=True, slots=True)
class CardNumbers:
    """The numbers of one card, all derived from its issuance number ``card_no``."""

    card_no: int
    city_code: str = "1000"
    etc_network: str = "1101"

    def __post_init__(self) -> None:
        if not 1 <= self.card_no < 10**12:
            raise ValueError("card_no must be 1..999999999999")
        _bcd(self.city_code, 2)
        _bcd(self.etc_network, 2)

    @property
    def transit_serial(self) -> bytes:
        """The 10-byte T-Union application serial (EF 0015 bytes 10–19)."""
        return _bcd(f"{self.city_code}{CARD_TYPE_MEMBER:02X}00{self.card_no:012d}", 10)

    @property
    def transit_diversifier(self) -> bytes:
        """F: the rightmost 8 bytes of the application serial."""
        return self.transit_serial[2:]

    @property
    def etc_card_no(self) -> bytes:
        """The 8-byte ETC card number (ETC EF 0015 bytes 12–19), the ETC diversifier."""
        return _bcd(f"{self.etc_network}{self.card_no:012d}", 8)

    @property
    def transit_issuer(self) -> bytes:
        return _bcd(self.city_code + "0000", 4) + b"\xff" * 4

    @property
    def etc_issuer(self) -> bytes:
        return _bcd(self.etc_network + "0000", 4) + b"\xff" * 4


@dataclass(frozen=True, slots=True)
class MemberData:
    """Who the card is for: what the member sheet gives, plus status and validity."""

    name: str
    member_no: str
    organization: str
    id_number: str
    valid_from: dt.date
    valid_until: dt.date
    category_flags: int = 0
    status: MemberStatus = MemberStatus.ACTIVE

    def __post_init__(self) -> None:
        self.record  # validates member number, flags, status and dates  # noqa: B018
        try:
            name = self.name.encode("gbk")
        except UnicodeEncodeError:
            raise ValueError(f"name {self.name!r} has characters outside GBK") from None
        if not name or len(name) > 20:
            raise ValueError("the name takes 1..20 bytes in GBK (EF 0016)")
        if not self.id_number.isascii() or not 1 <= len(self.id_number) <= 32:
            raise ValueError("the id number is 1..32 ASCII characters")

    @property
    def record(self) -> MemberRecord:
        """The member identity template's contents."""
        return MemberRecord(self.member_no, self.name, self.organization, self.category_flags,
                            self.status, self.valid_from, self.valid_until)

    @classmethod
    def from_row(
        cls, row: MemberRow, *, valid_from: dt.date, valid_until: dt.date,
        status: MemberStatus = MemberStatus.ACTIVE,
    ) -> MemberData:
        """From a row of the member collection sheet (`member_sheet.read_sheet`)."""
        return cls(row.name, row.member_no, row.organization, row.id_number, valid_from,
                   valid_until, row.category_flags, status)


def etc_holder_record(member: MemberData) -> bytes:
    """EF 0016 (55 bytes): holder type 00, staff flag 00, name (GBK, 20), id number
    (ASCII, 32), id type 00 (resident identity card); fields padded with 00."""
    return records.build(records.HOLDER, holder_type=0, staff_flag=0, name=member.name,
                         id_number=member.id_number, id_type=0)


def initial_capp_record() -> bytes:
    """The profile's personalized EF 0019 record: ``AA 29`` then 41 zero bytes."""
    return records.build(records.CAPP_RECORD, lock=0, network=bytes(2), station=bytes(2),
                         lane=0, unix_time=0, vehicle_class=0, status=0,
                         marker_station=bytes(9), staff_no=bytes(3), shift=0, plate="",
                         reserved=bytes(4))


def _transit_info(numbers: CardNumbers, member: MemberData, start: dt.date,
                  expiry: dt.date, card_type: int) -> bytes:
    return records.build(records.TRANSIT_INFO, issuer=numbers.transit_issuer,
                         app_type=TRANSIT_APP_TYPE, app_version=TRANSIT_APP_VERSION,
                         app_serial=numbers.transit_serial, start=start, expiry=expiry,
                         card_type=card_type, category_flags=member.category_flags)


def _etc_info(numbers: CardNumbers, start: dt.date, expiry: dt.date, plate: str,
              card_type: int) -> bytes:
    return records.build(records.ETC_INFO, issuer=numbers.etc_issuer,
                         card_type=ETC_CARD_TYPE, card_version=ETC_CARD_VERSION,
                         network=_bcd(numbers.etc_network, 2), card_no=numbers.etc_card_no,
                         start=start, expiry=expiry, plate=plate, user_type=card_type,
                         other=bytes(2))


def _purse_files(with_capp: bool, info: Any) -> tuple[EF, ...]:
    """The EFs of a purse DF; ``info`` is the layout of its EF 0015 (`records`)."""
    files = [
        EF(0x0015, FileKind.TRANSPARENT, info.sizeof(), sfi=0x15,
           name="application information"),
        EF(0x0016, FileKind.TRANSPARENT, records.HOLDER.sizeof(), sfi=0x16, update=Access.PIN,
           name="holder"),
        EF(0x0018, FileKind.CYCLIC, LOG_RECORD_SIZE, LOG_RECORDS, sfi=0x18,
           name="transaction log"),
    ]
    if with_capp:
        files.append(EF(0x0019, FileKind.LINEAR, CAPP_RECORD_SIZE, CAPP_RECORDS, sfi=0x19,
                        capp=True, name="composite (CAPP) records"))
    return tuple(files)


def issue_member_card(
    member: MemberData,
    keys: Keystore,
    *,
    card_no: int,
    transit_balance: int = 0,
    etc_balance: int = 0,
    plate: str = "",
    pin: str = DEFAULT_PIN,
    issue_date: dt.date | None = None,
    expiry: dt.date | None = None,
    city_code: str = "1000",
    etc_network: str = "1101",
    protocol: str = "T=1",
    random_source: RandomSource = None,
    card_type: int = CARD_TYPE_MEMBER,
    member_application: bool | None = None,
    debit: bool | None = None,
    ec_balance: int = 0,
    qpboc_cid: bool = True,
) -> SimulatedCard:
    """A personalized member card, powered off (call ``power_on()``; ``save()`` it to keep it).

    Dates default to the member's validity.  Balances are in fen and may not exceed the
    purse maximum (100000).  ``card_type`` is EF 0015's card type (transit) and user
    type (ETC): ``55`` a union member card, ``01`` an ordinary card; the member
    identity application is on the card when ``member_application`` says so (by
    default, on member cards only).  The PBOC debit application (``ec_balance`` in its
    electronic cash, fen; ``qpboc_cid`` false: no CID in its qPBOC GPO answer, as many
    qPBOC cards) is on the card when ``debit`` says so (by default, when the
    keystore holds its keys: `pboc_issue.has_debit_keys`).  Raises ValueError for
    impossible values, and `CryptoError` when the keystore lacks ``transit`` or ``etc``
    keys (or the debit keys, ``debit`` being true).
    """
    if not 0 <= card_type <= 0xFF:
        raise ValueError("the card type is one byte")
    with_member = (card_type == CARD_TYPE_MEMBER if member_application is None
                   else member_application)
    numbers = CardNumbers(card_no, city_code, etc_network)
    start = issue_date or member.valid_from
    end = expiry or member.valid_until
    transit_keys = derive_card_keys(keys.purse_keys("transit"), numbers.transit_diversifier)
    etc_keys = derive_card_keys(keys.purse_keys("etc"), numbers.etc_card_no)
    transit = PurseConfig("transit", transit_keys, label="T-UNION TRANSIT")
    etc = PurseConfig("etc", etc_keys, label="ETC PURSE", capp_fid=0x0019)
    for name, balance, cfg in (("transit", transit_balance, transit), ("etc", etc_balance, etc)):
        if not 0 <= balance <= cfg.max_balance:
            raise ValueError(f"{name} balance must be 0..{cfg.max_balance} fen")
    template = encode_member_template(member.record)
    member_df = DF(MEMBER_DF_FID, MEMBER_AID, (
        EF(MEMBER_EF_FID, FileKind.TRANSPARENT, len(template), sfi=MEMBER_SFI,
           name="member template 70"),
    ), MemberConfig(), "member identity")
    if debit is None:
        debit = has_debit_keys(keys, card_no)
    bank = debit_application(keys, card_no=card_no, holder=f"UNION MEMBER {member.member_no}",
                             effective=start, expiry=end, pin=pin,
                             ec_balance=ec_balance, qpboc_cid=qpboc_cid) if debit else None
    mf = DF(0x3F00, name="MF", children=(
        DF(ETC_DF_FID, None, _purse_files(True, records.ETC_INFO), etc, "ETC application"),
        DF(TRANSIT_DF_FID, TRANSIT_AID, _purse_files(False, records.TRANSIT_INFO), transit,
           "T-Union transit purse"),
        *((member_df,) if with_member else ()),
        *((bank.pse, bank.ppse, bank.adf) if bank is not None else ()),
    ))
    layout = CardLayout("member-card", mf, Pin(pin), b"UNIONCARD",
                        f"member {member.member_no} card {card_no}")
    card = SimulatedCard(layout, protocol=protocol, random_source=random_source)
    nvm, fs = card.nvm, card.fs
    nvm.format(PIN_TRIES_CELL, bytes([layout.pin.max_tries if layout.pin else 0]))
    holder = etc_holder_record(member)
    etc_path, transit_path = f"3F00/{ETC_DF_FID:04X}", f"3F00/{TRANSIT_DF_FID:04X}"
    personalize_binary(nvm, fs.node(f"{etc_path}/0015"),
                       _etc_info(numbers, start, end, plate, card_type))
    personalize_binary(nvm, fs.node(f"{etc_path}/0016"), holder)
    personalize_records(nvm, fs.node(f"{etc_path}/0018"), [])
    personalize_records(nvm, fs.node(f"{etc_path}/0019"), [initial_capp_record()])
    personalize_binary(nvm, fs.node(f"{transit_path}/0015"),
                       _transit_info(numbers, member, start, end, card_type))
    personalize_binary(nvm, fs.node(f"{transit_path}/0016"), holder)
    if with_member:
        personalize_binary(nvm, fs.node(f"3F00/{MEMBER_DF_FID:04X}/{MEMBER_EF_FID:04X}"),
                           template)
    card.apps[etc_path].personalize(balance=etc_balance)
    card.apps[transit_path].personalize(balance=transit_balance)
    if bank is not None:
        pse_path = f"3F00/{PSE_NAME.hex().upper()}"
        personalize_records(nvm, fs.node(f"{pse_path}/{PSE_FID:04X}"), [bank.pse_record])
        card.apps[f"3F00/{DEBIT_AID.hex().upper()}"].personalize(**bank.values)
    return card


def issue_psam(
    keys: Keystore,
    terminal_id: bytes | str,
    *,
    serial: int = 1,
    terminal_seq: int = 0,
    protocol: str = "T=1",
    random_source: RandomSource = None,
) -> SimulatedCard:
    """A PSAM holding every purchase master key of ``keys`` (by key version).

    ``terminal_id`` is 6 bytes (or 12 hex digits).  The MF holds EF ``0015`` (PSAM
    serial(10) version(1) key type(1) command set(1) FCI(1)) and EF ``0016`` (terminal
    id).  The purchase application (``80 70``, ``80 72``) answers from power-up, as
    docs/protocol.md §3 expects; terminals that select its DF ``1001`` first, as many real
    PSAMs require, reach the same application.
    """
    tid = bytes.fromhex(terminal_id) if isinstance(terminal_id, str) else bytes(terminal_id)
    if len(tid) != 6:
        raise ValueError(f"a terminal id has 6 bytes, got {len(tid)}")
    if not 0 <= terminal_seq <= 0xFFFFFFFF:
        raise ValueError("terminal_seq is 4 bytes")
    if not 1 <= serial < 10**20:
        raise ValueError("serial must be 1..10^20-1")
    config = PsamConfig(keys.purchase_master_keys())
    mf = DF(0x3F00, name="MF", app=config, children=(
        EF(0x0015, FileKind.TRANSPARENT, 14, sfi=0x15, name="PSAM information"),
        EF(0x0016, FileKind.TRANSPARENT, 6, sfi=0x16, name="terminal id"),
        DF(PSAM_DF_FID, None, (), None, "PSAM purchase application"),
    ))
    layout = CardLayout("psam", mf, None, b"UNIONPSAM", f"PSAM {tid.hex().upper()}")
    card = SimulatedCard(layout, protocol=protocol, random_source=random_source)
    fs = card.fs
    info = _bcd(f"{serial:020d}", 10) + bytes([0x01, 0x00, 0x01, 0x00])
    personalize_binary(card.nvm, fs.node("3F00/0015"), info)
    personalize_binary(card.nvm, fs.node("3F00/0016"), tid)
    card.apps["3F00"].personalize(terminal_seq=terminal_seq)
    return card
