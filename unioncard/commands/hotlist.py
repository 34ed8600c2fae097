"""``unioncard hotlist``: check a card against the hotlist, apply a delta, replace the list.

The hotlist (挂失) is a CSV file of lost and cancelled cards (docs/hotlist.md).
Every command that reads it builds or refreshes its index, so the next tap
opens it in a fraction of a millisecond.  Errors name the file and the line;
with ``--json`` stdout carries one JSON document whatever the exit status.
"""

from __future__ import annotations

import datetime as dt
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from unioncard.commands.common import (
    JSON_OPTION,
    TIME_RANGE,
    error_text,
    finish,
    hex_digits,
    progress_bar,
    time_option,
)
from unioncard.offline.hotlist import (
    HEADER_SIZE,
    SLOT_SIZE,
    Hotlist,
    HotlistError,
    apply_delta,
    replace_hotlist,
)

__all__ = ["group"]

PROGRESS_MIN_BYTES = 8 << 20
"""Lists at least this large show a progress bar while read (when stderr is a terminal)."""

FILE = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
PROGRESS = click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress bar on stderr while the list is read (default: for lists of 8 MB "
         "or more on a terminal).")


def _hex8(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    """Click callback: 16 hex digits as their 8 bytes."""
    raw = hex_digits(value, 16)
    if raw is None:
        shown = value if len(value) <= 40 else value[:36] + "..."
        raise click.BadParameter(f"{shown!r} is not 16 hex digits (8 bytes)")
    return raw


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.isoformat() + "+08:00"


def _fail(message: str, problems: tuple[str, ...], as_json: bool) -> None:
    """Exit 2 with the error on stderr in one line (the message counts the other bad rows),
    or as the JSON document (the bad rows found in ``problems``)."""
    lines = [f"unioncard: error: {message}"]
    finish({"error": message, "problems": list(problems), "exit_status": 2}, lines,
           as_json=as_json, status=2, to_stderr=True)


@contextmanager
def _reporting(as_json: bool, caught: list[str]) -> Iterator[None]:
    """Turn `HotlistError` into the error exit and collect the hotlist's warnings."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            yield
        except HotlistError as exc:
            _fail(str(exc), exc.problems, as_json)
        except OSError as exc:
            _fail(error_text(exc), (), as_json)
    caught += [str(w.message) for w in seen]
    if not as_json:
        for message in caught:
            click.echo(f"warning: {message}", err=True)


def _progress(stack: ExitStack, path: Path, show: bool | None
              ) -> Callable[[int, int], None] | None:
    """A progress callback drawing a bar once the number of lines is known."""
    if show is None:
        show = sys.stderr.isatty() and path.stat().st_size >= PROGRESS_MIN_BYTES
    if not show:
        return None
    bar: list[Callable[[int], None]] = []

    def advance(done: int, total: int) -> None:
        if not bar:
            bar.append(progress_bar(stack, total, f"reading {path.name}", unit="items"))
        bar[0](done)

    return advance


def _index(hotlist: Hotlist) -> dict[str, Any]:
    slots = hotlist.slots
    return {"state": hotlist.index_state.value, "detail": hotlist.index_detail,
            "path": None if hotlist.index_path is None else str(hotlist.index_path),
            "slots": slots, "load_factor": round(len(hotlist) / slots, 4) if slots else None,
            "bytes": HEADER_SIZE + slots * SLOT_SIZE if slots else None}


def _index_line(hotlist: Hotlist) -> str:
    if hotlist.index_path is None:
        return f"index: none, the list is held in memory ({hotlist.index_detail})"
    size = HEADER_SIZE + hotlist.slots * SLOT_SIZE
    shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size} bytes"
    return (f"index: {hotlist.index_path} ({hotlist.index_state.value}: "
            f"{hotlist.index_detail}; {hotlist.slots} slots, "
            f"{len(hotlist) / hotlist.slots:.0%} full, {shown})")


def _load(file: Path, show: bool | None) -> Hotlist:
    with ExitStack() as stack:
        return Hotlist.load(file, progress=_progress(stack, file, show))


@click.group(name="hotlist")
def group() -> None:
    """The hotlist (挂失): lost and cancelled cards that terminals refuse.

    A hotlist is a CSV file issuer,card,listed_at: the card's 8-byte issuer id
    (EF 0015) and diversifier in hex, and the listing time in ISO 8601 (China
    Standard Time when no offset is given).  A terminal refuses a listed card
    whose listing time is at or before the transaction time.  Lookups go
    through a binary index kept in $XDG_CACHE_HOME/unioncard/hotlist/ and
    rebuilt whenever the file changes (docs/hotlist.md).
    """


@group.command()
@FILE
@click.argument("issuer", callback=_hex8)
@click.argument("card", callback=_hex8)
@time_option("Transaction time (ISO 8601, China time without an offset), from "
             f"{TIME_RANGE[0]:%Y-%m-%d} to {TIME_RANGE[1]:%Y-%m-%d}: is the card refused at "
             "that time, i.e. listed at or before it?", offsets=True)
@JSON_OPTION
def check(file: Path, issuer: bytes, card: bytes, at: dt.datetime | None,
          as_json: bool) -> None:
    """Is the card ISSUER CARD (16 hex digits each) in the hotlist FILE, and since when?

    Exit status: 0 not listed (or, with --at, listed only after TIME), 1 listed
    (a terminal refuses the card), 2 error.
    """
    caught: list[str] = []
    with _reporting(as_json, caught), Hotlist.load(file) as hotlist:
        listed = hotlist.listed_at(issuer, card)
    refused = listed is not None and (at is None or listed <= at)
    who = f"card {issuer.hex().upper()} {card.hex().upper()}"
    if listed is None:
        text = f"{who}: not listed"
    else:
        text = f"{who}: listed since {listed.isoformat(sep=' ')} (China time)"
        if at is not None:
            text += (f"; refused at {at.isoformat(sep=' ')}" if refused
                     else f"; not yet listed at {at.isoformat(sep=' ')}")
    status = 1 if refused else 0
    finish({"file": str(file), "issuer": issuer.hex().upper(), "card": card.hex().upper(),
            "listed": listed is not None, "listed_at": _iso(listed), "at": _iso(at),
            "refused": refused, "warnings": caught, "exit_status": status},
           [text], as_json=as_json, status=status)


@group.command()
@FILE
@click.option("--delta", "delta", required=True, metavar="DELTA.csv",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Delta file: issuer,card,listed_at[,action], action add (the default) "
                   "or remove.")
@PROGRESS
@JSON_OPTION
def update(file: Path, delta: Path, progress: bool | None, as_json: bool) -> None:
    """Apply the delta DELTA.csv to the hotlist FILE, in place and atomically.

    Rows apply in file order: add lists a card (a card already listed keeps the
    earlier listing time), remove delists it.  Applying the same delta twice
    leaves the same list.  FILE is rewritten in canonical form (sorted, times
    with +08:00) and its index rebuilt.  A bad row in either file changes
    nothing.  Exit status: 0 applied, 2 error.
    """
    caught: list[str] = []
    with _reporting(as_json, caught), ExitStack() as stack:
        result = apply_delta(file, delta, progress=_progress(stack, file, progress))
        stack.close()
        hotlist = _load(file, False)
    with hotlist:
        index = _index(hotlist)
        line = _index_line(hotlist)
    finish({"file": str(file), "delta": str(delta), **result.to_dict(), "index": index,
            "warnings": caught, "exit_status": 0},
           [f"{file}: {result.added} added, {result.already_listed} already listed, "
            f"{result.removed} removed, {result.not_listed} not listed; "
            f"{result.entries} cards listed", line], as_json=as_json, status=0)


@group.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--full", "full", required=True, metavar="NEW.csv",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The new full list, issuer,card,listed_at; every row is checked first.")
@PROGRESS
@JSON_OPTION
def replace(file: Path, full: Path, progress: bool | None, as_json: bool) -> None:
    """Replace the hotlist FILE with the full list NEW.csv, once it is valid.

    Every row of NEW.csv is checked first; a bad row leaves FILE as it was.
    FILE (created if missing) is replaced atomically by NEW.csv's bytes and its
    index rebuilt.  FILE must be a hotlist already (or missing, or empty): any
    other file (a card image, a journal, a delta, a file with bad rows) is never
    replaced, and neither is a list another command is writing.  Exit status: 0
    replaced, 2 error.
    """
    caught: list[str] = []
    with _reporting(as_json, caught):
        with ExitStack() as stack:
            entries, _ = replace_hotlist(file, full, progress=_progress(stack, full, progress))
        hotlist = _load(file, False)
    with hotlist:
        index = _index(hotlist)
        line = _index_line(hotlist)
        rows = hotlist.rows
    finish({"file": str(file), "full": str(full), "entries": entries, "rows": rows,
            "duplicates": rows - entries, "index": index, "warnings": caught,
            "exit_status": 0},
           [f"{file}: replaced by {full}: {entries} cards listed", line],
           as_json=as_json, status=0)


@group.command()
@FILE
@PROGRESS
@JSON_OPTION
def info(file: Path, progress: bool | None, as_json: bool) -> None:
    """Show the hotlist FILE: cards listed, oldest and newest listing, its index.

    The index is built or rebuilt first if it is missing, stale or damaged
    (the state says which).  Exit status: 0, or 2 when FILE has bad rows.
    """
    caught: list[str] = []
    with _reporting(as_json, caught):
        hotlist = _load(file, progress)
    with hotlist:
        entries, rows = len(hotlist), hotlist.rows
        oldest, newest = hotlist.oldest, hotlist.newest
        index = _index(hotlist)
        line = _index_line(hotlist)
    span = (f", listed from {oldest.isoformat(sep=' ')} to {newest.isoformat(sep=' ')} "
            "(China time)" if oldest is not None and newest is not None else "")
    duplicates = f" ({rows - entries} listed twice)" if rows > entries else ""
    finish({"file": str(file), "entries": entries, "rows": rows,
            "duplicates": rows - entries, "oldest": _iso(oldest), "newest": _iso(newest),
            "index": index, "warnings": caught, "exit_status": 0},
           [f"{file}: {entries} cards listed{duplicates}{span}", line],
           as_json=as_json, status=0)
