"""The simulated card OS: power, ATR, T=0/T=1 answers, dispatch, NVM commit per command.

`SimulatedCard` is one card (a member card or a PSAM): a static `CardLayout`
(file tree, applications, PIN), an `Nvm`, and volatile RAM.  It is sans-IO: its
randomness is injected and its only way out is an optional persistence sink,
called after every NVM commit (write-through to a card image, see
`unioncard.applet_sim.image`).

Every command runs in one NVM transaction, committed when the command ends,
whatever the status word (a MAC error counter must stick), so its changes land
all together or not at all.  A power cut (`FaultInjector`) raises `PowerLoss`
out of `transmit`; the card is then off and `power_on` recovers its NVM.

Protocols (ISO/IEC 7816-3/-4 §5.3): with ``protocol = "T=1"`` responses come with
their data, and an Le shorter than the answer gets ``6Cxx``.  With ``"T=0"`` a
case-4 (or case-3) command with response data answers ``61xx`` and the data comes
with GET RESPONSE, together with the command's final status word (``9000``, or a
warning such as ``6283``); a case-2 command whose Le is not the exact length
answers ``6Cxx``.  The ATR offers both.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unioncard.apdu import SW, CommandAPDU
from unioncard.applet_sim import iso
from unioncard.applet_sim.base import Application, Ram, Reply, sw
from unioncard.applet_sim.files import FileSystem
from unioncard.applet_sim.layout import IMAGE_FORMAT, IMAGE_VERSION, CardLayout, layout_from_json
from unioncard.applet_sim.layout import layout_to_json as _layout_json
from unioncard.applet_sim.nvm import FaultInjector, Nvm, PowerLoss, Recovery
from unioncard.applet_sim.psam import PsamApplication
from unioncard.applet_sim.purse import PurseApplication
from unioncard.errors import DecodeError, TransportError

__all__ = [
    "PROTOCOLS",
    "CardUnpowered",
    "PersistenceError",
    "RandomSource",
    "SimulatedCard",
    "build_atr",
]

PROTOCOLS = ("T=1", "T=0")

RandomSource = Callable[[int], bytes] | _random.Random | int | None
"""Card randomness: a callable ``n -> n bytes``, a `random.Random`, a seed, or None
(the operating system's CSPRNG)."""

# Commands that leave a purse/PSAM session open (all others end it): reads, GET BALANCE,
# UPDATE CAPP DATA CACHE, GET RESPONSE, and the commands that complete a session.
_SESSION_SAFE = frozenset({0xB0, 0xB2, 0xC0, 0x5C, 0xDC, 0x52, 0x54, 0x72})


class CardUnpowered(TransportError):
    """A command was sent to a card that is not powered."""


class PersistenceError(TransportError):
    """The card committed, but its image could not be written: no response is given.

    The card stays powered with the committed state in memory; the next successful
    save writes it.  A reader sees what a card that went silent looks like.
    """


def build_atr(historical: bytes) -> bytes:
    """An ATR offering T=0 (first, the default) and T=1 (IFSC 254, BWI 4, CWI 5).

    >>> build_atr(b"UNIONCARD").hex(" ").upper()
    '3B 89 80 31 FE 45 55 4E 49 4F 4E 43 41 52 44 C4'
    """
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    body = bytes([0x80 | len(historical), 0x80, 0x31, 0xFE, 0x45]) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


def _random_function(source: RandomSource) -> Callable[[int], bytes]:
    if source is None:
        import secrets  # only a card without injected randomness needs the OS's

        return secrets.token_bytes
    if isinstance(source, bool):
        raise TypeError("random_source must be a callable, a random.Random or an int seed")
    if isinstance(source, int):
        return _random.Random(source).randbytes
    if isinstance(source, _random.Random):
        return source.randbytes
    if callable(source):
        return source
    raise TypeError("random_source must be a callable, a random.Random or an int seed")


class SimulatedCard:
    """A card OS instance hosting applications (a member card, or a PSAM)."""

    def __init__(
        self,
        layout: CardLayout,
        nvm: Nvm | None = None,
        *,
        protocol: str = "T=1",
        random_source: RandomSource = None,
    ) -> None:
        self.layout = layout
        self.nvm = nvm if nvm is not None else Nvm()
        self.fs = FileSystem(layout.mf)
        self.ram = Ram()
        self.protocol = protocol
        self._random = _random_function(random_source)
        self.powered = False
        self.last_internal_error: BaseException | None = None
        self.last_recovery = Recovery()
        self._sink: Callable[[SimulatedCard], None] | None = None
        self._challenge: bytes | None = None
        self._committed = False
        self.apps: dict[str, Application] = {}
        for node in self.fs.walk():
            if node.is_df and node.df.app is not None:
                self.apps[node.path] = layout.create_app(self, node)
        self.nvm.on_commit = self._on_commit

    # --- properties of the contract ------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return build_atr(self.layout.historical)

    @property
    def protocol(self) -> str:
        return self._protocol

    @protocol.setter
    def protocol(self, value: str) -> None:
        if value not in PROTOCOLS:
            raise ValueError(f"protocol must be 'T=1' or 'T=0', got {value!r}")
        self._protocol = value

    @property
    def faults(self) -> FaultInjector:
        """The fault injector every NVM write of this card passes through."""
        return self.nvm.faults

    @property
    def kind(self) -> str:
        return self.layout.kind

    def random(self, n: int) -> bytes:
        value = self._random(n)
        if not isinstance(value, bytes | bytearray) or len(value) != n:
            raise ValueError(f"the random source gave {value!r} for {n} bytes")
        return bytes(value)

    # --- power ---------------------------------------------------------------------------

    def power_on(self) -> bytes:
        """Cold reset: power up, recover the NVM journal, select the MF; returns the ATR."""
        self._restart()
        return self.atr

    def reset(self) -> bytes:
        """Warm reset: RAM is lost and the card restarts as at power-up; returns the ATR."""
        self._restart()
        return self.atr

    def power_off(self) -> None:
        """Remove power: RAM (selection, sessions, PIN status) is lost."""
        self._drop_ram()
        self.powered = False

    def _drop_ram(self) -> None:
        self.ram = Ram()
        self._challenge = None
        self.nvm.power_lost()
        for app in self.apps.values():
            app.end_session()

    def _restart(self) -> None:
        self._drop_ram()
        self.powered = True
        try:
            self.last_recovery = self.nvm.recover()
        except PowerLoss:
            self.powered = False
            self._persist()
            raise
        if self.last_recovery.replayed or self.last_recovery.discarded:
            self._persist()

    # --- persistence hook ----------------------------------------------------------------

    def set_persistence(self, sink: Callable[[SimulatedCard], None] | None) -> None:
        """Call ``sink(card)`` after every NVM commit (and after a power cut or a recovery)."""
        self._sink = sink

    def _persist(self) -> None:
        if self._sink is not None:
            try:
                self._sink(self)
            except OSError as exc:
                raise PersistenceError(f"cannot save the card image: {exc}") from exc

    def _on_commit(self) -> None:
        self._committed = True
        self._persist()

    # --- T=0 / T=1 framing -----------------------------------------------------------------

    def check_le(self, cmd: CommandAPDU, n: int) -> int | None:
        """Le check made before a command with an n-byte answer runs (so no state changes)."""
        if cmd.le is None:
            return None
        if self._protocol == "T=0":
            if cmd.case == 2 and cmd.le != n:
                return 0x6C00 | (n & 0xFF)
            return None
        if cmd.le < n:
            return 0x6C00 | (n & 0xFF)
        return None

    def command_challenge(self) -> bytes | None:
        return self._challenge

    def transmit(self, command: bytes) -> bytes:
        """Raw command APDU in, raw response (data + SW1 SW2) out.

        Malformed or unsupported commands get their status word; only a power cut
        (`PowerLoss`), an unpowered card (`CardUnpowered`) or a card image that cannot be
        written (`PersistenceError`) raise, all of them `TransportError`.
        """
        if not self.powered:
            raise CardUnpowered("the card is not powered: call power_on() first")
        try:
            data, status = self._frame(bytes(command))
        except PowerLoss:
            self._drop_ram()
            self.powered = False
            self._persist()
            raise
        return data + status.to_bytes(2, "big")

    def _frame(self, raw: bytes) -> Reply:
        try:
            cmd = CommandAPDU.from_bytes(raw)
        except DecodeError:
            self.ram.pending = None
            return sw(SW.WRONG_LENGTH)
        if cmd.cla & 0x80 == 0 and cmd.ins == 0xC0 and cmd.cla != 0xFF:
            return self._get_response(cmd)
        self.ram.pending = None
        self._committed = False
        data, status = self._execute(cmd)
        if not data:
            return data, status
        if self._protocol == "T=0":
            if cmd.case == 2:
                if cmd.le == len(data):
                    return data, status
                if not self._committed:
                    return sw(0x6C00 | (len(data) & 0xFF))
            self.ram.pending = (data, status)
            return sw(0x6100 | (len(data) & 0xFF))
        if cmd.le is not None and cmd.le < len(data) and not self._committed:
            return sw(0x6C00 | (len(data) & 0xFF))
        return data, status

    def _get_response(self, cmd: CommandAPDU) -> Reply:
        pending = self.ram.pending
        if cmd.p1 or cmd.p2:
            return sw(SW.WRONG_P1_P2)
        if pending is None:
            return sw(SW.CONDITIONS_NOT_SATISFIED)
        data, status = pending
        le = cmd.le if cmd.le is not None else 256
        if le > len(data):
            return sw(0x6C00 | (len(data) & 0xFF))
        if le < len(data):
            self.ram.pending = (data[le:], status)
            return data[:le], 0x6100 | ((len(data) - le) & 0xFF)
        self.ram.pending = None
        return data, status

    # --- dispatch ------------------------------------------------------------------------

    def current_app(self) -> Application | None:
        df = self.fs.app_df(self.ram.current_ef or self.ram.current_df)
        return None if df is None else self.apps.get(df.path)

    def _execute(self, cmd: CommandAPDU) -> Reply:
        self._challenge, self.ram.challenge = self.ram.challenge, None
        if cmd.ins not in _SESSION_SAFE:
            for app in self.apps.values():
                app.end_session()
        try:
            reply = self._dispatch(cmd)
            self.nvm.commit()
        except (PowerLoss, PersistenceError):
            raise
        except Exception as exc:  # a defect must not crash the reader: answer 6F00
            self.last_internal_error = exc
            self.nvm.abort()
            for app in self.apps.values():
                app.end_session()
            return sw(SW.NO_PRECISE_DIAGNOSIS)
        return reply

    def _dispatch(self, cmd: CommandAPDU) -> Reply:
        cla = cmd.cla
        if cla & 0x80 == 0:  # inter-industry, first interindustry values 00..0F only
            if cla > 0x0F:
                return sw(SW.CLA_NOT_SUPPORTED)
            if cla & 0x03:
                return sw(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
            app = self.current_app() if cmd.ins != 0xA4 else None
            own = app.process_interindustry(cmd) if app is not None else None
            if own is not None:
                return own
            if cla & 0x0C:
                return sw(SW.SECURE_MESSAGING_NOT_SUPPORTED)
            handler = iso.HANDLERS.get(cmd.ins)
            if handler is None:
                return sw(SW.INS_NOT_SUPPORTED)
            return handler(self, cmd)
        if cla not in (0x80, 0x84):
            return sw(SW.CLA_NOT_SUPPORTED)
        app = self.current_app()
        reply = app.process(cmd) if app is not None else None
        if reply is None:
            return sw(SW.INS_NOT_SUPPORTED)
        return reply

    # --- inspection (tests, tools) -----------------------------------------------------------

    def purse(self, profile: str) -> PurseApplication:
        """The purse application of ``profile`` (``"transit"`` or ``"etc"``)."""
        for app in self.apps.values():
            if isinstance(app, PurseApplication) and app.config.profile == profile:
                return app
        raise LookupError(f"this card has no {profile!r} purse")

    def psam(self) -> PsamApplication:
        """The PSAM purchase application (of a PSAM)."""
        for app in self.apps.values():
            if isinstance(app, PsamApplication):
                return app
        raise LookupError("this card is not a PSAM")

    # --- images --------------------------------------------------------------------------

    def to_image(self) -> dict[str, Any]:
        """The card image document (docs/card-image.md): layout, protocol and NVM."""
        doc: dict[str, Any] = {
            "format": IMAGE_FORMAT,
            "version": IMAGE_VERSION,
            "protocol": self._protocol,
            "atr": self.atr.hex().upper(),
        }
        doc.update(_layout_json(self.layout))
        doc["nvm"] = self.nvm.to_json()
        return doc

    @classmethod
    def from_image(
        cls, doc: Any, *, random_source: RandomSource = None, protocol: str | None = None
    ) -> SimulatedCard:
        """A card (powered off) from an image document, checked completely
        (`image.check_document`, `image.check_card`); bad documents raise `DecodeError`."""
        from unioncard.applet_sim import image

        if not isinstance(doc, dict) or doc.get("format") != IMAGE_FORMAT:
            raise DecodeError(f"not a card image: expected format {IMAGE_FORMAT!r}")
        if doc.get("version") != IMAGE_VERSION:
            raise DecodeError(
                f"unsupported card image version {doc.get('version')!r} "
                f"(this release reads version {IMAGE_VERSION})"
            )
        image.check_document(doc)
        layout = layout_from_json(doc)
        nvm = Nvm.from_json(doc.get("nvm"))
        chosen = protocol or doc.get("protocol", "T=1")
        if chosen not in PROTOCOLS:
            raise DecodeError(f"card image protocol must be T=0 or T=1, got {chosen!r}")
        try:
            card = cls(layout, nvm, protocol=chosen, random_source=random_source)
        except ValueError as exc:
            raise DecodeError(f"malformed card image: {exc}") from None
        image.check_card(card)
        return card

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        random_source: RandomSource = None,
        write_through: bool = False,
        protocol: str | None = None,
    ) -> SimulatedCard:
        """Open a card image file, checked completely (docs/card-image.md); `DecodeError`
        names the file and the problem.  With ``write_through`` every NVM commit is saved to
        the file (atomically, fsync'd) before the command's response leaves `transmit`."""
        from unioncard.applet_sim import image

        doc = image.read_image(path)
        try:
            card = cls.from_image(doc, random_source=random_source, protocol=protocol)
        except DecodeError as exc:
            raise DecodeError(f"{path}: {exc.message}", exc.offset, exc.partial) from None
        if write_through:
            card.set_persistence(image.FileSink(path))
        return card

    def save(self, path: str | Path) -> None:
        """Write the card image atomically (temporary file, fsync, rename)."""
        from unioncard.applet_sim import image

        image.write_image(path, self.to_image())

    def __repr__(self) -> str:
        state = "on" if self.powered else "off"
        return f"<SimulatedCard {self.layout.kind} {self.layout.label!r} {self._protocol} {state}>"
