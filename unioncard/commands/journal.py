"""``unioncard journal`` and ``unioncard batch export``: the terminal's journal and its batches.

``journal`` lists journaled transactions (pending ones first in mind: a
pending transaction is one whose card has not been presented again since it
was interrupted).  ``batch export`` writes the completed records that were not
exported yet into batch files (docs/records.md); running it twice never
exports a record twice.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from unioncard.commands.common import JSON_OPTION, Digits, yuan
from unioncard.commands.terminal_io import journal_option, open_journal

__all__ = ["batch_group", "journal_command"]


def _journal(path: Path | None) -> Any:
    """An existing journal: showing or exporting never creates one, nor any table in a
    file that is not one."""
    from unioncard.terminal.journal import JournalError

    try:
        return open_journal(path, create=False)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None


def _member(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a member number, ASCII digits (as the member sheet has them)."""
    if value is not None and not (value.isascii() and value.isdigit() and len(value) <= 32):
        raise click.BadParameter("a member number is 1 to 32 digits 0-9")
    return value


@click.command(name="journal")
@journal_option
@click.option("--state", type=click.Choice(["pending", "completed", "voided"]),
              help="Only transactions in this state.")
@click.option("--limit", type=Digits(1, 10**9), default=50, show_default=True,
              help="At most this many transactions (or disbursements), newest first.")
@click.option("--disbursements", is_flag=True,
              help="Show the union disbursements of a service point instead: totals per "
                   "state and those not loaded yet.")
@click.option("--member", metavar="MEMBER_NO", callback=_member,
              help="With --disbursements: this member's disbursements, loaded ones too.")
@JSON_OPTION
def journal_command(journal_path: Path | None, state: str | None, limit: int,
                    disbursements: bool, member: str | None, as_json: bool) -> None:
    """Show the journal: counts per state and the latest transactions."""
    if member is not None and not disbursements:
        raise click.UsageError("--member goes with --disbursements")
    if disbursements:
        if state is not None:
            raise click.UsageError("--state is for transactions, not with --disbursements")
        _show_disbursements(journal_path, member, limit, as_json)
        return
    with _journal(journal_path) as journal:
        counts = journal.counts()
        entries = journal.entries(state=state, limit=limit)
    if as_json:
        click.echo(json.dumps({"journal": str(journal_path or journal.path), "counts": counts,
                               "transactions": [e.to_dict() for e in entries]},
                              ensure_ascii=False))
        return
    click.echo(f"{journal.path}: {counts['pending']} pending, {counts['completed']} completed "
               f"({counts['unexported']} not exported), {counts['voided']} voided")
    for entry in entries:
        shown = entry.to_dict()  # purse records and EMV sales alike
        where = f", batch {entry.batch_id}" if entry.batch_id else ""
        reason = f" ({entry.reason})" if entry.reason else ""
        click.echo(f"  #{entry.id} {entry.started_at.isoformat()} {entry.flow:<9} "
                   f"{entry.state:<9} terminal {shown['terminal_id']} "
                   f"{shown['application']:<7} card {_card(shown)} "
                   f"seq {shown['card_seq']}: {yuan(shown['amount'])}{where}{reason}")


def _card(shown: dict[str, Any]) -> str:
    """The card as a journal line shows it: an EMV sale's masked PAN, a purse's diversifier."""
    card: str = shown["card"]
    return card.split("/")[0] if shown["application"] == "emv" else card.split("/")[-1]


def _show_disbursements(journal_path: Path | None, member: str | None, limit: int,
                        as_json: bool) -> None:
    with _journal(journal_path) as journal:
        counts = journal.disbursement_counts()
        listed = journal.disbursements(member_no=member, unloaded=member is None, limit=limit)
    if as_json:
        click.echo(json.dumps({"journal": str(journal.path), "counts": counts,
                               "disbursements": [d.to_dict() for d in listed]},
                              ensure_ascii=False))
        return
    click.echo(f"{journal.path}: disbursements " + ", ".join(
        f"{c['count']} {state} ({yuan(c['amount'])})" for state, c in counts.items()))
    for payment in listed:
        why = f" ({payment.last_error})" if payment.last_error else ""
        click.echo(f"  #{payment.id} member {payment.member_no} {payment.state.value:<8} "
                   f"{yuan(payment.amount)} {payment.application.name.lower()}: "
                   f"{payment.reason} [{payment.reference}]{why}")


@click.group(name="batch")
def batch_group() -> None:
    """Offline record batches: export them from a terminal's journal."""


@batch_group.command(name="export")
@journal_option
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the batch files (created if needed).")
@JSON_OPTION
def export(journal_path: Path | None, out_dir: Path, as_json: bool) -> None:
    """Export the completed records not exported yet, one batch file per terminal id.

    The records are assigned to their batch in the journal before the file is
    written (atomically), so an interrupted export is finished, identically,
    by the next one, and no record ever lands in two batches.
    """
    with _journal(journal_path) as journal:
        batches = journal.export(out_dir, now=dt.datetime.now())
    if as_json:
        click.echo(json.dumps({"out": str(out_dir), "batches": [
            {"terminal_id": b.terminal_id.hex().upper(), "batch_id": b.batch_id,
             "file": str(b.path), "records": b.count, "rewritten": b.rewritten}
            for b in batches]}))
        return
    if not batches:
        click.echo("nothing to export: every completed record is in a batch already")
    for b in batches:
        again = " (finished an interrupted export)" if b.rewritten else ""
        click.echo(f"{b.path}: {b.count} record(s), terminal {b.terminal_id.hex().upper()}, "
                   f"batch {b.batch_id}{again}")
