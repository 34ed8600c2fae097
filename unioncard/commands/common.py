"""Pieces every command group shares: ``--json``, the progress bar, printing an outcome."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import click

__all__ = [
    "DECISION_KEYS",
    "JSON_OPTION",
    "TIME_RANGE",
    "Digits",
    "Seconds",
    "error_document",
    "error_text",
    "finish",
    "hex_digits",
    "parse_hex_code",
    "parse_terminal_id",
    "parse_time",
    "printable",
    "progress_bar",
    "time_option",
    "yuan",
]

JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout.")


def hex_digits(value: str, digits: int) -> bytes | None:
    """``value`` as bytes when it is exactly ``digits`` ASCII hex digits (no ``0x``, sign,
    ``_``, space or other script's digits), else None."""
    if len(value) != digits or not all(c in _HEX for c in value):
        return None
    return bytes.fromhex(value)


_HEX = frozenset("0123456789abcdefABCDEF")


def parse_terminal_id(ctx: click.Context, param: click.Parameter,
                      value: str | None) -> bytes | None:
    """Click callback: a terminal id given as 12 hex digits, as its 6 bytes (None: not given)."""
    if value is None:
        return None
    raw = hex_digits(value, 12)
    if raw is None:
        raise click.BadParameter("a terminal id is 12 hex digits (6 bytes)")
    return raw


def parse_hex_code(ctx: click.Context, param: click.Parameter, value: str | None
                   ) -> int | None:
    """Click callback: a 2-byte code (a station, a road network) as exactly 4 ASCII hex
    digits, e.g. 0203."""
    if value is None:
        return None
    raw = hex_digits(value, 4)
    if raw is None:
        raise click.BadParameter("4 hex digits 0-9 A-F, e.g. 0203")
    return int.from_bytes(raw, "big")


class Digits(click.IntRange):
    """An integer option given in ASCII decimal digits only (no sign, ``_``, ``0x``,
    spaces or other scripts' digits), within ``min`` .. ``max``; a value of more digits
    than the bound is refused without converting it."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return super().convert(value, param, ctx)
        text = str(value)
        bound = len(str(self.max)) if self.max is not None else 18
        if not (text.isascii() and text.isdigit()) or len(text) > bound + 1:
            shown = text if len(text) <= 24 else text[:20] + "..."
            self.fail(f"{shown!r} is not a number in digits 0-9 from {self.min} to "
                      f"{self.max if self.max is not None else 'up'}", param, ctx)
        return super().convert(int(text), param, ctx)


class Seconds(click.FloatRange):
    """A duration in seconds, a plain decimal number (``2``, ``0.5``) within ``min`` ..
    ``max``: no ``nan``, ``inf``, exponent, sign or ``_``."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, float | int):
            return super().convert(value, param, ctx)
        text = str(value)
        whole, _, fraction = text.partition(".")
        if not (text.isascii() and whole.isdigit() and (not fraction or fraction.isdigit())
                and len(text) <= 12):
            shown = text if len(text) <= 24 else text[:20] + "..."
            self.fail(f"{shown!r} is not a number of seconds from {self.min:g} to "
                      f"{self.max:g}", param, ctx)
        return super().convert(float(text), param, ctx)


TIME_RANGE = (dt.datetime(1970, 1, 2), dt.datetime(2105, 12, 31, 23, 59, 59))
"""The transaction times every command taking ``--at`` accepts, China time: what every
record holds.  The ETC toll record keeps 32-bit unsigned Unix seconds (1970-01-01 08:00
to 2106-02-07 14:28 China time), the purse logs and offline records BCD YYYYMMDD hhmmss;
whole days inside both (docs/terminal.md, "Transaction time")."""
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?", re.ASCII)
_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:\d{2})?", re.ASCII)
_CST = dt.timezone(dt.timedelta(hours=8), "CST")


def parse_time(value: str, *, offsets: bool = False) -> dt.datetime:
    """A transaction time (``--at``) as naive China time: ``YYYY-MM-DDTHH:MM[:SS]`` (or a
    space for the T), with ``offsets`` a ``Z`` or ``+HH:MM`` after it too (converted to
    China time); `click.BadParameter` in one line outside `TIME_RANGE`."""
    shown = repr(value if len(value) <= 40 else value[:36] + "...")
    match = _TIME.match(value)
    if match is None or not (_OFFSET.fullmatch(value, match.end()) if offsets
                             else match.end() == len(value)):
        raise click.BadParameter(
            f"{shown} is not an ISO 8601 date and time YYYY-MM-DDTHH:MM:SS"
            + (" (an offset such as +08:00 may follow)" if offsets else ""))
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is not None:
            when = when.astimezone(_CST).replace(tzinfo=None)
    except (ValueError, OverflowError):
        when = None
    low, high = TIME_RANGE
    if when is None:
        raise click.BadParameter(f"{shown} is not a date and time (no such day, hour or "
                                 "offset)")
    if not low <= when <= high:
        raise click.BadParameter(
            f"{shown} is not a transaction time: from {low.isoformat(sep=' ')} to "
            f"{high.isoformat(sep=' ')} China time (what the cards' records hold)")
    return when


def time_option(help: str, *, offsets: bool = False
                ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--at TIME``: a transaction time (`parse_time`), the same for every command."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> dt.datetime | None:
        return None if value is None else parse_time(value, offsets=offsets)

    return click.option("--at", "at", metavar="YYYY-MM-DDTHH:MM:SS", callback=callback,
                        help=help)


def error_text(exc: BaseException) -> str:
    """An error as one line for people: an `OSError` as ``PATH: reason`` (never ``[Errno 2]
    No such file or directory: 'x'``), a `DecodeError` without ``(at offset 0)`` (which
    says nothing: the start of the input, or an empty one)."""
    from unioncard.errors import DecodeError

    if isinstance(exc, DecodeError):
        text = exc.message if not exc.offset else str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        from unioncard.bounded_read import reason

        text = reason(exc)
        if exc.filename is not None:
            text = f"{exc.filename}: {text}"
    else:
        text = str(exc)
    return " ".join(text.split("\n")) if "\n" in text else text


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
