"""The card simulator: a card OS with NVM tearing, the transit and ETC purses,
the member identity application and the PSAM (docs/simulator.md).

>>> import datetime as dt
>>> from unioncard.applet_sim import MemberData, issue_member_card
>>> from unioncard.crypto import Keystore
>>> member = MemberData("张三", "20260001", "市总工会", "11010519491231002X",
...                     dt.date(2026, 1, 1), dt.date(2030, 12, 31))
>>> card = issue_member_card(member, Keystore.test(), card_no=1, transit_balance=1000)
>>> card.power_on() == card.atr
True
>>> card.transmit(bytes.fromhex("00A4040008A000000632010105")).hex()[-4:]
'9000'
>>> card.transmit(bytes.fromhex("805C000204")).hex().upper()
'000003E89000'
"""

from typing import TYPE_CHECKING, Any

from unioncard.applet_sim.card import (
    CardUnpowered,
    PersistenceError,
    RandomSource,
    SimulatedCard,
    build_atr,
)
from unioncard.applet_sim.layout import CardLayout, Pin
from unioncard.applet_sim.member import MemberRecord, MemberStatus
from unioncard.applet_sim.nvm import FaultInjector, Phase, PowerLoss, Step, WritePoint
from unioncard.applet_sim.purse import LogRecord, PurseState

if TYPE_CHECKING:
    from unioncard.applet_sim.personalize import (
        CardNumbers,
        MemberData,
        issue_member_card,
        issue_psam,
    )

_PERSONALIZE = frozenset({"CardNumbers", "MemberData", "issue_member_card", "issue_psam"})


def __getattr__(name: str) -> Any:
    """Personalization is imported on first use: opening a card image needs none of it."""
    if name in _PERSONALIZE:
        from unioncard.applet_sim import personalize

        return getattr(personalize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CardLayout",
    "CardNumbers",
    "CardUnpowered",
    "FaultInjector",
    "LogRecord",
    "MemberData",
    "MemberRecord",
    "MemberStatus",
    "PersistenceError",
    "Phase",
    "Pin",
    "PowerLoss",
    "PurseState",
    "RandomSource",
    "SimulatedCard",
    "Step",
    "WritePoint",
    "build_atr",
    "issue_member_card",
    "issue_psam",
]
