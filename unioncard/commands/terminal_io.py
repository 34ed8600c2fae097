"""What the terminal commands share: card and PSAM links, the journal and time options,
reporting an outcome.

``--card IMAGE`` opens a simulated card image with write-through (every change
the card commits is on disk before its answer is used), locked for the
command's life (`unioncard.file_lock`); ``--reader NAME`` waits for a card in a
PC/SC reader and powers it.  The PSAM is chosen the same way, independently
(``--psam IMAGE`` or ``--psam-reader NAME``).  A reader is named by its PC/SC
name or by its index in ``pcsc_scan``'s order.
"""

from __future__ import annotations

import functools
import signal
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from unioncard.commands.common import (
    TIME_RANGE,
    Seconds,
    error_document,
    error_text,
    finish,
    time_option,
    yuan,
)
from unioncard.errors import TransportError, UnionCardError
from unioncard.transport import Channel, InProcessTransport

__all__ = [
    "card_options",
    "check_link_options",
    "decision_command",
    "hotlist_options",
    "in_memory_journal",
    "journal_option",
    "open_journal",
    "open_link",
    "open_replay",
    "outcome_lines",
    "psam_options",
    "record_trace",
    "replay_links",
    "replay_time",
    "when_option",
]

IMAGE = click.Path(exists=True, dir_okay=False, path_type=Path)


def card_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--card IMAGE | --reader NAME`` and ``--wait SECONDS``."""
    for option in reversed((
        click.option("--card", "card_image", type=IMAGE, metavar="IMAGE",
                     help="A simulated card image (unioncard card issue), used in process."),
        click.option("--reader", metavar="NAME",
                     help="A PC/SC reader, by name or index (0 is the first reader)."),
        click.option("--wait", type=Seconds(0, 3600), default=10.0, show_default=True,
                     metavar="SECONDS", help="How long to wait for a card in --reader."),
    )):
        f = option(f)
    return f


def psam_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--psam IMAGE | --psam-reader NAME``."""
    for option in reversed((
        click.option("--psam", "psam_image", type=IMAGE, metavar="IMAGE",
                     help="A simulated PSAM image (unioncard card issue writes one)."),
        click.option("--psam-reader", metavar="NAME",
                     help="The PC/SC reader holding the PSAM, by name or index."),
    )):
        f = option(f)
    return f


def _reader(name: str) -> str | int:
    return int(name) if name.isascii() and name.isdigit() else name


def open_link(stack: ExitStack, image: Path | None, reader: str | None, *, what: str,
              wait: float = 10.0, required: bool = True) -> Channel | None:
    """A powered link to the card (or PSAM) in ``image`` or in ``reader``."""
    if image is None and reader is None and not required:
        return None
    check_link_options(image, reader, what)
    if image is not None:
        from unioncard.applet_sim import SimulatedCard
        from unioncard.file_lock import FileLock

        context = click.get_current_context(silent=True)
        # one command on an image at a time, for the command's life (docs/card-image.md)
        stack.enter_context(FileLock(image, context.command_path if context else "unioncard"))
        simulated = SimulatedCard.load(image.resolve(), write_through=True)
        if (simulated.kind == "psam") != (what == "PSAM"):
            option = "--psam" if what == "PSAM" else "--card"
            raise click.UsageError(f"{option} {image}: is a {simulated.kind} image, not a "
                                   f"{'PSAM' if what == 'PSAM' else 'card'}")
        transport: Any = InProcessTransport(simulated)
        transport.power_on()
        stack.callback(transport.power_off)
        return Channel(transport)
    from unioncard.transport.pcsc import PcscTransport

    assert reader is not None
    pcsc = stack.enter_context(PcscTransport(_reader(reader)))
    try:
        pcsc.wait_for_card(wait)
    except TransportError as exc:
        raise TransportError(f"{what}: {exc}") from None
    pcsc.power_on()
    stack.enter_context(pcsc.exclusive())  # no other program between our commands
    return Channel(pcsc)


def record_trace(stack: ExitStack, path: Path, card: Channel, psam: Channel | None) -> None:
    """Record the card's and the PSAM's exchanges to the new trace file ``path``."""
    from unioncard.apdu.trace import Device
    from unioncard.transport.recording import TraceRecorder

    if path.exists() or path.is_symlink():
        raise click.UsageError(f"--trace {path}: the file exists; a trace is written to a new "
                               "file (nothing was overwritten)")
    recorder = stack.enter_context(TraceRecorder.open(path))
    recorder.attach(card.transport, Device.CARD)  # type: ignore[arg-type]
    if psam is not None:
        recorder.attach(psam.transport, Device.PSAM)  # type: ignore[arg-type]


def open_replay(path: Path) -> Any:
    """A recorded trace, read whole, to play back in place of the card and the PSAM; a
    malformed one is refused naming the file."""
    from unioncard.apdu.trace import detect_format, read_records
    from unioncard.bounded_read import InputFileError, open_stream
    from unioncard.errors import DecodeError
    from unioncard.transport.replay import Replay

    with open_stream(path, what="recording") as source:  # a file or a pipe, read once
        if not source.head:
            raise InputFileError(str(path), "the recording is empty (no APDU to play back)")
        try:
            return Replay.from_records(read_records(source.stream,
                                                    detect_format(source.head, path.name)),
                                       source=str(path))
        except DecodeError as exc:
            at = f" (at offset {exc.offset})" if exc.offset else ""
            raise InputFileError(str(path), f"{exc.message}{at}") from None


def replay_links(replay: Any) -> tuple[Channel, Channel | None]:
    """The replayed card, and the PSAM when the recording has one, powered."""
    from unioncard.apdu.trace import Device

    replay.card.power_on()
    if Device.PSAM not in replay.devices:
        return Channel(replay.card), None
    replay.psam.power_on()
    return Channel(replay.card), Channel(replay.psam)


def replay_time(replay: Any) -> Any:
    """The recorded transaction's local time (None: the recording does not tell): from its
    commands, else the recording's first timestamp."""
    when = replay.transaction_time()
    if when is None and replay.first_timestamp is not None:
        first = replay.first_timestamp
        when = first.astimezone().replace(tzinfo=None) if first.tzinfo else first
    return None if when is None else when.replace(microsecond=0)


def in_memory_journal() -> Any:
    """A journal that keeps nothing: a replayed transaction happened already."""
    from unioncard.terminal.journal import TransactionJournal

    return TransactionJournal(":memory:")


def hotlist_options(options: dict[str, Any], hotlist_file: str | None,
                    block_keys: str | None) -> Any:
    """Add the session options of ``--hotlist FILE`` (and ``--block-keys KEYSTORE``) to
    ``options``; the key host to give the driver (None without ``--block-keys``)."""
    if block_keys is not None and hotlist_file is None:
        raise click.UsageError("--block-keys blocks hotlisted cards: give --hotlist FILE too")
    if hotlist_file is None:
        return None
    from unioncard.offline.hotlist import Hotlist

    options["hotlist"] = Hotlist.load(hotlist_file)
    if block_keys is None:
        return None
    from unioncard.crypto import Keystore
    from unioncard.terminal.key_host import KeystoreKeyHost

    options["block_hotlisted"] = True
    return KeystoreKeyHost(Keystore.load(block_keys))


def journal_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--journal", "journal_path", type=click.Path(dir_okay=False, path_type=Path),
        help="The terminal's journal (SQLite). Default: $XDG_DATA_HOME/unioncard/"
             "journal.sqlite.")(f)


def when_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return time_option("Local (China) time of the transaction (replays, tests), from "
                       f"{TIME_RANGE[0]:%Y-%m-%d} to {TIME_RANGE[1]:%Y-%m-%d}. Default: "
                       "now.")(f)


def decision_command(f: Callable[..., Any]) -> Callable[..., Any]:
    """Report any failure as a decision ``error`` (exit 2): one JSON document with --json,
    else one line on stderr.  Ctrl-C ends the command as ``interrupted`` (exit 2): a
    transaction in flight stays pending in the journal."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        as_json = kwargs.get("as_json", False)
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            f(*args, **kwargs)
        except (UnionCardError, OSError, ValueError, sqlite3.Error) as exc:
            reason = error_text(exc)
            finish(error_document(reason), [f"error: {reason}"], as_json=as_json, status=2,
                   to_stderr=True)
        except (KeyboardInterrupt, Terminated) as exc:
            how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
            reason = (f"stopped by the operator ({how}); a transaction in flight stays "
                      "pending in the journal and is settled when the card is presented again")
            finish(error_document(reason, "interrupted"), [f"interrupted: {reason}"],
                   as_json=as_json, status=2, to_stderr=True)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


class Terminated(BaseException):
    """SIGTERM arrived: raised where the command was, like KeyboardInterrupt for SIGINT."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


def outcome_lines(outcome: Any) -> list[str]:
    """A few lines for people: decision, amounts, balance, TAC, warnings."""
    lines = [f"{outcome.decision.value}: {outcome.reason}"]
    record = outcome.record
    loaded = record is not None and record.is_load
    if loaded:
        lines.append(f"  loaded {yuan(outcome.charged_amount)}")
    elif outcome.list_amount is not None and outcome.charged_amount is not None:
        rules = f" ({', '.join(outcome.rules)})" if outcome.rules else ""
        lines.append(f"  list {yuan(outcome.list_amount)}, charged "
                     f"{yuan(outcome.charged_amount)}{rules}")
    if outcome.details.get("rebate"):
        lines.append(f"  rebate {yuan(outcome.details['rebate'])}, paid to the member by "
                     "settlement")
    if outcome.balance_after is not None:
        if outcome.balance_before == outcome.balance_after:
            lines.append(f"  balance {yuan(outcome.balance_after)} (unchanged)")
        else:
            before = ("" if outcome.balance_before is None
                      else f"{yuan(outcome.balance_before)} -> ")
            lines.append(f"  balance {before}{yuan(outcome.balance_after)}")
    if record is not None:
        tac = "none (recovered from the card's log)" if outcome.tac is None \
            else outcome.tac.hex().upper()
        lines.append(f"  terminal {record.terminal_id.hex().upper()} seq {record.terminal_seq}, "
                     f"card seq {record.card_seq}, TAC {tac}"
                     + (", recovered" if outcome.recovered else ""))
    if outcome.details.get("replayed"):
        lines.append(f"  replayed from {outcome.details['replayed']}: nothing was journaled")
    if outcome.decision.value == "interrupted" and outcome.journal_id is not None:
        lines.append(f"  pending transaction {outcome.journal_id} in the journal")
    lines += [f"  warning: {w}" for w in outcome.warnings]
    return lines


def open_journal(path: Path | None, *, create: bool = True) -> Any:
    """The terminal's journal (default path when None; with ``create=False`` an existing
    journal only, nothing created or changed in what is not one); errors name the
    journal."""
    from unioncard.terminal.journal import JournalError, TransactionJournal, default_journal_path

    chosen = path or default_journal_path()
    try:
        return TransactionJournal(chosen, create=create)
    except OSError as exc:
        raise JournalError(f"{chosen}: cannot open the journal: {error_text(exc)}") from None


def check_link_options(image: Path | None, reader: str | None, what: str) -> None:
    """Usage errors about a card or PSAM option, before anything is opened."""
    if image is not None and reader is not None:
        raise click.UsageError(f"give the {what} as an image or a reader, not both")
    if image is None and reader is None:
        flag = ("--card IMAGE or --reader NAME" if what == "card"
                else "--psam IMAGE or --psam-reader NAME")
        raise click.UsageError(f"which {what}? give {flag}")
