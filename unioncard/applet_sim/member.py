"""The member identity application on the simulated card (docs/protocol.md §4, **profile**).

The template it holds, its AID and SFI are declared in `unioncard.apdu.member`
(shared with the terminal, which reads it); this module is the application the
card OS hosts: no proprietary command, an FCI with a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unioncard.apdu.member import (
    MEMBER_AID,
    MEMBER_SFI,
    MemberRecord,
    MemberStatus,
    decode_member_template,
    encode_member_template,
)
from unioncard.apdu.records import bcd_date, parse_bcd_date
from unioncard.applet_sim.base import Application, CardServices, application_label
from unioncard.applet_sim.files import Node

__all__ = [
    "MEMBER_AID",
    "MEMBER_SFI",
    "MemberConfig",
    "MemberRecord",
    "MemberStatus",
    "bcd_date",
    "decode_member_template",
    "encode_member_template",
    "parse_bcd_date",
]


@dataclass(frozen=True, slots=True)
class MemberConfig:
    """The member application has no proprietary command; its FCI carries a label."""

    label: str = "UNION MEMBER"

    @property
    def type(self) -> str:
        return "member"

    def create(self, card: CardServices, node: Node) -> Application:
        return MemberApplication(card, node, self)

    def to_json(self) -> dict[str, Any]:
        return {"type": "member", "label": self.label}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MemberConfig:
        return cls(str(doc.get("label", "")))


class MemberApplication(Application):
    config: MemberConfig

    def fci_proprietary(self) -> bytes:
        return application_label(self.config.label)
