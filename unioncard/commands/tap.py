"""``unioncard tap``: one transaction at a bus validator, a metro gate or a toll lane.

Runs one session of the terminal engine (docs/terminal.md) with the card and
the PSAM from images or readers, journals it, and reports the decision:
exit status 0 approved, 1 declined, 2 error or interrupted; with ``--json``
stdout is exactly one JSON document whatever happens.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from unioncard.commands.common import JSON_OPTION, Digits, finish, parse_hex_code
from unioncard.commands.tap_emv import EMV_MODE, check_emv_options, emv_options, tap_emv
from unioncard.commands.terminal_io import (
    card_options,
    check_link_options,
    decision_command,
    hotlist_options,
    in_memory_journal,
    journal_option,
    open_journal,
    open_link,
    open_replay,
    outcome_lines,
    psam_options,
    record_trace,
    replay_links,
    replay_time,
    when_option,
)

if TYPE_CHECKING:
    from unioncard.transport import Channel

__all__ = ["group"]

MODES = ("bus", "metro", "coach", "ferry", "taxi", "etc-entry", "etc-exit", "pos", EMV_MODE)


def _only_for(mode: str, **given: Any) -> None:
    """Options that mean nothing for ``mode`` are usage errors, not silently ignored."""
    allowed = {"etc-entry": {"station", "network", "lane", "vehicle_class"},
               "etc-exit": {"station", "network", "lane", "vehicle_class", "amount",
                            "toll_table"},
               "pos": {"amount", "merchant", "mcc"}}.get(mode, {"amount", "route", "station"})
    wrong = [name for name, value in given.items() if value is not None and name not in allowed]
    if wrong:
        names = ", ".join("--" + name.replace("_", "-") for name in wrong)
        raise click.UsageError(f"{names} {'has' if len(wrong) == 1 else 'have'} no meaning "
                               f"for --mode {mode}")


@click.command(name="tap")
@click.option("--mode", type=click.Choice(MODES), required=True,
              help="The flow: a fare (bus, metro, coach, ferry, taxi) on the transit purse, "
                   "an ETC entry or exit, a sale at a partner merchant (pos), or a sale on "
                   "the card's PBOC debit application (pos-emv; docs/emv-kernel.md).")
@card_options
@psam_options
@click.option("--amount", type=Digits(0, 10_000_000), metavar="FEN",
              help="The list fare or the sale's amount in fen (required for fares and "
                   "sales); at an ETC exit it overrides the toll table.")
@click.option("--route", help="Bus route or metro line, for the record and route rules.")
@click.option("--station", callback=parse_hex_code, metavar="HEX",
              help="Station code, 4 hex digits (metro station; ETC entry or exit plaza).")
@click.option("--network", callback=parse_hex_code, metavar="HEX",
              help="ETC road network, 4 hex digits. Default: the toll table's, else 1101.")
@click.option("--lane", type=Digits(0, 255),
              help="ETC lane number.  [default: 1]")
@click.option("--vehicle-class", type=Digits(1, 255),
              help="Vehicle class (ETC; the entry lane writes it, the exit reads it).")
@click.option("--merchant", metavar="ID",
              help="The merchant's id (pos; required): 1 to 24 printable ASCII characters, as "
                   "the tariff rules name partner merchants.")
@click.option("--mcc", type=Digits(0, 9999), metavar="N",
              help="The merchant category code (pos), four digits, e.g. 5411.")
@click.option("--toll-table", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML toll table for ETC exits (docs/terminal.md).")
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False),
              help="Tariff rules (TOML). Default: the shipped member benefits.")
@click.option("--hotlist", "hotlist_file", type=click.Path(exists=True, dir_okay=False),
              help="Hotlist CSV (issuer,card,listed_at; docs/hotlist.md): a card listed at or "
                   "before the transaction is declined.")
@click.option("--block-keys", "block_keys", type=click.Path(exists=True, dir_okay=False),
              help="Keystore holding the maintenance master keys (the key host): a hotlisted "
                   "card's purse is also blocked with APPLICATION BLOCK.")
@click.option("--recovery-window", type=Digits(0, 24 * 60), default=10,
              show_default=True, metavar="MINUTES",
              help="A re-tap this soon after an interrupted transaction completes it.")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Record every APDU of the card and the PSAM to this new file (binary UCT1 "
                   "for .uct/.bin names, text otherwise; docs/traces.md).")
@click.option("--replay", "replay_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Play a recorded trace back in place of the card and the PSAM: the "
                   "session's commands must match the recording.  Nothing is journaled; "
                   "--at defaults to the recorded transaction's time.")
@emv_options
@journal_option
@when_option
@JSON_OPTION
@decision_command
def group(mode: str, card_image: Path | None, reader: str | None, wait: float,
          psam_image: Path | None, psam_reader: str | None, amount: int | None,
          route: str | None, station: int | None, network: int | None, lane: int,
          vehicle_class: int | None, merchant: str | None, mcc: int | None,
          toll_table: Path | None, rules_file: str | None, hotlist_file: str | None,
          block_keys: str | None, recovery_window: int, trace_file: Path | None,
          replay_file: Path | None, journal_path: Path | None, at: dt.datetime | None,
          as_json: bool, **emv: Any) -> None:
    """Run one transaction: a fare, an ETC entry or exit, or a sale, with the member benefits.

    The card comes from --card IMAGE or --reader NAME, the PSAM from --psam
    IMAGE or --psam-reader NAME (or both from a recording, --replay FILE).
    Every transaction is journaled: if the card is pulled after the debit was
    sent, tap exits 2 (interrupted) at once and the card's next tap on the same
    journal settles it (charged once, never twice).  Exit status: 0 approved,
    1 declined, 2 error or interrupted.  --mode pos-emv runs the EMV kernel on
    the card's PBOC debit application instead (no PSAM; an approved sale is
    journaled only with --journal, and --terminal-id on a new journal; its
    options say "pos-emv"; docs/emv-kernel.md).
    """
    if mode == EMV_MODE:
        return tap_emv({**locals(), **emv})
    check_emv_options(mode, emv)
    from unioncard.terminal.driver import run
    from unioncard.terminal.purchase import MAC_REFUSAL_MEMORY

    _only_for(mode, amount=amount, route=route, station=station, network=network, lane=lane,
              vehicle_class=vehicle_class, merchant=merchant, mcc=mcc, toll_table=toll_table)
    replay = None
    if replay_file is not None:
        given = [flag for flag, value in (("--card", card_image), ("--reader", reader),
                                          ("--psam", psam_image), ("--psam-reader", psam_reader),
                                          ("--journal", journal_path)) if value is not None]
        if given:
            raise click.UsageError(f"--replay plays the card and the PSAM back and journals "
                                   f"nothing: {', '.join(given)} cannot go with it")
        replay = open_replay(replay_file)
        at = at or replay_time(replay)
    else:
        check_link_options(card_image, reader, "card")
        check_link_options(psam_image, psam_reader, "PSAM")
    options: dict[str, Any] = {"now": at or dt.datetime.now(),
                               "recovery_window": dt.timedelta(minutes=recovery_window)}
    key_host = hotlist_options(options, hotlist_file, block_keys)
    if rules_file is not None:
        from unioncard.tariffs import load as load_rules

        options["rules"] = load_rules(rules_file)
        if not options["rules"].rules:
            raise click.UsageError(f"--rules {rules_file}: the rule file has no rules; a "
                                   "terminal prices with rules (without --rules, the shipped "
                                   "member benefits)")
    make = _flow(mode, options, amount=amount, route=route, station=station, network=network,
                 lane=lane, vehicle_class=vehicle_class, merchant=merchant, mcc=mcc,
                 toll_table=toll_table)
    card: Channel | None
    with ExitStack() as stack:
        if replay is not None:
            journal = stack.enter_context(in_memory_journal())
            card, psam = replay_links(replay)
        else:
            journal = stack.enter_context(open_journal(journal_path))
            card = open_link(stack, card_image, reader, what="card", wait=wait)
            psam = open_link(stack, psam_image, psam_reader, what="PSAM", wait=wait)
        assert card is not None
        if trace_file is not None:
            record_trace(stack, trace_file, card, psam)
        session = make(pending=journal.pending(),
                       mac_refusals=journal.mac_refusals(options["now"] - MAC_REFUSAL_MEMORY))
        outcome = run(session, card=card, psam=psam, journal=journal, key_host=key_host)
        if replay is not None:
            replay.finish()
            outcome = outcome.with_changes(details={**outcome.details,
                                                    "replayed": str(replay_file)})
    finish(outcome.to_dict(), outcome_lines(outcome), as_json=as_json,
           status=outcome.decision.exit_status)


def _flow(mode: str, options: dict[str, Any], *, amount: int | None, route: str | None,
          station: int | None, network: int | None, lane: int | None,
          vehicle_class: int | None, merchant: str | None, mcc: int | None,
          toll_table: Path | None) -> Callable[..., Any]:
    """The session class of ``mode`` with its options: called with the journal's inputs."""
    if mode.startswith("etc-"):
        from unioncard.terminal.etc import EtcEntry, EtcExit
        from unioncard.terminal.tolls import load_toll_table

        if station is None:
            raise click.UsageError("an ETC lane needs --station HEX")
        tolls = load_toll_table(toll_table) if toll_table else None
        options.update(station=station, lane=1 if lane is None else lane,
                       network=network if network is not None
                       else (tolls.network if tolls else 0x1101))
        if mode == "etc-entry":
            return functools.partial(EtcEntry, vehicle_class=vehicle_class or 1, **options)
        if tolls is None and amount is None:
            raise click.UsageError("an ETC exit needs --toll-table FILE or --amount FEN")
        return functools.partial(EtcExit, tolls=tolls, amount=amount,
                                 vehicle_class=vehicle_class, **options)
    if mode == "pos":
        from unioncard.terminal.pos import PosPurchase

        if amount is None or merchant is None:
            raise click.UsageError("a sale needs --amount FEN and --merchant ID")
        return functools.partial(PosPurchase, amount, merchant=merchant, mcc=mcc, **options)
    if amount is None:
        raise click.UsageError(f"a {mode} fare needs --amount FEN (the list fare)")
    from unioncard.tariffs import Mode
    from unioncard.terminal.purchase import TransitPurchase

    return functools.partial(TransitPurchase, Mode.parse(mode), amount, route=route,
                             station=station or 0, **options)
