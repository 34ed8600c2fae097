"""Pieces every command group shares: the ``--json`` option and the progress bar."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import click

__all__ = ["JSON_OPTION", "progress_bar"]

JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout.")


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
