"""The offline record of an approved EMV sale (docs/records.md, "The EMV card record").

`sale_record` turns a finished `EmvPurchase` whose outcome is approved into the
`unioncard.offline.EmvRecord` the terminal journals and exports: the clearing
data of the outcome (the cryptogram and the values it covers, as the card got
them: docs/emv-kernel.md, "Clearing data") with the pricing the kernel did
(member data, list and charged amounts, the rules applied and the rule set).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from unioncard.apdu import records
from unioncard.offline.emv_record import EmvPath, EmvRecord
from unioncard.tariffs.money import ROUNDING_CODES
from unioncard.terminal.emv.kernel import EmvPurchase
from unioncard.terminal.session import Decision, Outcome

__all__ = ["ORGANIZATION_BYTES", "sale_record"]

ORGANIZATION_BYTES = 48
"""The record's organization field: the member's organization cut to this many bytes."""


def sale_record(session: EmvPurchase, outcome: Outcome, *, terminal_id: bytes,
                terminal_seq: int) -> EmvRecord:
    """The record of ``session``'s approved sale; `ValueError` when the outcome is not an
    approval with clearing data, or the cryptogram covers values that are not the sale's
    (another amount or date: it could not be verified from the record)."""
    clearing: dict[str, Any] | None = outcome.details.get("clearing")
    if outcome.decision is not Decision.APPROVED or not clearing:
        raise ValueError("only an approved EMV sale with its cryptogram becomes a record")
    values = {int(tag, 16): bytes.fromhex(value) for tag, value in clearing["values"].items()}
    when = session.now
    record = EmvRecord(
        terminal_id=terminal_id, terminal_seq=terminal_seq, pan=clearing["pan"],
        psn=clearing["psn"], aid=bytes.fromhex(clearing["aid"]),
        cid=int(clearing["cid"], 16), ac=bytes.fromhex(clearing["ac"]),
        amount_other=int(values.get(0x9F03, bytes(6)).hex() or "0"),
        terminal_country=values[0x9F1A], tvr=values[0x95], currency=values[0x5F2A],
        transaction_type=values[0x9C][0], unpredictable_number=values[0x9F37],
        aip=values[0x82], atc=int(clearing["atc"]), iad=bytes.fromhex(clearing["iad"]),
        arc=str(outcome.details.get("arc") or "").encode("ascii"),
        path=EmvPath.of_label(outcome.details["path"]),
        card_expiry=_expiry(session), **_member(outcome.details.get("member"), when.date()),
        list_amount=session.amount, charged_amount=session.charged,
        rules=tuple(session.rules.index(rule) for rule in session.priced.rules),
        merchant=session.merchant or "", mcc=session.settings.mcc, when=when,
        ruleset_version=bytes.fromhex(session.rules.version),
        rounding=ROUNDING_CODES[session.rules.rounding])
    covered = record.ac_values()
    differ = [f"{tag:X}" for tag, value in values.items() if covered.get(tag) != value]
    if differ:
        raise ValueError(f"the cryptogram covers values the sale does not have "
                         f"({', '.join(differ)}): it cannot be verified from a record")
    return record


def _expiry(session: EmvPurchase) -> dt.date | None:
    raw = session.card.get(0x5F24)
    if raw is None or len(raw) != 3:
        return None
    try:
        return dt.datetime.strptime(raw.hex(), "%y%m%d").date()
    except ValueError:
        return None


def _member(member: dict[str, Any] | None, today: dt.date) -> dict[str, Any]:
    """The record's member fields, as the kernel priced the sale: a union member's card
    type only while the membership is active and covers the day (docs/tariffs.md)."""
    if member is None:
        return {"card_type": int(records.CardType.ORDINARY)}
    status = records.MemberStatus[member["status"].upper()]
    active = (status == records.MemberStatus.ACTIVE
              and dt.date.fromisoformat(member["valid_from"]) <= today
              <= dt.date.fromisoformat(member["valid_until"]))
    organization = member["organization"].encode("utf-8")[:ORGANIZATION_BYTES]
    return {"card_type": int(records.CardType.UNION_MEMBER if active
                             else records.CardType.ORDINARY),
            "category_flags": int(member["category_flags"], 16), "member_status": int(status),
            "organization": organization.decode("utf-8", "ignore")}
