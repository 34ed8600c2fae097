"""Non-volatile memory of a simulated card: cells, a write-ahead journal, tear points.

A real card never updates a balance in place and hopes for the best: it writes
the new values into a transaction buffer in EEPROM, sets a commit flag with one
atomic write, copies the values to their home cells, and clears the buffer.  At
power-up it looks at the buffer: committed → copy again (idempotent); not
committed → throw the buffer away.  `Nvm` models exactly that, one physical
write at a time:

=========  =====================================================================
phase      physical write
=========  =====================================================================
journal    one new value appended to the journal (one per named step)
commit     the journal's commit flag set (the single atomic write that decides)
apply      one journaled value copied to its home cell
clear      the journal emptied (end of the transaction, or discard at recovery)
=========  =====================================================================

Each write carries the name of its step (`Step`, e.g. ``purse.balance``) and the
address of its cell.  A `FaultInjector` sees every physical write and can cut the
power just before or just after any of them; the write then raises `PowerLoss`
and the card is off.  Whatever the cut, `Nvm.recover` at the next power-up leaves
every transaction applied completely or not at all.

>>> nvm = Nvm()
>>> nvm.write(Step.PURSE_BALANCE, "3F00/1002:balance", b"\\x00\\x00\\x03\\xe8")
>>> nvm.faults.cut_before(Step.COMMIT)
>>> try:
...     nvm.commit()
... except PowerLoss as loss:
...     print(loss.point.step, loss.when)
nvm.commit before
>>> nvm.recover().discarded, nvm.get("3F00/1002:balance")
(1, None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from unioncard.errors import DecodeError, TransportError

__all__ = [
    "FaultInjector",
    "JournalEntry",
    "Nvm",
    "Phase",
    "PowerLoss",
    "Recovery",
    "Step",
    "WritePoint",
]


class Phase(StrEnum):
    """Which physical write of a transaction a `WritePoint` is."""

    JOURNAL = "journal"
    COMMIT = "commit"
    APPLY = "apply"
    CLEAR = "clear"


class Step(StrEnum):
    """Named NVM write steps.  The names are stable: tests and tools refer to them."""

    PURSE_BALANCE = "purse.balance"
    PURSE_ONLINE_SEQ = "purse.online_seq"
    PURSE_OFFLINE_SEQ = "purse.offline_seq"
    PURSE_LOG = "purse.log"
    PURSE_LOG_POINTER = "purse.log_pointer"
    PURSE_PROOF = "purse.proof"
    PURSE_MAC_ERRORS = "purse.mac_errors"
    APP_STATE = "app.state"
    CAPP_RECORD = "etc.capp_record"
    PIN_TRIES = "os.pin_tries"
    FILE_UPDATE = "os.file_update"
    PSAM_TERMINAL_SEQ = "psam.terminal_seq"
    EMV_ATC = "emv.atc"
    EMV_STATE = "emv.state"
    EMV_PIN_TRIES = "emv.pin_tries"
    EMV_EC_BALANCE = "emv.ec_balance"
    EMV_EC_LIMITS = "emv.ec_limits"
    EMV_LOG = "emv.log"
    EMV_LOG_POINTER = "emv.log_pointer"
    COMMIT = "nvm.commit"
    CLEAR = "nvm.clear"


@dataclass(frozen=True, slots=True)
class WritePoint:
    """One physical NVM write: its step, phase and cell (empty for commit/clear)."""

    step: str
    phase: Phase
    address: str = ""

    def __str__(self) -> str:
        return f"{self.step}/{self.phase}" + (f"@{self.address}" if self.address else "")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A value waiting in the write-ahead journal for its home cell."""

    step: str
    address: str
    value: bytes


class PowerLoss(TransportError):
    """The card lost power in the middle of a command: no response will come.

    Raised out of `SimulatedCard.transmit` when a `FaultInjector` cut fires.  The
    card is then off; `power_on` recovers its NVM.  It is a `TransportError`, so a
    terminal sees what a real reader reports when the card is pulled mid-command.
    """

    def __init__(self, point: WritePoint, when: str) -> None:
        super().__init__(f"power lost {when} NVM write {point}")
        self.point = point
        self.when = when


@dataclass(slots=True)
class _Cut:
    when: str  # "before" | "after"
    step: str | None
    phase: Phase | None
    occurrence: int
    address: str | None = None
    seen: int = 0

    def matches(self, point: WritePoint) -> bool:
        return (
            (self.step is None or point.step == self.step)
            and (self.phase is None or point.phase == self.phase)
            and (self.address is None or point.address == self.address)
        )


class FaultInjector:
    """Cuts the power at chosen NVM writes, and records every write it sees.

    ``cut_before(step)`` fires before the first physical write of that step (its
    journal entry, unless ``phase`` says otherwise); ``cut_after`` just after it;
    ``occurrence`` picks a later one.  ``cut_at_write(n)`` fires at the n-th
    physical write from now, whatever it is.  A cut fires once.  ``trace`` lists
    every physical write since the last `start_trace`, which is how a test
    enumerates the tear points of a flow.
    """

    def __init__(self) -> None:
        self._cuts: list[_Cut] = []
        self._writes = 0
        self._target: tuple[int, str] | None = None
        self.trace: list[WritePoint] = []
        self.fired: PowerLoss | None = None

    @property
    def armed(self) -> bool:
        return bool(self._cuts) or self._target is not None

    def cut_before(
        self, step: str, *, phase: Phase | str | None = None, occurrence: int = 1,
        address: str | None = None,
    ) -> None:
        """Cut the power just before the ``occurrence``-th write of ``step``."""
        self._arm("before", step, phase, occurrence, address)

    def cut_after(
        self, step: str, *, phase: Phase | str | None = None, occurrence: int = 1,
        address: str | None = None,
    ) -> None:
        """Cut the power just after the ``occurrence``-th write of ``step``."""
        self._arm("after", step, phase, occurrence, address)

    def cut_at_write(self, n: int, *, after: bool = False) -> None:
        """Cut the power before (or after) the n-th physical write from now (1-based)."""
        if n < 1:
            raise ValueError(f"write number must be 1 or more, got {n}")
        self._target = (self._writes + n, "after" if after else "before")

    def disarm(self) -> None:
        """Forget every pending cut."""
        self._cuts.clear()
        self._target = None

    def start_trace(self) -> None:
        """Start a new `trace` of physical writes."""
        self.trace = []

    def _arm(self, when: str, step: str, phase: Phase | str | None, occurrence: int,
             address: str | None) -> None:
        if occurrence < 1:
            raise ValueError(f"occurrence must be 1 or more, got {occurrence}")
        self._cuts.append(_Cut(when, str(step), Phase(phase) if phase else None, occurrence,
                               address))

    def _fire(self, point: WritePoint, when: str) -> None:
        loss = PowerLoss(point, when)
        self.fired = loss
        raise loss

    def before_write(self, point: WritePoint) -> None:
        """Called by `Nvm` before each physical write."""
        self._writes += 1
        self.trace.append(point)
        if self._target == (self._writes, "before"):
            self._target = None
            self._fire(point, "before")
        for cut in list(self._cuts):
            if cut.matches(point):
                cut.seen += 1
                if cut.seen == cut.occurrence and cut.when == "before":
                    self._cuts.remove(cut)
                    self._fire(point, "before")

    def after_write(self, point: WritePoint) -> None:
        """Called by `Nvm` after each physical write."""
        if self._target == (self._writes, "after"):
            self._target = None
            self._fire(point, "after")
        for cut in list(self._cuts):
            if cut.when == "after" and cut.seen == cut.occurrence and cut.matches(point):
                self._cuts.remove(cut)
                self._fire(point, "after")


@dataclass(frozen=True, slots=True)
class Recovery:
    """What power-up found in the journal: entries replayed or discarded."""

    replayed: int = 0
    discarded: int = 0


class Nvm:
    """Cells of bytes, a write-ahead journal with a commit flag, and the fault hook.

    Writes go through `write` (journal) and `commit`; `read` sees the values of
    the transaction in progress.  ``on_commit`` is called after each completed
    commit: the card's durability hook (write-through to a card image).
    """

    def __init__(
        self,
        cells: Mapping[str, bytes] | None = None,
        journal: Iterable[JournalEntry] = (),
        committed: bool = False,
        faults: FaultInjector | None = None,
    ) -> None:
        self.cells: dict[str, bytes] = dict(cells or {})
        self.journal: list[JournalEntry] = list(journal)
        self.committed = committed
        self.faults = faults or FaultInjector()
        self.on_commit: Callable[[], None] | None = None
        self._active = False  # RAM: a transaction of the running command is open
        self.writes = 0  # physical writes performed (wear counter, for tests and stats)

    # --- reading ---------------------------------------------------------------------

    def get(self, address: str, default: bytes | None = None) -> bytes | None:
        """The current value of a cell, including this transaction's journaled writes."""
        if self._active or self.committed:
            for entry in reversed(self.journal):
                if entry.address == address:
                    return entry.value
        return self.cells.get(address, default)

    def read(self, address: str) -> bytes:
        """Like `get`, for a cell that must exist."""
        value = self.get(address)
        if value is None:
            raise KeyError(f"NVM cell {address!r} was never written")
        return value

    @property
    def pending(self) -> bool:
        """True while a transaction has journaled writes not yet committed."""
        return self._active and bool(self.journal)

    # --- physical writes -------------------------------------------------------------

    def _physical(self, point: WritePoint, action: Callable[[], None]) -> None:
        self.faults.before_write(point)
        action()
        self.writes += 1
        self.faults.after_write(point)

    def write(self, step: str, address: str, value: bytes) -> None:
        """Journal a new value for ``address`` (one physical write, named ``step``)."""
        if self.committed:
            raise RuntimeError("cannot write while a committed journal awaits recovery")
        entry = JournalEntry(str(step), address, bytes(value))
        self._active = True
        self._physical(WritePoint(entry.step, Phase.JOURNAL, address),
                       lambda: self.journal.append(entry))

    def commit(self) -> None:
        """Commit the open transaction: flag, apply each value, clear; then ``on_commit``."""
        if not self.journal or not self._active:
            self._active = False
            return

        def set_flag() -> None:
            self.committed = True

        self._physical(WritePoint(Step.COMMIT, Phase.COMMIT), set_flag)
        self._apply()
        self._active = False
        if self.on_commit is not None:
            self.on_commit()

    def abort(self) -> None:
        """Discard the open transaction's journal (one physical write if there is one)."""
        if self._active and self.journal and not self.committed:
            self._physical(WritePoint(Step.CLEAR, Phase.CLEAR), self.journal.clear)
        self._active = False

    def _apply(self) -> None:
        for entry in list(self.journal):
            def put(entry: JournalEntry = entry) -> None:
                self.cells[entry.address] = entry.value

            self._physical(WritePoint(entry.step, Phase.APPLY, entry.address), put)

        def clear() -> None:
            self.journal.clear()
            self.committed = False

        self._physical(WritePoint(Step.CLEAR, Phase.CLEAR), clear)

    def power_lost(self) -> None:
        """RAM is gone: the open transaction (if any) is no longer running."""
        self._active = False

    def recover(self) -> Recovery:
        """Power-up: finish a committed journal, discard an uncommitted one."""
        self._active = False
        if not self.journal:
            if self.committed:
                self.committed = False
            return Recovery()
        count = len(self.journal)
        if self.committed:
            self._apply()
            return Recovery(replayed=count)
        self._physical(WritePoint(Step.CLEAR, Phase.CLEAR), self.journal.clear)
        return Recovery(discarded=count)

    def format(self, address: str, value: bytes) -> None:
        """Personalization: set a cell directly, outside any transaction (no tear point)."""
        if self._active or self.journal:
            raise RuntimeError("personalization writes need an empty journal")
        self.cells[address] = bytes(value)

    # --- image form --------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The persistent state (cells, journal, commit flag); RAM is not part of it."""
        return {
            "cells": {a: self.cells[a].hex().upper() for a in sorted(self.cells)},
            "journal": {
                "committed": self.committed,
                "entries": [
                    {"step": e.step, "address": e.address, "value": e.value.hex().upper()}
                    for e in self.journal
                ],
            },
        }

    @classmethod
    def from_json(cls, doc: Any, faults: FaultInjector | None = None) -> Nvm:
        """Rebuild from `to_json` output; malformed input raises `DecodeError`."""
        try:
            cells = {str(a): bytes.fromhex(v) for a, v in doc["cells"].items()}
            journal = doc["journal"]
            entries = [
                JournalEntry(str(e["step"]), str(e["address"]), bytes.fromhex(e["value"]))
                for e in journal["entries"]
            ]
            committed = journal["committed"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError(f"malformed NVM section of a card image: {exc!r}") from None
        if not isinstance(committed, bool):
            raise DecodeError("NVM journal 'committed' must be true or false")
        return cls(cells, entries, committed, faults)
