"""Offline records and batch files: what a terminal hands to settlement (docs/records.md).

Every completed purchase or load becomes a 256-byte `OfflineRecord` (CRC-32
protected, format version 1), every approved EMV card sale a 256-byte `EmvRecord`
(`decode_record` reads either); terminals export them in batch files (header,
records, trailer with count, sums and a file CRC) that settlement and third
parties read with `read_batch`.  A damaged file is refused whole, never half
applied.  Importing this package loads `construct` but not the tariff engine::

    from unioncard.offline import read_batch
    batch = read_batch("310100001234-00000042.ucb")
    for record in batch.records:
        print(record.to_dict())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unioncard.offline.emv_record import (
    EMV_RECORD,
    EMV_RECORD_LAYOUT,
    EMV_RECORD_VERSION,
    EmvPath,
    EmvRecord,
)
from unioncard.offline.record import (
    OFFLINE_RECORD,
    RECORD_LAYOUT,
    RECORD_SIZE,
    RECORD_VERSION,
    Application,
    OfflineRecord,
    RecordFlags,
    TransactionType,
    decode_record,
)

if TYPE_CHECKING:
    from unioncard.offline.batch import (
        BATCH_FORMAT_VERSION,
        BATCH_HEADER,
        BATCH_TRAILER,
        HEADER_SIZE,
        TRAILER_SIZE,
        Batch,
        batch_file_name,
        encode_batch,
        read_batch,
        write_batch,
    )
    from unioncard.offline.hotlist import Hotlist, HotlistError

_BATCH = frozenset({"BATCH_FORMAT_VERSION", "BATCH_HEADER", "BATCH_TRAILER", "HEADER_SIZE",
                    "TRAILER_SIZE", "Batch", "batch_file_name", "encode_batch", "read_batch",
                    "write_batch"})
_HOTLIST = frozenset({"Hotlist", "HotlistError"})


def __getattr__(name: str) -> Any:
    """The batch file names are imported on first use: a terminal paying a fare builds
    records and needs no batch file (start-up time); the hotlist likewise
    (docs/hotlist.md)."""
    if name in _BATCH:
        from unioncard.offline import batch

        return getattr(batch, name)
    if name in _HOTLIST:
        from unioncard.offline import hotlist

        return getattr(hotlist, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BATCH_FORMAT_VERSION",
    "BATCH_HEADER",
    "BATCH_TRAILER",
    "EMV_RECORD",
    "EMV_RECORD_LAYOUT",
    "EMV_RECORD_VERSION",
    "HEADER_SIZE",
    "OFFLINE_RECORD",
    "RECORD_LAYOUT",
    "RECORD_SIZE",
    "RECORD_VERSION",
    "TRAILER_SIZE",
    "Application",
    "Batch",
    "EmvPath",
    "EmvRecord",
    "Hotlist",
    "HotlistError",
    "OfflineRecord",
    "RecordFlags",
    "TransactionType",
    "batch_file_name",
    "decode_record",
    "encode_batch",
    "read_batch",
    "write_batch",
]
