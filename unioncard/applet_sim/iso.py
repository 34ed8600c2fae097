"""ISO/IEC 7816-4 inter-industry commands of the card OS.

SELECT (§11.1.1), READ BINARY / UPDATE BINARY (§11.2, with an SFI in P1),
READ RECORD / UPDATE RECORD (§11.3, record number in P1, SFI in P2), GET
CHALLENGE (§11.5.6) and VERIFY (§11.5.6, the card's global PIN with a retry
counter).  Each handler takes the card and the command and returns data and a
status word; state changes go through the card's NVM transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from unioncard.apdu import SW, CommandAPDU
from unioncard.applet_sim.base import Reply, sw
from unioncard.applet_sim.files import (
    Access,
    FileKind,
    Node,
    read_record,
    read_transparent,
    record_count,
    write_record,
    write_transparent,
)
from unioncard.applet_sim.nvm import Step

if TYPE_CHECKING:
    from unioncard.applet_sim.card import SimulatedCard

__all__ = ["HANDLERS", "PIN_TRIES_CELL"]

PIN_TRIES_CELL = "3F00:pin_tries"
"""NVM cell of the card PIN's remaining tries (1 byte)."""


def _allowed(card: SimulatedCard, access: Access) -> bool:
    if access is Access.ALWAYS:
        return True
    if access is Access.PIN:
        return card.ram.pin_verified
    return False


def _make_current(card: SimulatedCard, node: Node) -> None:
    if node.is_df:
        card.ram.current_df, card.ram.current_ef = node.path, None
    else:
        assert node.parent is not None
        card.ram.current_df, card.ram.current_ef = node.parent, node.path


# --- SELECT ------------------------------------------------------------------------------


def select(card: SimulatedCard, cmd: CommandAPDU) -> Reply:
    """SELECT by FID (P1 00/01/02), parent (03), DF name (04), path (08/09)."""
    p1, p2, data = cmd.p1, cmd.p2, cmd.data
    answer = p2 & 0x0C  # 00 FCI, 04 FCP, 0C no data
    occurrence = p2 & 0x03  # 00 first or only, 02 next
    if p2 & 0xF0 or answer == 0x08 or occurrence not in (0, 2) or (occurrence and p1 != 0x04):
        return sw(SW.WRONG_P1_P2)
    fs, current = card.fs, card.ram.current_df
    node: Node | None
    if p1 == 0x00:
        if not data:
            node = fs.node("3F00")
        elif len(data) != 2:
            return sw(SW.WRONG_LENGTH)
        else:
            node = fs.select_fid(current, int.from_bytes(data, "big"))
    elif p1 in (0x01, 0x02):
        if len(data) != 2:
            return sw(SW.WRONG_LENGTH)
        node = fs.child_by_fid(current, int.from_bytes(data, "big"))
        if node is not None and node.is_df != (p1 == 0x01):
            node = None
    elif p1 == 0x03:
        if data:
            return sw(SW.WRONG_LENGTH)
        parent = fs.node(current).parent
        node = fs.node(parent) if parent is not None else None
    elif p1 == 0x04:
        if not 1 <= len(data) <= 16:
            return sw(SW.WRONG_LENGTH)
        node = fs.select_aid(data, current if occurrence else None)
    elif p1 in (0x08, 0x09):
        if not data or len(data) % 2:
            return sw(SW.WRONG_LENGTH)
        fids = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
        node = fs.select_path("3F00" if p1 == 0x08 else current, fids)
    else:
        return sw(SW.WRONG_P1_P2)
    if node is None:
        return sw(SW.FILE_NOT_FOUND)
    app = card.apps.get(node.path) if node.is_df else None
    status = app.select_status() if app is not None else SW.OK
    if status >> 8 not in (0x90, 0x62, 0x63):  # refused (9303): the selection stays as it was
        return sw(status)
    _make_current(card, node)
    if not node.is_df:  # EFs of this card family answer 9000 alone, FCP only when asked
        return (node.fcp() if answer == 0x04 else b""), SW.OK
    if answer == 0x0C:
        return b"", status
    if answer == 0x04:
        return node.fcp(), status
    return fs.fci(node, app.fci_proprietary() if app is not None else b""), status


# --- transparent files ------------------------------------------------------------------------


def _binary_target(card: SimulatedCard, p1: int, p2: int) -> tuple[Node, int] | int:
    """The EF of READ/UPDATE BINARY, made the current EF, and the offset; or the status
    word refusing them."""
    if p1 & 0x80:
        if p1 & 0x60 or not 1 <= p1 & 0x1F <= 30:
            return SW.WRONG_P1_P2
        node = card.fs.child_by_sfi(card.ram.current_df, p1 & 0x1F)
        if node is None:
            return SW.FILE_NOT_FOUND
        offset = p2
    else:
        if card.ram.current_ef is None:
            return SW.COMMAND_NOT_ALLOWED_NO_EF
        node = card.fs.node(card.ram.current_ef)
        offset = (p1 << 8) | p2
    if node.ef.kind is not FileKind.TRANSPARENT:
        return SW.COMMAND_INCOMPATIBLE_WITH_FILE
    _make_current(card, node)
    return node, offset


def read_binary(card: SimulatedCard, cmd: CommandAPDU) -> Reply:
    if cmd.data or cmd.le is None:
        return sw(SW.WRONG_LENGTH)
    target = _binary_target(card, cmd.p1, cmd.p2)
    if isinstance(target, int):
        return sw(target)
    node, offset = target
    if not _allowed(card, node.ef.read):
        return sw(SW.SECURITY_STATUS_NOT_SATISFIED)
    content = read_transparent(card.nvm, node)
    if offset >= len(content):
        return sw(SW.WRONG_PARAMETERS)
    available = len(content) - offset
    if cmd.le == 256 or cmd.extended:  # "as much as there is", up to Le
        return content[offset:offset + min(available, cmd.le)], SW.OK
    available = min(available, 256)
    if cmd.le > available:
        return sw(0x6C00 | (available & 0xFF))
    return content[offset:offset + cmd.le], SW.OK


def _update_refusal(card: SimulatedCard, node: Node) -> int | None:
    app_df = card.fs.app_df(node.path)
    app = card.apps.get(app_df.path) if app_df is not None else None
    if app is not None and not app.update_allowed():
        return SW.CONDITIONS_NOT_SATISFIED
    if not _allowed(card, node.ef.update):
        return SW.SECURITY_STATUS_NOT_SATISFIED
    return None


def update_binary(card: SimulatedCard, cmd: CommandAPDU) -> Reply:
    if not cmd.data:
        return sw(SW.WRONG_LENGTH)
    target = _binary_target(card, cmd.p1, cmd.p2)
    if isinstance(target, int):
        return sw(target)
    node, offset = target
    refusal = _update_refusal(card, node)
    if refusal is not None:
        return sw(refusal)
    if offset >= node.ef.size:
        return sw(SW.WRONG_PARAMETERS)
    if offset + len(cmd.data) > node.ef.size:
        return sw(SW.WRONG_LENGTH)
    write_transparent(card.nvm, Step.FILE_UPDATE, node, offset, cmd.data)
    return sw(SW.OK)


# --- record files -----------------------------------------------------------------------------


def _record_target(card: SimulatedCard, p1: int, p2: int) -> Node | int:
    """The record EF of READ/UPDATE RECORD (record number in P1), made the current EF;
    or the status word refusing it."""
    if p2 & 0x07 != 0x04 or p1 == 0:
        return SW.WRONG_P1_P2
    sfi = p2 >> 3
    if sfi == 0x1F:
        return SW.WRONG_P1_P2
    if sfi:
        node = card.fs.child_by_sfi(card.ram.current_df, sfi)
        if node is None:
            return SW.FILE_NOT_FOUND
    elif card.ram.current_ef is None:
        return SW.COMMAND_NOT_ALLOWED_NO_EF
    else:
        node = card.fs.node(card.ram.current_ef)
    if node.ef.kind is FileKind.TRANSPARENT:
        return SW.COMMAND_INCOMPATIBLE_WITH_FILE
    _make_current(card, node)
    return node


def read_record_cmd(card: SimulatedCard, cmd: CommandAPDU) -> Reply:
    if cmd.data or cmd.le is None:
        return sw(SW.WRONG_LENGTH)
    target = _record_target(card, cmd.p1, cmd.p2)
    if isinstance(target, int):
        return sw(target)
    if not _allowed(card, target.ef.read):
        return sw(SW.SECURITY_STATUS_NOT_SATISFIED)
    record = read_record(card.nvm, target, cmd.p1)
    if record is None:
        return sw(SW.RECORD_NOT_FOUND)
    return record, SW.OK


def update_record(card: SimulatedCard, cmd: CommandAPDU) -> Reply:
    if not cmd.data:
        return sw(SW.WRONG_LENGTH)
    target = _record_target(card, cmd.p1, cmd.p2)
    if isinstance(target, int):
        return sw(target)
    if target.ef.kind is not FileKind.LINEAR:
        return sw(SW.COMMAND_INCOMPATIBLE_WITH_FILE)
    refusal = _update_refusal(card, target)
    if refusal is not None:
        return sw(refusal)
    if len(cmd.data) != target.ef.size:
        return sw(SW.WRONG_LENGTH)
    if cmd.p1 > record_count(card.nvm, target):
        return sw(SW.RECORD_NOT_FOUND)
    write_record(card.nvm, Step.FILE_UPDATE, target, cmd.p1, cmd.data)
    return sw(SW.OK)


# --- security ---------------------------------------------------------------------------------


def get_challenge(card: SimulatedCard, cmd: CommandAPDU) -> Reply:
    """GET CHALLENGE: 4 or 8 random bytes, valid for the next command only."""
    if cmd.p1 or cmd.p2:
        return sw(SW.WRONG_P1_P2)
    if cmd.data or cmd.le not in (4, 8):
        return sw(SW.WRONG_LENGTH)
    challenge = card.random(cmd.le)
    card.ram.challenge = challenge
    return challenge, SW.OK


def verify(card: SimulatedCard, cmd: CommandAPDU) -> Reply:
    """VERIFY the card PIN (P2 00, compressed BCD padded with F).

    The retry counter is decremented and committed before the comparison and restored
    after a match, so cutting the power during a wrong try never saves a try.
    """
    pin = card.layout.pin
    if cmd.p1:
        return sw(SW.WRONG_P1_P2)
    if cmd.p2 or pin is None:
        return sw(SW.REFERENCED_DATA_NOT_FOUND)
    tries = card.nvm.read(PIN_TRIES_CELL)[0]
    if not cmd.data:
        if tries == 0:
            return sw(SW.AUTHENTICATION_METHOD_BLOCKED)
        return sw(SW.OK if card.ram.pin_verified else 0x63C0 | tries)
    if len(cmd.data) > 6:
        return sw(SW.WRONG_LENGTH)
    if tries == 0:
        return sw(SW.AUTHENTICATION_METHOD_BLOCKED)
    card.ram.pin_verified = False
    card.nvm.write(Step.PIN_TRIES, PIN_TRIES_CELL, bytes([tries - 1]))
    card.nvm.commit()
    if cmd.data == pin.bcd:
        card.nvm.write(Step.PIN_TRIES, PIN_TRIES_CELL, bytes([pin.max_tries]))
        card.nvm.commit()
        card.ram.pin_verified = True
        return sw(SW.OK)
    return sw(0x63C0 | (tries - 1))


HANDLERS: dict[int, Callable[[SimulatedCard, CommandAPDU], Reply]] = {
    0xA4: select,
    0xB0: read_binary,
    0xB2: read_record_cmd,
    0xD6: update_binary,
    0xDC: update_record,
    0x84: get_challenge,
    0x20: verify,
}
