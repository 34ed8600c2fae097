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
from typing import IO, Any

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
from unioncard.commands.common import JSON_OPTION, progress_bar
from unioncard.errors import DecodeError

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


def _format(path: Path, fmt: str | None) -> TraceFormat:
    if fmt is not None:
        return TraceFormat(fmt)
    with open(path, "rb") as stream:
        return detect_format(stream.read(4096), path.name)


def _fail(path: Path, exc: DecodeError) -> click.ClickException:
    return click.ClickException(f"{path}: {exc}")


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
    kind = _format(file, fmt)
    options = {"psam_readers": psam_readers} if kind is TraceFormat.SPY else {}
    out = sys.stdout
    with open(file, "rb") as stream:
        exchanges = pair(read_records(stream, kind, file.name, **options))
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
        out.write(f"{count} exchanges, {kind} trace {file}\n")


def _decode_json(file: Path, kind: TraceFormat, exchanges: Iterator[Any], unmask: bool,
                 out: IO[str]) -> None:
    """Stream one JSON document: exchanges are written as they are decoded."""
    out.write(json.dumps({"file": str(file), "format": kind.value})[:-1] + ', "exchanges": [')
    count = 0
    error: DecodeError | None = None
    try:
        for exchange in exchanges:
            out.write(("," if count else "") + "\n" + json.dumps(describe(exchange, unmask)))
            count += 1
    except DecodeError as exc:
        error = exc
    tail: dict[str, Any] = {"count": count}
    if error is not None:
        tail["error"] = {"message": error.message, "offset": error.offset}
    out.write("\n], " + json.dumps(tail)[1:] + "\n")
    out.flush()
    if error is not None:
        raise _fail(file, error)


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
    kind = _format(file, fmt)
    size = file.stat().st_size
    show = progress if progress is not None else (
        sys.stderr.isatty() and size >= PROGRESS_MIN_BYTES)
    summary = TraceStats(offsets=kind is TraceFormat.BINARY)
    started = time.perf_counter()
    with open(file, "rb") as stream, ExitStack() as stack:
        advance = (progress_bar(stack, size, f"indexing {file.name}", unit="bytes")
                   if show else None)
        parts: Iterator[TraceIndex]
        if kind is TraceFormat.BINARY:
            parts = iter_index(stream, chunk, reuse=True)
        else:
            options = {"psam_readers": psam_readers} if kind is TraceFormat.SPY else {}
            parts = iter_index_records(read_records(stream, kind, file.name, **options), chunk,
                                       reuse=True)
        try:
            for part in parts:
                summary.add(part)
                if advance is not None:
                    advance(stream.tell())
        except DecodeError as exc:
            raise _fail(file, exc) from None
    if not summary.magic_ok:
        raise _fail(file, DecodeError("not a UCT1 binary trace: bad magic", 0))
    seconds = time.perf_counter() - started
    document = {"file": str(file), "format": kind.value, **summary.summary(),
                "timing": {"seconds": round(seconds, 6),
                           "mb_per_s": round(size / 1e6 / seconds, 3) if seconds > 0 else None}}
    if as_json:
        click.echo(json.dumps(document))
    else:
        for line in _stats_lines(document):
            click.echo(line)
    damage = [e for e in summary.bad_frames if e["reason"] in DAMAGE]
    if damage:
        first = damage[0]
        raise click.ClickException(
            f"{file}: damaged trace: frame {first['frame']}: {first['reason']}"
            + (f" (at offset {first['offset']})" if "offset" in first else ""))


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
              help="Replace an existing OUT (never a card image, a link or a non-file).")
def convert(source: Path, target: Path, to: str | None, fmt: str | None,
            psam_readers: tuple[str, ...], annotate: bool, force: bool) -> None:
    """Convert trace IN to OUT (text <-> binary; pcsc-spy logs to either).

    Binary frames have no timestamps: converting a timestamped trace to binary
    drops them, with a warning.  OUT is written only if IN reads completely,
    atomically (a temporary file beside it, renamed), and an existing OUT is
    replaced only with --force.
    """
    kind = _format(source, fmt)
    out_kind = _output_format(target, to)
    _check_convert_target(source, target, force)
    options = {"psam_readers": psam_readers} if kind is TraceFormat.SPY else {}
    writer: TextTraceWriter | BinaryTraceWriter
    try:
        with open(source, "rb") as stream, \
                open_atomically(target, replace=force, new_file_mode=0o600) as file:
            writer = (BinaryTraceWriter(file) if out_kind is TraceFormat.BINARY
                      else TextTraceWriter(file))
            for record in read_records(stream, kind, source.name, **options):
                if isinstance(writer, TextTraceWriter) and annotate:
                    writer.write(record, _annotation(record))
                else:
                    writer.write(record)
            writer.close()
    except DecodeError as exc:
        raise _fail(source, exc) from None
    except FileExistsError:
        raise click.ClickException(f"{target}: the file appeared while converting; "
                                   "nothing was overwritten") from None
    except OSError as exc:
        where = source if exc.filename == str(source) else target
        raise click.ClickException(f"{where}: {exc.strerror or exc}; nothing was written"
                                   ) from None
    if isinstance(writer, BinaryTraceWriter) and writer.dropped_timestamps:
        click.echo(f"warning: {writer.dropped_timestamps} timestamps dropped: binary frames"
                   f" carry none", err=True)
    click.echo(f"{writer.records} records: {kind} {source} -> {out_kind} {target}", err=True)


def _check_convert_target(source: Path, target: Path, force: bool) -> None:
    """Refuse an OUT that is IN, or that may not be replaced: one line naming OUT."""
    from unioncard.file_lock import is_card_image

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
    if is_card_image(target):
        raise click.ClickException(f"{target}: is a card image, not a trace; not replacing it")


def _annotation(record: TraceRecord) -> str | None:
    if record.is_command:
        return command_name(record.data)
    if len(record.data) >= 2:
        return describe_sw(int.from_bytes(record.data[-2:], "big"))
    return None
