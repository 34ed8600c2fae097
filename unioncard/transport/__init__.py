"""The edge between unioncard and cards: transports, T=0 case handling, pcscd and vpcd.

- `base`: the `Transport` and `VirtualCard` protocols, the ``on_apdu`` observer
  hook every transport carries, and `Channel` (``61xx``/``6Cxx`` handling);
- `inprocess`: `InProcessTransport`, a card object in this process;
- `pcsc`: `PcscTransport`, a card in a PC/SC reader (pyscard, imported on use);
- `pcscd`: `PcscdDaemon`, a private pcscd with the vpcd driver;
- `vpcd`: `VpcdBridge`, card objects served to pcscd as cards in virtual readers.

The terminal engine and ``unioncard sim serve`` both stand on this package; it
knows neither of them.
"""

from unioncard.transport.base import ApduObserver, Channel, Observed, Transport, VirtualCard
from unioncard.transport.inprocess import InProcessTransport

__all__ = [
    "ApduObserver",
    "Channel",
    "InProcessTransport",
    "Observed",
    "Transport",
    "VirtualCard",
]
