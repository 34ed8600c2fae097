"""Card read (balance inquiry): balances, EF 0015, holder, member, logs and transit records.

Reads every purse the card has, the member application, each purse's
transaction log (EF 0018) and, on the transit purse, the T-Union transit
records (EF 001E), decoded with the layouts of docs/protocol.md §4.  Optional parts
(EF 0016, EF 001E, the ETC application, the member application) that a card
lacks are reported as absent, never as errors.  Identity numbers are masked
unless asked otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from typing import Any

from unioncard.apdu import SW, records
from unioncard.apdu import purse as cmd
from unioncard.apdu.masking import mask_digits
from unioncard.apdu.purse import TransactionType
from unioncard.errors import DecodeError
from unioncard.offline import Application
from unioncard.terminal import card as reading
from unioncard.terminal.session import Decision, Flow, Outcome, Refused, Session, Step

__all__ = ["CardRead"]

_TYPE_NAMES = {TransactionType.EP_LOAD: "load", TransactionType.EP_PURCHASE: "purchase",
               TransactionType.CAPP_PURCHASE: "composite purchase"}
_RIDE_NAMES = {records.TransitRecordType.SINGLE_RIDE: "single ride",
               records.TransitRecordType.ENTRY: "entry", records.TransitRecordType.EXIT: "exit"}


class CardRead(Session):
    """Read the card without changing it; ``unmask`` shows identity numbers in full."""

    flow_name = "read"

    def __init__(self, *, unmask: bool = False, payment_applications: bool = False) -> None:
        super().__init__()
        self.unmask = unmask
        self.payment_applications = payment_applications
        """Also list the card's EMV payment applications (`unioncard.terminal.emv.read`)."""

    def flow(self) -> Flow:
        member = yield from reading.read_member()
        payment: list[dict[str, Any]] = []
        if self.payment_applications:
            from unioncard.terminal.emv.read import read_payment_applications

            payment = yield from read_payment_applications(unmask=self.unmask)
        purses: list[dict[str, Any]] = []
        for app in Application:
            try:
                card = yield from reading.select_purse(app, allow_blocked=True)
            except Refused as refused:
                purses.append({"application": app.name.lower(), "present": False,
                               "reason": refused.reason})
                continue
            purses.append((yield from self._purse(card)))
        if not any(p["present"] for p in purses) and not payment:
            raise Refused("the card has neither a transit purse nor an ETC application"
                          + (" nor a payment application" if self.payment_applications
                             else ""), details={"purses": purses})
        details: dict[str, Any] = {"purses": purses, "member": None}
        if self.payment_applications:
            details["payment_applications"] = payment
        if member is not None:
            details["member"] = {**reading.member_dict(member), "name": member.name}
        balances = {p["application"]: p.get("balance") for p in purses if p["present"]}
        return Outcome(self.flow_name, Decision.APPROVED, "card read",
                       details={"balances": balances, **details})

    def _purse(self, card: reading.PurseCard) -> Generator[Step, Any, dict[str, Any]]:
        found: dict[str, Any] = {"present": True, **card.to_dict()}
        balance = yield reading.card_send(cmd.get_balance(), "GET BALANCE")
        found["state"] = {SW.OK: "active", SW.CONDITIONS_NOT_SATISFIED: "blocked",
                          SW.APPLICATION_LOCKED: "locked"}.get(balance.sw, f"{balance.sw:04X}")
        found["balance"] = (reading.parse_answer(balance, "GET BALANCE", cmd.BALANCE_RESPONSE)
                            .balance if balance.sw == SW.OK else None)
        holder = yield reading.card_send(
            cmd.read_binary_sfi(reading.HOLDER_SFI, records.size_of(records.HOLDER)),
            "READ BINARY EF 0016")
        found["holder"] = self._holder(holder.data) if holder.sw == SW.OK else None
        log = yield from reading.read_log()
        found["log"] = [_log_entry(e) for e in log]
        if card.application is Application.TRANSIT:
            rides = yield from reading.read_transit_records()
            found["transit_records"] = [_ride(r) for r in rides]
        else:
            toll = yield reading.card_send(
                cmd.read_record(reading.CAPP_SFI, 1, records.size_of(records.CAPP_RECORD)),
                "READ RECORD EF 0019 #1")
            found["toll_record"] = _toll(toll.data) if toll.sw == SW.OK else None
        return found

    def _holder(self, raw: bytes) -> dict[str, Any] | None:
        try:
            holder = records.parse(records.HOLDER, raw)
        except DecodeError:
            return None
        number = holder.id_number
        return {"name": holder.name,
                "id_number": number if self.unmask else mask_digits(number)}


def _log_entry(entry: Any) -> dict[str, Any]:
    date, time = entry.date.hex(), entry.time.hex()
    return {"seq": entry.seq, "type": _TYPE_NAMES.get(entry.tx_type, f"{entry.tx_type:02X}"),
            "amount": entry.amount, "terminal_id": entry.terminal_id.hex().upper(),
            "date": f"{date[:4]}-{date[4:6]}-{date[6:]}",
            "time": f"{time[:2]}:{time[2:4]}:{time[4:]}"}


def _ride(raw: bytes) -> dict[str, Any]:
    try:
        ride = records.parse(records.TRANSIT_RECORD, raw)
    except DecodeError:
        return {"raw": raw.hex().upper()}
    when = ride.when.hex()
    return {"type": _RIDE_NAMES.get(ride.tx_type, f"{ride.tx_type:02X}"),
            "terminal_id": ride.terminal_id.hex().upper(), "transit_type": ride.transit_type,
            "line_station": ride.line_station.hex().upper(), "amount": ride.amount,
            "balance_after": ride.balance_after,
            "when": f"{when[:4]}-{when[4:6]}-{when[6:8]}T{when[8:10]}:{when[10:12]}:{when[12:]}",
            "city_code": ride.city_code.hex(), "institution": ride.institution.hex().upper()}


def _toll(raw: bytes) -> dict[str, Any] | None:
    try:
        record = records.parse(records.CAPP_RECORD, raw)
    except DecodeError:
        return None
    when = (None if not record.unix_time else
            dt.datetime.fromtimestamp(record.unix_time, reading.CHINA_STANDARD_TIME).isoformat())
    return {"status": record.status, "network": record.network.hex().upper(),
            "station": record.station.hex().upper(), "lane": record.lane,
            "unix_time": record.unix_time, "time": when,
            "vehicle_class": record.vehicle_class, "plate": record.plate}
