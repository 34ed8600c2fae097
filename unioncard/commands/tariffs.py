"""``unioncard tariffs``: check rule files, quote a fare or a price, show a rule set.

Every command uses the shipped default rule set unless ``--rules FILE`` is given.
The format of rule files and the combination policy are in docs/tariffs.md.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from unioncard.commands.common import JSON_OPTION, printable, time_option
from unioncard.tariffs.conditions import CARD_TYPE_NAMES, CATEGORY_NAMES, STATUS_NAMES, named
from unioncard.tariffs.context import QuoteContext
from unioncard.tariffs.dump import dumps
from unioncard.tariffs.engine import quote
from unioncard.tariffs.lint import lint
from unioncard.tariffs.loader import (
    Problem,
    RuleFileError,
    default_rules,
    load,
    parse,
    read_rule_file,
)
from unioncard.tariffs.model import MemberStatus, Mode, Rule, RuleSet
from unioncard.tariffs.money import MAX_FEN, format_fen

__all__ = ["group"]

MODES = [m.label for m in Mode]


def _rules(path: str | None) -> RuleSet:
    if path is None:
        return default_rules()
    try:
        return load(path)
    except RuleFileError as exc:
        raise click.ClickException(f"{exc} (run 'unioncard tariffs check {path}')") from None


def _named(value: str, names: dict[str, int], what: str, hint: str, lo: int = 0,
           hi: int = 0xFF) -> int:
    """An option's name or number, as rule files write them; one line when refused."""
    try:
        return int(named(value, names, lo, hi, what))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


@click.group()
def group() -> None:
    """Member benefits: check rule files, quote fares and prices, show rule sets.

    Rules are TOML data (see docs/tariffs.md); without --rules every command uses
    the shipped default set: transit 10% off and ETC tolls 5% off for union member
    cards (card type 0x55), a partner-merchant offer and a monthly consumption subsidy.
    """


@group.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Fail on warnings as well as errors.")
@JSON_OPTION
def check(file: Path, strict: bool, as_json: bool) -> None:
    """Validate the rule file FILE.

    Prints every error with its file, line and rule id (unknown fields, float or
    negative rates, duplicate ids, bad dates, unknown modes, ...) and warnings for
    rules that can never apply because an earlier rule always wins (shadowing) and
    for rules without a card type condition.  Exits 1 on errors (and on warnings
    with --strict).
    """
    try:
        text = read_rule_file(file)
    except RuleFileError as exc:
        raise click.ClickException(str(exc)) from None
    ruleset, errors = parse(text, str(file))
    warnings: list[Problem] = lint(ruleset, str(file)) if ruleset is not None else []
    if as_json:
        _echo_json({
            "file": str(file),
            "ok": not errors and not (strict and warnings),
            "rules": len(ruleset) if ruleset is not None else None,
            "version": ruleset.version if ruleset is not None else None,
            "errors": [p.to_dict() for p in errors],
            "warnings": [p.to_dict() for p in warnings],
        })
    else:
        for problem in [*errors, *warnings]:
            click.echo(printable(str(problem)))
        if ruleset is not None:
            click.echo(f"{file}: {len(ruleset)} rules, version {ruleset.short_version}, "
                       f"rounding {ruleset.rounding}, {len(warnings)} warning(s)")
    failure = (f"{file}: {len(errors)} error(s), nothing loaded" if errors
               else f"{file}: {len(warnings)} warning(s) (--strict)" if strict and warnings
               else None)
    if failure is not None and as_json:  # the document above is the one JSON document
        click.echo(f"Error: {failure}", err=True)
        sys.exit(1)
    if failure is not None:
        raise click.ClickException(failure)


@group.command("quote")
@click.option("--mode", required=True, type=click.Choice(MODES), help="Where the fare is charged.")
@click.option("--amount", required=True, type=click.IntRange(0, MAX_FEN),
              help="List amount in fen (200 = 2.00 yuan).")
@click.option("--card-type", required=True,
              help="Card type byte: 0x55 (union member), 0x01 (ordinary), or a name.")
@click.option("--member-category", "categories", multiple=True,
              help="model-worker, hardship, mutual-aid, or a flag value; repeatable.")
@click.option("--member-status", default="active", show_default=True,
              help="active, lost, cancelled, or 1..3.")
@click.option("--organization", help="The member's union organization (member application "
              "DF43), e.g. 上海市总工会.")
@click.option("--merchant", help="Merchant id (POS).")
@click.option("--mcc", "merchant_category", type=click.IntRange(0, 9999),
              help="Merchant category code, e.g. 5411.")
@click.option("--route", help="Route or station code.")
@click.option("--vehicle-class", type=click.IntRange(0, 255), help="Vehicle class (ETC).")
@time_option("Local time of the transaction, e.g. 2026-05-01T08:30 [default: now].")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False),
              help="Rule file [default: the shipped rule set].")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (amounts in integer fen).")
def quote_command(
    mode: str, amount: int, card_type: str, categories: tuple[str, ...], member_status: str,
    organization: str | None, merchant: str | None, merchant_category: int | None,
    route: str | None, vehicle_class: int | None, at: datetime | None, rules_file: str | None,
    as_json: bool,
) -> None:
    """Quote one fare or price as an offline terminal would.

    Capped rules (e.g. "first 3 per month") need the member's history and are
    left to settlement; the reason line says so when one matched.

    \b
    Example: unioncard tariffs quote --mode bus --amount 200 --card-type 0x55
    """
    rules = _rules(rules_file)
    card = _named(card_type, CARD_TYPE_NAMES, "card type", "--card-type")
    mask = 0
    for item in categories:
        mask |= _named(item, CATEGORY_NAMES, "member category", "--member-category")
    status = _named(member_status, STATUS_NAMES, "member status", "--member-status", 1, 3)
    context = QuoteContext(
        mode=Mode.parse(mode), amount=amount, card_type=card,
        at=at if at is not None else datetime.now().replace(microsecond=0),
        member_categories=mask, member_status=MemberStatus(status), merchant_id=merchant or None,
        merchant_category=merchant_category, route=route or None, vehicle_class=vehicle_class,
        organization=organization or None,
    )
    result = quote(context, rules)
    if as_json:
        document = result.to_dict()
        document["at"] = context.at.isoformat()
        document["card_type"] = f"0x{card:02X}"
        _echo_json(document)
        return
    rows = [
        ("mode", mode),
        ("list amount", f"{result.list_amount} fen ({format_fen(result.list_amount)} yuan)"),
        ("charged", f"{result.charged_amount} fen ({format_fen(result.charged_amount)} yuan)"),
        ("discount", f"{result.discount} fen"),
        ("rebate", f"{result.rebate} fen" + (" (paid in settlement)" if result.rebate else "")),
        ("rules", ", ".join(result.rules) or "none"),
        ("reason", result.reason),
        ("rule set", f"{rules.name or rules.source} {rules.short_version} ({rules.rounding})"),
    ]
    for label, value in rows:
        click.echo(printable(f"{label:<12} {value}"))


def _conditions(rule: Rule) -> str:
    parts = [line for condition, value in rule.when.items() for line in condition.toml(value)]
    return ", ".join(parts) or "always"


@group.command()
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False),
              help="Rule file [default: the shipped rule set].")
@click.option("--toml", "as_toml", is_flag=True, help="Print the rule set as normalized TOML.")
@JSON_OPTION
def show(rules_file: str | None, as_toml: bool, as_json: bool) -> None:
    """List the rules of a rule set with their conditions and effects."""
    rules = _rules(rules_file)
    if as_toml:
        click.echo(dumps(rules), nl=False)
        return
    if as_json:
        _echo_json({"name": rules.name, "version": rules.version,
                    "rounding": str(rules.rounding), **rules.canonical()})
        return
    click.echo(printable(f"{rules.name or rules.source}: {len(rules)} rules, version "
                         f"{rules.short_version}, rounding {rules.rounding}"))
    for rule in rules.rules:
        flags = [f for f, on in (("stackable", rule.stackable), ("settled", rule.capped)) if on]
        effect = rule.effect.describe()
        if rule.caps is not None:
            effect += f"; {rule.caps.describe()}"
        click.echo(f"  {rule.id:<24} {rule.mode.label:<6} {effect}"
                   + (f"  [{', '.join(flags)}]" if flags else ""))
        click.echo(f"  {'':<24} {'':<6} when {_conditions(rule)}")

