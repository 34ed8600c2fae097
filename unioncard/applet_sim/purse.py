"""The electronic purse application (JR/T 0025 EP; docs/protocol.md §1, §2, §4).

One class serves the T-Union transit purse (AID ``A000000632010105``, key
version ``01``) and the ETC purse (DF ``1001``, key version ``02``, with the
CAPP composite file EF ``0019``); they differ by configuration only.

Persistent state, one NVM cell each under ``<DF path>:``: ``balance`` (4),
``online_seq`` (2), ``offline_seq`` (2), ``mac_errors`` (1), ``state`` (1: 00
active, 01 blocked, 02 locked for good) and ``proof`` (the last purchase: seq(2)
type(1) MAC2(4) TAC(4)).  The transaction log is the cyclic EF ``0018``.

A purchase commits, in this order, the cached CAPP records, the balance, the
offline seq, the log record and its pointer, the proof (and a reset MAC error
counter when it was not zero): one NVM transaction, all or nothing.

Command data is parsed, and response data built, with the structs of
`unioncard.apdu.purse`, once its length is checked (``6700`` otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any

from unioncard.apdu import SW, CommandAPDU, records
from unioncard.apdu import purse as ap
from unioncard.apdu.purse import KEY_INDEX, InitKind, PurseP2, TransactionType
from unioncard.applet_sim.base import Application, CardServices, Reply, application_label, sw
from unioncard.applet_sim.files import (
    Node,
    append_cyclic,
    read_record,
    record_count,
    write_record,
)
from unioncard.applet_sim.nvm import Step
from unioncard.crypto import purse as pc
from unioncard.crypto.purse import CardKeys

__all__ = [
    "LOG_RECORD_SIZE",
    "LogRecord",
    "PurseApplication",
    "PurseConfig",
    "PurseState",
]

LOG_RECORD_SIZE = records.STORED_LOG_RECORD.sizeof()
"""EF 0018 record: seq(2) overdraft(3) amount(4) type(1) terminal id(6) date(4) time(3)."""

_SIZE = {layout: layout.sizeof() for layout in (
    ap.INITIALIZE_COMMAND, ap.INIT_LOAD_RESPONSE, ap.INIT_PURCHASE_RESPONSE, ap.DEBIT_COMMAND,
    ap.DEBIT_RESPONSE, ap.CREDIT_FOR_LOAD_COMMAND, ap.CREDIT_FOR_LOAD_RESPONSE,
    ap.BALANCE_RESPONSE, ap.PROVE_COMMAND, ap.PROVE_RESPONSE, ap.MAINTENANCE_COMMAND)}
"""Payload sizes, computed once (construct's ``sizeof`` is not free)."""
_KINDS = {kind.value: kind for kind in InitKind}


def _parse(layout: Any, data: bytes) -> Any:
    """``data`` parsed with ``layout``, or None when its length is not the layout's."""
    return layout.parse(data) if len(data) == _SIZE[layout] else None


class PurseState(IntEnum):
    ACTIVE = 0x00
    BLOCKED = 0x01  # APPLICATION BLOCK (temporary): SELECT 6283, purse commands 6985
    LOCKED = 0x02  # permanently: after too many MAC errors, or APPLICATION BLOCK P2=01


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of the purse's transaction log (EF 0018, `records.STORED_LOG_RECORD`)."""

    seq: int
    overdraft: int
    amount: int
    tx_type: int
    terminal_id: bytes
    date: bytes
    time: bytes

    def to_bytes(self) -> bytes:
        return records.build(records.STORED_LOG_RECORD,
                             **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_bytes(cls, raw: bytes) -> LogRecord:
        """The record of ``raw``; `DecodeError` (a `ValueError`) unless it has 23 bytes."""
        parsed = records.parse(records.STORED_LOG_RECORD, raw)
        return cls(**{f.name: parsed[f.name] for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class PurseConfig:
    """Static configuration of one purse application on a card."""

    profile: str
    keys: CardKeys = field(repr=False)
    label: str = ""
    alg_id: int = 0x00
    app_version: int = 0x02
    max_balance: int = 100_000
    max_mac_errors: int = 3
    overdraft_limit: int = 0
    log_fid: int = 0x0018
    capp_fid: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.max_balance < 1 << 31:
            raise ValueError("max_balance must be 1..2^31-1 fen")
        if not 1 <= self.max_mac_errors <= 15:
            raise ValueError("max_mac_errors must be 1..15")
        if self.overdraft_limit != 0:
            # The profile's purses have no overdraft: the balance field is unsigned.
            raise ValueError("overdraft_limit must be 0 (the profile's purses have no overdraft)")

    @property
    def type(self) -> str:
        return "purse"

    def create(self, card: CardServices, node: Node) -> PurseApplication:
        return PurseApplication(card, node, self)

    def to_json(self) -> dict[str, Any]:
        k = self.keys
        return {
            "type": "purse", "profile": self.profile, "label": self.label,
            "key_version": f"{k.key_version:02X}", "alg_id": f"{self.alg_id:02X}",
            "app_version": f"{self.app_version:02X}",
            "keys": {"purchase": k.purchase.hex().upper(), "load": k.load.hex().upper(),
                     "tac": k.tac.hex().upper(), "maintenance": k.maintenance.hex().upper()},
            "max_balance": self.max_balance, "max_mac_errors": self.max_mac_errors,
            "overdraft_limit": self.overdraft_limit, "log_fid": f"{self.log_fid:04X}",
            "capp_fid": None if self.capp_fid is None else f"{self.capp_fid:04X}",
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PurseConfig:
        keys = doc["keys"]
        card_keys = CardKeys(int(doc["key_version"], 16), bytes.fromhex(keys["purchase"]),
                             bytes.fromhex(keys["load"]), bytes.fromhex(keys["tac"]),
                             bytes.fromhex(keys["maintenance"]))
        for name in ("purchase", "load", "tac", "maintenance"):
            if len(getattr(card_keys, name)) != 16:
                raise ValueError(f"purse {name} key must be 16 bytes")
        return cls(
            profile=str(doc["profile"]), keys=card_keys, label=str(doc.get("label", "")),
            alg_id=int(doc["alg_id"], 16), app_version=int(doc["app_version"], 16),
            max_balance=int(doc["max_balance"]), max_mac_errors=int(doc["max_mac_errors"]),
            overdraft_limit=int(doc["overdraft_limit"]), log_fid=int(doc["log_fid"], 16),
            capp_fid=None if doc.get("capp_fid") is None else int(doc["capp_fid"], 16),
        )


@dataclass(slots=True)
class _Session:
    """What INITIALIZE leaves for DEBIT/CREDIT (RAM)."""

    kind: InitKind
    amount: int
    terminal_id: bytes
    random: bytes
    seq: int
    balance: int
    seslk: bytes = b""
    capp: dict[int, bytes] = field(default_factory=dict)  # record number -> new record


def _u(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


class PurseApplication(Application):
    """ED/EP electronic purse: INITIALIZE, DEBIT, CREDIT, balance, proof, CAPP, maintenance."""

    config: PurseConfig

    def __init__(self, card: CardServices, node: Node, config: PurseConfig) -> None:
        super().__init__(card, node, config)
        self._session: _Session | None = None
        self._handlers = {
            (0x80, 0x50): self._initialize,
            (0x80, 0x52): self._credit_for_load,
            (0x80, 0x54): self._debit_for_purchase,
            (0x80, 0x5C): self._get_balance,
            (0x80, 0x5A): self._get_transaction_prove,
            (0x80, 0xDC): self._update_capp_data_cache,
            (0x84, 0x1E): self._application_block,
            (0x84, 0x18): self._application_unblock,
        }

    # --- state in NVM ----------------------------------------------------------------------

    def personalize(self, **values: Any) -> None:
        """Initial cells: ``balance`` (fen), ``online_seq``, ``offline_seq``."""
        self.nvm.format(self.cell("balance"), int(values.get("balance", 0)).to_bytes(4, "big"))
        self.nvm.format(self.cell("online_seq"),
                        int(values.get("online_seq", 0)).to_bytes(2, "big"))
        self.nvm.format(self.cell("offline_seq"),
                        int(values.get("offline_seq", 0)).to_bytes(2, "big"))
        self.nvm.format(self.cell("mac_errors"), b"\x00")
        self.nvm.format(self.cell("state"), bytes([PurseState.ACTIVE]))
        self.nvm.format(self.cell("proof"), b"")

    @property
    def balance(self) -> int:
        return _u(self.nvm.read(self.cell("balance")))

    @property
    def online_seq(self) -> int:
        return _u(self.nvm.read(self.cell("online_seq")))

    @property
    def offline_seq(self) -> int:
        return _u(self.nvm.read(self.cell("offline_seq")))

    @property
    def mac_errors(self) -> int:
        return self.nvm.read(self.cell("mac_errors"))[0]

    @property
    def state(self) -> PurseState:
        return PurseState(self.nvm.read(self.cell("state"))[0])

    @property
    def proof(self) -> tuple[int, int, bytes, bytes] | None:
        """The last purchase's (seq, type, MAC2, TAC), seq being INITIALIZE's plus one."""
        raw = self.nvm.read(self.cell("proof"))
        if not raw:
            return None
        return _u(raw[0:2]), raw[2], raw[3:7], raw[7:11]

    @property
    def log_file(self) -> Node:
        return self.card.fs.cyclic_child(self.node.path, self.config.log_fid)

    def log(self) -> list[LogRecord]:
        """The transaction log, newest first."""
        node = self.log_file
        count = record_count(self.nvm, node)
        return [LogRecord.from_bytes(read_record(self.nvm, node, n) or b"")
                for n in range(1, count + 1)]

    @property
    def capp_file(self) -> Node | None:
        if self.config.capp_fid is None:
            return None
        return self.card.fs.child_by_fid(self.node.path, self.config.capp_fid)

    # --- application hooks -------------------------------------------------------------------

    def fci_proprietary(self) -> bytes:
        """The label, then 9F08 the application version."""
        return (application_label(self.config.label)
                + bytes([0x9F, 0x08, 0x01, self.config.app_version]))

    def select_status(self) -> int:
        """9000; 6283 with the FCI when temporarily blocked; 9303 when locked for good."""
        if self.state is PurseState.LOCKED:
            return SW.APPLICATION_LOCKED
        if self.state is PurseState.BLOCKED:
            return SW.SELECTED_FILE_INVALIDATED
        return SW.OK

    def update_allowed(self) -> bool:
        return self.state is PurseState.ACTIVE

    def end_session(self) -> None:
        self._session = None

    def process(self, cmd: CommandAPDU) -> Reply | None:
        handler = self._handlers.get((cmd.cla, cmd.ins))
        return None if handler is None else handler(cmd)

    def _refusal(self) -> int | None:
        state = self.state
        if state is PurseState.LOCKED:
            return SW.APPLICATION_LOCKED
        if state is PurseState.BLOCKED:
            return SW.CONDITIONS_NOT_SATISFIED
        return None

    def _le_or_state_refusal(self, cmd: CommandAPDU, answer: int) -> int | None:
        """Checked once the parameters are: a wrong Le for an ``answer``-byte reply, then
        a blocked or locked purse."""
        wrong_le = self.card.check_le(cmd, answer)
        return wrong_le if wrong_le is not None else self._refusal()

    def _mac_error(self) -> Reply:
        errors = self.mac_errors + 1
        self.nvm.write(Step.PURSE_MAC_ERRORS, self.cell("mac_errors"), bytes([min(errors, 255)]))
        if errors >= self.config.max_mac_errors:
            self.nvm.write(Step.APP_STATE, self.cell("state"), bytes([PurseState.LOCKED]))
        return sw(SW.MAC_ERROR)

    def _clear_mac_errors(self) -> None:
        if self.mac_errors:
            self.nvm.write(Step.PURSE_MAC_ERRORS, self.cell("mac_errors"), b"\x00")

    def _append_log(self, record: LogRecord) -> None:
        append_cyclic(self.nvm, self.log_file, record.to_bytes(),
                      Step.PURSE_LOG, Step.PURSE_LOG_POINTER)

    # --- INITIALIZE ---------------------------------------------------------------------------

    def _initialize(self, cmd: CommandAPDU) -> Reply:
        """INITIALIZE FOR LOAD (P1 00), PURCHASE (01), CAPP PURCHASE (03); P2 02 = EP."""
        if cmd.p1 not in _KINDS:
            return sw(SW.WRONG_P1_P2)
        if cmd.p2 == PurseP2.ED:
            return sw(SW.FUNCTION_NOT_SUPPORTED)  # no ED (passbook) on this card
        if cmd.p2 != PurseP2.EP:
            return sw(SW.WRONG_P1_P2)
        init = _parse(ap.INITIALIZE_COMMAND, cmd.data)
        if init is None:
            return sw(SW.WRONG_LENGTH)
        kind = _KINDS[cmd.p1]
        answer = ap.INIT_LOAD_RESPONSE if kind is InitKind.LOAD else ap.INIT_PURCHASE_RESPONSE
        refusal = self._le_or_state_refusal(cmd, _SIZE[answer])
        if refusal is not None:
            return sw(refusal)
        if init.key_index != KEY_INDEX:
            return sw(SW.KEY_INDEX_NOT_SUPPORTED)
        amount, terminal_id = init.amount, init.terminal_id
        balance, cfg = self.balance, self.config
        if kind is InitKind.LOAD:
            online = self.online_seq
            if online == 0xFFFF or balance + amount > cfg.max_balance:
                return sw(SW.COUNTER_OVERFLOW)
            random = self.card.random(4)
            seslk = pc.load_session_key(cfg.keys.load, random, online)
            mac1 = pc.load_mac1(seslk, balance, amount, TransactionType.EP_LOAD, terminal_id)
            self._session = _Session(kind, amount, terminal_id, random, online, balance, seslk)
            return answer.build(dict(
                balance=balance, online_seq=online, key_version=cfg.keys.key_version,
                alg_id=cfg.alg_id, random=random, mac1=mac1)), SW.OK
        offline = self.offline_seq
        if offline == 0xFFFF:
            return sw(SW.COUNTER_OVERFLOW)
        if amount > balance + cfg.overdraft_limit:
            return sw(SW.INSUFFICIENT_BALANCE)
        random = self.card.random(4)
        self._session = _Session(kind, amount, terminal_id, random, offline, balance)
        return answer.build(dict(
            balance=balance, offline_seq=offline, overdraft_limit=cfg.overdraft_limit,
            key_version=cfg.keys.key_version, alg_id=cfg.alg_id, random=random)), SW.OK

    # --- DEBIT FOR PURCHASE / CAPP PURCHASE ---------------------------------------------------

    def _debit_for_purchase(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1 != 0x01 or cmd.p2 != 0x00:
            return sw(SW.WRONG_P1_P2)
        debit = _parse(ap.DEBIT_COMMAND, cmd.data)
        if debit is None:
            return sw(SW.WRONG_LENGTH)
        refusal = self._le_or_state_refusal(cmd, _SIZE[ap.DEBIT_RESPONSE])
        if refusal is not None:
            return sw(refusal)
        session, self._session = self._session, None
        if session is None or session.kind is InitKind.LOAD:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        terminal_seq, date, time = debit.terminal_seq, debit.date, debit.time
        tx_type = (TransactionType.CAPP_PURCHASE if session.kind is InitKind.CAPP_PURCHASE
                   else TransactionType.EP_PURCHASE)
        keys = self.config.keys
        sespk = pc.purchase_session_key(keys.purchase, session.random, session.seq, terminal_seq)
        expected = pc.purchase_mac1(sespk, session.amount, tx_type, session.terminal_id,
                                    date, time)
        if debit.mac1 != expected:
            return self._mac_error()
        mac2 = pc.purchase_mac2(sespk, session.amount)
        tac = pc.purchase_tac(keys.tac, session.amount, tx_type, session.terminal_id,
                              terminal_seq, date, time)
        capp_file = self.capp_file
        for number, record in sorted(session.capp.items()):
            assert capp_file is not None  # records are only cached when the file exists
            write_record(self.nvm, Step.CAPP_RECORD, capp_file, number, record)
        self.nvm.write(Step.PURSE_BALANCE, self.cell("balance"),
                       (session.balance - session.amount).to_bytes(4, "big"))
        self.nvm.write(Step.PURSE_OFFLINE_SEQ, self.cell("offline_seq"),
                       (session.seq + 1).to_bytes(2, "big"))
        self._append_log(LogRecord(session.seq, self.config.overdraft_limit, session.amount,
                                   tx_type, session.terminal_id, date, time))
        self.nvm.write(Step.PURSE_PROOF, self.cell("proof"),
                       (session.seq + 1).to_bytes(2, "big") + bytes([tx_type]) + mac2 + tac)
        self._clear_mac_errors()
        return ap.DEBIT_RESPONSE.build(dict(tac=tac, mac2=mac2)), SW.OK

    # --- CREDIT FOR LOAD ----------------------------------------------------------------------

    def _credit_for_load(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        credit = _parse(ap.CREDIT_FOR_LOAD_COMMAND, cmd.data)
        if credit is None:
            return sw(SW.WRONG_LENGTH)
        refusal = self._le_or_state_refusal(cmd, _SIZE[ap.CREDIT_FOR_LOAD_RESPONSE])
        if refusal is not None:
            return sw(refusal)
        session, self._session = self._session, None
        if session is None or session.kind is not InitKind.LOAD:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        date, time = credit.date, credit.time
        load = TransactionType.EP_LOAD
        expected = pc.load_mac2(session.seslk, session.amount, load, session.terminal_id,
                                date, time)
        if credit.mac2 != expected:
            return self._mac_error()
        new_balance = session.balance + session.amount
        tac = pc.load_tac(self.config.keys.tac, new_balance, session.seq, session.amount, load,
                          session.terminal_id, date, time)
        self.nvm.write(Step.PURSE_BALANCE, self.cell("balance"), new_balance.to_bytes(4, "big"))
        self.nvm.write(Step.PURSE_ONLINE_SEQ, self.cell("online_seq"),
                       (session.seq + 1).to_bytes(2, "big"))
        self._append_log(LogRecord(session.seq, 0, session.amount, load, session.terminal_id,
                                   date, time))
        self._clear_mac_errors()
        return ap.CREDIT_FOR_LOAD_RESPONSE.build(dict(tac=tac)), SW.OK

    # --- GET BALANCE, GET TRANSACTION PROVE ------------------------------------------------------

    def _get_balance(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1:
            return sw(SW.WRONG_P1_P2)
        if cmd.p2 == PurseP2.ED:
            return sw(SW.FUNCTION_NOT_SUPPORTED)
        if cmd.p2 != PurseP2.EP:
            return sw(SW.WRONG_P1_P2)
        if cmd.data:
            return sw(SW.WRONG_LENGTH)
        refusal = self._le_or_state_refusal(cmd, _SIZE[ap.BALANCE_RESPONSE])
        if refusal is not None:
            return sw(refusal)
        return ap.BALANCE_RESPONSE.build(dict(balance=self.balance)), SW.OK

    def _get_transaction_prove(self, cmd: CommandAPDU) -> Reply:
        """MAC2 then TAC of the last purchase, asked by its seq (INITIALIZE's + 1) and type."""
        if cmd.p1:
            return sw(SW.WRONG_P1_P2)
        prove = _parse(ap.PROVE_COMMAND, cmd.data)
        if prove is None:
            return sw(SW.WRONG_LENGTH)
        refusal = self._le_or_state_refusal(cmd, _SIZE[ap.PROVE_RESPONSE])
        if refusal is not None:
            return sw(refusal)
        proof = self.proof
        if proof is None or proof[0] != prove.card_seq or proof[1] != cmd.p2:
            return sw(SW.MAC_NOT_AVAILABLE)
        return ap.PROVE_RESPONSE.build(dict(mac2=proof[2], tac=proof[3])), SW.OK

    # --- UPDATE CAPP DATA CACHE -----------------------------------------------------------------

    def _update_capp_data_cache(self, cmd: CommandAPDU) -> Reply:
        """Cache a composite record for the coming DEBIT (P1 record id, P2 SFI<<3)."""
        if cmd.p2 & 0x07 or not cmd.p2 >> 3:
            return sw(SW.WRONG_P1_P2)
        if not cmd.data:
            return sw(SW.WRONG_LENGTH)
        refusal = self._refusal()
        if refusal is not None:
            return sw(refusal)
        session = self._session
        if session is None or session.kind is not InitKind.CAPP_PURCHASE:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        node = self.card.fs.child_by_sfi(self.node.path, cmd.p2 >> 3)
        capp_file = self.capp_file
        if node is None or capp_file is None or node.path != capp_file.path:
            return sw(SW.FILE_NOT_FOUND)
        number = None
        for n in range(1, record_count(self.nvm, node) + 1):
            record = read_record(self.nvm, node, n)
            if record and record[0] == cmd.p1:
                number = n
                break
        if number is None:
            return sw(SW.RECORD_NOT_FOUND)
        if len(cmd.data) != node.ef.size:
            return sw(SW.WRONG_LENGTH)
        if cmd.data[0] != cmd.p1:
            return sw(SW.WRONG_DATA)
        session.capp[number] = cmd.data
        return sw(SW.OK)

    # --- APPLICATION BLOCK / UNBLOCK ----------------------------------------------------------

    def _maintenance_refusal(self, cmd: CommandAPDU) -> Reply | None:
        """Why a BLOCK/UNBLOCK is refused, or None.  A wrong MAC counts toward the
        lockout like a wrong MAC1 or MAC2 (docs/protocol.md §1); a right one clears the count."""
        maintenance = _parse(ap.MAINTENANCE_COMMAND, cmd.data)
        if maintenance is None:
            return sw(SW.WRONG_LENGTH)
        if self.state is PurseState.LOCKED:
            return sw(SW.APPLICATION_LOCKED)
        challenge = self.card.command_challenge()
        if challenge is None:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        header = bytes([cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)])
        if maintenance.mac != pc.maintenance_mac(self.config.keys.maintenance, challenge, header):
            return self._mac_error()
        self._clear_mac_errors()
        return None

    def _application_block(self, cmd: CommandAPDU) -> Reply:
        """APPLICATION BLOCK: P2 00 temporarily (UNBLOCK restores), 01 for good."""
        if cmd.p1 or cmd.p2 not in (0x00, 0x01):
            return sw(SW.WRONG_P1_P2)
        refusal = self._maintenance_refusal(cmd)
        if refusal is not None:
            return refusal
        new = PurseState.LOCKED if cmd.p2 == 0x01 else PurseState.BLOCKED
        if self.state is not new:
            self.nvm.write(Step.APP_STATE, self.cell("state"), bytes([new]))
        return sw(SW.OK)

    def _application_unblock(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        refusal = self._maintenance_refusal(cmd)
        if refusal is not None:
            return refusal
        if self.state is not PurseState.ACTIVE:
            self.nvm.write(Step.APP_STATE, self.cell("state"), bytes([PurseState.ACTIVE]))
        return sw(SW.OK)
