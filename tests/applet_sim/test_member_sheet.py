"""The member collection sheet: encodings, headers, categories, GB 11643 checks."""

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unioncard.applet_sim.member_sheet import (
    SheetError,
    check_id_number,
    read_sheet,
)

HEADER = "name,member_no,organization,category,id_number\n"
ZH_HEADER = "姓名,会员编号,工会组织,类别,身份证号\n"
# GB 11643-1999's own example, and numbers made valid with the check digit rule.
VALID_IDS = ["11010519491231002X", "440524198001010013", "110101199003074477"]


def _id_with_check(body: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


@pytest.mark.parametrize("id_number", VALID_IDS)
def test_valid_identity_numbers(id_number):
    assert check_id_number(id_number) is None


@pytest.mark.parametrize(
    ("id_number", "reason"),
    [
        ("110105194912310021", "check digit is 1, GB 11643 gives X"),
        ("11010519491231002", "18 characters"),
        ("110105491231002", "15-digit"),
        ("11010519490231002X", "impossible birth date 19490231"),
        ("1101051949123100AX", "17 digits"),
    ],
)
def test_invalid_identity_numbers(id_number, reason):
    assert reason in check_id_number(id_number)


@given(st.text("0123456789", min_size=17, max_size=17))
def test_check_digit_detects_every_single_digit_change(body):
    good = _id_with_check(body)
    if check_id_number(good) is not None:  # impossible birth date
        return
    for i in range(17):
        changed = good[:i] + str((int(good[i]) + 1) % 10) + good[i + 1:]
        assert check_id_number(changed) is not None


def test_utf8_with_bom_and_categories():
    text = HEADER + "张三,20260001,市总工会,model_worker;hardship,11010519491231002X\n"
    sheet = read_sheet(("\ufeff" + text).encode("utf-8"))
    assert sheet.encoding == "utf-8" and not sheet.errors
    (member,) = sheet.members
    assert (member.name, member.organization, member.category_flags) == ("张三", "市总工会", 3)
    assert member.birth_date.isoformat() == "1949-12-31"


def test_gbk_sheet_with_chinese_headers_and_categories():
    text = ZH_HEADER + "李四,20260002,区总工会,困难职工；互助保障,440524198001010013\r\n"
    sheet = read_sheet(text.encode("gbk"))
    assert sheet.encoding == "gbk" and not sheet.errors
    assert sheet.members[0].name == "李四"
    assert sheet.members[0].category_flags == 0x06


def test_bad_rows_are_reported_by_line_and_the_rest_kept():
    text = (HEADER
            + "张三,20260001,市总工会,,11010519491231002X\n"
            + "李四,20260002,市总工会,,110105194912310021\n"  # check digit
            + "\n"
            + "王五,2026-3,市总工会,,440524198001010013\n"  # member number
            + "赵六,20260004,市总工会,vip,110101199003074477\n"  # category
            + "钱七,20260001,市总工会,,110101199003074477\n"  # duplicate member number
            + "孙八,20260008,市总工会,,11010519491231002x\n"  # duplicate id (lower-case x)
            + ",20260009,市总工会,,110101199003074477\n"  # empty name
            + "周九,20260010,市总工会\n"  # short row
            + "欧阳司马诸葛上官慕容端,20260011,市总工会,,110101199003074477\n")  # EF 0016 overflow
    sheet = read_sheet(text.encode())
    assert [m.member_no for m in sheet.members] == ["20260001"]
    assert [(e.line, e.member_no) for e in sheet.errors] == [
        (3, "20260002"), (5, "2026-3"), (6, "20260004"), (7, "20260001"), (8, "20260008"),
        (9, "20260009"), (10, ""), (11, "20260011"),
    ]
    reasons = [str(e) for e in sheet.errors]
    assert "line 3 (member 20260002): identity number check digit" in reasons[0]
    assert "unknown category 'vip'" in reasons[2]
    assert "member number already on line 2" in reasons[3]
    assert "identity number already on line 2" in reasons[4]
    assert "name is empty" in reasons[5]
    assert "3 fields, the header has 5" in reasons[6]
    assert "bytes in GBK" in reasons[7]


def test_quoted_fields_and_column_order():
    text = ("id_number,name,member_no,category,organization,phone\n"
            '11010519491231002X,"Zhang, San",20260001,,"Union ""A""",13800000000\n')
    sheet = read_sheet(text.encode())
    assert not sheet.errors
    assert sheet.members[0].name == "Zhang, San"
    assert sheet.members[0].organization == 'Union "A"'


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b"name,member_no\n", "header lacks organization, category, id_number"),
        (b"\xff\xfe\x00n\x00a", "neither UTF-8 nor GBK"),
    ],
)
def test_unreadable_sheets(raw, message):
    with pytest.raises(SheetError, match=message):
        read_sheet(raw)


@pytest.mark.parametrize("header", [
    "name,member_no,organization,category,id_number,name",
    "name,member_no,organization,category,id_number,姓名",  # the same column in Chinese
    "姓名,会员编号,工会组织,类别,身份证号,会员编号",
])
def test_a_wanted_column_twice_refuses_the_sheet(header):
    row = "张三,20260001,市总工会,,11010519491231002X,李四"
    with pytest.raises(SheetError, match="appears twice in the header"):
        read_sheet(f"{header}\n{row}\n".encode())


def test_an_unknown_column_twice_is_ignored():
    text = (HEADER.strip() + ",phone,phone,备注,备注\n"
            "张三,20260001,市总工会,hardship,11010519491231002X,1,2,x,y\n")
    sheet = read_sheet(text.encode())
    assert not sheet.errors
    assert (sheet.members[0].name, sheet.members[0].category_flags) == ("张三", 2)


def test_a_birth_date_in_the_future_is_refused():
    future = "110105210001010015"  # born 2100-01-01, with a valid check digit
    assert check_id_number(future) == "identity number has a birth date in the future 21000101"
    assert check_id_number(future, today=dt.date(2100, 1, 1)) is None
    sheet = read_sheet((HEADER + f"张三,20260001,市总工会,,{future}\n").encode(),
                       today=dt.date(2026, 5, 1))
    assert not sheet.members
    assert "birth date in the future" in str(sheet.errors[0])


@pytest.mark.parametrize(
    ("name", "organization", "char"),
    [
        ("张\x1b[2J三", "市总工会", "U+001B"),  # terminal escape
        ("张三\x07", "市总工会", "U+0007"),
        ('"张\n三"', "市总工会", "U+000A"),  # a quoted line break
        ("张\x00三", "市总工会", "U+0000"),  # would cut the name in EF 0016
        ("张三", "市总\u202e工会", "U+202E"),  # a bidirectional override
        ("张三", "市总\x1b]0;x\x07工会", "U+001B"),
    ],
)
def test_control_characters_in_names_and_organizations_are_refused(name, organization, char):
    sheet = read_sheet((HEADER + f"{name},20260001,{organization},,11010519491231002X\n"
                        ).encode())
    assert not sheet.members
    assert f"holds the control character {char}" in str(sheet.errors[0])


def test_wide_spaces_and_middle_dots_are_names():
    sheet = read_sheet((HEADER + "阿依古丽·买买提,20260001,市总工会\u3000一分会,,"
                        "11010519491231002X\n").encode())
    assert not sheet.errors and sheet.members[0].organization == "市总工会\u3000一分会"
