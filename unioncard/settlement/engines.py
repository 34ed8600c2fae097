"""Where batch files are analyzed: in this process, or on the workers of a Dask cluster.

Both engines yield, in the run's order, each file's `BatchAnalysis` or the
`BatchRefused` that refused it; the run (`unioncard.settlement.pipeline`) settles
them one by one in that order, so the ledger and the report are the same whichever
engine analyzed the files (docs/settlement.md, "Scale-out with Dask").

The Dask engine sends each worker a file's path (the files must be readable by the
workers at the same path: a shared or copied directory) and keeps a bounded window
of files in flight, so the client's memory does not grow with the day.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from unioncard.bounded_read import read_file
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
    back as its `BatchRefused` (returned, not raised, so it crosses process borders)."""
    try:
        data = read_file(path, limit=BATCH_FILE_LIMIT, what="batch file", error=SettlementError)
    except SettlementError as exc:
        return BatchRefused(str(exc), reason=str(exc).split(": ", 1)[-1])
    analyze = analyze_batch_reference if reference else analyze_batch
    try:
        return analyze(data, path, inputs)
    except BatchRefused as refused:
        return refused


def local_analyses(paths: Sequence[Path], inputs: RunInputs, *, reference: bool = False
                   ) -> Iterator[Analyzed]:
    """Each file analyzed in this process, in order."""
    for path in paths:
        yield path, analyze_path(str(path), inputs, reference)


def dask_analyses(paths: Sequence[Path], inputs: RunInputs, client: Any, *,
                  reference: bool = False, window: int | None = None) -> Iterator[Analyzed]:
    """Each file analyzed on a worker of ``client`` (`distributed.Client`); results come
    back in order, with at most ``window`` files in flight (4 per worker thread)."""
    if window is None:
        threads = sum(client.nthreads().values()) or 1
        window = 4 * threads
    shared = client.scatter(inputs, broadcast=True)
    flight: deque[tuple[Path, Any]] = deque()
    pending = iter(paths)
    for path in pending:
        flight.append((path, client.submit(analyze_path, str(path.resolve()), shared,
                                           reference, pure=False)))
        if len(flight) >= window:
            break
    while flight:
        path, future = flight.popleft()
        result = future.result()
        nxt = next(pending, None)
        if nxt is not None:
            flight.append((nxt, client.submit(analyze_path, str(nxt.resolve()), shared,
                                              reference, pure=False)))
        if isinstance(result, BatchAnalysis):
            result = _renamed(result, str(path))
        yield path, result


def _renamed(analysis: BatchAnalysis, source: str) -> BatchAnalysis:
    """The analysis under the name the client knows the file by (workers got its absolute
    path), so both engines report files alike."""
    import dataclasses

    return dataclasses.replace(analysis, source=source)
