"""ETC toll flows: entry and exit through composite (CAPP) purchases (docs/protocol.md §1, §4).

The ETC application's EF 0019 record (``AA 29 …``) carries the trip: the entry
lane writes an entry record (status ``03``) with a CAPP purchase of 0, and the
exit lane reads it, prices the trip from its toll table, takes the member
benefit off (5% in the shipped rules) and charges it with a CAPP purchase that
writes the exit record (status ``04``): the card commits the record and the
debit together, or neither.

Defined outcomes when the card carries no usable entry (docs/terminal.md):

- no entry record (the last record is an exit, or the card was never used),
  an entry on another network, or an entry station the toll table does not
  list: the trip is charged the *longest toll* into this exit for the vehicle
  class (the toll-road practice for a missing entry), with a reason that says
  so; a table with no toll into this exit declines;
- an explicit ``amount`` always wins over the table;
- an entry lane that finds an open entry (a previous trip with no exit)
  overwrites it and warns;
- an exit lane pricing from its table that finds the exit it wrote itself
  minutes ago (the card read twice) declines: the trip is paid.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Generator
from typing import Any

from unioncard.apdu import SW, records
from unioncard.apdu import purse as cmd
from unioncard.apdu.member import MemberRecord
from unioncard.offline import Application, OfflineRecord
from unioncard.tariffs import Mode
from unioncard.terminal.card import (
    CAPP_SFI,
    CHINA_STANDARD_TIME,
    PurseCard,
    card_send,
    parse_answer,
)
from unioncard.terminal.purchase import PurseSession, Sale
from unioncard.terminal.session import Decision, Flow, Refused, Step
from unioncard.terminal.tolls import TollTable

__all__ = ["CHINA_STANDARD_TIME", "EtcEntry", "EtcExit", "TollStatus"]



class TollStatus:
    """EF 0019 entry/exit status byte (docs/protocol.md §4)."""

    MTC_ENTRY, MTC_EXIT, ETC_ENTRY, ETC_EXIT = 0x01, 0x02, 0x03, 0x04
    ENTRIES = frozenset({MTC_ENTRY, ETC_ENTRY})
    EXITS = frozenset({MTC_EXIT, ETC_EXIT})


class _TollSession(PurseSession):
    application = Application.ETC

    def __init__(self, *, network: int, station: int, lane: int = 1,
                 timezone: dt.tzinfo = CHINA_STANDARD_TIME, **options: Any) -> None:
        super().__init__(**options)
        for name, value, top in (("network", network, 0xFFFF), ("station", station, 0xFFFF),
                                 ("lane", lane, 0xFF)):
            if not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"{name} must be 0..{top:#x}")
        self.network, self.station, self.lane = network, station, lane
        self.timezone = timezone

    def same_sale(self, draft: OfflineRecord) -> bool:
        return draft.station == self.station

    def read_toll_record(self) -> Generator[Step, Any, Any]:
        """EF 0019 record 1, parsed; None when it holds no trip (all zeros after AA 29)."""
        answer = yield card_send(
            cmd.read_record(CAPP_SFI, 1, records.size_of(records.CAPP_RECORD)),
            "READ RECORD EF 0019 #1")
        if answer.sw in (SW.FILE_NOT_FOUND, SW.RECORD_NOT_FOUND):
            raise Refused("the card's ETC application has no toll record file (EF 0019)")
        return parse_answer(answer, "READ RECORD EF 0019 #1", records.CAPP_RECORD)

    def unix_now(self) -> int:
        """``now`` (local time) as the EF 0019 unix time (UTC)."""
        return calendar.timegm(self.now.replace(tzinfo=self.timezone).utctimetuple())

    def toll_record(self, *, status: int, vehicle_class: int, plate: str) -> bytes:
        unix = self.unix_now()
        return records.build(
            records.CAPP_RECORD, lock=0, network=self.network.to_bytes(2, "big"),
            station=self.station.to_bytes(2, "big"), lane=self.lane, unix_time=unix,
            vehicle_class=vehicle_class, status=status, marker_station=bytes(9),
            staff_no=bytes(3), shift=0, plate=plate, reserved=bytes(4))

    def entry_time(self, unix_time: int) -> str:
        return (dt.datetime.fromtimestamp(unix_time, self.timezone).replace(tzinfo=None)
                .isoformat())


class EtcEntry(_TollSession):
    """The entry lane: a CAPP purchase of 0 writing the entry record (status ``03``)."""

    flow_name = "etc-entry"

    def __init__(self, *, vehicle_class: int = 1, **options: Any) -> None:
        super().__init__(**options)
        if not 1 <= vehicle_class <= 0xFF:
            raise ValueError("the vehicle class is 1..255")
        self.vehicle_class = vehicle_class

    def transact(self, card: PurseCard, member: MemberRecord | None) -> Flow:
        previous = yield from self.read_toll_record()
        warnings = []
        if previous.status in TollStatus.ENTRIES:
            warnings.append(f"the card had an open entry (station {previous.station.hex().upper()}"
                            f", {self.entry_time(previous.unix_time)}) with no exit: "
                            "overwritten")
        record = self.toll_record(status=TollStatus.ETC_ENTRY, vehicle_class=self.vehicle_class,
                                  plate=card.plate)
        sale = Sale(Mode.ETC, station=self.station, vehicle_class=self.vehicle_class)
        priced = self.price(card, member, 0, sale)
        details = {"toll": {"network": f"{self.network:04X}", "station": f"{self.station:04X}",
                            "lane": self.lane, "vehicle_class": self.vehicle_class,
                            "status": "entry"}}
        outcome = yield from self.purchase(card, member, priced, sale, capp_record=record,
                                           details=details)
        if outcome.decision is Decision.APPROVED:
            outcome = outcome.with_changes(reason="entry recorded on the card",
                                           warnings=outcome.warnings + tuple(warnings))
        return outcome


class EtcExit(_TollSession):
    """The exit lane: the toll from the entry record, the member benefit, a CAPP purchase
    writing the exit record (status ``04``).  ``amount`` (fen) overrides the table;
    ``vehicle_class`` overrides the class the entry recorded."""

    flow_name = "etc-exit"

    def __init__(self, *, tolls: TollTable | None = None, amount: int | None = None,
                 vehicle_class: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        if tolls is None and amount is None:
            raise ValueError("an exit lane needs a toll table or an amount")
        if amount is not None and amount < 0:
            raise ValueError("the toll is a non-negative integer of fen")
        self.tolls, self.amount, self.vehicle_class = tolls, amount, vehicle_class

    def transact(self, card: PurseCard, member: MemberRecord | None) -> Flow:
        entry = yield from self.read_toll_record()
        trip = self._trip(entry)
        record = self.toll_record(status=TollStatus.ETC_EXIT, vehicle_class=trip["vehicle_class"],
                                  plate=card.plate)
        sale = Sale(Mode.ETC, station=self.station, entry_station=trip["entry_station"],
                    vehicle_class=trip["vehicle_class"])
        priced = self.price(card, member, trip["toll"], sale)
        outcome = yield from self.purchase(card, member, priced, sale, capp_record=record,
                                           details={"toll": trip["details"]})
        if outcome.decision is Decision.APPROVED and trip["note"]:
            outcome = outcome.with_changes(reason=f"{trip['note']}; {outcome.reason}")
        return outcome

    def _refuse_a_second_exit(self, record: Any) -> None:
        """A card read again at the exit it just left (a lane retry, a card held twice to
        the reader) shows that exit, not an entry: charging the longest toll again would
        charge the trip twice."""
        if record.status not in TollStatus.EXITS:
            return
        here = (int.from_bytes(record.network, "big"), int.from_bytes(record.station, "big"))
        age = self.unix_now() - record.unix_time
        if here == (self.network, self.station) and 0 <= age <= \
                self.recovery_window.total_seconds():
            raise Refused(f"the card left this plaza at {self.entry_time(record.unix_time)} "
                          "already: its trip is paid, and it has no open entry to charge")

    def _trip(self, entry: Any) -> dict[str, Any]:
        """Entry station, vehicle class, toll and a note on how the toll was found."""
        if self.amount is None:  # a toll the lane gives is the operator's decision
            self._refuse_a_second_exit(entry)
        open_entry = entry.status in TollStatus.ENTRIES
        vehicle_class = self.vehicle_class or (entry.vehicle_class if open_entry else 0) or 1
        entry_station = int.from_bytes(entry.station, "big") if open_entry else 0
        entry_network = int.from_bytes(entry.network, "big")
        details: dict[str, Any] = {
            "network": f"{self.network:04X}", "station": f"{self.station:04X}",
            "lane": self.lane, "vehicle_class": vehicle_class, "status": "exit",
            "entry_station": f"{entry_station:04X}" if open_entry else None,
            "entry_time": self.entry_time(entry.unix_time) if open_entry else None,
        }
        note = ""
        if self.amount is not None:
            toll = self.amount
            note = "toll given by the lane"
        else:
            assert self.tolls is not None
            found = None
            if not open_entry:
                note = "no entry on the card"
            elif entry_network != self.tolls.network:
                note = f"entry on another network ({entry_network:04X})"
            else:
                found = self.tolls.toll(entry_station, self.station, vehicle_class)
                if found is None:
                    note = f"no toll from entry station {entry_station:04X} to this exit"
            if found is None:
                found = self.tolls.longest_toll(self.station, vehicle_class)
                if found is None:
                    raise Refused(f"the toll table has no toll into station {self.station:04X} "
                                  f"for vehicle class {vehicle_class} ({note})",
                                  details={"toll": details})
                note += ": charged the longest toll into this exit"
            toll = found
        details["toll_fen"] = toll
        return {"vehicle_class": vehicle_class, "entry_station": entry_station, "toll": toll,
                "note": note, "details": details}
