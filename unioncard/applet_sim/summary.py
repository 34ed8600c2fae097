"""What a card image holds, as plain data: for ``unioncard card show`` and tools.

`card_summary` reads a `SimulatedCard`'s files and NVM cells without sending it
commands, so it works on a card as it lies in its image.  A journal left by a
power cut is reported and shown as power-up will resolve it: a committed
journal as applied, an uncommitted one as discarded.  Identity numbers are
masked unless asked otherwise (the first 6 and last 4 characters remain, as for PANs).
"""

from __future__ import annotations

from typing import Any

from unioncard.apdu import records
from unioncard.apdu.masking import mask_digits
from unioncard.applet_sim.card import SimulatedCard
from unioncard.applet_sim.files import FileKind, read_record, read_transparent, record_count
from unioncard.applet_sim.member import MEMBER_SFI, MemberConfig, decode_member_template
from unioncard.applet_sim.pboc import PbocApplication
from unioncard.applet_sim.purse import PurseApplication
from unioncard.crypto import TransactionType
from unioncard.errors import DecodeError

__all__ = ["card_summary", "mask_id_number"]

CARD_TYPES: dict[int, str] = {records.CardType.UNION_MEMBER: "union member",
                              records.CardType.ORDINARY: "ordinary"}


def mask_id_number(id_number: str) -> str:
    """The first 6 and last 4 characters, as PANs are masked: ``110105********002X``."""
    return mask_digits(id_number)


def categories(flags: int) -> list[str]:
    """The category names of a flags byte, as the member sheet spells them."""
    return [str(c.name).lower() for c in records.MemberCategory if flags & c]


def _date(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _transaction_type(code: int) -> str:
    try:
        return TransactionType(code).name.lower()
    except ValueError:
        return f"{code:02X}"


def _file(card: SimulatedCard, df_path: str, fid: int) -> bytes | None:
    node = card.fs.child_by_fid(df_path, fid)
    if node is None or node.ef.kind is not FileKind.TRANSPARENT:
        return None
    return read_transparent(card.nvm, node)


def _holder(raw: bytes | None, unmask: bool) -> dict[str, Any] | None:
    if raw is None:
        return None
    holder = records.parse(records.HOLDER, raw)
    return {"name": holder.name,
            "id_number": holder.id_number if unmask else mask_id_number(holder.id_number)}


def _purse(card: SimulatedCard, app: PurseApplication, unmask: bool) -> dict[str, Any]:
    path = app.node.path
    out: dict[str, Any] = {
        "application": app.config.profile,
        "path": path,
        "aid": app.node.df.aid.hex().upper() if app.node.df.aid else None,
        "key_version": f"{app.config.keys.key_version:02X}",
        "state": app.state.name.lower(),
        "balance": app.balance,
        "max_balance": app.config.max_balance,
        "online_seq": app.online_seq,
        "offline_seq": app.offline_seq,
        "mac_errors": app.mac_errors,
    }
    info = _file(card, path, 0x0015)
    if info is not None and len(info) == records.TRANSIT_INFO.sizeof():
        parsed = records.parse(records.TRANSIT_INFO, info)
        out.update(app_serial=parsed.app_serial.hex().upper(),
                   card_type=f"{parsed.card_type:02X}",
                   card_type_name=CARD_TYPES.get(parsed.card_type, "other"),
                   categories=categories(parsed.category_flags),
                   start=_date(parsed.start), expiry=_date(parsed.expiry))
    elif info is not None and len(info) == records.ETC_INFO.sizeof():
        parsed = records.parse(records.ETC_INFO, info)
        out.update(card_no=parsed.card_no.hex().upper(), plate=parsed.plate,
                   user_type=f"{parsed.user_type:02X}",
                   user_type_name=CARD_TYPES.get(parsed.user_type, "other"),
                   start=_date(parsed.start), expiry=_date(parsed.expiry))
    out["holder"] = _holder(_file(card, path, 0x0016), unmask)
    out["log"] = [
        {"seq": r.seq, "amount": r.amount, "type": _transaction_type(r.tx_type),
         "terminal_id": r.terminal_id.hex().upper(), "date": r.date.hex(), "time": r.time.hex()}
        for r in app.log()
    ]
    proof = app.proof
    out["last_purchase_proof"] = None if proof is None else {
        "seq": proof[0], "type": _transaction_type(proof[1]),
        "mac2": proof[2].hex().upper(), "tac": proof[3].hex().upper()}
    capp = app.capp_file
    if capp is not None:
        out["capp_records"] = []
        for number in range(1, record_count(card.nvm, capp) + 1):
            raw = read_record(card.nvm, capp, number) or b""
            try:
                rec = records.parse(records.CAPP_RECORD, raw)
                out["capp_records"].append({
                    "record": number, "lock": rec.lock, "network": rec.network.hex(),
                    "station": rec.station.hex(), "lane": rec.lane, "unix_time": rec.unix_time,
                    "vehicle_class": rec.vehicle_class, "status": rec.status,
                    "plate": rec.plate})
            except DecodeError:
                out["capp_records"].append({"record": number, "raw": raw.hex().upper()})
    return out


def _debit(app: PbocApplication, unmask: bool) -> dict[str, Any]:
    limits = app.ec_limits
    return {"aid": app.node.df.aid.hex().upper() if app.node.df.aid else None,
            "pan": app.config.pan if unmask else mask_digits(app.config.pan),
            "psn": app.config.psn, "atc": app.atc, "last_online_atc": app.last_online_atc,
            "pin_tries": app.pin_tries, "ec_balance": app.ec_balance,
            "ec_balance_limit": limits[0], "ec_single_limit": limits[1],
            "ec_reset_threshold": limits[2], "flags": int(app.flags),
            "log": [{"date": e[0x9A].hex(), "time": e[0x9F21].hex(),
                     "amount": int(e[0x9F02].hex()) if e[0x9F02].hex().isdigit() else None,
                     "atc": int.from_bytes(e[0x9F36], "big")} for e in app.log()]}


def _member(card: SimulatedCard) -> dict[str, Any] | None:
    for app in card.apps.values():
        if isinstance(app.config, MemberConfig):
            node = card.fs.child_by_sfi(app.node.path, MEMBER_SFI)
            if node is None:
                return None
            rec = decode_member_template(read_transparent(card.nvm, node))
            return {"member_no": rec.member_no, "name": rec.name,
                    "organization": rec.organization, "categories": categories(rec.category_flags),
                    "status": rec.status.name.lower(), "valid_from": rec.valid_from.isoformat(),
                    "valid_until": rec.valid_until.isoformat()}
    return None


def card_summary(card: SimulatedCard, *, unmask: bool = False) -> dict[str, Any]:
    """The card's identity and state as JSON-ready data."""
    journal = card.nvm.journal
    out: dict[str, Any] = {
        "kind": card.kind,
        "label": card.layout.label,
        "protocol": card.protocol,
        "atr": card.atr.hex().upper(),
        "interrupted_transaction": (
            None if not journal
            else "committed, replayed at power-up" if card.nvm.committed
            else "not committed, discarded at power-up"),
    }
    if journal:
        card.nvm.recover()  # in memory only: show the state the next power-up produces
    if card.kind == "psam":
        psam = card.psam()
        out["psam"] = {"terminal_id": psam.terminal_id.hex().upper(),
                       "terminal_seq": psam.terminal_seq,
                       "key_versions": sorted(f"{v:02X}" for v in
                                              psam.config.master_keys)}
        return out
    out["member"] = _member(card)
    out["purses"] = [_purse(card, app, unmask) for app in card.apps.values()
                     if isinstance(app, PurseApplication)]
    debit = [_debit(app, unmask) for app in card.apps.values()
             if isinstance(app, PbocApplication)]
    if debit:
        out["debit"] = debit[0]
    return out
