"""``unioncard settle`` and ``unioncard ledger``: settle batch files, ask the ledger.

``settle`` verifies, classifies and clears offline record batches into a ledger and
writes the clearing report (docs/settlement.md); ``ledger`` answers what was settled
for a member, a terminal or a day.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from unioncard.commands.common import JSON_OPTION, finish, progress_bar, yuan

__all__ = ["ledger_command", "settle_command"]

REASON_WORDS = {
    "unknown_issuer": "unknown issuer (no key)", "bad_tac": "bad TAC (forged or damaged)",
    "unproven": "recovered without TAC, not proven", "duplicate": "duplicate in this run",
    "replay": "replay of a settled record", "hotlisted": "card hotlisted before",
    "expired": "card expired", "unknown_rules": "unknown tariff rule set",
    "amount_mismatch": "charged amount not what the rules give",
}


def _batch_files(given: Sequence[Path]) -> list[Path]:
    """The files named, and the ``*.ucb`` files of the directories named."""
    files: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted(path.glob("*.ucb"))
            if not found:
                raise click.UsageError(f"{path}: no batch files (*.ucb) in this directory")
            files += found
        else:
            files.append(path)
    if len({p.resolve() for p in files}) != len(files):
        raise click.UsageError("a batch file is named twice")
    return files


@click.command(name="settle")
@click.argument("batches", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False),
              help="Keystore with the TAC master keys (docs/keystore.md), by issuer and key "
                   "version. Default: the published test keys (said on stderr).")
@click.option("--tariffs", "tariff_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="A tariff rule file records may be priced by (repeatable); the shipped "
                   "rules are always known.")
@click.option("--hotlist", type=click.Path(exists=True, dir_okay=False),
              help="Hotlist CSV (docs/hotlist.md): records of cards listed before them are "
                   "rejected.")
@click.option("--operators", type=click.Path(exists=True, dir_okay=False),
              help="CSV terminal_prefix,operator naming the operators of the terminals. "
                   "Default: each terminal id is its own operator.")
@click.option("--ledger", "ledger_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The settlement ledger (SQLite; created when missing).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for clearing.csv, clearing.json and rejects.csv.")
@click.option("--engine", type=click.Choice(["fast", "reference", "dask"]), default="fast",
              show_default=True,
              help="fast: numpy and numba; reference: one record at a time (slow, obviously "
                   "right); dask: the fast path on a Dask cluster (--scheduler).")
@click.option("--scheduler", metavar="ADDRESS",
              help="With --engine dask: the scheduler's address (tcp://host:8786), or "
                   "local:N for a cluster of N worker processes on this machine.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads of this process (fast and reference engines): with N > 1, N - 1 "
                   "threads check and verify the files ahead while one settles them in "
                   "order. The ledger and report do not depend on it.")
@JSON_OPTION
def settle_command(batches: tuple[Path, ...], keys_file: str | None,
                   tariff_files: tuple[str, ...], hotlist: str | None, operators: str | None,
                   ledger_path: Path, out_dir: Path, engine: str, scheduler: str | None,
                   jobs: int, as_json: bool) -> None:
    """Settle the batch files BATCHES (files, or directories of *.ucb files).

    Every record's TAC is verified with the keys of its issuer; duplicates, replays,
    hotlisted and expired cards, unknown issuers and rule sets and charged amounts
    the rules do not give are rejected with the reason; the rest is cleared (member
    discounts owed to the operators, rebates owed to the members) into the ledger,
    each batch whole in one durable commit: settling a batch again changes nothing.
    Exit status: 0 settled, 1 a batch file was refused whole, 2 error.
    """
    from unioncard.crypto import Keystore
    from unioncard.errors import UnionCardError
    from unioncard.settlement import RunInputs, read_operators, settle
    from unioncard.tariffs import load as load_rules

    if (engine == "dask") != (scheduler is not None):
        raise click.UsageError("--scheduler goes with --engine dask, and it needs one")
    if engine == "dask" and jobs != 1:
        raise click.UsageError("--jobs is for the fast and reference engines (Dask has its "
                               "workers)")
    files = _batch_files(batches)
    try:
        keys = Keystore.load(keys_file) if keys_file else Keystore.test()
        if keys.test_keys:
            click.echo("WARNING: settling with the PUBLISHED TEST KEYS; for testing only.",
                       err=True)
        inputs = RunInputs(keys, tuple(load_rules(f) for f in tariff_files), hotlist,
                           read_operators(operators) if operators else {})
        if hotlist is not None:
            assert inputs.hotlist is not None  # opened (and checked) before any batch
        with ExitStack() as stack:
            client = _client(stack, scheduler) if scheduler else None
            advance = (progress_bar(stack, len(files), "settling batch files", unit="items")
                       if not as_json else None)
            report = settle(files, ledger_path=ledger_path, inputs=inputs, out=out_dir,
                            engine=engine, client=client, progress=advance, jobs=jobs)
    except (UnionCardError, OSError) as exc:
        message = str(exc)
        finish({"error": message, "exit_status": 2}, [f"error: {message}"],
               as_json=as_json, status=2, to_stderr=True)
        return
    summary = report.summary()
    refused = [b for b in report.document["batches"] if b["state"] == "refused"]
    lines = _summary_lines(summary, refused, out_dir)
    lines[-1:-1] = _table(report.document["by"])
    finish({**summary, "out": str(out_dir), "refused_files": refused}, lines,
           as_json=as_json, status=1 if refused else 0)


def _client(stack: ExitStack, scheduler: str) -> Any:
    """A Dask client: to the scheduler at ``scheduler``, or to a local cluster of N worker
    processes for ``local:N``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency of the project
        raise click.UsageError("--engine dask needs the distributed package") from None
    if scheduler.startswith("local"):
        _, _, count = scheduler.partition(":")
        if count and not count.isdigit():
            raise click.UsageError("--scheduler local:N takes a number of workers")
        cluster = stack.enter_context(LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=int(count or 2), threads_per_worker=1, processes=True,
            dashboard_address=None))
        return stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
    return stack.enter_context(Client(scheduler, timeout=30))  # type: ignore[no-untyped-call]


def _table(by: dict[str, dict[str, dict[str, int]]], *, top: int = 10) -> list[str]:
    """The sales by mode and by operator (the largest ``top``), as aligned columns."""
    lines = []
    for dimension in ("mode", "operator"):
        rows = sorted(by[dimension].items(), key=lambda kv: -kv[1]["charged_amount"])
        lines.append(f"{dimension:<16} {'sales':>9} {'list':>15} {'charged':>15} "
                     f"{'discount':>13} {'rebate':>13}")
        for name, t in rows[:top]:
            lines.append(f"{name[:16]:<16} {t['count']:>9} {yuan(t['list_amount']):>15} "
                         f"{yuan(t['charged_amount']):>15} {yuan(t['discount']):>13} "
                         f"{yuan(t['rebate']):>13}")
        if len(rows) > top:
            lines.append(f"  ... and {len(rows) - top} more (clearing.csv)")
    return lines


def _summary_lines(summary: dict[str, Any], refused: list[dict[str, Any]],
                   out_dir: Path) -> list[str]:
    totals = summary["totals"]
    sales, loads = totals["sales"], totals["loads"]
    states = ", ".join(f"{count} {state.replace('_', ' ')}"
                       for state, count in summary["batches"].items())
    lines = [f"batch files: {states}",
             f"accepted {summary['accepted']} records, rejected "
             f"{sum(summary['rejected'].values())}"]
    for reason, count in summary["rejected"].items():
        lines.append(f"  {count:>8}  {REASON_WORDS.get(reason, reason)}")
    lines += [
        f"sales  {sales['count']:>10} list {yuan(sales['list_amount']):>16}  charged "
        f"{yuan(sales['charged_amount']):>16}",
        f"       {'':>10} discount owed to operators {yuan(sales['discount']):>16}",
        f"       {'':>10} rebates owed to members    {yuan(sales['rebate']):>16}",
        f"loads  {loads['count']:>10} amount {yuan(loads['amount']):>16}",
    ]
    lines += [f"refused {b['file']}: {b['reason']}" for b in refused]
    lines.append(f"report: {out_dir}/clearing.csv, clearing.json, rejects.csv")
    return lines


@click.command(name="ledger")
@click.option("--ledger", "ledger_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The settlement ledger.")
@click.option("--member", metavar="ISSUER/CARD",
              help="A member's card: issuer id and diversifier in hex (as rejects.csv and "
                   "card read show them).")
@click.option("--terminal", metavar="HEX", help="A terminal id (12 hex digits).")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), help="A day (YYYY-MM-DD).")
@JSON_OPTION
def ledger_command(ledger_path: Path, member: str | None, terminal: str | None,
                   day: dt.datetime | None, as_json: bool) -> None:
    """What was settled for a member, a terminal or a day (any combination; none: all)."""
    from unioncard.settlement.ledger import Ledger

    who = _member(member) if member else None
    tid = _terminal(terminal) if terminal else None
    with Ledger(ledger_path) as ledger:
        found = ledger.settled_for(member=who, terminal=tid,
                                   day=day.date() if day else None)
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    click.echo(f"sales {found['sales']} (list {yuan(found['list_amount'])}, charged "
               f"{yuan(found['charged_amount'])}, discount {yuan(found['discount'])}, rebate "
               f"{yuan(found['rebate'])}); loaded {yuan(found['loaded_amount'])}; in "
               f"{found['batches']} batch(es)")
    for reason, count in found["rejected"].items():
        click.echo(f"  rejected {count}: {REASON_WORDS.get(reason, reason)}")


def _member(text: str) -> tuple[int, int]:
    issuer, _, card = text.partition("/")
    try:
        if len(issuer) != 16 or len(card) != 16:
            raise ValueError
        return int(issuer, 16), int(card, 16)
    except ValueError:
        raise click.BadParameter("ISSUER/CARD: 16 hex digits each, e.g. "
                                 "10000000FFFFFFFF/5500000000000001",
                                 param_hint="--member") from None


def _terminal(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise click.BadParameter("12 hex digits", param_hint="--terminal")
    return raw
