"""A small purse terminal written with pyscard only: read a union member card's
transit purse, and take a fare with the terminal's PSAM.

Byte layouts follow the PBOC electronic purse (JR/T 0025) as summarised in
unioncard's docs/protocol.md: SELECT the T-Union transit application, READ BINARY
EF 0015, GET BALANCE, then INITIALIZE FOR PURCHASE / PSAM MAC1 / DEBIT / PSAM
MAC2 check for a purchase.  Nothing here depends on unioncard: the tests
(``tests/``) run this terminal against simulated cards served by unioncard's
pytest plugin, exactly as it would run against a real reader.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from smartcard.scard import (
    SCARD_E_TIMEOUT,
    SCARD_PCI_T0,
    SCARD_PCI_T1,
    SCARD_PROTOCOL_T0,
    SCARD_PROTOCOL_T1,
    SCARD_S_SUCCESS,
    SCARD_SCOPE_USER,
    SCARD_SHARE_SHARED,
    SCARD_STATE_PRESENT,
    SCARD_STATE_UNAWARE,
    SCARD_UNPOWER_CARD,
    SCardConnect,
    SCardDisconnect,
    SCardEstablishContext,
    SCardGetErrorMessage,
    SCardGetStatusChange,
    SCardReleaseContext,
    SCardTransmit,
)

TRANSIT_AID = bytes.fromhex("A000000632010105")
UNION_MEMBER_CARD_TYPE = 0x55


class TerminalError(Exception):
    """The reader or a card failed, or a card refused a command."""


def wait_for_card(reader: str, timeout: float) -> None:
    """Wait until a card is in ``reader`` (a tap), or raise TerminalError."""
    result, context = SCardEstablishContext(SCARD_SCOPE_USER)
    try:
        state = SCARD_STATE_UNAWARE
        while True:
            result, states = SCardGetStatusChange(context, int(timeout * 1000),
                                                  [(reader, state)])
            if result == SCARD_E_TIMEOUT:
                raise TerminalError(f"no card in {reader!r} after {timeout} s")
            if result != SCARD_S_SUCCESS:
                raise TerminalError(f"cannot watch {reader!r}: {SCardGetErrorMessage(result)}")
            state = states[0][1]
            if state & SCARD_STATE_PRESENT:
                return
    finally:
        SCardReleaseContext(context)


class Reader:
    """One card in one PC/SC reader, with the T=0 case handling (61xx, 6Cxx)."""

    def __init__(self, name: str) -> None:
        self.name = name
        result, self.context = SCardEstablishContext(SCARD_SCOPE_USER)
        self._check(result, "establish a PC/SC context")
        result, self.card, protocol = SCardConnect(
            self.context, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
        self._check(result, f"connect to the card in {name!r}")
        self.pci = SCARD_PCI_T0 if protocol == SCARD_PROTOCOL_T0 else SCARD_PCI_T1

    def _check(self, result: int, what: str) -> None:
        if result != SCARD_S_SUCCESS:
            raise TerminalError(f"cannot {what}: {SCardGetErrorMessage(result)}")

    def _transmit(self, apdu: bytes) -> tuple[bytes, int]:
        result, response = SCardTransmit(self.card, self.pci, list(apdu))
        self._check(result, f"exchange an APDU in {self.name!r}")
        if len(response) < 2:
            raise TerminalError(f"the card in {self.name!r} did not answer")
        return bytes(response[:-2]), response[-2] << 8 | response[-1]

    def send(self, apdu: bytes | str, expect: int | None = 0x9000) -> bytes:
        """Send a command; follow 6Cxx and 61xx; check the status word."""
        if isinstance(apdu, str):
            apdu = bytes.fromhex(apdu)
        data, sw = self._transmit(apdu)
        if sw >> 8 == 0x6C:
            apdu = apdu[:-1] + bytes([sw & 0xFF])
            data, sw = self._transmit(apdu)
        while sw >> 8 == 0x61:
            more, sw = self._transmit(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
            data += more
        if expect is not None and sw != expect:
            raise TerminalError(f"{apdu[:4].hex().upper()} answered {sw:04X}")
        return data

    def close(self) -> None:
        SCardDisconnect(self.card, SCARD_UNPOWER_CARD)
        SCardReleaseContext(self.context)


@dataclass(frozen=True)
class PurseInfo:
    serial: str
    member: bool
    balance: int  # fen


@dataclass(frozen=True)
class Fare:
    amount: int
    balance_after: int
    tac: bytes


def read_purse(card: Reader) -> PurseInfo:
    """SELECT the transit purse, read EF 0015 and the balance."""
    card.send(b"\x00\xa4\x04\x00" + bytes([len(TRANSIT_AID)]) + TRANSIT_AID + b"\x00")
    info = card.send("00B095001E")
    balance = card.send("805C000204")
    return PurseInfo(info[10:20].hex().upper(), info[28] == UNION_MEMBER_CARD_TYPE,
                     int.from_bytes(balance, "big"))


def pay_fare(card: Reader, psam: Reader, amount: int, when: dt.datetime) -> Fare:
    """One EP purchase: INITIALIZE, PSAM MAC1, DEBIT, PSAM checks MAC2."""
    purse = read_purse(card)
    psam.send("00A40000023F00")
    terminal_id = psam.send("00B0960006")
    psam.send("00A40000021001")
    init = card.send(b"\x80\x50\x01\x02\x0b\x01" + amount.to_bytes(4, "big")
                     + terminal_id + b"\x0f", expect=None)
    if len(init) != 15:
        raise TerminalError(f"INITIALIZE FOR PURCHASE refused (balance {purse.balance})")
    date, time = bytes.fromhex(when.strftime("%Y%m%d")), bytes.fromhex(when.strftime("%H%M%S"))
    diversifier = bytes.fromhex(purse.serial)[2:]
    mac1_request = (init[11:15] + init[4:6] + amount.to_bytes(4, "big") + b"\x06" + date
                    + time + init[9:11] + diversifier)
    mac1 = psam.send(b"\x80\x70\x00\x00\x1c" + mac1_request + b"\x08")
    answer = card.send(b"\x80\x54\x01\x00\x0f" + mac1[:4] + date + time + mac1[4:] + b"\x08")
    psam.send(b"\x80\x72\x00\x00\x04" + answer[4:])  # MAC2: the card really debited
    return Fare(amount, int.from_bytes(init[:4], "big") - amount, answer[:4])
