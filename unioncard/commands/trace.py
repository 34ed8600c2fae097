"""``unioncard trace``: decode, summarise and convert APDU traces.

Formats (docs/traces.md): text (one APDU per line), binary ``UCT1`` (bulk),
and pcsc-spy logs (raw or as displayed), detected from the content or the
file name.  A damaged file ends the command with one line naming the offset
(and the line, for text and pcsc-spy) and a non-zero exit status.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, NoReturn

import click

from unioncard.apdu.indexer import CHUNK, FrameStatus, TraceIndex, iter_index, iter_index_records
from unioncard.apdu.instructions import command_name
from unioncard.apdu.status import describe as describe_sw
from unioncard.apdu.trace import (
    BINARY_SUFFIXES,
    TEXT_SUFFIXES,
    TraceFormat,
    TraceRecord,
    detect_format,
    read_records,
)
from unioncard.apdu.trace_binary import BinaryTraceWriter
from unioncard.apdu.trace_decode import describe, pair, render
from unioncard.apdu.trace_stats import REASONS as _REASONS
from unioncard.apdu.trace_stats import TraceStats
from unioncard.apdu.trace_text import TextTraceWriter
from unioncard.atomic_file import check_target, open_atomically
from unioncard.bounded_read import InputFileError, StreamInput, open_stream, reason
from unioncard.commands.common import JSON_OPTION, progress_bar
from unioncard.errors import DecodeError
from unioncard.file_lock import FileLock, FileLockError, check_replaceable

__all__ = ["group"]

DAMAGE = frozenset({_REASONS[FrameStatus.UNKNOWN_KIND], _REASONS[FrameStatus.TRUNCATED]})
"""Frame verdicts that mean the file itself is damaged: stats then exits non-zero."""
PROGRESS_MIN_BYTES = 32 << 20
"""Files at least this large show a progress bar (when stderr is a terminal)."""

FILE = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
FORMAT = click.option("--format", "fmt", type=click.Choice([f.value for f in TraceFormat]),
                      help="Input format; detected from the content and name when omitted.")
PSAM_READER = click.option(
    "--psam-reader", "psam_readers", multiple=True, metavar="NAME",
    help="pcsc-spy logs: APDUs to readers whose name contains NAME are the PSAM's "
         "(repeatable); all others are the card's.")


@click.group(name="trace")
def group() -> None:
    """Decode, summarise and convert APDU traces.

    Reads text traces, binary UCT1 traces and pcsc-spy logs (the format is
    detected).  See docs/traces.md for the formats.
    """


def _open(path: Path, fmt: str | None) -> tuple[StreamInput, TraceFormat]:
    """The trace ``path`` opened once (a file or a pipe, never waiting for a writer) and
    its format: ``fmt``, else detected from its first bytes and its name."""
    try:
        source = open_stream(path, what="trace")
    except InputFileError as exc:
        raise click.ClickException(str(exc)) from None
    return source, TraceFormat(fmt) if fmt is not None else detect_format(source.head,
                                                                          path.name)


def _message(path: Path, exc: DecodeError) -> str:
    """``PATH: what is wrong (at offset N)``, the offset left out where it says nothing (at
    the very start, or of an empty file)."""
    return f"{path}: {exc.message}" + (f" (at offset {exc.offset})" if exc.offset else "")


def _fail(path: Path, exc: DecodeError) -> click.ClickException:
    return click.ClickException(_message(path, exc))


def _exit_after_document(message: str) -> NoReturn:
    """The JSON document is out, saying what went wrong: the error on stderr, exit 1, and
    no second document."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@group.command("decode")
@FILE
@JSON_OPTION
@click.option("--unmask", is_flag=True,
              help="Show PANs in full (by default only the first 6 and last 4 digits).")
@FORMAT
@PSAM_READER
def decode(file: Path, as_json: bool, unmask: bool, fmt: str | None,
           psam_readers: tuple[str, ...]) -> None:
    """Decode FILE exchange by exchange.

    Each command is shown with its name (SELECT, READ RECORD, INITIALIZE FOR
    PURCHASE, ...) and header; each response with its TLV tree (tag names),
    purse fields and status word meaning.  PANs are masked unless --unmask.
    """
    source, kind = _open(file, fmt)
    options = {"psam_readers": psam_readers} if kind is TraceFormat.SPY else {}
    out = sys.stdout
    with source:
        exchanges = pair(read_records(source.stream, kind, file.name, **options))
        if as_json:
            _decode_json(file, kind, exchanges, unmask, out)
            return
        count = 0
        try:
            for exchange in exchanges:
                count += 1
                for line in render(describe(exchange, unmask)):
                    out.write(line + "\n")
                out.write("\n")
        except DecodeError as exc:
            raise _fail(file, exc) from None
        except OSError as exc:
            raise click.ClickException(f"{file}: cannot read the trace: {reason(exc)}"
                                       ) from None
        out.write(f"{count} exchanges, {kind} trace {file}\n")


def _decode_json(file: Path, kind: TraceFormat, exchanges: Iterator[Any], unmask: bool,
                 out: IO[str]) -> None:
    """Stream one JSON document: exchanges are written as they are decoded."""
    out.write(json.dumps({"file": str(file), "format": kind.value})[:-1] + ', "exchanges": [')
    count = 0
    error: dict[str, Any] | None = None
    message = ""
    try:
        for exchange in exchanges:
            out.write(("," if count else "") + "\n" + json.dumps(describe(exchange, unmask)))
            count += 1
    except DecodeError as exc:
        error, message = {"message": exc.message, "offset": exc.offset}, _message(file, exc)
    except OSError as exc:
        message = f"{file}: cannot read the trace: {reason(exc)}"
        error = {"message": message, "offset": None}
    tail: dict[str, Any] = {"count": count}
    if error is not None:
        tail["error"] = error
        tail["exit_status"] = 1
    out.write("\n], " + json.dumps(tail)[1:] + "\n")
    out.flush()
    if error is not None:
        _exit_after_document(message)


@group.command("stats")
@FILE
@JSON_OPTION
@FORMAT
@PSAM_READER
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr (default: for large files on a terminal).")
@click.option("--chunk", type=click.IntRange(1 << 12, 1 << 30), default=CHUNK, hidden=True,
              help="Bytes indexed per kernel call.")
def stats(file: Path, as_json: bool, fmt: str | None, psam_readers: tuple[str, ...],
          progress: bool | None, chunk: int) -> None:
    """Summarise FILE with the fast indexer.

    Frames and exchanges (per device; unanswered commands and orphan
    responses), counts per command, status word and TLV tag, and malformed
    frames and malformed TLV data with their frame index and offset.
    """
    source, kind = _open(file, fmt)
    size = source.size
    show = size is not None and (progress if progress is not None else (
        sys.stderr.isatty() and size >= PROGRESS_MIN_BYTES))
    summary = TraceStats(offsets=kind is TraceFormat.BINARY)
    started = time.perf_counter()
    with source, ExitStack() as stack:
        advance = (progress_bar(stack, size, f"indexing {file.name}", unit="bytes")
                   if show and size is not None else None)
        parts: Iterator[TraceIndex]
        if kind is TraceFormat.BINARY:
            parts = iter_index(source.stream, chunk, reuse=True)
        else:
            options = {"psam_readers": psam_readers} if kind is TraceFormat.SPY else {}
            parts = iter_index_records(read_records(source.stream, kind, file.name, **options),
                                       chunk, reuse=True)
        try:
            for part in parts:
                summary.add(part)
                if advance is not None:
                    advance(source.consumed)
        except DecodeError as exc:
            raise _fail(file, exc) from None
        except OSError as exc:
            raise click.ClickException(f"{file}: cannot read the trace: {reason(exc)}"
                                       ) from None
        size = source.consumed
    if not summary.magic_ok:
        raise click.ClickException(
            f"{file}: " + ("the file is empty: a UCT1 binary trace starts with the magic "
                           "55435431 ('UCT1')" if size == 0 else
                           "not a UCT1 binary trace: bad magic (the file does not start with "
                           "55435431, 'UCT1')"))
    seconds = time.perf_counter() - started
    document = {"file": str(file), "format": kind.value, **summary.summary(),
                "timing": {"seconds": round(seconds, 6),
                           "mb_per_s": round(size / 1e6 / seconds, 3) if seconds > 0 else None}}
    damage = [e for e in summary.bad_frames if e["reason"] in DAMAGE]
    message = None
    if damage:
        first = damage[0]
        message = (f"{file}: damaged trace: frame {first['frame']}: {first['reason']}"
                   + (f" (at offset {first['offset']})" if "offset" in first else ""))
        document.update(error=message, exit_status=1)
    if as_json:
        click.echo(json.dumps(document))
    else:
        for line in _stats_lines(document):
            click.echo(line)
    if message is not None:
        _exit_after_document(message)


def _stats_lines(doc: dict[str, Any]) -> Iterator[str]:
    frames, ex, tlv = doc["frames"], doc["exchanges"], doc["tlv"]
    yield (f"{doc['file']}: {doc['format']} trace, {doc['bytes']} bytes, {frames['total']} frames"
           f" ({frames['commands']} commands, {frames['responses']} responses,"
           f" {frames['malformed']} malformed)")
    per = ", ".join(f"{d} {v['exchanges']}" for d, v in ex["by_device"].items())
    yield (f"exchanges: {ex['total']} ({per}); unanswered commands {ex['unanswered_commands']};"
           f" orphan responses {ex['orphan_responses']}")
    yield "commands:"
    for name, n in doc["commands"].items():
        yield f"  {n:>10}  {name}"
    yield "status words:"
    for sw, v in doc["status_words"].items():
        yield f"  {v['count']:>10}  {sw} {v['meaning']}"
    yield (f"TLV: {tlv['responses_tlv']} responses indexed, {tlv['responses_malformed_tlv']}"
           f" malformed, {tlv['responses_raw_data']} with raw (non-TLV) data,"
           f" {tlv['responses_without_data']} without data; {tlv['objects']} objects")
    for tag, v in tlv["tags"].items():
        yield f"  {v['count']:>10}  {tag} {v['name']}"
    bad = doc["malformed_frames"]
    if bad["total"]:
        yield f"malformed frames: {bad['total']}"
        for example in bad["examples"]:
            at = f" at offset {example['offset']}" if "offset" in example else ""
            yield f"  frame {example['frame']}{at}: {example['reason']}"
    if tlv["malformed_examples"]:
        yield f"malformed TLV data: {tlv['responses_malformed_tlv']}"
        for example in tlv["malformed_examples"]:
            at = f", offset {example['offset']}" if "offset" in example else ""
            yield f"  frame {example['frame']}: data offset {example['data_offset']}{at}"
    timing = doc["timing"]
    yield f"indexed in {timing['seconds']:.3f} s ({timing['mb_per_s']} MB/s)"


def _output_format(path: Path, to: str | None) -> TraceFormat:
    if to is not None:
        return TraceFormat(to)
    suffix = path.suffix.lower()
    if suffix in BINARY_SUFFIXES:
        return TraceFormat.BINARY
    if suffix in TEXT_SUFFIXES:
        return TraceFormat.TEXT
    raise click.BadParameter(f"cannot tell the output format from {path.name!r}; use --to",
                             param_hint="OUT")


@group.command("convert")
@click.argument("source", metavar="IN",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", type=click.Choice([TraceFormat.TEXT.value, TraceFormat.BINARY.value]),
              help="Output format; from OUT's suffix when omitted (.uct/.bin binary, "
                   ".txt/.trace/.apdu text).")
@FORMAT
@PSAM_READER
@click.option("--annotate/--no-annotate", default=True,
              help="Text output: add command names and SW meanings as comments.")
@click.option("--force", is_flag=True,
              help="Replace an existing OUT (never a link, a non-file, a file in use or one of "
                   "unioncard's own files of another kind: a card image, a journal, ...).")
def convert(source: Path, target: Path, to: str | None, fmt: str | None,
            psam_readers: tuple[str, ...], annotate: bool, force: bool) -> None:
    """Convert trace IN to OUT (text <-> binary; pcsc-spy logs to either).

    Binary frames have no timestamps: converting a timestamped trace to binary
    drops them, with a warning.  OUT is written only if IN reads completely,
    atomically (a temporary file beside it, renamed), and an existing OUT is
    replaced only with --force.
    """
    out_kind = _output_format(target, to)
    _check_convert_target(source, target, force)
    reading, kind = _open(source, fmt)
    options = {"psam_readers": psam_readers} if kind is TraceFormat.SPY else {}
    writer: TextTraceWriter | BinaryTraceWriter
    try:
        with reading, FileLock(target, "unioncard trace convert"), \
                open_atomically(target, replace=force, new_file_mode=0o600) as file:
            writer = (BinaryTraceWriter(file) if out_kind is TraceFormat.BINARY
                      else TextTraceWriter(file))
            for record in read_records(reading.stream, kind, source.name, **options):
                if isinstance(writer, TextTraceWriter) and annotate:
                    writer.write(record, _annotation(record))
                else:
                    writer.write(record)
            writer.close()
    except DecodeError as exc:
        raise _fail(source, exc) from None
    except FileLockError as exc:
        raise click.ClickException(str(exc)) from None
    except FileExistsError:
        raise click.ClickException(f"{target}: the file appeared while converting; "
                                   "nothing was overwritten") from None
    except OSError as exc:
        where = target if exc.filename == str(target) else source
        raise click.ClickException(f"{where}: {reason(exc)}; nothing was written") from None
    if isinstance(writer, BinaryTraceWriter) and writer.dropped_timestamps:
        click.echo(f"warning: {writer.dropped_timestamps} timestamps dropped: binary frames"
                   f" carry none", err=True)
    click.echo(f"{writer.records} records: {kind} {source} -> {out_kind} {target}", err=True)


def _check_convert_target(source: Path, target: Path, force: bool) -> None:
    """Refuse an OUT that is IN, or that may not be replaced (`check_replaceable`): one
    line naming OUT."""
    try:
        status = check_target(target)
    except OSError as exc:
        raise click.ClickException(f"{target}: {exc.strerror}; nothing was written") from None
    if status is None:
        return
    if os.path.samefile(source, target):
        raise click.ClickException(f"{target}: OUT is the input file IN; write to another "
                                   "file")
    if not force:
        raise click.ClickException(f"{target}: the file exists; use --force to replace it "
                                   "(nothing was written)")
    try:
        check_replaceable(target, "a trace")  # a locked one: refused by the lock (convert)
    except FileLockError as exc:
        raise click.ClickException(str(exc)) from None


def _annotation(record: TraceRecord) -> str | None:
    if record.is_command:
        return command_name(record.data)
    if len(record.data) >= 2:
        return describe_sw(int.from_bytes(record.data[-2:], "big"))
    return None
