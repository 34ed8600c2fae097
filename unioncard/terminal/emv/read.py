"""Reading the card's payment applications: what an EMV reading tool shows (EMV Book 3 §10.1-2).

For each application the directory (PPSE, else PSE, else the AID list) lists:
SELECT, the records of SFI 1-10 read from record 1 until one is missing, without
GET PROCESSING OPTIONS, so the card does not change (a card that refuses that
with ``6985``/``6982``/``6986`` is read after a GPO as a contact PBOC balance
inquiry: amount zero, no qPBOC bit, nothing debited, but its ATC moves), GET DATA of
the ATC, last online ATC, PIN try counter and EC balance, and the transaction
log (``9F4D`` in the FCI, ``9F4F`` its format).  The PAN is masked unless asked
otherwise; keys and certificates are not shown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from typing import Any

from unioncard.apdu import SW, dol, tlv
from unioncard.apdu.masking import mask_digits
from unioncard.errors import CardError, DecodeError
from unioncard.terminal.card import card_send
from unioncard.terminal.emv import commands as cmd
from unioncard.terminal.emv.data import CardData, bcd_amount, decode, parse_afl, parse_amount
from unioncard.terminal.emv.flags import TTQ
from unioncard.terminal.emv.selection import select_application
from unioncard.terminal.emv.settings import EmvSettings
from unioncard.terminal.session import Refused, Step

__all__ = ["read_payment_applications"]

LOG_RECORDS_MAX = 30
SWEEP_RECORDS_MAX = 16
NEEDS_GPO = frozenset({SW.CONDITIONS_NOT_SATISFIED, SW.SECURITY_STATUS_NOT_SATISFIED,
                       SW.COMMAND_NOT_ALLOWED_NO_EF})
"""READ RECORD refusals that mean "GET PROCESSING OPTIONS first"."""
SHOWN = {0x50: "label", 0x9F12: "preferred_name", 0x5F20: "cardholder_name",
         0x5F24: "expiry", 0x5F25: "effective", 0x5F28: "issuer_country", 0x5F34: "psn",
         0x9F08: "version", 0x9F07: "usage_control", 0x82: "aip", 0x8E: "cvm_list",
         0x9F0D: "iac_default", 0x9F0E: "iac_denial", 0x9F0F: "iac_online",
         0x9F14: "lower_offline_limit", 0x9F23: "upper_offline_limit", 0x9F42: "currency",
         0x9F77: "ec_balance_limit", 0x9F78: "ec_single_limit", 0x9F6D: "ec_reset_threshold",
         0x9F74: "ec_issuer_authorization_code", 0x8F: "ca_key_index"}
TEXT = frozenset({0x50, 0x9F12, 0x5F20, 0x9F74})

SubFlow = Generator[Step, Any, Any]


def read_payment_applications(*, unmask: bool = False, contactless: bool = False,
                              now: dt.datetime | None = None) -> SubFlow:
    """Every payment application the card lists, as dicts ([] when it has none)."""
    settings = EmvSettings()
    try:
        listing = yield from select_application(settings, contactless=contactless,
                                                allow_blocked=True)
    except Refused:
        return []
    found = []
    for candidate in listing.candidates:
        selected = yield from select_application(settings, contactless=contactless,
                                                 chosen=candidate.aid, allow_blocked=True)
        found.append((yield from _application(selected, unmask, now or dt.datetime.now())))
    return found


def _application(selected: Any, unmask: bool, now: dt.datetime) -> SubFlow:
    card = CardData()
    card.add(selected.fci)
    app: dict[str, Any] = {"aid": selected.candidate.aid.hex().upper(),
                           "priority": selected.candidate.priority}
    if selected.blocked:
        app["blocked"] = True  # SELECT answered 6283: the issuer blocked it
    readable = yield from _sweep(card)
    if not readable:
        yield from _after_gpo(card, now)
        app["read_after_gpo"] = True  # the card's ATC moved
    for tag in (0x9F36, 0x9F13, 0x9F17, 0x9F79):
        reply = yield card_send(cmd.get_data(tag), f"GET DATA {tag:X}")
        if reply.sw == SW.OK:
            node = tlv.find(decode(reply.data, f"GET DATA {tag:X}"), tag)
            if node is not None:
                card.set(tag, node.value)
    pan = card.pan
    app["pan"] = None if pan is None else (pan if unmask else mask_digits(pan))
    for tag, name in SHOWN.items():
        value = card.get(tag)
        if value is not None:
            app[name] = (value.decode("ascii", "replace").strip() if tag in TEXT
                         else value.hex().upper())
    for tag, name in ((0x9F36, "atc"), (0x9F13, "last_online_atc"), (0x9F17, "pin_tries")):
        value = card.get(tag)
        app[name] = None if value is None else int.from_bytes(value, "big")
    balance = card.get(0x9F79)
    try:
        app["ec_balance"] = None if balance is None else parse_amount(balance, "EC balance")
    except CardError:
        app["ec_balance"] = None
    app["log"] = yield from _log(card)
    return app


def _sweep(card: CardData) -> SubFlow:
    """READ RECORD of SFI 1-10 from record 1 until one is missing, without GPO (the card
    does not change); False when the card wants GET PROCESSING OPTIONS first."""
    found = False
    for sfi in range(1, 11):
        for number in range(1, SWEEP_RECORDS_MAX + 1):
            what = f"READ RECORD SFI {sfi} #{number}"
            record = yield card_send(cmd.read_record(sfi, number), what)
            if record.sw == SW.OK:
                card.add(decode(record.data, what))
                found = True
                continue
            if record.sw in NEEDS_GPO and not found:
                return False
            break
    return True


def _after_gpo(card: CardData, now: dt.datetime) -> SubFlow:
    """GET PROCESSING OPTIONS as a contact PBOC balance inquiry, then the AFL's records."""
    values = {0x9F66: TTQ.CONTACT_PBOC.encoded(), 0x9F02: bcd_amount(0),
              0x9F03: bcd_amount(0), 0x9F1A: bytes.fromhex("0156"), 0x5F2A: bytes.fromhex("0156"),
              0x9A: bytes.fromhex(now.strftime("%y%m%d")), 0x9C: b"\x31", 0x9F37: bytes(4),
              0x9F7A: b"\x00", 0xDF60: b"\x00", 0x95: bytes(5)}  # 31: balance inquiry
    pdol = card.get(0x9F38)
    data = dol.build(dol.parse(pdol), values) if pdol else b""
    answer = yield card_send(cmd.get_processing_options(data), "GET PROCESSING OPTIONS")
    if answer.sw != SW.OK:
        return
    nodes = decode(answer.data, "GET PROCESSING OPTIONS")
    if nodes and nodes[0].tag == 0x80 and len(nodes[0].value) >= 2:
        card.set(0x82, nodes[0].value[:2])
        card.set(0x94, nodes[0].value[2:])
    else:
        card.add(nodes)
    for entry in parse_afl(card.get(0x94) or b"") if card.get(0x94) else []:
        for number, _ in entry.records():
            what = f"READ RECORD SFI {entry.sfi} #{number}"
            record = yield card_send(cmd.read_record(entry.sfi, number), what)
            if record.sw == SW.OK:
                card.add(decode(record.data, what))


def _log(card: CardData) -> SubFlow:
    entry = card.get(0x9F4D)
    if entry is None or len(entry) != 2 or not 1 <= entry[0] <= 30:
        return []
    reply = yield card_send(cmd.get_data(0x9F4F), "GET DATA log format")
    if reply.sw != SW.OK:
        return []
    form = tlv.find(decode(reply.data, "GET DATA log format"), 0x9F4F)
    if form is None:
        return []
    entries = dol.parse(form.value)
    log = []
    for number in range(1, min(entry[1], LOG_RECORDS_MAX) + 1):
        record = yield card_send(cmd.read_record(entry[0], number), f"READ RECORD log #{number}")
        if record.sw != SW.OK:
            break
        try:
            values = dol.split(entries, record.data)
        except DecodeError:  # a record of another length: shown raw
            log.append({"raw": record.data.hex().upper()})
            continue
        log.append({f"{tag:X}": value.hex().upper() for tag, value in values.items()})
    return log
