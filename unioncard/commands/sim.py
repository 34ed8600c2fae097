"""``unioncard sim``: serve simulated cards to PC/SC programs (docs/pcsc.md).

``sim serve CARD [--psam PSAM]`` puts a card image in slot 0 of pcscd's vpcd
virtual reader (``Virtual PCD 00 00``) and a PSAM image in slot 1, so any PC/SC
program sees them.  Every command that changes a card is saved to its image
before the answer leaves (write-through, atomic), so killing the process,
even with SIGKILL, loses nothing a card committed.  SIGUSR1 takes the card out
of its reader and SIGUSR2 puts it back (`VpcdBridge.remove`, `insert`), so
tests can pull a card in the middle of a transaction over PC/SC.

Each image is locked for the life of the serve (`unioncard.file_lock`,
docs/card-image.md): a second command on a served image is refused, and so is
one image given as both the card and the PSAM.  ``--trace`` writes a new file;
an existing one is replaced only with ``--force``, never one of unioncard's own files
of another kind (a card image, a registry, a keystore, a journal, a batch file, a
hotlist) and never a file in use (locked).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click

from unioncard.apdu.trace import BINARY_SUFFIXES, Device, TraceRecord, TraceWriter
from unioncard.applet_sim import SimulatedCard
from unioncard.bounded_read import reason
from unioncard.file_lock import FileLock, FileLockError, check_replaceable
from unioncard.transport.pcscd import DEFAULT_VPCD_PORT, PcscdDaemon, vpcd_reader_name

__all__ = ["group"]

log = logging.getLogger("unioncard.sim")

IMAGE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: a host name (internationalized names too) or an address, as the
    resolver takes it: at most 253 characters, labels of at most 63."""
    try:
        encoded = value.encode("idna")
    except UnicodeError:
        encoded = b""
    if not encoded or len(encoded) > 253:
        raise click.BadParameter("not a host name or address (at most 253 characters, "
                                 "labels of 1 to 63)")
    return value


def check_kinds(cards: dict[int, SimulatedCard], images: dict[int, Path]) -> None:
    """The card in slot 0 is no PSAM, and the image in slot 1 is one (swapped images are
    refused before anything is served)."""
    if cards[0].kind == "psam":
        raise click.UsageError(f"{images[0]}: is a PSAM image, not a card; give the card "
                               "image first and the PSAM with --psam")
    if 1 in cards and cards[1].kind != "psam":
        raise click.UsageError(f"--psam {images[1]}: is a {cards[1].kind} image, not a PSAM")


@click.group(name="sim")
def group() -> None:
    """Serve simulated cards and PSAMs to PC/SC programs, through pcscd's vpcd reader."""


@group.command(name="serve")
@click.argument("card", type=IMAGE)
@click.option("--psam", type=IMAGE, help="PSAM card image to serve in slot 1.")
@click.option("--port", type=click.IntRange(1, 0xFFFE), envvar="UNIONCARD_VPCD_PORT",
              show_envvar=True, default=None,
              help=f"vpcd port of slot 0; slot 1 is the next port.  [default: "
                   f"{DEFAULT_VPCD_PORT}, or free ports with --private-pcscd]")
@click.option("--host", default="127.0.0.1", show_default=True, callback=_host,
              help="Host where pcscd (with the vpcd driver) runs: a name or an address.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Record every APDU to this file: binary UCT1 for .uct/.bin names, "
                   "text otherwise.")
@click.option("--force", is_flag=True,
              help="Replace an existing --trace file (never a link, a file in use or one of "
                   "unioncard's own files of another kind: a card image, a journal, ...).")
@click.option("--seed", type=int, default=None,
              help="Seed the cards' random numbers (the PSAM gets SEED+1), so a run "
                   "can be repeated exactly.")
@click.option("--private-pcscd", is_flag=True,
              help="Start a pcscd of our own for the cards (left alone: any system "
                   "pcscd) and print the PCSCLITE_CSOCK_NAME that reaches it.")
@click.option("-v", "--verbose", is_flag=True, help="Log every power event and reconnection.")
def serve(card: Path, psam: Path | None, port: int | None, host: str, trace_path: Path | None,
          force: bool, seed: int | None, private_pcscd: bool, verbose: bool) -> None:
    """Serve the card image CARD (and a PSAM) in pcscd's virtual reader until stopped.

    The card is in reader ``Virtual PCD 00 00`` and the PSAM in ``Virtual PCD 00
    01`` of the pcscd whose vpcd driver listens on PORT and PORT+1 (Debian's
    /etc/reader.conf.d/vpcd: 35963).  Power off, power on, reset and ATR requests
    from pcscd reach the card; when pcscd restarts the cards reconnect.  Each
    command a card commits is saved to its image file before the answer leaves.
    Both images are locked while served: another command on them is refused.

    \b
    Signals:
      SIGUSR1  take the card (slot 0) out of its reader: pcscd sees it leave, a
               program's next APDU fails as for a removed card, and the card
               loses its volatile state (selection, open purse session)
      SIGUSR2  put the card back: pcscd sees it arrive (after 1 s out at least)
               and powers it up afresh
      SIGINT, SIGTERM  stop
    The signals act on the card in slot 0 only; the PSAM stays in its reader.
    Each removal and insertion is logged.  Example: kill -USR1 PID.
    """
    from unioncard.transport.vpcd import VpcdBridge

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="unioncard sim serve: %(message)s")
    images = {0: card} if psam is None else {0: card, 1: psam}
    if psam is not None and _same_file(card, psam):
        raise click.UsageError(f"{psam}: the PSAM is the card image {card}; give the PSAM "
                               "its own image")
    with contextlib.ExitStack() as stack:
        for path in images.values():
            stack.enter_context(FileLock(path, "unioncard sim serve"))
        writer = None if trace_path is None else _trace_writer(stack, trace_path, images, force)
        cards = {
            slot: SimulatedCard.load(path.resolve(), write_through=True,
                                     random_source=None if seed is None else seed + slot)
            for slot, path in images.items()
        }
        check_kinds(cards, images)
        if private_pcscd:
            daemon = stack.enter_context(PcscdDaemon(port))
            port = daemon.vpcd_port
            click.echo(f"PCSCLITE_CSOCK_NAME={daemon.socket_path}")
            sys.stdout.flush()
        port = port or DEFAULT_VPCD_PORT
        hook = None
        if writer is not None:
            trace = writer

            def hook(slot: int, command: bytes, response: bytes) -> None:
                device = Device.CARD if slot == 0 else Device.PSAM
                now = datetime.now(UTC)
                trace.write(TraceRecord.command(command, device, now))
                trace.write(TraceRecord.response(response, device, now))
                trace.flush()

        bridge = VpcdBridge(cards, host=host, port=port, on_command=hook)
        for slot, simulated in cards.items():
            log.info("%s (%s, %s) in reader %r via %s:%d", images[slot], simulated.kind,
                     simulated.protocol, vpcd_reader_name(slot), host, port + slot)

        def stop(signum: int, frame: FrameType | None) -> None:
            bridge.request_stop()

        def remove(signum: int, frame: FrameType | None) -> None:
            bridge.remove(0)  # the bridge logs it, from its loop

        def insert(signum: int, frame: FrameType | None) -> None:
            bridge.insert(0)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        signal.signal(signal.SIGUSR1, remove)
        signal.signal(signal.SIGUSR2, insert)
        log.info("pid %d: SIGUSR1 takes the card out of its reader, SIGUSR2 puts it back",
                 os.getpid())
        bridge.serve_forever()
        log.info("stopped after %s", ", ".join(
            f"{bridge.commands(slot)} {'card' if slot == 0 else 'PSAM'} commands"
            for slot in cards))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _trace_writer(stack: contextlib.ExitStack, path: Path, images: dict[int, Path],
                  force: bool) -> TraceWriter:
    """The ``--trace`` file's writer: a new file (created exclusively, never through a
    link), or with ``force`` an existing regular file truncated, never a card image."""
    from unioncard.apdu.trace_binary import BinaryTraceWriter
    from unioncard.apdu.trace_text import TextTraceWriter
    from unioncard.transport.recording import create_trace_file

    if any(path.exists() and _same_file(path, image) for image in images.values()):
        raise click.UsageError(f"--trace {path}: is a card image being served; the trace "
                               "needs a file of its own")
    if force and path.exists():
        try:
            check_replaceable(path, "a trace")
        except FileLockError as exc:
            raise click.UsageError(f"--trace {exc}") from None
    stack.enter_context(FileLock(path, "unioncard sim serve --trace"))  # not in use
    try:
        stream = create_trace_file(path, overwrite=force)
    except FileExistsError:
        raise click.UsageError(f"--trace {path}: the file exists; use --force to replace it "
                               "(nothing was overwritten)") from None
    except OSError as exc:
        raise click.UsageError(f"--trace {path}: {reason(exc)}") from None
    binary = path.suffix.lower() in BINARY_SUFFIXES
    writer: TraceWriter = (BinaryTraceWriter(stream, owns=True) if binary
                           else TextTraceWriter(stream, owns=True))
    stack.enter_context(writer)
    writer.flush()  # the binary magic is on disk before the first exchange
    return writer
