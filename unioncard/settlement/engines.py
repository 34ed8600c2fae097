"""Where batch files are analyzed: in this process, or on the workers of a Dask cluster.

Both engines yield, in the run's order, each file's `BatchAnalysis` or the
`BatchRefused` that refused it; the run (`unioncard.settlement.pipeline`) settles
them one by one in that order, so the ledger and the report are the same whichever
engine analyzed the files (docs/settlement.md, "Scale-out with Dask").  In this
process the files are analyzed by the settling thread, or by a few threads ahead of it
(`unioncard settle --jobs N`).

The Dask engine sends each worker a file's path (the files must be readable by the
workers at the same path: a shared or copied directory) and keeps a bounded window
of files in flight, so the client's memory does not grow with the day.  A file this
process reads but a worker cannot is an error of the cluster, not a refusal of the
file: the run stops rather than report what a single process would not.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unioncard.bounded_read import InputFileError, open_file, read_file
from unioncard.errors import SettlementError
from unioncard.settlement.analyze import BatchAnalysis, analyze_batch, analyze_batch_reference
from unioncard.settlement.errors import BatchRefused
from unioncard.settlement.inputs import RunInputs

__all__ = ["BATCH_FILE_LIMIT", "analyze_path", "dask_analyses", "local_analyses"]

BATCH_FILE_LIMIT = 2 << 30
"""The largest batch file read (2 GiB, about 8 million records)."""

Analyzed = tuple[Path, BatchAnalysis | BatchRefused]


def analyze_path(path: str, inputs: RunInputs, reference: bool = False
                 ) -> BatchAnalysis | BatchRefused:
    """Read and analyze one batch file; a file that cannot be read or is damaged comes
    back as its `BatchRefused`."""
    data = _read(path)
    return data if isinstance(data, BatchRefused) else _analyze(data, path, inputs, reference)


def _read(path: str) -> bytes | BatchRefused:
    try:
        return read_file(path, limit=BATCH_FILE_LIMIT, what="batch file")
    except InputFileError as exc:
        return BatchRefused(str(exc), reason=exc.reason)


def _analyze(data: bytes, path: str, inputs: RunInputs, reference: bool
             ) -> BatchAnalysis | BatchRefused:
    analyze = analyze_batch_reference if reference else analyze_batch
    try:
        return analyze(data, path, inputs)
    except BatchRefused as refused:
        return refused


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A `BatchRefused` on its way back from a worker.  (The exception itself does not
    survive pickling: its ``reason`` is a keyword argument, which unpickling does not pass,
    so the client would fail to deserialize the result.)  ``unreadable``: the worker
    could not read the file at all."""

    message: str
    reason: str
    unreadable: bool


def _analyze_on_worker(path: str, inputs: RunInputs, reference: bool
                       ) -> BatchAnalysis | _Refusal:
    """`analyze_path` as a Dask task: what it returns crosses process borders."""
    data = _read(path)
    if isinstance(data, BatchRefused):
        return _Refusal(str(data), data.reason, unreadable=True)
    result = _analyze(data, path, inputs, reference)
    if isinstance(result, BatchRefused):
        return _Refusal(str(result), result.reason, unreadable=False)
    return result


def local_analyses(paths: Sequence[Path], inputs: RunInputs, *, reference: bool = False,
                   threads: int = 0) -> Iterator[Analyzed]:
    """Each file analyzed in this process, in order: by the caller's thread, or with
    ``threads`` threads analyzing up to 2 files each ahead of the one the caller takes
    (the kernels release the GIL; the caller settles meanwhile).  Files in flight are
    held with their analyses: at most ``2 × threads + 1`` at a time."""
    if threads <= 0:
        for path in paths:
            yield path, analyze_path(str(path), inputs, reference)
        return
    _ = inputs.hotlist  # opened once, here, before the threads share it
    pool = ThreadPoolExecutor(threads, thread_name_prefix="analysis")
    try:
        flight: deque[tuple[Path, Future[BatchAnalysis | BatchRefused]]] = deque()
        for path in paths:
            flight.append((path, pool.submit(analyze_path, str(path), inputs, reference)))
            if len(flight) > 2 * threads:
                done, future = flight.popleft()
                yield done, future.result()
        while flight:
            done, future = flight.popleft()
            yield done, future.result()
    finally:  # a run that stops early leaves no file analyzed for nothing
        pool.shutdown(wait=True, cancel_futures=True)


def dask_analyses(paths: Sequence[Path], inputs: RunInputs, client: Any, *,
                  reference: bool = False, window: int | None = None) -> Iterator[Analyzed]:
    """Each file analyzed on a worker of ``client`` (`distributed.Client`); results come
    back in order, with at most ``window`` files in flight (4 per worker thread).  Workers
    get absolute paths (of the files and of the hotlist), as this process resolves them."""
    if window is None:
        threads = sum(client.nthreads().values()) or 1
        window = 4 * threads
    if inputs.hotlist_path is not None:
        inputs = dataclasses.replace(inputs,
                                     hotlist_path=str(Path(inputs.hotlist_path).resolve()))
    shared = client.scatter(inputs, broadcast=True)
    flight: deque[tuple[Path, Any]] = deque()
    pending = iter(paths)

    def submit(path: Path) -> None:
        flight.append((path, client.submit(_analyze_on_worker, str(path.resolve()), shared,
                                           reference, pure=False)))

    for path in pending:
        submit(path)
        if len(flight) >= window:
            break
    while flight:
        path, future = flight.popleft()
        result = future.result()
        nxt = next(pending, None)
        if nxt is not None:
            submit(nxt)
        if isinstance(result, _Refusal):
            yield path, _refusal(path, result)
        else:
            yield path, _renamed(result, str(path))


def _refusal(path: Path, refusal: _Refusal) -> BatchRefused:
    """The client's view of a worker's refusal.  A file the worker could not read is
    refused only if this process cannot read it either (as a single process would
    refuse it); otherwise the workers do not see the files: `SettlementError`."""
    if not refusal.unreadable:
        return BatchRefused(refusal.message, reason=refusal.reason)
    try:
        open_file(path, limit=BATCH_FILE_LIMIT, what="batch file").close()
    except InputFileError as exc:
        return BatchRefused(str(exc), reason=exc.reason)
    raise SettlementError(
        f"{path}: a Dask worker cannot read this batch file ({refusal.reason}), which this "
        "process reads: the workers must see the batch files at the same path "
        "(docs/settlement.md, \"Scale-out with Dask\")")


def _renamed(analysis: BatchAnalysis, source: str) -> BatchAnalysis:
    """The analysis under the name the client knows the file by (workers got its absolute
    path), so both engines report files alike."""
    return dataclasses.replace(analysis, source=source)
