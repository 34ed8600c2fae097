"""CSV sheets as unions save them: a header row, then one row per member or payment.

Spreadsheet programs in China save CSV as UTF-8 (with or without a BOM) or as
GBK/GB 18030; both are read.  Columns are found by name in the header, in any
order, by their English names or their Chinese ones.  Every row comes back with
its line number, so a refusal names the line; blank rows are skipped.  A column
named twice in the header is refused when it is one the sheet's reader wants.
`control_character` finds what a cell must not carry to a card or a terminal.  The
member sheet of card issuance (`unioncard.applet_sim.member_sheet`) and the
disbursement sheet of the service points (`unioncard.terminal.disbursements`)
are read with it.

>>> encoding, rows = read_rows("会员编号,金额\\n20260001,5000\\n".encode("gbk"),
...                            ("member_no", "amount"), {"会员编号": "member_no", "金额": "amount"})
>>> encoding, list(rows)
('gbk', [(2, {'member_no': '20260001', 'amount': '5000'})])
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RowError", "SheetError", "control_character", "decode", "read_rows"]


class SheetError(ValueError):
    """The sheet as a whole cannot be read (encoding, header)."""


@dataclass(frozen=True, slots=True)
class RowError:
    """A refused row: where it is, whose it is (``key``, may be empty) and why."""

    line: int
    key: str
    reason: str

    @property
    def member_no(self) -> str:
        return self.key

    def __str__(self) -> str:
        who = f" (member {self.key})" if self.key else ""
        return f"line {self.line}{who}: {self.reason}"


def control_character(text: str) -> str | None:
    """The first control or format character of ``text`` (ESC, BEL, NUL, a line break, a
    bidirectional override...) as ``U+XXXX``, or None; spaces of any width are fine.

    >>> control_character("张三"), control_character("张\u3000三"), control_character("a\x1b[2J")
    (None, None, 'U+001B')
    """
    if text.isprintable():
        return None
    for char in text:
        if not char.isprintable() and unicodedata.category(char) != "Zs":
            return f"U+{ord(char):04X}"
    return None


def decode(raw: bytes) -> tuple[str, str]:
    """The sheet's text and its encoding, ``utf-8`` or ``gbk`` (read as GB 18030)."""
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gb18030"), "gbk"
    except UnicodeDecodeError:
        raise SheetError("the sheet is neither UTF-8 nor GBK/GB 18030 text") from None


def read_rows(raw: bytes, columns: Sequence[str], aliases: Mapping[str, str], *,
              optional: Sequence[str] = ()) -> tuple[str, Iterator[tuple[int, dict[str, str]]
                                                           | RowError]]:
    """The encoding, and the rows of a sheet as ``(line, {column: stripped cell})``.

    ``columns`` must all be in the header (named as they are or by an ``aliases``
    key); ``optional`` ones may be; other header columns are ignored.  A row that
    cannot be read, or has another number of cells than the header, comes as a
    `RowError` in its place.  Raises `SheetError` for an unreadable sheet or header.
    """
    text, encoding = decode(raw)
    reader = csv.reader(io.StringIO(text, newline=""))
    expected = ",".join(columns)
    try:
        header = next(reader)
    except StopIteration:
        raise SheetError(f"the sheet is empty; expected the header {expected}") from None
    except csv.Error as exc:
        raise SheetError(f"line 1: {exc}") from None
    names = [aliases.get(cell.strip(), cell.strip().lower()) for cell in header]
    missing = [c for c in columns if c not in names]
    if missing:
        chinese = ",".join(next((k for k, v in aliases.items() if v == c), c) for c in columns)
        raise SheetError(f"line 1: header lacks {', '.join(missing)}; expected {expected}"
                         + (f" or {chinese}" if chinese != expected else ""))
    wanted = {*columns, *optional}
    for column in wanted:
        if names.count(column) > 1:
            raise SheetError(f"line 1: column {column} appears twice in the header")
    return encoding, _rows(reader, names, wanted)


def _rows(reader: Any, names: list[str], wanted: set[str]
          ) -> Iterator[tuple[int, dict[str, str]] | RowError]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(reader.line_num, "", f"unreadable CSV: {exc}")
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            yield RowError(reader.line_num, "", f"{len(row)} fields, the header has {len(names)}")
            continue
        yield reader.line_num, {name: cell.strip() for name, cell in zip(names, row, strict=True)
                                if name in wanted}
