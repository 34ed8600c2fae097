"""The edge between unioncard and cards: transports, T=0 case handling, pcscd and vpcd.

- `base`: the `Transport` and `VirtualCard` protocols, the ``on_apdu`` observer
  hook every transport carries, and `Channel` (``61xx``/``6Cxx`` handling);
- `inprocess`: `InProcessTransport`, a card object in this process;
- `pcsc`: `PcscTransport`, a card in a PC/SC reader (pyscard, imported on use);
- `pcscd`: `PcscdDaemon`, a private pcscd with the vpcd driver;
- `vpcd`: `VpcdBridge`, card objects served to pcscd as cards in virtual readers;
- `recording`: `TraceRecorder`, every exchange of a card and a PSAM to a trace file;
- `replay`: `Replay`, a recorded trace played back as the card and the PSAM.

`TraceRecorder`, `Replay` and `ReplayMismatch` are importable from here and
loaded on first use.  The terminal engine and ``unioncard sim serve`` both
stand on this package; it knows neither of them.
"""

from typing import Any

from unioncard.transport.base import ApduObserver, Channel, Observed, Transport, VirtualCard
from unioncard.transport.inprocess import InProcessTransport

__all__ = [
    "ApduObserver",
    "Channel",
    "InProcessTransport",
    "Observed",
    "Replay",
    "ReplayMismatch",
    "TraceRecorder",
    "Transport",
    "VirtualCard",
]

_LAZY = {
    "TraceRecorder": "unioncard.transport.recording",
    "Replay": "unioncard.transport.replay",
    "ReplayMismatch": "unioncard.transport.replay",
}


def __getattr__(name: str) -> Any:
    import importlib

    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
