"""Pieces every command group shares: ``--json``, the progress bar, printing an outcome."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import click

__all__ = [
    "DECISION_KEYS",
    "JSON_OPTION",
    "error_document",
    "finish",
    "parse_terminal_id",
    "printable",
    "progress_bar",
    "yuan",
]

JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout.")


def parse_terminal_id(ctx: click.Context, param: click.Parameter,
                      value: str | None) -> bytes | None:
    """Click callback: a terminal id given as 12 hex digits, as its 6 bytes (None: not given)."""
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise click.BadParameter("a terminal id is 12 hex digits (6 bytes)")
    return raw


def progress_bar(stack: ExitStack, total: int, description: str, *,
                 unit: str = "items") -> Callable[[int], None]:
    """A transient `rich` progress bar on stderr, closed with ``stack``.

    Returns ``advance(done)``, which sets how much of ``total`` is done.
    ``unit="bytes"`` shows sizes and transfer speed, ``"items"`` counts.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = ((DownloadColumn(), TransferSpeedColumn()) if unit == "bytes"
               else (MofNCompleteColumn(),))
    bar = stack.enter_context(Progress(
        "[progress.description]{task.description}", BarColumn(), *columns,
        TimeRemainingColumn(), console=Console(stderr=True), transient=True))
    task = bar.add_task(description, total=total)
    return lambda done: bar.update(task, completed=done)


def finish(document: dict[str, Any], text: list[str], *, as_json: bool, status: int,
           to_stderr: bool = False) -> None:
    """Print the outcome (one JSON document on stdout, or lines: on stderr when
    ``to_stderr``) and exit with ``status``."""
    import json
    import sys

    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
    else:
        for line in text:
            click.echo(line, err=to_stderr)
    sys.exit(status)


DECISION_KEYS = ("list_amount", "charged_amount", "balance_after", "rules", "tac", "recovered")
"""Keys every decision document of tap, load and card read carries (None when unknown)."""


def error_document(reason: str, decision: str = "error", exit_status: int = 2
                   ) -> dict[str, Any]:
    """The decision document of a command that could not run its transaction: every
    decision key (None, no rules, not recovered), the reason twice over as ``error``
    (what the other commands' error documents carry) and the exit status."""
    return {"decision": decision, "reason": reason,
            **{key: ([] if key == "rules" else False if key == "recovered" else None)
               for key in DECISION_KEYS},
            "error": reason, "exit_status": exit_status}


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control and format characters (ESC, BEL, NUL,
    line breaks, bidirectional overrides) as escapes, everything else as it is.

    >>> print(printable("张三\\x07\\x1b[2J\\u202e"))
    张三\\x07\\x1b[2J\\u202e
    """
    if text.isprintable():
        return text
    import unicodedata

    return "".join(
        c if c.isprintable() or unicodedata.category(c) == "Zs"
        else c.encode("unicode_escape").decode("ascii") for c in text)


def yuan(fen: int | None) -> str:
    """Fen as yuan for people: ``1.80 yuan``."""
    return "-" if fen is None else f"{fen // 100}.{fen % 100:02d} yuan"
