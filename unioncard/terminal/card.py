"""Reading a card: select a purse, its EF 0015, the member application, logs (docs/protocol.md §4).

Sub-flows (generators of `Send` steps) that every transaction flow shares.
They rely on the protocol only: no FCI content is required (a SELECT's answer
is only checked for its status word), EF 0016, EF 001E, the ETC application
and the member application may be absent (``6A82``/``6A83``), and the card's
answers are parsed with the layouts of `unioncard.apdu.records`.

A refusal is raised as `unioncard.terminal.session.Refused`, with a reason a
passenger or an operator understands.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from unioncard.apdu import SW, ResponseAPDU, records
from unioncard.apdu import purse as cmd
from unioncard.apdu.member import MEMBER_AID, MEMBER_SFI, MemberRecord, decode_member_template
from unioncard.apdu.status import describe as describe_sw
from unioncard.errors import CardError, DecodeError
from unioncard.offline import Application
from unioncard.terminal.session import Decision, Device, Refused, Send

__all__ = [
    "CAPP_SFI",
    "CHINA_STANDARD_TIME",
    "ETC_DF",
    "HOLDER_SFI",
    "INFO_SFI",
    "LOG_SFI",
    "MF",
    "TRANSIT_AID",
    "TRANSIT_RECORDS_SFI",
    "PurseCard",
    "card_send",
    "expect_ok",
    "get_balance",
    "member_dict",
    "membership_active",
    "parse_answer",
    "read_log",
    "read_member",
    "read_transit_records",
    "select_purse",
]

TRANSIT_AID = bytes.fromhex("A000000632010105")
"""The T-Union transit purse (docs/protocol.md §4)."""
MF, ETC_DF = 0x3F00, 0x1001
INFO_SFI, HOLDER_SFI, LOG_SFI, CAPP_SFI, TRANSIT_RECORDS_SFI = 0x15, 0x16, 0x18, 0x19, 0x1E
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8))
"""Card times in unix time (EF 0019) are UTC; terminals keep local time (China: UTC+8,
no daylight saving)."""
LOG_RECORDS_MAX = 50
"""READ RECORD stops here even if a card never answers ``6A83``."""

SubFlow = Generator[Send, ResponseAPDU, Any]


@dataclass(frozen=True, slots=True)
class PurseCard:
    """A purse as its EF 0015 describes it; ``diversifier`` derives its keys (§2, §4)."""

    application: Application
    issuer: bytes
    serial: bytes
    diversifier: bytes
    card_type: int
    category_flags: int
    start: dt.date | None
    expiry: dt.date | None
    plate: str = ""

    @property
    def name(self) -> str:
        return self.application.name.lower()

    def validity_problem(self, today: dt.date) -> str | None:
        """Why the card may not be used on ``today``, or None."""
        if self.expiry is not None and today > self.expiry:
            return f"card expired on {self.expiry.isoformat()}"
        if self.start is not None and today < self.start:
            return f"card not valid before {self.start.isoformat()}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "application": self.name, "issuer": self.issuer.hex().upper(),
            "serial": self.serial.hex().upper(),
            "diversifier": self.diversifier.hex().upper(),  # the card, as hotlists name it
            "card_type": f"{self.card_type:02X}",
            "category_flags": f"{self.category_flags:02X}",
            "valid_from": None if self.start is None else self.start.isoformat(),
            "valid_until": None if self.expiry is None else self.expiry.isoformat(),
            **({"plate": self.plate} if self.application is Application.ETC else {}),
        }


def card_send(apdu: Any, what: str) -> Send:
    return Send(Device.CARD, apdu, what)


def expect_ok(response: ResponseAPDU, what: str, *, size: int | None = None) -> bytes:
    """The data of a ``9000`` answer of the expected size, else `CardError`."""
    if response.sw != SW.OK:
        raise CardError(f"{what} answered {response.sw:04X} ({describe_sw(response.sw)})")
    if size is not None and len(response.data) != size:
        raise CardError(f"{what} answered {len(response.data)} bytes, expected {size}")
    return response.data


def parse_answer(response: ResponseAPDU, what: str, layout: Any) -> Any:
    """A ``9000`` answer parsed with ``layout`` (`unioncard.apdu.purse`, `records`), else
    `CardError` naming the command."""
    raw = expect_ok(response, what, size=records.size_of(layout))
    try:
        return records.parse(layout, raw)
    except DecodeError as exc:
        raise CardError(f"{what} answered malformed data: {exc.message}") from None


def _refuse_select(sw: int, app: Application) -> Refused:
    name = "transit purse" if app is Application.TRANSIT else "ETC application"
    if sw in (SW.FILE_NOT_FOUND, SW.FUNCTION_NOT_SUPPORTED):
        return Refused(f"the card has no {name}")
    if sw == SW.SELECTED_FILE_INVALIDATED:
        return Refused(f"the card's {name} is blocked")
    if sw == SW.APPLICATION_LOCKED:
        return Refused(f"the card's {name} is locked for good")
    return Refused(f"the card refused to select its {name}: {sw:04X} ({describe_sw(sw)})",
                   Decision.ERROR)


def select_purse(app: Application, *, allow_blocked: bool = False) -> SubFlow:
    """SELECT the purse (transit by AID; ETC: MF, then DF 1001) and read its EF 0015.

    Returns a `PurseCard`; a missing, blocked or locked purse is `Refused` (a
    blocked one is read all the same with ``allow_blocked``: its FCI comes with
    ``6283``).  A card may answer ``6283`` for a purse locked for good too: GET
    BALANCE then tells (``9303``), so the reason says which.
    """
    if app is Application.TRANSIT:
        answer = yield card_send(cmd.select_by_name(TRANSIT_AID), "SELECT transit purse")
        layout = records.TRANSIT_INFO
    else:
        mf = yield card_send(cmd.select_file(MF), "SELECT MF")
        if mf.sw != SW.OK:
            raise _refuse_select(mf.sw, app)
        answer = yield card_send(cmd.select_file(ETC_DF), "SELECT ETC application")
        layout = records.ETC_INFO
    if answer.sw == SW.SELECTED_FILE_INVALIDATED:
        if not allow_blocked:
            # blocked until unblocked, or locked for good: GET BALANCE tells (6985 / 9303)
            balance = yield card_send(cmd.get_balance(), "GET BALANCE (purse state)")
            locked = balance.sw == SW.APPLICATION_LOCKED
            raise _refuse_select(SW.APPLICATION_LOCKED if locked else answer.sw, app)
    elif answer.sw != SW.OK:
        raise _refuse_select(answer.sw, app)
    info = yield card_send(cmd.read_binary_sfi(INFO_SFI, records.size_of(layout)),
                           "READ BINARY EF 0015")
    if info.sw in (SW.FILE_NOT_FOUND, SW.COMMAND_NOT_ALLOWED_NO_EF, SW.WRONG_P1_P2):
        raise _refuse_select(SW.FILE_NOT_FOUND, app)  # selected, but no purse file behind it
    parsed = parse_answer(info, "READ BINARY EF 0015", layout)
    if app is Application.TRANSIT:
        return PurseCard(app, parsed.issuer, parsed.app_serial, parsed.app_serial[-8:],
                         parsed.card_type, parsed.category_flags, parsed.start, parsed.expiry)
    return PurseCard(app, parsed.issuer, parsed.card_no, parsed.card_no, parsed.user_type, 0,
                     parsed.start, parsed.expiry, parsed.plate)


def read_member() -> SubFlow:
    """The member identity application's template, or None when the card has none.

    A template that cannot be read or decoded counts as absent (the card is
    then treated as the purse's EF 0015 describes it), never as an error.
    """
    answer = yield card_send(cmd.select_by_name(MEMBER_AID), "SELECT member application")
    if answer.sw not in (SW.OK, SW.SELECTED_FILE_INVALIDATED):
        return None
    data = yield card_send(cmd.read_binary_sfi(MEMBER_SFI, 256), "READ BINARY member template")
    if data.sw not in (SW.OK, SW.END_OF_FILE):  # 6282: the file is shorter than Le, data given
        return None
    try:
        return decode_member_template(data.data)
    except DecodeError:
        return None


def member_dict(member: MemberRecord) -> dict[str, Any]:
    """What outcomes show of a member (no name: receipts and logs need none)."""
    return {"member_no": member.member_no, "organization": member.organization,
            "status": member.status.name.lower(), "category_flags": f"{member.category_flags:02X}",
            "valid_from": member.valid_from.isoformat(),
            "valid_until": member.valid_until.isoformat()}


def membership_active(member: MemberRecord | None, today: dt.date) -> bool:
    """An active member whose membership covers ``today``."""
    return (member is not None and member.status == records.MemberStatus.ACTIVE
            and member.valid_from <= today <= member.valid_until)


def get_balance() -> SubFlow:
    """GET BALANCE of the selected purse, in fen."""
    answer = yield card_send(cmd.get_balance(), "GET BALANCE")
    return int(parse_answer(answer, "GET BALANCE", cmd.BALANCE_RESPONSE).balance)


def _read_records(sfi: int, size: int, what: str) -> SubFlow:
    """Records 1, 2, ... of a record EF until ``6A83``; [] when the file is absent."""
    found: list[bytes] = []
    for number in range(1, LOG_RECORDS_MAX + 1):
        what_n = f"READ RECORD {what} #{number}"
        answer = yield card_send(cmd.read_record(sfi, number, size), what_n)
        if answer.sw in (SW.RECORD_NOT_FOUND, SW.FILE_NOT_FOUND, SW.WRONG_P1_P2):
            break
        found.append(expect_ok(answer, what_n, size=size))
    return found


def read_log() -> SubFlow:
    """EF 0018, newest first: `records.STORED_LOG_RECORD` containers."""
    raw = yield from _read_records(LOG_SFI, records.size_of(records.STORED_LOG_RECORD), "EF 0018")
    try:
        return [records.parse(records.STORED_LOG_RECORD, r) for r in raw]
    except DecodeError as exc:
        raise CardError(f"EF 0018 record is malformed: {exc.message}") from None


def read_transit_records() -> SubFlow:
    """EF 001E transit records where the card has them, newest first (raw 48 bytes)."""
    raw = yield from _read_records(TRANSIT_RECORDS_SFI, records.size_of(records.TRANSIT_RECORD),
                                   "EF 001E")
    return raw
