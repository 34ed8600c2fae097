"""The terminal engine: sans-IO transaction sessions, their driver, the journal (docs/terminal.md).

Sessions (bus and metro fares, ETC entry and exit, POS sales, loads, card reads) yield
the APDUs to send and are fed the answers; `run` drives one over any
transport (`unioncard.transport`), the load host and the journal.  The engine
relies on docs/protocol.md only, so it works with any card that follows it.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unioncard.terminal.driver import run
    from unioncard.terminal.etc import EtcEntry, EtcExit
    from unioncard.terminal.journal import TransactionJournal, default_journal_path
    from unioncard.terminal.load import Load
    from unioncard.terminal.load_host import (
        KeystoreLoadHost,
        LoadAuthorization,
        LoadHost,
        LoadRequest,
    )
    from unioncard.terminal.pos import PosPurchase
    from unioncard.terminal.purchase import DEFAULT_RECOVERY_WINDOW, TransitPurchase
    from unioncard.terminal.read import CardRead
    from unioncard.terminal.session import (
        Authorize,
        Decision,
        Device,
        Journal,
        JournalReceipt,
        Outcome,
        PendingTransaction,
        Resolution,
        Send,
        Session,
    )
    from unioncard.terminal.tolls import TollTable, load_toll_table, parse_toll_table

_WHERE = {
    "run": "driver", "EtcEntry": "etc", "EtcExit": "etc", "TransactionJournal": "journal",
    "default_journal_path": "journal", "Load": "load", "KeystoreLoadHost": "load_host",
    "LoadAuthorization": "load_host", "LoadHost": "load_host", "LoadRequest": "load_host",
    "PosPurchase": "pos", "DEFAULT_RECOVERY_WINDOW": "purchase", "TransitPurchase": "purchase",
    "CardRead": "read",
    "Authorize": "session", "Decision": "session", "Device": "session", "Journal": "session",
    "JournalReceipt": "session", "Outcome": "session", "PendingTransaction": "session",
    "Resolution": "session", "Send": "session", "Session": "session", "TollTable": "tolls",
    "load_toll_table": "tolls", "parse_toll_table": "tolls",
}
"""Where each public name lives: a module is imported when one of its names is first used,
so a bus validator never loads the ETC, load or card-read flows (start-up time)."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"unioncard.terminal.{module}"), name)


__all__ = [
    "DEFAULT_RECOVERY_WINDOW",
    "Authorize",
    "CardRead",
    "Decision",
    "Device",
    "EtcEntry",
    "EtcExit",
    "Journal",
    "JournalReceipt",
    "KeystoreLoadHost",
    "Load",
    "LoadAuthorization",
    "LoadHost",
    "LoadRequest",
    "Outcome",
    "PendingTransaction",
    "PosPurchase",
    "Resolution",
    "Send",
    "Session",
    "TollTable",
    "TransactionJournal",
    "TransitPurchase",
    "default_journal_path",
    "load_toll_table",
    "parse_toll_table",
    "run",
]
