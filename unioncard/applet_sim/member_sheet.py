"""The union's member collection sheet: the CSV that card issuance reads.

Header ``name,member_no,organization,category,id_number`` (or the Chinese
headers ``姓名,会员编号,工会组织,类别,身份证号``), UTF-8 with or without BOM,
or GBK/GB 18030 as spreadsheet programs in China save it.  ``category`` is
empty or any of ``model_worker``, ``hardship``, ``mutual_aid`` (the Chinese
``劳模``, ``困难职工``, ``互助保障`` are accepted too) joined with ``;``.

Every row is checked; a bad row becomes a `RowError` with its line number and
the reason, and the good rows are still returned, so issuance can go on and
report the refusals together.  Resident identity numbers are checked with the
GB 11643-1999 check digit and their birth date (a real date, not after today).
Names and organizations may not hold control or format characters (ESC, BEL,
line breaks, NUL, bidirectional overrides): the card would store them and every
tool would print them.

>>> sheet = read_sheet("name,member_no,organization,category,id_number\\n"
...                    "张三,20260001,市总工会,hardship,11010519491231002X\\n".encode())
>>> sheet.members[0].member_no, sheet.members[0].category_flags, sheet.errors
('20260001', 2, [])
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from unioncard.apdu.records import MemberCategory as Category
from unioncard.sheet import RowError, SheetError, control_character, read_rows

__all__ = [
    "CATEGORY_NAMES",
    "Category",
    "MemberRow",
    "MemberSheet",
    "RowError",
    "SheetError",
    "check_id_number",
    "read_sheet",
]


CATEGORY_NAMES: dict[str, Category] = {
    **{str(category.name).lower(): category for category in Category},
    "劳模": Category.MODEL_WORKER,
    "劳动模范": Category.MODEL_WORKER,
    "困难职工": Category.HARDSHIP,
    "互助保障": Category.MUTUAL_AID,
}

COLUMNS = ("name", "member_no", "organization", "category", "id_number")
CHINESE_COLUMNS = {"姓名": "name", "会员编号": "member_no", "工会组织": "organization",
                   "类别": "category", "身份证号": "id_number"}

NAME_MAX_GBK_BYTES = 20
"""EF 0016 holds the holder's name in 20 bytes (docs/protocol.md §4), GBK-encoded."""
MEMBER_NO_MAX = 16
ORGANIZATION_MAX_UTF8_BYTES = 120

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One valid member of the sheet."""

    line: int
    name: str
    member_no: str
    organization: str
    category_flags: int
    id_number: str

    @property
    def birth_date(self) -> dt.date:
        return dt.date(int(self.id_number[6:10]), int(self.id_number[10:12]),
                       int(self.id_number[12:14]))


@dataclass(slots=True)
class MemberSheet:
    encoding: str
    members: list[MemberRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def check_id_number(id_number: str, today: dt.date | None = None) -> str | None:
    """Why an 18-digit resident identity number is invalid, or None (GB 11643-1999).

    The birth date must be a real date from 1900 on, and not after ``today`` (by
    default, the date of the computer's clock).
    """
    if len(id_number) != 18:
        if len(id_number) == 15 and id_number.isdigit():
            return "15-digit identity number has no check digit; give the 18-digit number"
        return f"identity number must have 18 characters, has {len(id_number)}"
    body, check = id_number[:17], id_number[17].upper()
    if not body.isascii() or not body.isdigit() or not (check.isdigit() or check == "X"):
        return "identity number must be 17 digits and a digit or X"
    try:
        birth = dt.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return f"identity number has an impossible birth date {body[6:14]}"
    if birth.year < 1900:
        return f"identity number has an impossible birth date {body[6:14]}"
    if birth > (today or dt.date.today()):
        return f"identity number has a birth date in the future {body[6:14]}"
    expected = _ID_CHECK[sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
    if check != expected:
        return f"identity number check digit is {check}, GB 11643 gives {expected}"
    return None


def _parse_categories(text: str) -> int:
    flags = 0
    for token in text.replace("；", ";").split(";"):
        token = token.strip()
        if not token:
            continue
        category = CATEGORY_NAMES.get(token.lower())
        if category is None:
            known = ", ".join(name for name in CATEGORY_NAMES if name.isascii())
            raise ValueError(f"unknown category {token!r} (known: {known})")
        flags |= int(category)
    return flags


def _check_row(values: dict[str, str], today: dt.date | None) -> tuple[str, int] | str:
    """The normalized id number and category flags of a row, or why it is refused."""
    name, member_no = values["name"], values["member_no"]
    if not name:
        return "name is empty"
    for column in ("name", "organization"):
        char = control_character(values[column])
        if char:
            return f"{column} holds the control character {char}, which a card must not store"
    try:
        name_bytes = len(name.encode("gbk"))
    except UnicodeEncodeError:
        return f"name {name!r} has characters outside GBK, which EF 0016 cannot hold"
    if name_bytes > NAME_MAX_GBK_BYTES:
        return f"name takes {name_bytes} bytes in GBK, EF 0016 holds {NAME_MAX_GBK_BYTES}"
    if not (member_no.isascii() and member_no.isdigit()) or len(member_no) > MEMBER_NO_MAX:
        return f"member number {member_no!r} must be 1 to {MEMBER_NO_MAX} digits"
    if not values["organization"]:
        return "organization is empty"
    if len(values["organization"].encode("utf-8")) > ORGANIZATION_MAX_UTF8_BYTES:
        return f"organization is longer than {ORGANIZATION_MAX_UTF8_BYTES} bytes"
    id_number = values["id_number"].upper()
    reason = check_id_number(id_number, today)
    if reason:
        return reason
    try:
        flags = _parse_categories(values["category"])
    except ValueError as exc:
        return str(exc)
    return id_number, flags


def read_sheet(raw: bytes, *, today: dt.date | None = None) -> MemberSheet:
    """Read a whole member sheet; raises `SheetError` only for an unreadable sheet.

    ``today`` (default: the computer's clock) is the latest birth date accepted."""
    encoding, rows = read_rows(raw, COLUMNS, CHINESE_COLUMNS)
    sheet = MemberSheet(encoding=encoding)
    seen_members: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    for row in rows:
        if isinstance(row, RowError):
            sheet.errors.append(row)
            continue
        line, values = row
        member_no = values["member_no"]
        checked = _check_row(values, today)
        if isinstance(checked, str):
            sheet.errors.append(RowError(line, member_no, checked))
            continue
        id_number, flags = checked
        if member_no in seen_members:
            sheet.errors.append(RowError(line, member_no, "member number already on line "
                                                          f"{seen_members[member_no]}"))
            continue
        if id_number in seen_ids:
            sheet.errors.append(RowError(line, member_no, "identity number already on line "
                                                          f"{seen_ids[id_number]}"))
            continue
        seen_members[member_no] = seen_ids[id_number] = line
        sheet.members.append(MemberRow(line, values["name"], member_no, values["organization"],
                                       flags, id_number))
    return sheet
