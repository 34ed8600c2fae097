"""Card image files: the only place the simulator touches the file system.

A card image is a JSON document (docs/card-image.md).  `write_image` is atomic
(`unioncard.atomic_file`): a temporary file in the same directory, fsync'd,
renamed over the image, the directory fsync'd, so a crash (even ``kill -9``)
leaves the old image or the new one, never a mixture.  A new image is readable by its owner
only (it holds keys); a replaced image keeps its mode.  `FileSink` is the write-through
persistence sink of `SimulatedCard.load(path, write_through=True)`.

An image is checked completely when it is read, before the card answers a command:
`read_image` reads at most `CARD_IMAGE_LIMIT` bytes of UTF-8 JSON, `check_document`
checks every entry's type and range (the file tree at most `MAX_TREE_DEPTH` DFs deep),
and `check_card` checks the NVM against the layout: the kind of card and its
applications, every cell's address, size and range (a balance within the purse
maximum), the cells each application needs, and the journal.  What fails raises
`DecodeError` naming the entry and the problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unioncard.applet_sim.directory import DIRECTORY_SFI, PPSE_NAME, PSE_NAME, DirectoryConfig
from unioncard.applet_sim.files import Access, FileKind, Node
from unioncard.applet_sim.iso import PIN_TRIES_CELL
from unioncard.applet_sim.member import MEMBER_SFI, MemberConfig
from unioncard.applet_sim.nvm import Step
from unioncard.applet_sim.pboc import (
    AFL_ENTRIES,
    LOG_RECORDS,
    LOG_SFI,
    PbocApplication,
    afl_problem,
    check_icc_key,
)
from unioncard.applet_sim.pboc import LOG_RECORD_SIZE as EMV_LOG_RECORD_SIZE
from unioncard.applet_sim.psam import PsamApplication
from unioncard.applet_sim.purse import LOG_RECORD_SIZE, PurseApplication, PurseState
from unioncard.atomic_file import write_atomically
from unioncard.bounded_read import CARD_IMAGE_LIMIT, read_utf8
from unioncard.errors import DecodeError

if TYPE_CHECKING:
    from unioncard.applet_sim.card import SimulatedCard

__all__ = [
    "CARD_IMAGE_LIMIT",
    "KINDS",
    "MAX_TREE_DEPTH",
    "FileSink",
    "check_card",
    "check_document",
    "read_image",
    "write_image",
]

KINDS = ("member-card", "psam")
MAX_TREE_DEPTH = 8
"""DFs from the MF down (the MF is 1); the cards issued here have 2."""

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_PROFILE = re.compile(r"[a-z][a-z0-9_-]{0,15}")
_STEPS = frozenset(str(step) for step in Step)
_PROOF_SIZE = 11
ICC_PEM_LIMIT = 4096
"""Characters of an ICC key's PEM (a 1984-bit PKCS#1 key has about 1700)."""
"""A purse's last purchase: seq(2) type(1) MAC2(4) TAC(4), or nothing."""


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _Duplicate(f"the key {key!r:.40} appears twice in one object")
        doc[key] = value
    return doc


def read_image(path: str | Path) -> dict[str, Any]:
    """Read and parse a card image file: at most `CARD_IMAGE_LIMIT` bytes of UTF-8 JSON,
    one object (`DecodeError` naming the file otherwise)."""
    text = read_utf8(path, limit=CARD_IMAGE_LIMIT, what="card image", error=DecodeError,
                     empty=False)
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"card image {path} is not JSON: {exc.msg}", exc.pos) from None
    except RecursionError:
        raise DecodeError(f"card image {path} is not JSON: nested too deeply") from None
    except _Duplicate as exc:
        raise DecodeError(f"card image {path} is not JSON: {exc}") from None
    except ValueError:  # an integer of thousands of digits
        raise DecodeError(f"card image {path} is not JSON: a number of thousands of digits"
                          ) from None
    if not isinstance(doc, dict):
        raise DecodeError(f"card image {path} is not a JSON object")
    return doc


def write_image(path: str | Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically and durably (a new image readable by its owner
    only: it holds keys)."""
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    write_atomically(path, text.encode("utf-8"), new_file_mode=0o600)


class FileSink:
    """Persistence sink: saves the card's image to ``path`` after each NVM commit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saves = 0

    def __call__(self, card: SimulatedCard) -> None:
        write_image(self.path, card.to_image())
        self.saves += 1


# --- the document's structure -------------------------------------------------------------


def _bad(where: str, problem: str) -> DecodeError:
    section = "card image NVM" if where.startswith("nvm") else "card image"
    return DecodeError(f"malformed {section}: {where} {problem}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, f"must be an object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true or false",
            int: "an integer", float: "a number"}.get(type(value), "null")


def _text(value: Any, where: str, longest: int = 256, *, ascii_label: bool = False) -> str:
    if not isinstance(value, str):
        raise _bad(where, f"must be a string, not {_kind(value)}")
    if len(value) > longest:
        raise _bad(where, f"is longer than {longest} characters")
    if ascii_label and not (value.isascii() and value.isprintable()):
        raise _bad(where, "must be printable ASCII (it is the FCI's application label)")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        shown = repr(value) if isinstance(value, int | float) else _kind(value)
        raise _bad(where, f"must be an integer {low}..{high}, not {shown}")
    return value


def _hex(value: Any, where: str, low: int, high: int | None = None) -> bytes:
    """Upper- or lower-case hex of ``low`` to ``high`` bytes (``high`` None: exactly low)."""
    high = low if high is None else high
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise _bad(where, "must be a string of hex digit pairs")
    if not low <= len(value) // 2 <= high:
        size = f"{low}" if low == high else f"{low} to {high}"
        raise _bad(where, f"must be {size} bytes, not {len(value) // 2}")
    return bytes.fromhex(value)


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> None:
    if value not in choices or not isinstance(value, str):
        raise _bad(where, f"must be one of {', '.join(choices)}, not {value!r:.40}")


def _optional(doc: dict[str, Any], key: str, where: str,
              check: Callable[[Any, str], Any]) -> None:
    if doc.get(key) is not None:
        check(doc[key], f"{where}.{key}")


def check_document(doc: Any) -> None:
    """Check the structure of a card image document: every entry docs/card-image.md
    lists has its type and range; unknown entries are ignored (a later release may add
    some).  Raises `DecodeError` naming the first bad entry."""
    doc = _object(doc, "the document")
    _choice(doc.get("kind"), "kind", KINDS)
    _text(doc.get("label", ""), "label")
    _optional(doc, "protocol", "", lambda v, w: _choice(v, "protocol", ("T=1", "T=0")))
    _optional(doc, "atr", "", lambda v, w: _hex(v, "atr", 2, 33))
    _hex(doc.get("historical_bytes"), "historical_bytes", 0, 15)
    pin = doc.get("pin")
    if pin is not None:
        pin = _object(pin, "pin")
        digits = pin.get("digits")
        if not isinstance(digits, str) or not (digits.isascii() and digits.isdigit()) \
                or not 4 <= len(digits) <= 12:
            raise _bad("pin.digits", "must be a string of 4 to 12 digits")
        _int(pin.get("max_tries"), "pin.max_tries", 1, 15)
    _tree(doc.get("mf"), "mf", 1)
    nvm = _object(doc.get("nvm"), "nvm")
    cells = _object(nvm.get("cells"), "nvm.cells")
    for address, value in cells.items():
        _text(address, "an NVM cell address", 128)
        _hex(value, f"nvm.cells[{address!r:.80}]", 0, 0x7FFF)
    journal = _object(nvm.get("journal"), "nvm.journal")
    if not isinstance(journal.get("committed"), bool):
        raise _bad("nvm.journal.committed", "must be true or false")
    entries = journal.get("entries")
    if not isinstance(entries, list):
        raise _bad("nvm.journal.entries", f"must be an array, not {_kind(entries)}")
    for i, entry in enumerate(entries):
        where = f"nvm.journal.entries[{i}]"
        entry = _object(entry, where)
        if not isinstance(entry.get("step"), str) or entry["step"] not in _STEPS:
            raise _bad(f"{where}.step", "must name an NVM write step (docs/simulator.md)")
        _text(entry.get("address"), f"{where}.address", 128)
        _hex(entry.get("value"), f"{where}.value", 0, 0x7FFF)


def _tree(node: Any, where: str, depth: int) -> None:
    node = _object(node, where)
    _text(node.get("name", ""), f"{where}.name", 64)
    if node.get("type") == "ef":
        _hex(node.get("fid"), f"{where}.fid", 2)
        _choice(node.get("kind"), f"{where}.kind", tuple(str(k) for k in FileKind))
        _int(node.get("size"), f"{where}.size", 1, 0x7FFF)
        _int(node.get("records", 0), f"{where}.records", 0, 254)
        _optional(node, "sfi", where, lambda v, w: _hex(v, w, 1))
        for key in ("read", "update"):
            _optional(node, key, where, lambda v, w: _choice(v, w, tuple(str(a) for a in Access)))
        if not isinstance(node.get("capp", False), bool):
            raise _bad(f"{where}.capp", "must be true or false")
        return
    if node.get("type") != "df":
        raise _bad(f"{where}.type", f"must be ef or df, not {node.get('type')!r:.40}")
    if depth > MAX_TREE_DEPTH:
        raise _bad(where, f"is a DF more than {MAX_TREE_DEPTH} levels deep")
    _optional(node, "fid", where, lambda v, w: _hex(v, w, 2))
    _optional(node, "aid", where, lambda v, w: _hex(v, w, 5, 16))
    if depth == 1 and str(node.get("fid")).upper() != "3F00":
        raise _bad(f"{where}.fid", "must be 3F00 (the root is the MF)")
    _optional(node, "app", where, _application)
    children = node.get("children", [])
    if not isinstance(children, list):
        raise _bad(f"{where}.children", f"must be an array, not {_kind(children)}")
    names: set[str] = set()
    for i, child in enumerate(children):
        _tree(child, f"{where}.children[{i}]", depth + 1)
        name = child.get("fid") or child.get("aid")
        if isinstance(name, str):
            if name.upper() in names or name.upper() == "3F00":
                raise _bad(f"{where}.children[{i}]", f"has the FID or AID {name} of another file")
            names.add(name.upper())


def _application(app: Any, where: str) -> None:
    app = _object(app, where)
    kind = app.get("type")
    _text(app.get("label", ""), f"{where}.label", 16, ascii_label=True)
    if kind == "purse":
        profile = app.get("profile")
        if not isinstance(profile, str) or not _PROFILE.fullmatch(profile):
            raise _bad(f"{where}.profile", f"must match {_PROFILE.pattern}")
        for key in ("key_version", "alg_id", "app_version"):
            _hex(app.get(key), f"{where}.{key}", 1)
        keys = _object(app.get("keys"), f"{where}.keys")
        if sorted(keys) != ["load", "maintenance", "purchase", "tac"]:
            raise _bad(f"{where}.keys", "must hold exactly purchase, load, tac, maintenance")
        for name, key in keys.items():
            _hex(key, f"{where}.keys.{name}", 16)
        _int(app.get("max_balance"), f"{where}.max_balance", 1, (1 << 31) - 1)
        _int(app.get("max_mac_errors"), f"{where}.max_mac_errors", 1, 15)
        _int(app.get("overdraft_limit"), f"{where}.overdraft_limit", 0, 0)
        _hex(app.get("log_fid"), f"{where}.log_fid", 2)
        _optional(app, "capp_fid", where, lambda v, w: _hex(v, w, 2))
    elif kind == "psam":
        _optional(app, "terminal_id_fid", where, lambda v, w: _hex(v, w, 2))
        keys = _object(app.get("purchase_master_keys"), f"{where}.purchase_master_keys")
        for version, key in keys.items():
            _hex(version, f"{where}.purchase_master_keys (a key version)", 1)
            _hex(key, f"{where}.purchase_master_keys.{version}", 16)
    elif kind == "pboc":
        _pboc(app, where)
    elif kind == "directory":
        _directory(app, where)
    elif kind != "member":
        raise DecodeError(f"malformed card image: {where}: unknown application type "
                          f"{kind!r:.40}")


def _digits(value: Any, where: str, shortest: int, longest: int) -> str:
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) \
            or not shortest <= len(value) <= longest:
        size = f"{shortest}" if shortest == longest else f"{shortest} to {longest}"
        raise _bad(where, f"must be a string of {size} digits")
    return value


def _label(value: Any, where: str) -> None:
    _text(value, where, 16, ascii_label=True)
    if not value:
        raise _bad(where, "must not be empty (it is the application's label)")


def _pboc(app: dict[str, Any], where: str) -> None:
    """A PBOC debit application (docs/card-image.md; `PbocConfig` has the same rules)."""
    from unioncard.applet_sim.pboc import luhn_digit

    _label(app.get("label", "PBOC DEBIT"), f"{where}.label")
    _int(app.get("priority", 1), f"{where}.priority", 0, 0xFF)
    pan = _digits(app.get("pan"), f"{where}.pan", 12, 19)
    if luhn_digit(pan[:-1]) != pan[-1]:
        raise _bad(f"{where}.pan", "fails its Luhn check digit")
    _digits(app.get("psn"), f"{where}.psn", 2, 2)
    _int(app.get("dki"), f"{where}.dki", 0, 0xFF)
    keys = _object(app.get("keys"), f"{where}.keys")
    if sorted(keys) != ["ac", "smc", "smi"]:
        raise _bad(f"{where}.keys", "must hold exactly ac, smi, smc")
    for name, key in keys.items():
        _hex(key, f"{where}.keys.{name}", 16)
    pem = _text(app.get("icc_key"), f"{where}.icc_key", ICC_PEM_LIMIT)
    try:
        check_icc_key(pem)
    except ValueError as exc:
        raise _bad(f"{where}.icc_key", f"is refused: {exc}") from None
    _digits(app.get("pin"), f"{where}.pin", 4, 12)
    _int(app.get("pin_max_tries", 3), f"{where}.pin_max_tries", 1, 15)
    problem = afl_problem(_hex(app.get("afl"), f"{where}.afl", 4, 4 * AFL_ENTRIES))
    if problem:
        raise _bad(f"{where}.afl", problem)
    currency = _hex(app.get("currency", "0156"), f"{where}.currency", 2)
    if not currency.hex().isdigit() or currency[0] >> 4:
        raise _bad(f"{where}.currency", "must be a numeric currency code n3 (e.g. 0156)")
    _hex(app.get("log_fid", "000B"), f"{where}.log_fid", 2)
    if not isinstance(app.get("qpboc_cid", True), bool):
        raise _bad(f"{where}.qpboc_cid", "must be true or false")


def _directory(app: dict[str, Any], where: str) -> None:
    """A PSE or PPSE and the applications it lists (`DirectoryConfig`)."""
    _choice(app.get("kind"), f"{where}.kind", ("pse", "ppse"))
    entries = app.get("entries")
    if not isinstance(entries, list) or not entries:
        raise _bad(f"{where}.entries", "must be an array of at least one application")
    aids: set[bytes] = set()
    for i, entry in enumerate(entries):
        at = f"{where}.entries[{i}]"
        entry = _object(entry, at)
        aid = _hex(entry.get("aid"), f"{at}.aid", 5, 16)
        if aid in aids:
            raise _bad(f"{at}.aid", f"lists {aid.hex().upper()} a second time")
        aids.add(aid)
        _label(entry.get("label"), f"{at}.label")
        _int(entry.get("priority"), f"{at}.priority", 0, 0xFF)


# --- the card's NVM against its layout ----------------------------------------------------


def _refuse(problem: str) -> DecodeError:
    return DecodeError(f"malformed card image: {problem}")


def _sized(n: int, high: int | None = None, what: str = "") -> Callable[[bytes], str | None]:
    """The check of a cell of ``n`` bytes holding at most ``high`` (big-endian)."""

    def check(raw: bytes) -> str | None:
        if len(raw) != n:
            return f"has {len(raw)} bytes, not {n}"
        value = int.from_bytes(raw, "big")
        if high is not None and value > high:
            return f"holds {value}, above {what} {high}"
        return None

    return check


def _proof(raw: bytes) -> str | None:
    return None if len(raw) in (0, _PROOF_SIZE) else f"has {len(raw)} bytes, not 0 or 11"


def _cell_checks(card: SimulatedCard) -> dict[str, Callable[[bytes], str | None]]:
    """The cells of the card's applications and PIN, each with its check (None: fine)."""
    checks: dict[str, Callable[[bytes], str | None]] = {}
    if card.layout.pin is not None:
        checks[PIN_TRIES_CELL] = _sized(1, card.layout.pin.max_tries, "the PIN's tries")
    for app in card.apps.values():
        if isinstance(app, PurseApplication):
            cfg = app.config
            checks[app.cell("balance")] = _sized(4, cfg.max_balance, "the purse maximum")
            checks[app.cell("online_seq")] = _sized(2)
            checks[app.cell("offline_seq")] = _sized(2)
            checks[app.cell("mac_errors")] = _sized(1, cfg.max_mac_errors, "the MAC error limit")
            checks[app.cell("state")] = _sized(1, max(PurseState), "the last purse state")
            checks[app.cell("proof")] = _proof
        elif isinstance(app, PsamApplication):
            checks[app.cell("terminal_seq")] = _sized(4)
        checks.update(app.cell_checks())
    return checks


def _check_applications(card: SimulatedCard) -> None:
    psams = [app for app in card.apps.values() if isinstance(app, PsamApplication)]
    if card.kind == "psam" and (len(psams) != 1 or len(card.apps) != 1):
        raise _refuse("kind is psam, but the card does not hold one PSAM application alone")
    if card.kind == "member-card" and psams:
        raise _refuse("kind is member-card, but the card holds a PSAM application")
    profiles: set[str] = set()
    for app in card.apps.values():
        where = f"the application in {app.node.path}"
        if isinstance(app, PurseApplication):
            if app.config.profile in profiles:
                raise _refuse(f"two purses have the profile {app.config.profile!r}")
            profiles.add(app.config.profile)
            log = card.fs.child_by_fid(app.node.path, app.config.log_fid)
            if log is None or log.is_df or log.ef.kind is not FileKind.CYCLIC \
                    or log.ef.size != LOG_RECORD_SIZE:
                raise _refuse(f"{where} has no cyclic log EF {app.config.log_fid:04X} of "
                              f"{LOG_RECORD_SIZE}-byte records")
            if app.config.capp_fid is not None:
                capp = card.fs.child_by_fid(app.node.path, app.config.capp_fid)
                if capp is None or capp.is_df or not capp.ef.capp:
                    raise _refuse(f"{where} has no CAPP record EF {app.config.capp_fid:04X}")
        elif isinstance(app, PsamApplication):
            tid = card.fs.child_by_fid("3F00", app.config.terminal_id_fid)
            if tid is None or tid.is_df or tid.ef.kind is not FileKind.TRANSPARENT \
                    or tid.ef.size < 6:
                raise _refuse(f"{where} has no terminal id EF {app.config.terminal_id_fid:04X} "
                              "of 6 bytes or more under the MF")
        elif isinstance(app, PbocApplication):
            log = card.fs.child_by_fid(app.node.path, app.config.log_fid)
            if log is None or log.is_df or log.ef.kind is not FileKind.CYCLIC \
                    or log.ef.size != EMV_LOG_RECORD_SIZE or log.ef.records != LOG_RECORDS \
                    or log.ef.sfi != LOG_SFI:
                raise _refuse(f"{where} has no transaction log EF {app.config.log_fid:04X}: "
                              f"cyclic, SFI {LOG_SFI:02X}, {LOG_RECORDS} records of "
                              f"{EMV_LOG_RECORD_SIZE} bytes (its FCI's 9F4D)")
        elif isinstance(app.config, DirectoryConfig):
            _check_directory(card, app.node, app.config, where)
        elif isinstance(app.config, MemberConfig) \
                and card.fs.child_by_sfi(app.node.path, MEMBER_SFI) is None:
            raise _refuse(f"{where} has no member EF (SFI {MEMBER_SFI:02X})")


def _check_directory(card: SimulatedCard, node: Node, config: DirectoryConfig,
                     where: str) -> None:
    """A PSE is the DF ``1PAY.SYS.DDF01`` with its directory record file (SFI 01), a PPSE
    ``2PAY.SYS.DDF01``; each lists EMV applications of this card."""
    name = PSE_NAME if config.kind == "pse" else PPSE_NAME
    if node.df.aid != name:
        raise _refuse(f"{where} is a {config.kind}, but its DF is not named "
                      f"{name.decode('ascii')}")
    if config.kind == "pse":
        records = card.fs.child_by_sfi(node.path, DIRECTORY_SFI)
        if records is None or records.is_df or records.ef.kind is not FileKind.LINEAR:
            raise _refuse(f"{where} has no directory record EF (SFI {DIRECTORY_SFI:02X})")
    emv = {app.node.df.aid for app in card.apps.values() if isinstance(app, PbocApplication)}
    for entry in config.entries:
        if entry.aid not in emv:
            raise _refuse(f"{where} lists {entry.aid.hex().upper()}, which is no EMV "
                          "application of this card")


def _check_pboc_values(card: SimulatedCard, cells: dict[str, bytes]) -> None:
    """What ties a PBOC application's cells together: the EC balance at most the EC
    balance limit (PUT DATA and personalization keep it so), the last online ATC at most
    the ATC."""
    for app in card.apps.values():
        if not isinstance(app, PbocApplication):
            continue
        balance = int(cells[app.cell("ec_balance")].hex())
        limit = int(cells[app.cell("ec_limits")][:6].hex())
        if balance > limit:
            raise _refuse(f"NVM cell {app.cell('ec_balance')!r} holds {balance}, above the "
                          f"EC balance limit {limit}")
        atc = int.from_bytes(cells[app.cell("atc")], "big")
        last = int.from_bytes(cells[app.cell("last_online_atc")], "big")
        if last > atc:
            raise _refuse(f"NVM cell {app.cell('last_online_atc')!r} holds {last}, above "
                          f"the ATC {atc}")


def _record_ef(card: SimulatedCard, path: str) -> Node | None:
    node = card.fs.nodes.get(path)
    if node is None or node.is_df or node.ef.kind is FileKind.TRANSPARENT:
        return None
    return node


def _cell_problem(card: SimulatedCard, checks: dict[str, Callable[[bytes], str | None]],
                  address: str, value: bytes) -> str | None:
    """Why a cell's address or value is wrong for this card, or None."""
    check = checks.get(address)
    if check is not None:
        return check(value)
    path, mark, record = address.partition("#")
    if not mark:
        node = card.fs.nodes.get(address)
        if node is None or node.is_df or node.ef.kind is not FileKind.TRANSPARENT:
            return "names no file or value of this card"
        if len(value) != node.ef.size:
            return f"has {len(value)} bytes, the EF has {node.ef.size}"
        return None
    node = _record_ef(card, path)
    if node is None:
        return "names no record file of this card"
    ef = node.ef
    if record == "ptr" and ef.kind is FileKind.CYCLIC:
        if len(value) != 2:
            return f"has {len(value)} bytes, not 2 (newest slot, count)"
        newest, count = value
        if newest > ef.records or count > ef.records or (newest == 0) != (count == 0):
            return f"newest slot {newest} and count {count} do not fit {ef.records} records"
        return None
    if not (record.isascii() and record.isdigit()) or record != str(int(record)) \
            or not 1 <= int(record) <= ef.records:
        return f"names no record of the EF (1..{ef.records})"
    if len(value) != ef.size:
        return f"has {len(value)} bytes, the records have {ef.size}"
    return None


def _check_records(card: SimulatedCard, cells: dict[str, bytes]) -> None:
    """Linear files hold records 1..n; a cyclic file's pointer reaches every slot written."""
    present: dict[str, set[int]] = {}
    for address in cells:
        path, mark, record = address.partition("#")
        if mark and record != "ptr":
            present.setdefault(path, set()).add(int(record))
    for path, node in card.fs.nodes.items():
        if node.is_df or node.ef.kind is FileKind.TRANSPARENT:
            continue
        numbers = present.get(path, set())
        if node.ef.kind is FileKind.LINEAR:
            expected = set(range(1, len(numbers) + 1))
        else:
            newest, count = cells.get(f"{path}#ptr", b"\x00\x00")
            expected = {(newest - n) % node.ef.records + 1 for n in range(1, count + 1)}
        if numbers != expected:
            stray = min(numbers ^ expected)
            if stray in expected:
                raise _refuse(f"{path}: record {stray} is missing")
            raise _refuse(f"{path}: record {stray} is there, but the file does not count it")


def check_card(card: SimulatedCard) -> None:
    """Check a card built from an image: its kind and applications, every NVM cell and
    journal entry (address, size, range), the cells its applications need and its record
    files, as the next power-up will leave them.  Raises `DecodeError`."""
    _check_applications(card)
    checks = _cell_checks(card)
    nvm = card.nvm
    for address, value in nvm.cells.items():
        problem = _cell_problem(card, checks, address, value)
        if problem:
            raise _refuse(f"NVM cell {address!r:.80} {problem}")
    for i, entry in enumerate(nvm.journal):
        problem = _cell_problem(card, checks, entry.address, entry.value)
        if problem:
            raise _refuse(f"NVM journal entry {i} ({entry.address!r:.80}) {problem}")
    cells = dict(nvm.cells)
    if nvm.committed:  # what power-up leaves: the journal applied
        cells.update((entry.address, entry.value) for entry in nvm.journal)
    missing = sorted(set(checks) - set(cells))
    if missing:
        raise _refuse(f"NVM cell {missing[0]!r} is missing")
    _check_records(card, cells)
    _check_pboc_values(card, cells)
