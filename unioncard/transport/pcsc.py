"""A card in a PC/SC reader, through pcscd (pyscard's ``smartcard.scard``).

`PcscTransport` implements `unioncard.transport.base.Transport` (power on
returning the ATR, transmit bytes, power off) and nothing more: ``61xx``/``6Cxx``
handling is `Channel`'s job, for every transport alike.  It uses PC/SC Part 5
(SCardConnect, SCardTransmit, SCardDisconnect); pyscard's lists of ints stay
inside this module: callers see ``bytes``, and pyscard's result codes become
`TransportError` with a message that names the reader.  A card pulled from the
reader is reported as such (``the card was removed from reader ...``).  A
command shorter than 4 bytes is refused with `CommandError`, unsent.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from unioncard.errors import TransportError
from unioncard.transport.base import MIN_COMMAND_LENGTH, ApduObserver, Observed, short_command

__all__ = ["PcscTransport", "is_virtual_reader", "list_readers"]

VIRTUAL_READER_PREFIX = "Virtual PCD"
"""Readers of Debian's vsmartcard-vpcd driver are named ``Virtual PCD 00 0n``."""

_PROTOCOL_NAMES = {"T0": "T0", "T=0": "T0", "T1": "T1", "T=1": "T1", "ANY": "any"}


def is_virtual_reader(name: str) -> bool:
    """True for a vpcd reader (a simulated card), False for a physical reader."""
    return name.startswith(VIRTUAL_READER_PREFIX)


def _scard() -> Any:
    """pyscard's low-level module, imported on first use (it loads libpcsclite)."""
    try:
        from smartcard import scard
    except ImportError as exc:  # pragma: no cover - pyscard is a dependency
        raise TransportError(f"pyscard is not usable: {exc}") from exc
    return scard


def _code(hresult: int) -> int:
    return hresult & 0xFFFFFFFF


def _message(hresult: int) -> str:
    sc = _scard()
    return f"{sc.SCardGetErrorMessage(hresult).rstrip('.')} (0x{_code(hresult):08X})"


def _no_service_hint() -> str:
    socket = os.environ.get("PCSCLITE_CSOCK_NAME")
    where = f"socket {socket} from PCSCLITE_CSOCK_NAME" if socket else "the system socket"
    return f"pcscd is not running or not reachable ({where})"


class _Context:
    """One PC/SC context, re-established after pcscd went away and came back."""

    def __init__(self) -> None:
        self.handle: Any = None

    def get(self) -> Any:
        sc = _scard()
        if self.handle is not None and _code(sc.SCardIsValidContext(self.handle)) == 0:
            return self.handle
        self.release()
        hresult, handle = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
        if _code(hresult) != 0:
            raise self.unreachable(hresult)
        self.handle = handle
        return handle

    def unreachable(self, hresult: int) -> TransportError:
        """pcscd is not there: drop the context (the next call makes a new one) and say so."""
        self.release()
        return TransportError(f"{_no_service_hint()}: {_message(hresult)}")

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(context, *args)``, once more on a fresh context if pcscd restarted."""
        sc = _scard()
        result = function(self.get(), *args)
        hresult = result[0] if isinstance(result, (tuple, list)) else result
        if _code(hresult) in (_code(sc.SCARD_E_NO_SERVICE), _code(sc.SCARD_E_SERVICE_STOPPED),
                              _code(sc.SCARD_E_INVALID_HANDLE)):
            self.release()
            result = function(self.get(), *args)
        return result

    def readers(self) -> list[str]:
        sc = _scard()
        hresult, readers = self.call(sc.SCardListReaders, [])
        code = _code(hresult)
        if code == _code(sc.SCARD_E_NO_READERS_AVAILABLE):
            return []
        if code in (_code(sc.SCARD_E_NO_SERVICE), _code(sc.SCARD_E_SERVICE_STOPPED)):
            raise self.unreachable(hresult)
        if code != 0:
            raise TransportError(f"cannot list PC/SC readers: {_message(hresult)}")
        return list(readers)

    def release(self) -> None:
        if self.handle is not None:
            _scard().SCardReleaseContext(self.handle)
            self.handle = None


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd knows, in its order; [] when there are none."""
    context = _Context()
    try:
        return context.readers()
    finally:
        context.release()


class PcscTransport(Observed):
    """A card in a PC/SC reader: power on = connect, power off = disconnect (unpower).

    ``reader`` is a reader name, an index into `list_readers()`, or None for
    the first reader.  ``protocol`` is ``"T0"``, ``"T1"`` or ``"any"`` (let
    pcscd choose from the ATR).  The connection is shared, so other PC/SC
    programs may use the same card at the same time.
    """

    def __init__(self, reader: str | int | None = None, *, protocol: str = "any",
                 on_apdu: ApduObserver | None = None) -> None:
        key = protocol.upper()
        if key not in _PROTOCOL_NAMES:
            raise ValueError(f"protocol must be T0, T1 or any, got {protocol!r}")
        self._reader = reader
        self.on_apdu = on_apdu
        self.protocol = _PROTOCOL_NAMES[key]
        self._context = _Context()
        self._card: Any = None
        self._pci: Any = None
        self.active_protocol: str | None = None
        """``"T=0"`` or ``"T=1"`` while connected, else None."""
        self.atr: bytes | None = None
        """The ATR read at the last power on or reset."""

    # -- reader selection -------------------------------------------------

    @property
    def reader_name(self) -> str:
        """The reader's PC/SC name (resolved from an index when needed)."""
        if isinstance(self._reader, str):
            return self._reader
        readers = self._context.readers()
        index = 0 if self._reader is None else self._reader
        if not readers:
            raise TransportError("no PC/SC reader is attached")
        if not 0 <= index < len(readers):
            raise TransportError(
                f"no reader number {index}; readers: {', '.join(readers)} "
                f"(numbered from 0)"
            )
        self._reader = readers[index]
        return self._reader

    def _unknown_reader(self, name: str) -> TransportError:
        readers = self._context.readers()
        listed = ", ".join(readers) if readers else "none"
        return TransportError(f"no reader named {name!r}; readers: {listed}")

    # -- Transport --------------------------------------------------------

    def power_on(self) -> bytes:
        """Connect to the card (pcscd powers it up) and return its ATR."""
        sc = _scard()
        if self._card is not None:
            self.power_off()
        name = self.reader_name
        wanted = {
            "T0": sc.SCARD_PROTOCOL_T0,
            "T1": sc.SCARD_PROTOCOL_T1,
            "any": sc.SCARD_PROTOCOL_T0 | sc.SCARD_PROTOCOL_T1,
        }[self.protocol]
        hresult, card, active = self._context.call(
            sc.SCardConnect, name, sc.SCARD_SHARE_SHARED, wanted
        )
        if _code(hresult) != 0:
            raise self._error(hresult, "connect to")
        self._card = card
        self._set_protocol(active)
        return self._read_atr()

    def reset(self) -> bytes:
        """Warm reset through pcscd (SCardReconnect with SCARD_RESET_CARD); returns the ATR."""
        sc = _scard()
        if self._card is None:
            return self.power_on()
        hresult, active = sc.SCardReconnect(
            self._card, sc.SCARD_SHARE_SHARED, self._wanted_after_connect(), sc.SCARD_RESET_CARD
        )
        if _code(hresult) != 0:
            raise self._lost(hresult, "reset the card in")
        self._set_protocol(active)
        return self._read_atr()

    def transmit(self, command: bytes) -> bytes:
        """Send one command APDU; return the response APDU (data + SW).

        A command shorter than its 4-byte header raises `CommandError` and is not
        sent: vpcd would take a 1-byte one for a control code (docs/pcsc.md).
        """
        sc = _scard()
        command = bytes(command)
        if len(command) < MIN_COMMAND_LENGTH:
            raise short_command(command)
        if self._card is None:
            raise TransportError(f"card in reader {self._describe()} is not powered on")
        hresult, response = sc.SCardTransmit(self._card, self._pci, list(command))
        if hresult or len(response) < 2:  # a result code is 0 exactly when _code() is
            self._observe(command, None)
            # vpcd reports a card that vanished mid-command as an empty answer.
            code = hresult if hresult else sc.SCARD_E_NOT_TRANSACTED
            raise self._lost(code, "exchange an APDU with")
        answer = bytes(response)
        self._observe(command, answer)
        return answer

    def power_off(self) -> None:
        """Disconnect and ask pcscd to remove power from the card."""
        self._disconnect(_scard().SCARD_UNPOWER_CARD)

    # -- exclusive use ------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the card for this program alone (SCardBeginTransaction) for the block.

        The connection is shared, so without it another PC/SC program could send
        its own command between a terminal's INITIALIZE and DEBIT, or between a
        PSAM's ``80 70`` and ``80 72``.  Others wait until the block ends.
        """
        sc = _scard()
        if self._card is None:
            raise TransportError(f"card in reader {self._describe()} is not powered on")
        hresult = sc.SCardBeginTransaction(self._card)
        if _code(hresult) != 0:
            raise self._lost(hresult, "take exclusive use of")
        try:
            yield
        finally:
            if self._card is not None:  # a card lost meanwhile has no transaction to end
                sc.SCardEndTransaction(self._card, sc.SCARD_LEAVE_CARD)

    # -- waiting for a card -------------------------------------------------

    def wait_for_card(self, timeout: float = 5.0, *, present: bool = True) -> None:
        """Block until a card is in the reader (or, with present=False, none is)."""
        sc = _scard()
        name = self.reader_name
        deadline = time.monotonic() + timeout
        state = sc.SCARD_STATE_UNAWARE
        want = sc.SCARD_STATE_PRESENT if present else sc.SCARD_STATE_EMPTY
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            hresult, states = self._context.call(
                sc.SCardGetStatusChange, int(remaining * 1000), [(name, state)]
            )
            code = _code(hresult)
            if code == _code(sc.SCARD_E_UNKNOWN_READER):
                raise self._unknown_reader(name)
            if code not in (0, _code(sc.SCARD_E_TIMEOUT)):
                raise TransportError(f"cannot watch reader {name!r}: {_message(hresult)}")
            if code == 0:
                state = states[0][1] & ~sc.SCARD_STATE_CHANGED
                if state & want and not (present and state & sc.SCARD_STATE_MUTE):
                    return
            if code != 0 or remaining == 0:
                what = "a card" if present else "the card to leave"
                raise TransportError(
                    f"timed out after {timeout:g} s waiting for {what} in reader {name!r}"
                )

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Power the card off and release the PC/SC context."""
        try:
            self.power_off()
        finally:
            self._context.release()

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"connected {self.active_protocol}" if self._card is not None else "off"
        return f"PcscTransport({self._reader!r}, protocol={self.protocol!r}, {state})"

    # -- helpers ------------------------------------------------------------

    def _describe(self) -> str:
        return repr(self._reader) if isinstance(self._reader, str) else f"#{self._reader}"

    def _disconnect(self, disposition: int) -> None:
        """Drop the card handle and its protocol; ``disposition`` tells pcscd what to do
        with the card (SCARD_UNPOWER_CARD, SCARD_LEAVE_CARD)."""
        card, self._card = self._card, None
        self._pci = self.active_protocol = None
        if card is not None:
            _scard().SCardDisconnect(card, disposition)

    def _set_protocol(self, active: int) -> None:
        sc = _scard()
        if active == sc.SCARD_PROTOCOL_T0:
            self._pci, self.active_protocol = sc.SCARD_PCI_T0, "T=0"
        else:
            self._pci, self.active_protocol = sc.SCARD_PCI_T1, "T=1"

    def _wanted_after_connect(self) -> int:
        sc = _scard()
        return int(sc.SCARD_PROTOCOL_T0 if self.active_protocol == "T=0" else sc.SCARD_PROTOCOL_T1)

    def _read_atr(self) -> bytes:
        sc = _scard()
        hresult, _reader, _state, _protocol, atr = sc.SCardStatus(self._card)
        if _code(hresult) != 0:
            raise self._lost(hresult, "read the ATR in")
        self.atr = bytes(atr)
        return self.atr

    def _error(self, hresult: int, action: str) -> TransportError:
        """Map a failed SCardConnect to a message a user can act on."""
        sc = _scard()
        code = _code(hresult)
        name = self._describe()
        if code in (_code(sc.SCARD_E_UNKNOWN_READER), _code(sc.SCARD_E_READER_UNAVAILABLE)):
            return self._unknown_reader(str(self._reader))
        if code in (_code(sc.SCARD_E_NO_SMARTCARD), _code(sc.SCARD_W_REMOVED_CARD)):
            return TransportError(f"no card in reader {name}")
        if code == _code(sc.SCARD_W_UNRESPONSIVE_CARD):
            return TransportError(f"the card in reader {name} does not answer to reset")
        if code == _code(sc.SCARD_E_PROTO_MISMATCH):
            return TransportError(
                f"the card in reader {name} does not offer protocol {self.protocol} in its ATR"
            )
        if code == _code(sc.SCARD_E_SHARING_VIOLATION):
            return TransportError(f"reader {name} is in exclusive use by another program")
        if code in (_code(sc.SCARD_E_NO_SERVICE), _code(sc.SCARD_E_SERVICE_STOPPED)):
            return self._context.unreachable(hresult)
        return TransportError(f"cannot {action} reader {name}: {_message(hresult)}")

    def _lost(self, hresult: int, action: str) -> TransportError:
        """A failure on a live connection: the handle is dead, power on again to recover."""
        sc = _scard()
        code = _code(hresult)
        self._disconnect(sc.SCARD_LEAVE_CARD)
        name = self._describe()
        if code == _code(sc.SCARD_W_REMOVED_CARD):
            return TransportError(f"the card was removed from reader {name}")
        if code == _code(sc.SCARD_W_RESET_CARD):
            return TransportError(f"the card in reader {name} was reset by another program")
        if code in (_code(sc.SCARD_E_NOT_TRANSACTED), _code(sc.SCARD_F_COMM_ERROR)):
            return TransportError(
                f"the card in reader {name} did not answer (removed, or it lost power)"
            )
        if code in (_code(sc.SCARD_E_NO_SERVICE), _code(sc.SCARD_E_SERVICE_STOPPED),
                    _code(sc.SCARD_E_INVALID_HANDLE)):
            self._context.release()
            return TransportError(f"lost pcscd while talking to reader {name}: "
                                  f"{_message(hresult)}")
        return TransportError(f"cannot {action} reader {name}: {_message(hresult)}")
