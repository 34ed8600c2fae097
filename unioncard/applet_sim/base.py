"""What an application on the simulated card OS sees, and the base it builds on.

The card OS (`unioncard.applet_sim.card`) handles the ISO inter-industry
commands itself and hands proprietary commands (CLA ``80``/``84``) to the
application of the current DF.  An application keeps its persistent state in
NVM cells under ``<DF path>:<name>`` and its volatile state (a purse session, a
PSAM's MAC1 context) in its own attributes, which `end_session` and power loss
clear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from unioncard.apdu import SW, CommandAPDU
from unioncard.applet_sim.files import FileSystem, Node
from unioncard.applet_sim.nvm import Nvm

if TYPE_CHECKING:
    from unioncard.applet_sim.files import AppConfig

__all__ = ["Application", "CardServices", "Ram", "Reply", "application_label", "sw"]

Reply = tuple[bytes, int]
"""Response data and status word."""


def sw(code: int) -> Reply:
    """A reply with no data."""
    return b"", int(code)


def application_label(label: str) -> bytes:
    """Tag 50, the application label (ASCII) of an FCI's A5 template; nothing for ``""``."""
    raw = label.encode("ascii")
    return b"\x50" + bytes([len(raw)]) + raw if raw else b""


@dataclass(slots=True)
class Ram:
    """The card OS's volatile state: lost at every reset and power loss."""

    current_df: str = "3F00"
    current_ef: str | None = None
    pin_verified: bool = False
    challenge: bytes | None = None  # from GET CHALLENGE, valid for the next command only
    pending: Reply | None = None  # T=0: response waiting for GET RESPONSE
    apps: dict[str, Any] = field(default_factory=dict)
    """Per-application volatile state (by DF path) that outlives a command but not a reset:
    an EMV transaction between GET PROCESSING OPTIONS and the second GENERATE AC."""


class CardServices(Protocol):
    """The part of the card OS an application may use."""

    nvm: Nvm
    fs: FileSystem
    ram: Ram

    def random(self, n: int) -> bytes:
        """n bytes from the card's (injected) random source."""
        ...

    def check_le(self, cmd: CommandAPDU, n: int) -> int | None:
        """The ``6Cxx`` to answer before executing a command whose answer has n bytes, or None."""
        ...

    def command_challenge(self) -> bytes | None:
        """The GET CHALLENGE random issued just before this command, if any."""
        ...


class Application:
    """Base of the card's applications: no proprietary commands, an empty FCI."""

    def __init__(self, card: CardServices, node: Node, config: AppConfig) -> None:
        self.card = card
        self.node = node
        self.config = config

    @property
    def nvm(self) -> Nvm:
        return self.card.nvm

    def cell(self, name: str) -> str:
        """The NVM address of one of this application's values."""
        return f"{self.node.path}:{name}"

    def personalize(self, **values: Any) -> None:
        """Lay the application's initial NVM cells (no tear points)."""

    def process(self, cmd: CommandAPDU) -> Reply | None:
        """Answer a proprietary command, or None when this application has no such command."""
        return None

    def process_interindustry(self, cmd: CommandAPDU) -> Reply | None:
        """Answer an inter-industry command (CLA ``0x``) the application implements itself
        (an EMV application's READ RECORD, VERIFY, INTERNAL AUTHENTICATE, PUT DATA with
        secure messaging), or None to let the card OS answer it."""
        return None

    def cell_checks(self) -> dict[str, Callable[[bytes], str | None]]:
        """The application's own NVM cells (beyond file contents), each with the check a
        card image's value must pass (None: fine); `image.check_card` uses them."""
        return {}

    def fci_proprietary(self) -> bytes:
        """The content of the FCI's A5 template."""
        return b""

    def select_status(self) -> int:
        """The status word of a successful SELECT (``6283`` for a blocked application)."""
        return SW.OK

    def update_allowed(self) -> bool:
        """Whether UPDATE BINARY/RECORD may change this application's files."""
        return True

    def end_session(self) -> None:
        """Forget any transaction in progress (volatile state only)."""
