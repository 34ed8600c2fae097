"""``unioncard load``: money onto a card's purse (圈存), and union disbursements.

Three ways to run it:

- ``load --amount FEN --card IMAGE|--reader NAME``: one load at a load point;
- ``load --from SHEET``: import a union disbursement sheet (mutual-aid payouts,
  hardship and consumption subsidies) into the service point's journal, where each
  payment waits for its member's card;
- ``load --pending --card IMAGE|--reader NAME``: credit the pending disbursements of
  the member whose card it is.

The load host checking the card's MAC1 and giving MAC2 is the keystore's
(``--keys``; the published test keys by default, said loudly).  Every load is
journaled like a fare, so an interrupted load is settled when the card is
presented again, and loaded once; a disbursement is loaded exactly once
(docs/terminal.md, "Union disbursements").
"""

from __future__ import annotations

import datetime as dt
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from unioncard.commands.common import (
    JSON_OPTION,
    Digits,
    error_document,
    finish,
    parse_terminal_id,
    progress_bar,
    yuan,
)
from unioncard.commands.terminal_io import (
    card_options,
    check_link_options,
    decision_command,
    hotlist_options,
    journal_option,
    open_journal,
    open_link,
    outcome_lines,
    when_option,
)

__all__ = ["group"]


@click.command(name="load")
@card_options
@click.option("--amount", type=Digits(1, 100_000), metavar="FEN",
              help="How much to load, in fen (a single load).")
@click.option("--from", "sheet", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="SHEET",
              help="Import a disbursement sheet (CSV, UTF-8 or GBK: member_no,amount,reason"
                   "[,reference][,purse]) into the journal; each payment is loaded when its "
                   "member's card is presented with --pending.")
@click.option("--pending", is_flag=True,
              help="Load the pending disbursements of the member whose card this is.")
@click.option("--purse", type=click.Choice(["transit", "etc"]),
              help="Which purse to load (with --from: for rows without a purse column).  "
                   "[default: transit]")
@click.option("--terminal-id", envvar="UNIONCARD_TERMINAL_ID", show_envvar=True,
              callback=parse_terminal_id,
              help="This load point's terminal id (12 hex digits). Needed for the first load "
                   "on a journal, which remembers it.")
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False),
              help="Keystore holding the load master keys (the load host). Default: the "
                   "published test keys.")
@click.option("--hotlist", "hotlist_file", type=click.Path(exists=True, dir_okay=False),
              help="Hotlist CSV (docs/hotlist.md): nothing is loaded onto a hotlisted card.")
@click.option("--recovery-window", type=Digits(0, 24 * 60), default=10,
              show_default=True, metavar="MINUTES",
              help="A repeated load this soon after an interrupted one settles it instead.")
@journal_option
@when_option
@JSON_OPTION
@decision_command
def group(card_image: Path | None, reader: str | None, wait: float, amount: int | None,
          sheet: Path | None, pending: bool, purse: str | None, terminal_id: bytes | None,
          keys_file: str | None, hotlist_file: str | None, recovery_window: int,
          journal_path: Path | None,
          at: dt.datetime | None, as_json: bool) -> None:
    """Load FEN onto the card's transit (default) or ETC purse, or union disbursements.

    With --amount, the card's MAC1 is checked and MAC2 computed by the load host
    (the keystore); the TAC the card returns goes to settlement with the offline
    record.  With --from, a disbursement sheet is imported (re-importing it adds
    nothing); with --pending, the member's waiting disbursements are loaded onto
    the card, each exactly once.  Exit status: 0 loaded (or imported), 1 declined
    (or rows refused), 2 error or interrupted.
    """
    chosen = [name for name, given in (("--amount", amount is not None),
                                       ("--from", sheet is not None), ("--pending", pending))
              if given]
    if len(chosen) != 1:
        raise click.UsageError("give one of --amount FEN, --from SHEET or --pending"
                               if not chosen else f"{' and '.join(chosen)} do not go together")
    if sheet is not None:
        if card_image is not None or reader is not None or hotlist_file is not None:
            raise click.UsageError("--from imports a sheet into the journal; the cards (and "
                                   "the hotlist) come later, with --pending")
        _import(sheet, purse, journal_path, at, as_json)
        return
    check_link_options(card_image, reader, "card")
    with ExitStack() as stack:
        journal = stack.enter_context(open_journal(journal_path))
        load_terminal = journal.load_terminal_id(terminal_id)
        host = _load_host(keys_file)
        card = open_link(stack, card_image, reader, what="card", wait=wait)
        assert card is not None
        options: dict[str, Any] = {"now": at or dt.datetime.now(),
                                   "recovery_window": dt.timedelta(minutes=recovery_window)}
        hotlist_options(options, hotlist_file, None)
        if pending:
            if purse is not None:
                raise click.UsageError("--purse has no meaning with --pending: each "
                                       "disbursement names its purse")
            from unioncard.terminal.disbursements import credit_pending

            visit = credit_pending(card, journal=journal, host=host,
                                   terminal_id=load_terminal, **options)
            finish(visit.to_dict(), _visit_lines(visit), as_json=as_json,
                   status=visit.decision.exit_status)
        from unioncard.offline import Application
        from unioncard.terminal import Load, run

        assert amount is not None
        session = Load(Application[(purse or "transit").upper()], amount,
                       terminal_id=load_terminal, pending=journal.pending(), **options)
        outcome = run(session, card=card, journal=journal, host=host)
    finish(outcome.to_dict(), outcome_lines(outcome), as_json=as_json,
           status=outcome.decision.exit_status)


def _load_host(keys_file: str | None) -> Any:
    from unioncard.crypto import Keystore
    from unioncard.terminal import KeystoreLoadHost

    keys = Keystore.load(keys_file) if keys_file else Keystore.test()
    if keys.test_keys:
        click.echo("WARNING: the load host uses the PUBLISHED TEST KEYS; for testing only.",
                   err=True)
    return KeystoreLoadHost(keys)


def _import(sheet: Path, purse: str | None, journal_path: Path | None, at: dt.datetime | None,
            as_json: bool) -> None:
    """``load --from SHEET``: every payment of the sheet pending in the journal, once."""
    from unioncard.bounded_read import SHEET_LIMIT, InputFileError, read_file
    from unioncard.offline import Application
    from unioncard.sheet import SheetError
    from unioncard.terminal.disbursements import read_disbursements

    try:
        read = read_disbursements(read_file(sheet, limit=SHEET_LIMIT, what="disbursement sheet"),
                                  default_purse=Application[(purse or "transit").upper()])
    except (SheetError, InputFileError) as exc:
        reason = str(exc) if isinstance(exc, InputFileError) else f"{sheet}: {exc}"
        finish(error_document(reason), [f"error: {reason}"], as_json=as_json, status=2,
               to_stderr=True)
    with ExitStack() as stack:
        journal = stack.enter_context(open_journal(journal_path))
        advance = (progress_bar(stack, len(read.items), "importing disbursements")
                   if not as_json and len(read.items) >= 1000 else None)
        result = journal.import_disbursements(read.items, source=sheet.name,
                                              now=at or dt.datetime.now(), progress=advance)
    refused: list[dict[str, Any]] = [
        {"line": e.line, "member_no": e.key, "reason": e.reason} for e in read.errors]
    refused += [{"line": p.line, "member_no": p.member_no, "reason": why}
                for p, why in result.refused]
    refused.sort(key=lambda r: int(r["line"]))
    states = {"pending": 0, "loading": 0, "loaded": 0}
    for known in result.known:
        states[known.state.value] += 1
    document = {
        "file": str(sheet), "encoding": read.encoding,
        "rows": len(read.items) + len(read.errors),
        "added": len(result.added), "added_amount": sum(p.amount for p in result.added),
        "already_pending": states["pending"], "being_loaded": states["loading"],
        "already_loaded": states["loaded"], "refused": refused,
    }
    lines = [f"{sheet} ({read.encoding}): {document['rows']} row(s)",
             f"  added {len(result.added)} disbursement(s), {yuan(document['added_amount'])}, "
             "pending until the member's card is presented (load --pending)",
             f"  already in the journal: {states['pending']} pending, {states['loading']} "
             f"being loaded, {states['loaded']} loaded"]
    if refused:
        lines.append(f"  refused {len(refused)} row(s):")
        lines += [f"    line {r['line']}" + (f" (member {r['member_no']})" if r["member_no"]
                                            else "") + f": {r['reason']}" for r in refused]
    finish(document, lines, as_json=as_json, status=1 if refused else 0)


def _visit_lines(visit: Any) -> list[str]:
    lines = [f"{visit.decision.value}: {visit.reason}"]
    for payment, outcome in visit.loads:
        lines.append(f"  {payment.reason} ({payment.reference}): {outcome.decision.value}, "
                     f"{yuan(payment.amount)}"
                     + ("" if outcome.decision.value == "approved" else f": {outcome.reason}")
                     + (", recovered" if outcome.recovered else ""))
        if outcome.balance_after is not None and outcome.decision.value == "approved":
            lines.append(f"    balance {yuan(outcome.balance_after)}")
    for payment in visit.waiting:
        why = f": {payment.last_error}" if payment.last_error else ""
        lines.append(f"  still pending: {payment.reason} ({payment.reference}), "
                     f"{yuan(payment.amount)}{why}")
    return lines
