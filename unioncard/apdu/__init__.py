"""The APDU layer: command/response APDUs, status words, BER-TLV, DOLs, the tag
dictionary, trace files and the fast bulk indexer (ISO 7816-4, EMV Book 3).

The bulk indexer (`index_buffer`, `iter_index`) is imported on first use, so
that code which never indexes a trace does not load numba; so are the tag
dictionary and DOLs (`tags`, `dol`: the dictionary is a table read at import),
which a terminal paying a fare never needs.
"""

from typing import Any

from unioncard.apdu import tlv
from unioncard.apdu.apdu import CommandAPDU, ResponseAPDU
from unioncard.apdu.instructions import INS, command_name
from unioncard.apdu.status import SW, describe
from unioncard.apdu.trace import Device, Direction, TraceRecord, open_writer, read_records
from unioncard.errors import DecodeError

__all__ = [
    "INS",
    "SW",
    "CommandAPDU",
    "DecodeError",
    "Device",
    "Direction",
    "ResponseAPDU",
    "TraceRecord",
    "command_name",
    "describe",
    "dol",
    "index_buffer",
    "iter_index",
    "open_writer",
    "read_records",
    "tags",
    "tlv",
]

_LAZY = {"index_buffer", "iter_index"}
_LAZY_MODULES = {"dol", "tags"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module("unioncard.apdu.indexer"), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"unioncard.apdu.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
