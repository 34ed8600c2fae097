"""``unioncard card``: issue simulated member cards and PSAMs, show an image, read a card.

``card issue`` reads the union's member sheet (docs/issuance.md) and writes one
card image per valid member plus the PSAM image; refused rows are reported by
line with the reason, and the exit status is 1 when any row was refused.
Without ``--keys`` the published test keys are used, and the command says so.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from unioncard.applet_sim.card import SimulatedCard
from unioncard.applet_sim.issuance import DEFAULT_TERMINAL_ID, IssueOptions, issue_sheet
from unioncard.applet_sim.member_sheet import SheetError, read_sheet
from unioncard.applet_sim.summary import card_summary
from unioncard.bounded_read import SHEET_LIMIT, InputFileError, read_file
from unioncard.commands.common import (
    JSON_OPTION,
    Digits,
    finish,
    parse_terminal_id,
    printable,
    progress_bar,
)
from unioncard.commands.terminal_io import (
    card_options,
    check_link_options,
    decision_command,
    open_link,
)
from unioncard.crypto.keystore import Keystore
from unioncard.errors import DecodeError

__all__ = ["group"]

TEST_KEYS_WARNING = (
    "WARNING: these cards use the PUBLISHED TEST KEYS (docs/protocol.md §6). Anyone can forge "
    "their MACs and TACs. They are for testing only; pass --keys with your own keystore "
    "for anything else."
)
PROGRESS_MIN_MEMBERS = 200
CARD_DATES = (dt.date(1900, 1, 1), dt.date(9999, 12, 31))
"""The validity dates a card holds (BCD YYYYMMDD in EF 0015 and the member template)."""


def _years_later(start: dt.date, years: int) -> dt.date:
    if start.year + years > CARD_DATES[1].year:
        return CARD_DATES[1]
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February
        return start.replace(year=start.year + years, day=28)


def _card_date(value: dt.datetime | None, option: str) -> dt.date | None:
    """The date of a validity option, refused before anything is written when a card
    cannot hold it."""
    if value is None:
        return None
    if not CARD_DATES[0] <= value.date() <= CARD_DATES[1]:
        raise click.BadParameter(f"{value.date()} is not a date a card holds (from "
                                 f"{CARD_DATES[0]} to {CARD_DATES[1]})", param_hint=option)
    return value.date()


def _warn_test_keys() -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]{TEST_KEYS_WARNING}[/]", highlight=False)


@click.group(name="card")
def group() -> None:
    """Issue simulated union member cards and PSAMs, and show their state."""


@group.command("issue")
@click.option("--members", "members_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Member sheet CSV: name,member_no,organization,category,id_number "
                   "(or 姓名,会员编号,工会组织,类别,身份证号), UTF-8 or GBK.")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the card images and the PSAM image (created if needed).")
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Keystore with the master keys (docs/keystore.md). Default: the "
                   "published test keys.")
@click.option("--valid-from", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First day of validity (YYYY-MM-DD). Default: today.")
@click.option("--valid-until", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Last day of validity (YYYY-MM-DD). Default: five years after --valid-from.")
@click.option("--transit-balance", type=Digits(0, 100_000), default=0, show_default=True,
              help="Initial transit purse balance, in fen.")
@click.option("--etc-balance", type=Digits(0, 100_000), default=0, show_default=True,
              help="Initial ETC purse balance, in fen.")
@click.option("--first-card-no", type=Digits(1, 10**12 - 1), default=1,
              show_default=True,
              help="Lowest card number for members new to --out; each gets the next "
                   "number never given there, in sheet order (members issued there before "
                   "keep theirs: --out/issued.json).")
@click.option("--terminal-id", default=DEFAULT_TERMINAL_ID.hex().upper(), show_default=True,
              callback=parse_terminal_id, help="Terminal id (12 hex digits) of the PSAM written.")
@click.option("--protocol", type=click.Choice(["T=1", "T=0"]), default="T=1", show_default=True,
              help="Transmission protocol the cards behave as.")
@click.option("--force", is_flag=True,
              help="Replace existing images (their balances, logs and counters are lost).")
@JSON_OPTION
def issue(members_file: Path, out_dir: Path, keys_file: Path | None,
          valid_from: dt.datetime | None, valid_until: dt.datetime | None,
          transit_balance: int, etc_balance: int, first_card_no: int, terminal_id: bytes,
          protocol: str, force: bool, as_json: bool) -> None:
    """Issue one card image per member of the sheet, and a PSAM image.

    Each card carries the T-Union transit purse (card type 55, the member's
    categories), the ETC application (DF 1001) and the member identity
    application.  When the keystore holds the debit keys ([emv] and [rsa], as
    the test keystore does) it carries the PBOC debit application too (PAN
    623012 + card number + Luhn digit, electronic cash balance 0, offline PIN
    123456), listed in the contact PSE and contactless PPSE for EMV terminals
    (docs/pboc.md); without them, cards are issued without it.  Images are named
    <member_no>-card.json and psam-<terminal id>.json; issued.json records which
    card number each member holds, for ever.  An image in use (sim serve) is
    never replaced.  Rows that cannot be issued are reported with their line
    number and reason, and the others are issued: the exit status is 0 when
    every row was issued, 1 when any was refused.
    """
    start = _card_date(valid_from, "--valid-from") or dt.date.today()
    end = _card_date(valid_until, "--valid-until") or _years_later(start, 5)
    keys = Keystore.load(keys_file) if keys_file else Keystore.test()
    if keys.test_keys:
        _warn_test_keys()
    try:
        options = IssueOptions(start, end, transit_balance, etc_balance, first_card_no,
                               terminal_id, protocol, force)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        sheet = read_sheet(read_file(members_file, limit=SHEET_LIMIT, what="member sheet"),
                           today=dt.date.today())
    except InputFileError as exc:
        raise click.ClickException(str(exc)) from None
    except SheetError as exc:
        raise click.ClickException(f"{members_file}: {exc}") from None
    with ExitStack() as stack:
        show = sys.stderr.isatty() and len(sheet.members) >= PROGRESS_MIN_MEMBERS
        advance = progress_bar(stack, len(sheet.members), "issuing cards") if show else None
        report = issue_sheet(sheet, keys, out_dir, options, advance)
    if as_json:
        click.echo(json.dumps({
            "out": str(out_dir), "test_keys": keys.test_keys, "sheet_encoding": sheet.encoding,
            "psam": {"path": str(report.psam_path), "kept": report.psam_kept},
            "registry": str(report.registry_path),
            "issued": [{"member_no": c.member_no, "card_no": c.card_no, "path": str(c.path)}
                       for c in report.issued],
            "refused": [{"line": e.line, "member_no": e.member_no, "reason": e.reason}
                        for e in report.refused],
        }, ensure_ascii=False))
    else:
        psam_state = "kept" if report.psam_kept else "written"
        click.echo(f"PSAM {terminal_id.hex().upper()}: {report.psam_path} ({psam_state})")
        click.echo(f"issued {len(report.issued)} card(s) into {out_dir}"
                   f" (sheet read as {sheet.encoding})")
        for error in report.refused:
            click.echo(printable(f"{members_file}: refused {error}"), err=True)
    if report.refused:
        sys.exit(1)


def _show_lines(doc: dict[str, Any]) -> list[str]:
    lines = [f"{doc['kind']}: {doc['label']}", f"  protocol {doc['protocol']}, ATR {doc['atr']}"]
    if doc["interrupted_transaction"]:
        lines.append(f"  interrupted transaction in NVM: {doc['interrupted_transaction']}")
    if "psam" in doc:
        p = doc["psam"]
        lines.append(f"  terminal id {p['terminal_id']}, terminal seq {p['terminal_seq']}, "
                     f"key versions {', '.join(p['key_versions'])}")
        return lines
    member = doc.get("member")
    if member:
        cats = ", ".join(member["categories"]) or "none"
        lines.append(f"  member {member['member_no']} {member['name']} ({member['organization']})"
                     f", {member['status']}, categories: {cats}, valid "
                     f"{member['valid_from']} to {member['valid_until']}")
    for purse in doc["purses"]:
        where = purse["aid"] or purse["path"]
        lines.append(f"  {purse['application']} purse ({where}, key version "
                     f"{purse['key_version']}): {purse['state']}, balance "
                     f"{purse['balance'] / 100:.2f} yuan ({purse['balance']} fen)")
        lines.append(f"    online seq {purse['online_seq']}, offline seq {purse['offline_seq']}, "
                     f"MAC errors {purse['mac_errors']}")
        if "card_type" in purse:
            lines.append(f"    app serial {purse['app_serial']}, card type {purse['card_type']} "
                         f"({purse['card_type_name']})")
        if "card_no" in purse:
            lines.append(f"    card no {purse['card_no']}, user type {purse['user_type']} "
                         f"({purse['user_type_name']}), plate {purse['plate'] or '-'}")
        for entry in purse["log"]:
            lines.append(f"    log: seq {entry['seq']} {entry['type']} {entry['amount']} fen "
                         f"terminal {entry['terminal_id']} {entry['date']} {entry['time']}")
        for rec in purse.get("capp_records", []):
            if "raw" in rec:
                lines.append(f"    CAPP record {rec['record']}: {rec['raw']}")
            else:
                lines.append(f"    CAPP record {rec['record']}: status {rec['status']:02X}, "
                             f"station {rec['station']}, lane {rec['lane']}, "
                             f"vehicle class {rec['vehicle_class']}, time {rec['unix_time']}")
    return lines


@group.command("show")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--unmask", is_flag=True, help="Show identity numbers in full.")
@JSON_OPTION
def show(image: Path, unmask: bool, as_json: bool) -> None:
    """Show the state of a card or PSAM image: member, balances, counters, logs.

    The image is only read.  A transaction interrupted by a power cut is
    reported, and the state is shown as the card's next power-up leaves it.
    """
    card = SimulatedCard.load(image)  # a malformed image: one line naming it (cli.main)
    try:
        doc = card_summary(card, unmask=unmask)
    except DecodeError as exc:
        raise DecodeError(f"{image}: a file of the card cannot be read: {exc.message}",
                          exc.offset, exc.partial) from None
    if as_json:
        click.echo(json.dumps({"image": str(image), **doc}, ensure_ascii=False))
    else:
        for line in _show_lines(doc):
            click.echo(printable(line))  # names and labels come from the image



def _read_lines(outcome: Any) -> list[str]:
    from unioncard.commands.common import yuan

    details = outcome.details
    if outcome.decision.value != "approved":
        return [f"{outcome.decision.value}: {outcome.reason}"]
    lines = []
    member = details.get("member")
    if member:
        lines.append(f"member {member['member_no']} {member['name']} ({member['organization']}),"
                     f" {member['status']}, valid {member['valid_from']} to "
                     f"{member['valid_until']}")
    for purse in details["purses"]:
        if not purse["present"]:
            lines.append(f"{purse['application']}: absent ({purse['reason']})")
            continue
        lines.append(f"{purse['application']} purse: balance {yuan(purse['balance'])}, card "
                     f"{purse['serial']}, card type {purse['card_type']}, valid "
                     f"{purse['valid_from']} to {purse['valid_until']}")
        if purse.get("holder"):
            lines.append(f"  holder {purse['holder']['name']} {purse['holder']['id_number']}")
        for entry in purse["log"]:
            lines.append(f"  log: seq {entry['seq']} {entry['type']} {yuan(entry['amount'])} "
                         f"terminal {entry['terminal_id']} {entry['date']} {entry['time']}")
        for ride in purse.get("transit_records", []):
            lines.append(f"  ride: {ride.get('type', '?')} {yuan(ride.get('amount'))} at "
                         f"{ride.get('line_station', '?')} {ride.get('when', '')}")
        toll = purse.get("toll_record")
        if toll and toll["status"]:
            lines.append(f"  toll record: status {toll['status']:02X}, network "
                         f"{toll['network']} station {toll['station']} lane {toll['lane']}")
    from unioncard.commands.card_emv import payment_lines

    return lines + payment_lines(details.get("payment_applications", []))


@group.command("read")
@card_options
@click.option("--unmask", is_flag=True, help="Show identity numbers and PANs in full.")
@JSON_OPTION
@decision_command
def read(card_image: Path | None, reader: str | None, wait: float, unmask: bool,
         as_json: bool) -> None:
    """Read a card as a terminal does (balance inquiry): purses, member, logs, rides, and
    its payment applications (PAN, dates, counters, electronic cash, log).

    The card comes from --card IMAGE (in process) or --reader NAME (PC/SC);
    nothing on the card changes.  Absent optional parts (EF 0016, EF 001E, the
    ETC or member application) are shown as absent.  PANs and identity numbers
    are masked unless --unmask.
    """
    from unioncard.terminal import CardRead, run

    check_link_options(card_image, reader, "card")
    with ExitStack() as stack:
        card = open_link(stack, card_image, reader, what="card", wait=wait)
        assert card is not None
        outcome = run(CardRead(unmask=unmask, payment_applications=True), card=card)
    finish(outcome.to_dict(), [printable(line) for line in _read_lines(outcome)],
           as_json=as_json, status=outcome.decision.exit_status)
