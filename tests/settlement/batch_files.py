"""Helpers of the settlement tests: batch files read as record arrays, rewritten well formed
after a test changed their records, and a ledger's contents to compare runs by."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from unioncard.settlement.columns import RECORD_DTYPE, decode_batch, record_crcs
from unioncard.settlement.generate import _batch_bytes

REWRITTEN_AT = dt.datetime(2026, 5, 1, 23, 30)


def records_of(path: Path) -> np.ndarray:
    return decode_batch(path.read_bytes()).records.copy()


def with_crcs(records: np.ndarray) -> np.ndarray:
    """``records`` in the record layout with their CRCs recomputed (``np.concatenate``
    makes big-endian fields native: ``astype`` puts the layout back)."""
    records = records.astype(RECORD_DTYPE)
    records["crc"] = record_crcs(records.view(np.uint8).reshape(len(records), 256))
    return records


def rewrite(path: Path, records: np.ndarray, *, batch_id: int | None = None,
            terminal: bytes | None = None) -> Path:
    """A well-formed batch file holding ``records`` (CRCs, sums and file CRC recomputed),
    with the batch id of the file at ``path`` unless ``batch_id`` is given."""
    records = with_crcs(records)
    data = path.read_bytes() if path.exists() else b""
    header_terminal = terminal or bytes(records["terminal_id"][0])
    number = batch_id if batch_id is not None else int.from_bytes(data[14:18], "big")
    path.write_bytes(_batch_bytes(header_terminal, number, REWRITTEN_AT, records))
    return path


def dump(ledger: Path, *, sources: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """A ledger's contents, without the time batches were settled at (and without the
    batch files' names when ``sources`` is false)."""
    source = "source, " if sources else ""
    with closing(sqlite3.connect(ledger)) as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("rejects", "lines", "usage")} | {
            "batches": sorted(db.execute(
                f"SELECT terminal_id, batch_id, digest, {source}records, accepted, list_total, "
                "charged_total, settled FROM batches").fetchall())}
