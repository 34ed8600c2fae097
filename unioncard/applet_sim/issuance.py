"""Batch issuance: one member card image per valid row of a member sheet, and the
PSAM image that goes with them (``unioncard card issue``).

Card ``n`` of a sheet (counting its valid members in sheet order, from 0) gets
the issuance number ``first_card_no + n``, so issuing the same sheet again
gives every member the same card number.  Images are never overwritten
unless ``replace`` is set, because an image is the card: its balances and
logs would be lost.  The PSAM is written when absent, and kept when an image
with the same terminal id and the same master keys is already there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from unioncard.applet_sim.card import SimulatedCard
from unioncard.applet_sim.member_sheet import MemberSheet, RowError
from unioncard.applet_sim.personalize import MemberData, issue_member_card, issue_psam
from unioncard.crypto.keystore import Keystore
from unioncard.errors import CardError, DecodeError

__all__ = [
    "IssueOptions",
    "IssueReport",
    "IssuedCard",
    "card_image_name",
    "issue_sheet",
    "psam_image_name",
]

DEFAULT_TERMINAL_ID = bytes.fromhex("000000000001")


def card_image_name(member_no: str) -> str:
    """The image file of a member's card: it begins with the member number."""
    return f"{member_no}-card.json"


def psam_image_name(terminal_id: bytes) -> str:
    return f"psam-{terminal_id.hex().upper()}.json"


@dataclass(frozen=True, slots=True)
class IssueOptions:
    valid_from: dt.date
    valid_until: dt.date
    transit_balance: int = 0
    etc_balance: int = 0
    first_card_no: int = 1
    terminal_id: bytes = DEFAULT_TERMINAL_ID
    protocol: str = "T=1"
    replace: bool = False

    def __post_init__(self) -> None:
        if self.valid_until < self.valid_from:
            raise ValueError("the validity ends before it starts")
        if len(self.terminal_id) != 6:
            raise ValueError("a terminal id has 6 bytes (12 hex digits)")
        if self.first_card_no < 1:
            raise ValueError("card numbers start at 1")


@dataclass(frozen=True, slots=True)
class IssuedCard:
    member_no: str
    card_no: int
    path: Path


@dataclass(slots=True)
class IssueReport:
    psam_path: Path
    psam_kept: bool
    issued: list[IssuedCard] = field(default_factory=list)
    refused: list[RowError] = field(default_factory=list)


def _write_psam(keys: Keystore, out_dir: Path, options: IssueOptions) -> tuple[Path, bool]:
    path = out_dir / psam_image_name(options.terminal_id)
    if path.exists() and not options.replace:
        try:
            existing = SimulatedCard.load(path)
            same = existing.psam().config.master_keys == keys.purchase_master_keys()
        except (DecodeError, LookupError) as exc:
            raise CardError(f"{path} exists and is not a PSAM image ({exc}); "
                            "use --force to replace it") from None
        if not same:
            raise CardError(f"{path} holds other master keys than this keystore; "
                            "use --force to replace it (its terminal seq restarts at 0)")
        return path, True
    issue_psam(keys, options.terminal_id, protocol=options.protocol).save(path)
    return path, False


def issue_sheet(
    sheet: MemberSheet,
    keys: Keystore,
    out_dir: Path,
    options: IssueOptions,
    progress: Callable[[int], None] | None = None,
) -> IssueReport:
    """Issue every member of ``sheet`` into ``out_dir``; refusals are collected, not raised.

    ``progress(n)`` is called after each member with the number handled so far.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    psam_path, kept = _write_psam(keys, out_dir, options)
    report = IssueReport(psam_path, kept, refused=list(sheet.errors))
    for index, row in enumerate(sheet.members):
        card_no = options.first_card_no + index
        path = out_dir / card_image_name(row.member_no)
        if path.exists() and not options.replace:
            report.refused.append(RowError(row.line, row.member_no,
                                           f"{path.name} exists (use --force to replace it; "
                                           "the card's balances and logs would be lost)"))
        else:
            try:
                member = MemberData.from_row(row, valid_from=options.valid_from,
                                             valid_until=options.valid_until)
                card = issue_member_card(member, keys, card_no=card_no,
                                         transit_balance=options.transit_balance,
                                         etc_balance=options.etc_balance,
                                         protocol=options.protocol)
            except ValueError as exc:
                report.refused.append(RowError(row.line, row.member_no, str(exc)))
            else:
                card.save(path)
                report.issued.append(IssuedCard(row.member_no, card_no, path))
        if progress is not None:
            progress(index + 1)
    report.refused.sort(key=lambda error: error.line)
    return report
