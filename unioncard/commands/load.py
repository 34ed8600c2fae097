"""``unioncard load``: load money onto a card's transit or ETC purse (圈存).

The load host checking the card's MAC1 and giving MAC2 is the keystore's
(``--keys``; the published test keys by default, said loudly).  The load is
journaled like a fare, so an interrupted load is settled when the card is
presented again, and loaded once.
"""

from __future__ import annotations

import datetime as dt
from contextlib import ExitStack
from pathlib import Path

import click

from unioncard.commands.common import JSON_OPTION, finish, parse_terminal_id
from unioncard.commands.terminal_io import (
    card_options,
    check_link_options,
    decision_command,
    journal_option,
    open_journal,
    open_link,
    outcome_lines,
    when_option,
)

__all__ = ["group"]

@click.command(name="load")
@card_options
@click.option("--amount", type=click.IntRange(1, 100_000), required=True, metavar="FEN",
              help="How much to load, in fen.")
@click.option("--purse", type=click.Choice(["transit", "etc"]), default="transit",
              show_default=True, help="Which purse to load.")
@click.option("--terminal-id", envvar="UNIONCARD_TERMINAL_ID", show_envvar=True,
              callback=parse_terminal_id,
              help="This load point's terminal id (12 hex digits). Needed for the first load "
                   "on a journal, which remembers it.")
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False),
              help="Keystore holding the load master keys (the load host). Default: the "
                   "published test keys.")
@click.option("--recovery-window", type=click.IntRange(0, 24 * 60), default=10,
              show_default=True, metavar="MINUTES",
              help="A repeated load this soon after an interrupted one settles it instead.")
@journal_option
@when_option
@JSON_OPTION
@decision_command
def group(card_image: Path | None, reader: str | None, wait: float, amount: int, purse: str,
          terminal_id: bytes | None, keys_file: str | None, recovery_window: int,
          journal_path: Path | None, at: dt.datetime | None, as_json: bool) -> None:
    """Load FEN onto the card's transit (default) or ETC purse.

    The card's MAC1 is checked and MAC2 computed by the load host (the
    keystore); the TAC the card returns goes to settlement with the offline
    record.  Exit status: 0 loaded, 1 declined, 2 error or interrupted.
    """
    from unioncard.crypto import Keystore
    from unioncard.offline import Application
    from unioncard.terminal import KeystoreLoadHost, Load, run

    check_link_options(card_image, reader, "card")
    keys = Keystore.load(keys_file) if keys_file else Keystore.test()
    if keys.test_keys:
        click.echo("WARNING: the load host uses the PUBLISHED TEST KEYS; for testing only.",
                   err=True)
    with ExitStack() as stack:
        journal = stack.enter_context(open_journal(journal_path))
        load_terminal = journal.load_terminal_id(terminal_id)
        card = open_link(stack, card_image, reader, what="card", wait=wait)
        assert card is not None
        session = Load(Application[purse.upper()], amount, terminal_id=load_terminal,
                       now=at or dt.datetime.now(), pending=journal.pending(),
                       recovery_window=dt.timedelta(minutes=recovery_window))
        outcome = run(session, card=card, journal=journal, host=KeystoreLoadHost(keys))
    finish(outcome.to_dict(), outcome_lines(outcome), as_json=as_json,
           status=outcome.decision.exit_status)
