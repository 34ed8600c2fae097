"""The terminal engine: sans-IO transaction sessions, their driver, the journal (docs/terminal.md).

Sessions (bus and metro fares, ETC entry and exit, loads, card reads) yield
the APDUs to send and are fed the answers; `run` drives one over any
transport (`unioncard.transport`), the load host and the journal.  The engine
relies on PROTOCOL.md only, so it works with any card that follows it.
"""

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
