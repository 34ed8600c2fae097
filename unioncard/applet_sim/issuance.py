"""Batch issuance: one member card image per valid row of a member sheet, and the
PSAM image that goes with them (``unioncard card issue``).

Card numbers come from the registry of the output directory (``issued.json``,
`unioncard.applet_sim.registry`): a member issued there before keeps the number,
a new member gets the lowest number from ``first_card_no`` on never given to
anyone, in sheet order, so no two members ever share a number, a serial or
keys, whatever the order of the sheets.  Images are never overwritten unless
``replace`` is set, because an image is the card: its balances and logs
would be lost.  The PSAM is written when absent, and kept when an image with
the same terminal id and the same master keys is already there.

Issuance holds the registry's lock (`unioncard.file_lock`) while it runs, and
each image's lock while writing it: an image served by ``sim serve`` (or used
by any command) is refused, never replaced under it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from unioncard.applet_sim.card import SimulatedCard
from unioncard.applet_sim.member_sheet import MemberRow, MemberSheet, RowError
from unioncard.applet_sim.personalize import MemberData, issue_member_card, issue_psam
from unioncard.applet_sim.registry import REGISTRY_NAME, CardRegistry, RegistryError
from unioncard.crypto.keystore import Keystore
from unioncard.errors import CardError, DecodeError
from unioncard.file_lock import FileLock, FileLockError, check_replaceable

__all__ = [
    "IssueOptions",
    "IssueReport",
    "IssuedCard",
    "card_image_name",
    "issue_sheet",
    "open_registry",
    "psam_image_name",
]

DEFAULT_TERMINAL_ID = bytes.fromhex("000000000001")
HOLDER = "unioncard card issue"
"""How issuance names itself in the locks it holds."""


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
    registry_path: Path | None = None
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
    if path.exists():
        check_replaceable(path, "a card image", "a card image")  # --force: images only
    with FileLock(path, HOLDER):
        issue_psam(keys, options.terminal_id, protocol=options.protocol).save(path)
    return path, False


def open_registry(out_dir: Path) -> CardRegistry:
    """The registry of ``out_dir``: its file, else built from the card images there."""
    path = out_dir / REGISTRY_NAME
    if path.exists() or path.is_symlink():
        return CardRegistry.load(path)
    return CardRegistry.from_images(out_dir)


def _exists(path: Path) -> str:
    return (f"{path.name} exists (use --force to replace it; the card's balances and logs "
            "would be lost)")


def _issue_card(member: MemberData, card_no: int, path: Path, keys: Keystore,
                options: IssueOptions) -> str | None:
    """Write one member's card image; why it was refused, or None."""
    if path.exists() and not options.replace:
        return _exists(path)
    try:
        if path.exists():
            check_replaceable(path, "a card image", "a card image")  # --force: images only
        with FileLock(path, HOLDER):
            card = issue_member_card(member, keys, card_no=card_no,
                                     transit_balance=options.transit_balance,
                                     etc_balance=options.etc_balance, protocol=options.protocol)
            card.save(path)
    except FileLockError as exc:
        return f"{exc}; it was not replaced"
    except ValueError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path.name}: {exc.strerror or exc}"
    return None


def issue_sheet(
    sheet: MemberSheet,
    keys: Keystore,
    out_dir: Path,
    options: IssueOptions,
    progress: Callable[[int], None] | None = None,
) -> IssueReport:
    """Issue every member of ``sheet`` into ``out_dir``; refusals are collected, not raised.

    Raises `RegistryError` (nothing written) when the directory's registry cannot be read
    or built, `FileInUseError` when another issuance into ``out_dir`` is running.
    ``progress(n)`` is called after each member with the number handled so far.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    registry_path = out_dir / REGISTRY_NAME
    with FileLock(registry_path, HOLDER):
        registry = open_registry(out_dir)
        report = IssueReport(*_write_psam(keys, out_dir, options), registry_path,
                             refused=list(sheet.errors))
        members: list[tuple[MemberRow, MemberData, int] | None] = []
        for row in sheet.members:
            path = out_dir / card_image_name(row.member_no)
            try:
                if path.exists() and not options.replace:
                    raise ValueError(_exists(path))
                member = MemberData.from_row(row, valid_from=options.valid_from,
                                             valid_until=options.valid_until)
                card_no = registry.assign(row.member_no, first=options.first_card_no)
            except (ValueError, RegistryError) as exc:
                report.refused.append(RowError(row.line, row.member_no, str(exc)))
                members.append(None)
            else:
                members.append((row, member, card_no))
        registry.save(registry_path)  # before any card: a number is never given twice
        for index, entry in enumerate(members):
            if entry is not None:
                row, member, card_no = entry
                path = out_dir / card_image_name(row.member_no)
                reason = _issue_card(member, card_no, path, keys, options)
                if reason is None:
                    report.issued.append(IssuedCard(row.member_no, card_no, path))
                else:
                    report.refused.append(RowError(row.line, row.member_no, reason))
            if progress is not None:
                progress(index + 1)
    report.refused.sort(key=lambda error: error.line)
    return report
