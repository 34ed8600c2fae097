"""Decoding a trace for people: exchanges, command names, TLV trees, SW meanings, masked PANs.

`pair` turns records into `Exchange`s (a command and its response, per
device), `describe` turns one exchange into a JSON-ready dict, and `render`
turns that dict into text lines, so ``trace decode`` and ``trace decode
--json`` show the same facts.  Response data is shown as a TLV tree when the
indexing policy expects BER-TLV (`indexer_reference.expects_tlv`); purse and
PSAM data are read field by field (`trace_fields`).

PANs are masked to the first 6 and last 4 digits (DESIGN: logs never show a
full PAN) in tag ``5A``, inside track 2 equivalent data ``57`` and ``9F6B``
and track 1 data ``56``, both in the tree and in the raw hex, unless
``unmask`` is asked for.  Masked digits show as ``*``.  The holder's id number
in EF 0016 is masked the same way, in its field and in the raw hex.

>>> mask_digits("6230580000123456789")
'623058*********6789'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from unioncard.apdu import dol, tags, tlv
from unioncard.apdu.apdu import CommandAPDU
from unioncard.apdu.indexer_reference import expects_tlv, is_get_response, object_offsets
from unioncard.apdu.instructions import command_name
from unioncard.apdu.status import describe as describe_sw
from unioncard.apdu.trace import Device, TraceRecord
from unioncard.apdu.trace_fields import (
    command_detail,
    command_fields,
    hidden_nibbles,
    mask_digits,
    mask_positions,
    response_fields,
)
from unioncard.errors import DecodeError

__all__ = ["PAN_TAGS", "Exchange", "describe", "mask_digits", "pair", "render"]

PAN_TAGS = frozenset({0x5A, 0x57, 0x9F6B, 0x56})
"""Tags whose values carry a PAN: PAN, track 2 equivalent, track 2 (qPBOC), track 1."""
DOL_TAGS = frozenset({0x8C, 0x8D, 0x97, 0x9F38, 0x9F49, 0x9F4F})
HEX_PER_LINE = 32


@dataclass(frozen=True, slots=True)
class Exchange:
    """A command and its response on one device; either may be missing.

    ``origin`` is the command whose data the response carries: the command
    itself, or for a GET RESPONSE the device's previous other command.
    """

    number: int
    device: Device
    command: TraceRecord | None
    response: TraceRecord | None
    origin: bytes
    expects_tlv: bool


def pair(records: Iterable[TraceRecord]) -> Iterator[Exchange]:
    """Exchanges in the order they complete; unanswered commands and orphans included."""
    pending: dict[Device, tuple[TraceRecord, bytes, bool]] = {}
    last: dict[Device, tuple[bytes, bool]] = {}
    number = 0
    for record in records:
        device = record.device
        if record.is_command:
            if device in pending:
                command, origin, expect = pending.pop(device)
                number += 1
                yield Exchange(number, device, command, None, origin, expect)
            valid = _valid(record.data)
            if valid and is_get_response(record.data):
                origin, expect = last.get(device, (b"", False))
            else:
                origin = record.data
                expect = valid and expects_tlv(record.data)
                if valid:
                    last[device] = (origin, expect)
            pending[device] = (record, origin, expect)
        else:
            number += 1
            if device in pending:
                command, origin, expect = pending.pop(device)
                yield Exchange(number, device, command, record, origin, expect)
            else:
                yield Exchange(number, device, None, record, b"", False)
    for device, (command, origin, expect) in pending.items():
        number += 1
        yield Exchange(number, device, command, None, origin, expect)


def _valid(command: bytes) -> bool:
    try:
        CommandAPDU.from_bytes(command)
    except DecodeError:
        return False
    return True


def _pan_nibbles(tag: int, value: bytes, offset: int) -> set[int]:
    """Nibble positions (in the response data) of the PAN digits to hide."""
    if tag == 0x56:  # track 1, ASCII: format code 'B', PAN, '^'
        text = value.decode("latin-1")
        end = text.find("^")
        digits = [i for i in range(1, end if end > 0 else len(text)) if text[i].isdigit()]
        hide = mask_positions(len(digits))
        return {2 * (offset + digits[i]) + k for i in hide for k in (0, 1)}
    nibbles = value.hex().upper()
    stop = len(nibbles)
    for sep in ("D", "F") if tag != 0x5A else ("F",):
        at = nibbles.find(sep)
        if 0 <= at < stop:
            stop = at
    return {2 * offset + i for i in mask_positions(stop)}


def _hex(data: bytes, hidden: set[int], start: int = 0) -> str:
    """Upper-case hex of ``data`` (at nibble ``2 * start`` of the response) with hidden nibbles."""
    text = data.hex().upper()
    if not hidden:
        return text
    base = 2 * start
    return "".join("*" if base + i in hidden else c for i, c in enumerate(text))


def _tree(data: bytes, unmask: bool) -> tuple[list[dict[str, Any]], set[int]]:
    nodes = tlv.decode(data)
    spots = object_offsets(data, nodes)
    walked = list(tlv.walk(nodes))
    hidden: set[int] = set()
    if not unmask:
        for (_, node), (tag, _, offset, _) in zip(walked, spots, strict=True):
            if tag in PAN_TAGS and not node.children:
                hidden |= _pan_nibbles(tag, node.value, offset)
    places = iter(spots)

    def build(items: list[tlv.Tlv]) -> list[dict[str, Any]]:
        out = []
        for node in items:
            _, _, offset, _ = next(places)
            entry: dict[str, Any] = {"tag": node.tag_hex, "name": tags.name_of(node.tag),
                                     "length": len(node.value)}
            if node.constructed:
                entry["children"] = build(node.children)
            else:
                entry["value"] = _hex(node.value, hidden, offset)
                text = _text(node, hidden, offset)
                if text is not None:
                    entry["text"] = text
            out.append(entry)
        return out

    return build(nodes), hidden


def _text(node: tlv.Tlv, hidden: set[int], offset: int) -> str | None:
    fmt = tags.format_of(node.tag)
    value = node.value
    if node.tag in DOL_TAGS:
        try:
            return " ".join(f"{tlv.tag_bytes(e.tag).hex().upper()}({e.length})"
                            for e in dol.parse(value))
        except DecodeError:
            return None
    if node.tag in PAN_TAGS and node.tag != 0x56:
        return _hex(value, hidden, offset).rstrip("F")
    if fmt in ("a", "an", "ans") or node.tag == 0x56:
        text = value.decode("latin-1")
        if text.isprintable():
            if hidden:
                text = "".join("*" if 2 * (offset + i) in hidden else c for i, c in enumerate(text))
            return text
        return None
    if fmt == "n" and value.hex().isdigit():
        return value.hex()
    return None


def _stamp(record: TraceRecord | None) -> str | None:
    return record.timestamp.isoformat() if record and record.timestamp else None


def describe(exchange: Exchange, unmask: bool = False) -> dict[str, Any]:
    """One exchange as a JSON-ready dict (see docs/traces.md for the fields)."""
    out: dict[str, Any] = {
        "exchange": exchange.number,
        "device": exchange.device.value,
        "timestamp": _stamp(exchange.command) or _stamp(exchange.response),
        "command": None,
        "response": None,
    }
    if exchange.command is not None:
        out["command"] = _describe_command(exchange.command.data)
        out["command"]["timestamp"] = _stamp(exchange.command)
    if exchange.response is not None:
        out["response"] = _describe_response(exchange, unmask)
        out["response"]["timestamp"] = _stamp(exchange.response)
    return out


def _describe_command(raw: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": command_name(raw), "hex": raw.hex().upper()}
    try:
        apdu = CommandAPDU.from_bytes(raw)
    except DecodeError as exc:
        entry["error"] = str(exc)
        return entry
    entry.update({
        "cla": f"{apdu.cla:02X}", "ins": f"{apdu.ins:02X}", "p1": f"{apdu.p1:02X}",
        "p2": f"{apdu.p2:02X}", "lc": len(apdu.data) if apdu.data else None,
        "data": apdu.data.hex().upper() if apdu.data else None, "le": apdu.le,
        "detail": command_detail(raw),
        "fields": [{"name": n, "value": v} for n, v in command_fields(raw)],
    })
    return entry


def _describe_response(exchange: Exchange, unmask: bool) -> dict[str, Any]:
    raw = exchange.response.data if exchange.response else b""
    if len(raw) < 2:
        return {"hex": raw.hex().upper(), "error": "response shorter than its status word"}
    data, sw = raw[:-2], int.from_bytes(raw[-2:], "big")
    entry: dict[str, Any] = {"sw": f"{sw:04X}", "meaning": describe_sw(sw).split(": ", 1)[1]}
    hidden: set[int] = set()
    if data and exchange.expects_tlv:
        try:
            entry["tlv"], hidden = _tree(data, unmask)
        except DecodeError as exc:
            entry["tlv_error"] = {"offset": exc.offset, "message": exc.message}
    elif data:
        fields = response_fields(exchange.origin, data, unmask)
        if fields:
            entry["fields"] = [{"name": n, "value": v} for n, v in fields]
            if not unmask:
                hidden = hidden_nibbles(exchange.origin, data)
    entry["data"] = _hex(data, hidden) if data else None
    entry["hex"] = _hex(raw, hidden)
    return entry


def _spaced(hex_text: str) -> str:
    return " ".join(hex_text[i: i + 2] for i in range(0, len(hex_text), 2))


def _wrapped(prefix: str, hex_text: str, indent: str) -> list[str]:
    step = 2 * HEX_PER_LINE
    chunks = [hex_text[i: i + step] for i in range(0, len(hex_text), step)] or [""]
    return [(prefix if i == 0 else indent) + _spaced(chunk) for i, chunk in enumerate(chunks)]


def render(entry: dict[str, Any]) -> list[str]:
    """Text lines of one described exchange."""
    command, response = entry["command"], entry["response"]
    title = [f"#{entry['exchange']}"]
    if entry["timestamp"]:
        title.append(entry["timestamp"])
    title.append(entry["device"])
    title.append(command["name"] if command else "(no command: orphan response)")
    if command and command.get("detail"):
        title.append(f"- {command['detail']}")
    lines = ["  ".join(title)]
    if command:
        lines += _wrapped("  > ", command["hex"], "    ")
        if "error" in command:
            lines.append(f"    malformed command: {command['error']}")
        lines += [f"    {f['name']}: {f['value']}" for f in command.get("fields", [])]
    if response is None:
        lines.append("  (no response)")
        return lines
    lines += _wrapped("  < ", response["hex"], "    ")
    if "error" in response:
        lines.append(f"    malformed response: {response['error']}")
        return lines
    for node in response.get("tlv", []):
        lines += _render_node(node, "    ")
    if "tlv_error" in response:
        err = response["tlv_error"]
        lines.append(f"    data is not valid BER-TLV: {err['message']}"
                     f" (data offset {err['offset']})")
    lines += [f"    {f['name']}: {f['value']}" for f in response.get("fields", [])]
    lines.append(f"    SW {response['sw']}: {response['meaning']}")
    return lines


def _render_node(node: dict[str, Any], indent: str) -> list[str]:
    head = f"{indent}{node['tag']} {node['name']}"
    if "children" in node:
        lines = [head]
        for child in node["children"]:
            lines += _render_node(child, indent + "  ")
        return lines
    shown = f" '{node['text']}'" if "text" in node and node["text"] != node["value"] else ""
    value = _spaced(node["value"]) if len(node["value"]) <= 2 * HEX_PER_LINE else (
        _spaced(node["value"][: 2 * HEX_PER_LINE]) + " ...")
    return [f"{head}: {value}{shown}" if node["value"] else f"{head}: (empty)"]
