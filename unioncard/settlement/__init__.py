"""Settlement: verify, classify and clear offline record batches (docs/settlement.md).

`settle` runs the whole of it: batch files in header order, each analyzed (in this
process or on Dask workers), settled against the ledger and reported::

    from unioncard.settlement import RunInputs, settle
    report = settle(paths, ledger_path="ledger.sqlite", inputs=RunInputs(keystore),
                    out="report/")
    report.summary()   # {"accepted": ..., "rejected": {...}, "totals": {...}, ...}
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unioncard.settlement.errors import BatchRefused, SettlementError
from unioncard.settlement.inputs import RunInputs, read_operators
from unioncard.settlement.reasons import Reason

__all__ = ["BatchRefused", "Reason", "RunInputs", "SettlementError", "read_operators",
           "settle"]


def settle(paths: Sequence[str | Path], *, ledger_path: str | Path, inputs: RunInputs,
           out: str | Path | None = None, engine: str = "fast", client: Any = None,
           progress: Callable[[int], None] | None = None, jobs: int = 1) -> Any:
    """Settle the batch files ``paths`` into the ledger; the `Report` (written to ``out``
    when given).  ``engine``: ``fast`` (numpy and numba), ``reference`` (one record at a
    time with `cryptography` and the reference tariff quote) or ``dask`` (the fast path on
    the workers of ``client``, a `distributed.Client`).  ``jobs``: the fast and reference
    engines' threads; with more than one, ``jobs - 1`` threads analyze the files ahead
    while this one settles them in order (the same ledger and report)."""
    from unioncard.settlement.engines import dask_analyses, local_analyses
    from unioncard.settlement.ledger import Ledger
    from unioncard.settlement.pipeline import Settlement, run_settlement
    from unioncard.settlement.report import build_report, write_report

    if engine not in ("fast", "reference", "dask"):
        raise ValueError(f"engine must be fast, reference or dask, not {engine!r}")
    if (engine == "dask") != (client is not None):
        raise ValueError("the dask engine, and only it, takes a client")
    if jobs < 1 or (engine == "dask" and jobs != 1):
        raise ValueError("jobs is a number of threads (1 or more) of the fast or the "
                         "reference engine")
    reference = engine == "reference"

    def analyses(ordered: Sequence[Path]) -> Any:
        if client is not None:
            return dask_analyses(ordered, inputs, client)
        return local_analyses(ordered, inputs, reference=reference, threads=jobs - 1)

    with _frozen_heap(), Ledger(ledger_path) as ledger:
        run = run_settlement(paths, Settlement(ledger, inputs, reference=reference), analyses,
                             progress=progress)  # the run's index is freed once it is over
        report = build_report(ledger, run)
    if out is not None:
        write_report(report, out)
    return report


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """The objects that exist before the run (modules, compiled kernels: a few hundred
    thousand) set aside from Python's cyclic garbage collector while it runs
    (`gc.freeze`): each full collection the run's own objects trigger then looks at
    those alone (about 0.1 CPU-s per million records otherwise).  Left alone when
    someone else froze objects already."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
