"""The PSAM's purchase application: MAC1 generation and MAC2 verification (docs/protocol.md §3).

INIT SAM FOR PURCHASE ``80 70 00 00 1C``: data = random(4) offline seq(2)
amount(4) type(1) date(4) time(3) key version(1) alg id(1) card diversifier(8);
the PSAM picks its purchase master key by the key version the card gave
(``01`` transit, ``02`` ETC; else ``9403``), derives the card's DPK from the
diversifier, increments and persists its terminal seq, and answers terminal
seq(4) MAC1(4).  CREDIT SAM FOR PURCHASE ``80 72 00 00 04`` checks the card's
MAC2 (``9000`` or ``9302``).  The terminal id is in the MF's EF ``0016``.

The terminal seq lives in the NVM cell ``<DF path>:terminal_seq``; the first
transaction uses ``00000001``.  Payloads are the structs of `unioncard.apdu.purse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unioncard.apdu import SW, CommandAPDU
from unioncard.apdu.purse import SAM_CREDIT_COMMAND, SAM_PURCHASE_COMMAND, SAM_PURCHASE_RESPONSE
from unioncard.applet_sim.base import Application, CardServices, Reply, application_label, sw
from unioncard.applet_sim.files import Node, read_transparent
from unioncard.applet_sim.nvm import Step
from unioncard.crypto import purse as pc

__all__ = ["ALG_3DES", "PsamApplication", "PsamConfig"]

ALG_3DES = 0x00
"""Algorithm identifier of the triple-DES purse (the only one this PSAM knows)."""

_PURCHASE_SIZE = SAM_PURCHASE_COMMAND.sizeof()  # one diversification level (Lc 24: two)
_ANSWER_SIZE = SAM_PURCHASE_RESPONSE.sizeof()
_CREDIT_SIZE = SAM_CREDIT_COMMAND.sizeof()


@dataclass(frozen=True, slots=True)
class PsamConfig:
    """The PSAM application's purchase master keys, by key version."""

    master_keys: Mapping[int, bytes] = field(repr=False)
    terminal_id_fid: int = 0x0016
    label: str = "PSAM PURCHASE"

    def __post_init__(self) -> None:
        for version, key in self.master_keys.items():
            if not 0 <= version <= 0xFF or len(key) != 16:
                raise ValueError("PSAM master keys are 16 bytes, by key version 00..FF")

    @property
    def type(self) -> str:
        return "psam"

    def create(self, card: CardServices, node: Node) -> PsamApplication:
        return PsamApplication(card, node, self)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "psam", "label": self.label,
            "terminal_id_fid": f"{self.terminal_id_fid:04X}",
            "purchase_master_keys": {f"{v:02X}": k.hex().upper()
                                     for v, k in sorted(self.master_keys.items())},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PsamConfig:
        keys = {int(v, 16): bytes.fromhex(k) for v, k in doc["purchase_master_keys"].items()}
        return cls(keys, int(doc.get("terminal_id_fid", "0016"), 16),
                   str(doc.get("label", "")))


@dataclass(slots=True)
class _Mac1Context:
    sespk: bytes
    amount: int


class PsamApplication(Application):
    """80 70 (MAC1) and 80 72 (MAC2 check) with a persisted terminal seq."""

    config: PsamConfig

    def __init__(self, card: CardServices, node: Node, config: PsamConfig) -> None:
        super().__init__(card, node, config)
        self._context: _Mac1Context | None = None

    def personalize(self, **values: Any) -> None:
        seq = int(values.get("terminal_seq", 0))
        self.nvm.format(self.cell("terminal_seq"), seq.to_bytes(4, "big"))

    @property
    def terminal_seq(self) -> int:
        """The seq of the last MAC1 generated (0 before the first)."""
        return int.from_bytes(self.nvm.read(self.cell("terminal_seq")), "big")

    @property
    def terminal_id(self) -> bytes:
        node = self.card.fs.child_by_fid("3F00", self.config.terminal_id_fid)
        if node is None:
            raise LookupError("the PSAM has no terminal id EF")
        return read_transparent(self.nvm, node)[:6]

    def fci_proprietary(self) -> bytes:
        return application_label(self.config.label)

    def end_session(self) -> None:
        self._context = None

    def process(self, cmd: CommandAPDU) -> Reply | None:
        if cmd.cla != 0x80:
            return None
        if cmd.ins == 0x70:
            return self._init_sam_for_purchase(cmd)
        if cmd.ins == 0x72:
            return self._credit_sam_for_purchase(cmd)
        return None

    def _init_sam_for_purchase(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        if len(cmd.data) != _PURCHASE_SIZE:
            return sw(SW.WRONG_LENGTH)
        wrong_le = self.card.check_le(cmd, _ANSWER_SIZE)
        if wrong_le is not None:
            return sw(wrong_le)
        d = SAM_PURCHASE_COMMAND.parse(cmd.data)
        master = self.config.master_keys.get(d.key_version)
        if master is None:
            return sw(SW.KEY_INDEX_NOT_SUPPORTED)
        if d.alg_id != ALG_3DES:
            return sw(SW.WRONG_DATA)
        seq = self.terminal_seq
        if seq == 0xFFFFFFFF:
            return sw(SW.COUNTER_OVERFLOW)
        seq += 1
        dpk = pc.diversify(master, d.diversifier)
        sespk = pc.purchase_session_key(dpk, d.random, d.offline_seq, seq)
        mac1 = pc.purchase_mac1(sespk, d.amount, d.tx_type, self.terminal_id, d.date, d.time)
        self.nvm.write(Step.PSAM_TERMINAL_SEQ, self.cell("terminal_seq"), seq.to_bytes(4, "big"))
        self._context = _Mac1Context(sespk, d.amount)
        return SAM_PURCHASE_RESPONSE.build(dict(terminal_seq=seq, mac1=mac1)), SW.OK

    def _credit_sam_for_purchase(self, cmd: CommandAPDU) -> Reply:
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        if len(cmd.data) != _CREDIT_SIZE:
            return sw(SW.WRONG_LENGTH)
        context, self._context = self._context, None
        if context is None:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        mac2 = SAM_CREDIT_COMMAND.parse(cmd.data).mac2
        if mac2 != pc.purchase_mac2(context.sespk, context.amount):
            return sw(SW.MAC_ERROR)
        return sw(SW.OK)
