"""Application selection (EMV 4.3 Book 1 §12; PBOC): PPSE, PSE, then the terminal's AID list.

- Contactless: SELECT ``2PAY.SYS.DDF01``; the PPSE FCI lists the applications
  (``BF0C`` / ``61`` entries).
- Contact: SELECT ``1PAY.SYS.DDF01``; the directory records of the SFI in its
  FCI (``88``) list them, read from record 1 until ``6A83``.
- Without a directory (``6A82``, a blocked PSE, an FCI or directory that does not
  decode, an empty list), every AID of the terminal is selected in turn, with
  partial matching and next occurrence; a directory record that does not decode
  is skipped (Book 1 §12.3.2).
- ``6A81`` to the SELECT of the PSE or of an AID of the list: the card is
  blocked (or does not support SELECT), the transaction ends (Book 1 §12.3).

Candidates are the card applications the terminal accepts, ordered by their
Application Priority Indicator ``87`` (b4-b1, 1 highest, 0 none, last); b8
asks for cardholder confirmation, an input of the kernel (`EmvSettings
.confirm_application`, or the AID the cardholder chose).  The chosen
application is selected (final SELECT, Book 1 §12.4): an answer other than
``9000`` (``6283`` blocked, ``6A82``, any other), an FCI that does not decode or
whose DF name ``84`` is not the AID selected drops the candidate and the next is
taken; ``6A81`` ends the transaction.  An application that refuses GET
PROCESSING OPTIONS with ``6985`` is left out and selection starts over (``exclude``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unioncard.apdu import SW, ResponseAPDU, tlv
from unioncard.apdu.status import describe as describe_sw
from unioncard.errors import DecodeError
from unioncard.terminal.card import SubFlow, card_send
from unioncard.terminal.emv import commands as cmd
from unioncard.terminal.emv.settings import AidEntry, EmvSettings
from unioncard.terminal.session import Decision, Refused

__all__ = ["PPSE", "PSE", "Candidate", "Selected", "select_application"]

PSE, PPSE = b"1PAY.SYS.DDF01", b"2PAY.SYS.DDF01"
DIRECTORY_RECORDS_MAX = 32


@dataclass(frozen=True, slots=True)
class Candidate:
    aid: bytes
    label: str
    priority: int | None
    """API ``87`` (None: absent)."""

    @property
    def rank(self) -> int:
        """Sort key: priority 1 first, no priority (0 or absent) last."""
        value = (self.priority or 0) & 0x0F
        return value or 16

    @property
    def needs_confirmation(self) -> bool:
        return bool((self.priority or 0) & 0x80)


@dataclass(frozen=True, slots=True)
class Selected:
    """The selected application: its FCI and how it was found."""

    candidate: Candidate
    fci: list[tlv.Tlv]
    method: str
    """``ppse``, ``pse`` or ``aid list``."""
    candidates: tuple[Candidate, ...]
    blocked: bool = False
    """SELECT answered ``6283`` (only with ``allow_blocked``: a reader, not a sale)."""


def _decoded(answer: ResponseAPDU) -> list[tlv.Tlv] | None:
    """The answer's TLV objects, or None when they do not decode (a format error)."""
    try:
        return tlv.decode(answer.data)
    except DecodeError:
        return None


def _blocked(answer: ResponseAPDU, what: str) -> None:
    """Book 1 §12.3.2-12.4: ``6A81`` to a SELECT ends the transaction."""
    if answer.sw == SW.FUNCTION_NOT_SUPPORTED:
        raise Refused(f"the card is blocked ({what} answered 6A81)")


def _accepted(aid: bytes, aids: Sequence[AidEntry]) -> bool:
    return any(aid == e.aid or (e.partial and aid.startswith(e.aid)) for e in aids)


def _entry(node: tlv.Tlv) -> Candidate | None:
    aid = tlv.find(node.children, 0x4F)
    if aid is None or not 5 <= len(aid.value) <= 16:
        return None
    label = tlv.find(node.children, 0x50)
    priority = tlv.find(node.children, 0x87)
    return Candidate(aid.value, label.value.decode("ascii", "replace") if label else "",
                     priority.value[0] if priority and priority.value else None)


def _from_directory(nodes: list[tlv.Tlv], aids: Sequence[AidEntry]) -> list[Candidate]:
    found = [_entry(n) for n in tlv.find_all(nodes, 0x61)]
    return [c for c in found if c is not None and _accepted(c.aid, aids)]


def _ppse() -> SubFlow:
    answer = yield card_send(cmd.select(PPSE), "SELECT PPSE")
    return _decoded(answer) if answer.sw == SW.OK else None


def _pse(aids: Sequence[AidEntry]) -> SubFlow:
    answer = yield card_send(cmd.select(PSE), "SELECT PSE")
    _blocked(answer, "SELECT PSE")
    fci = _decoded(answer) if answer.sw == SW.OK else None
    if fci is None:
        return None
    sfi_node = tlv.find(fci, 0x88)
    if sfi_node is None or len(sfi_node.value) != 1 or not 1 <= sfi_node.value[0] <= 10:
        return None
    found: list[Candidate] = []
    for number in range(1, DIRECTORY_RECORDS_MAX + 1):
        what = f"READ RECORD PSE directory #{number}"
        record = yield card_send(cmd.read_record(sfi_node.value[0], number), what)
        if record.sw == SW.RECORD_NOT_FOUND:
            break
        if record.sw != SW.OK:
            return None  # a broken directory: the AID list instead (Book 1 §12.3.2)
        entries = _decoded(record)
        if entries is not None:  # a record that does not decode is skipped
            found += _from_directory(entries, aids)
    return found


def _aid_list(aids: Sequence[AidEntry]) -> SubFlow:
    found: list[Candidate] = []
    for entry in aids:
        what = f"SELECT {entry.aid.hex().upper()}"
        answer = yield card_send(cmd.select(entry.aid), what)
        _blocked(answer, what)
        for _ in range(DIRECTORY_RECORDS_MAX):
            if answer.sw not in (SW.OK, SW.SELECTED_FILE_INVALIDATED):
                break
            nodes = _decoded(answer)
            name = None if nodes is None else tlv.find(nodes, 0x84)
            if name is None:
                break
            if answer.sw == SW.OK and nodes is not None and (
                    name.value == entry.aid
                    or (entry.partial and name.value.startswith(entry.aid))):
                label = tlv.find(nodes, 0x50)
                priority = tlv.find(nodes, 0x87)
                found.append(Candidate(
                    name.value, label.value.decode("ascii", "replace") if label else entry.label,
                    priority.value[0] if priority and priority.value else None))
            if not entry.partial or name.value == entry.aid:
                break
            answer = yield card_send(cmd.select(entry.aid, next_occurrence=True),
                                     f"SELECT {entry.aid.hex().upper()} (next)")
    return found


def select_application(settings: EmvSettings, *, contactless: bool,
                       chosen: bytes | None = None,
                       exclude: frozenset[bytes] = frozenset(),
                       allow_blocked: bool = False) -> SubFlow:
    """Build the candidate list and select the application to use: a `Selected`.

    ``exclude`` are applications whose GET PROCESSING OPTIONS answered ``6985`` in this
    transaction: selection starts over without them (Book 1 §12.4).  ``allow_blocked``
    keeps an application whose SELECT answers ``6283`` with its FCI (to read it)."""
    method = "ppse" if contactless else "pse"
    candidates: list[Candidate] | None = None
    if contactless:
        nodes = yield from _ppse()
        if nodes is not None:
            candidates = _from_directory(nodes, settings.aids)
    else:
        candidates = yield from _pse(settings.aids)
    if not candidates:
        method = "aid list"
        candidates = yield from _aid_list(settings.aids)
    ordered = sorted(dict.fromkeys(candidates), key=lambda c: c.rank)
    if not ordered:
        raise Refused("the card has no application this terminal accepts (UnionPay debit, "
                      "credit, quasi-credit, electronic cash)", Decision.DECLINED)
    listed = tuple(ordered)
    ordered = [c for c in ordered if c.aid not in exclude]
    if not ordered:
        raise Refused("no application of the card accepts this transaction here (GET "
                      "PROCESSING OPTIONS answered 6985): try the other interface")
    if chosen is not None:
        ordered = [c for c in ordered if c.aid == chosen]
        if not ordered:
            raise Refused(f"the card has no application {chosen.hex().upper()}")
    dropped: list[str] = []
    while ordered:
        candidate = ordered.pop(0)
        if candidate.needs_confirmation and not settings.confirm_application and chosen is None:
            continue  # Book 1 §12.4: no confirmation possible, the application is not used
        what = f"SELECT {candidate.aid.hex().upper()}"
        answer = yield card_send(cmd.select(candidate.aid), what)
        _blocked(answer, what)
        blocked = allow_blocked and answer.sw == SW.SELECTED_FILE_INVALIDATED
        fci = _decoded(answer) if answer.sw == SW.OK or blocked else None
        name = None if fci is None else tlv.find(fci, 0x84)
        if fci is not None and name is not None and name.value == candidate.aid:
            return Selected(candidate, fci, method, listed, blocked)
        # Book 1 §12.4: any other answer, an FCI that does not decode or names another
        # DF: the candidate is dropped and the next one selected
        dropped.append(f"{candidate.aid.hex().upper()} ("
                       + (describe_sw(answer.sw) if answer.sw != SW.OK else "FCI not usable")
                       + ")")
    raise Refused("no application of the card can be used ("
                  + ("; ".join(dropped) if dropped else "cardholder confirmation needed")
                  + ")")
