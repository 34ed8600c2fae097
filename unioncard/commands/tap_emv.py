"""``unioncard tap --mode pos-emv``: a sale on the card's PBOC debit application.

docs/emv-kernel.md describes the kernel and this command.

The EMV kernel (`unioncard.terminal.emv`) runs against the card (``--card``
image in process, or ``--reader``) with the simulated issuer host for online
authorizations (keys from ``--issuer-keys``, default the published test
keystore) and the CA public keys of ``--capk`` files (default the shipped test
CA key and UnionPay keys).  The unpredictable number and the random-selection
draw come from the operating system's random source.  With ``--json`` stdout
is one document with the TVR, TSI, CID, AC and the decision.  With ``--journal``
an approved sale is journaled (its offline record, docs/records.md) before the
approval is reported, and leaves in the journal's batch files with the purse
records (``unioncard batch export``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from unioncard.commands.common import finish, parse_terminal_id, printable
from unioncard.commands.terminal_io import open_link, outcome_lines, record_trace

__all__ = ["EMV_MODE", "emv_lines", "emv_options", "tap_emv"]

EMV_MODE = "pos-emv"
DEFAULT_CAPK_FILES = ("capk-test.json", "capk-unionpay.json")
"""In ``unioncard/data``: the test CA key the simulated cards use, and the UnionPay keys."""
_NOT_FOR_EMV = {"route": "--route", "station": "--station", "network": "--network",
                "lane": "--lane", "vehicle_class": "--vehicle-class",
                "toll_table": "--toll-table", "psam_image": "--psam",
                "psam_reader": "--psam-reader", "hotlist_file": "--hotlist",
                "block_keys": "--block-keys", "replay_file": "--replay"}
_EMV_ONLY = {"contact": "--contact/--contactless", "pins": "--pin", "capk_files": "--capk",
             "issuer_keys": "--issuer-keys", "accept_expired_capk": "--accept-expired-capk",
             "chosen_aid": "--aid", "terminal_id": "--terminal-id"}


def _aid(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        aid = bytes.fromhex(value)
    except ValueError:
        aid = b""
    if not 5 <= len(aid) <= 16:
        raise click.BadParameter("an AID is 5 to 16 bytes of hex, e.g. A000000333010101")
    return aid


def _pin(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    for pin in value:
        if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
            raise click.BadParameter("a PIN has 4 to 12 digits")
    return value


def emv_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``--mode pos-emv``."""
    for option in reversed((
        click.option("--contact/--contactless", "contact", default=None,
                     help="pos-emv: the card is inserted (contact PBOC, the default) or "
                          "tapped (qPBOC)."),
        click.option("--pin", "pins", multiple=True, callback=_pin, metavar="PIN",
                     help="pos-emv: the PIN the cardholder types (offline plaintext PIN); "
                          "repeat for each new try after a wrong one.  None: the "
                          "cardholder enters no PIN."),
        click.option("--capk", "capk_files", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="pos-emv: CA public keys (JSON with SHA-1 checksums, checked on "
                          "load; repeatable). Default: the test CA and the UnionPay keys "
                          "shipped with unioncard."),
        click.option("--issuer-keys", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
                     help="pos-emv: keystore whose [emv] issuer master keys the simulated "
                          "issuer host uses. Default: the published test keys."),
        click.option("--accept-expired-capk", is_flag=True, default=None,
                     help="pos-emv: use a CA public key past its expiry date (it is reported "
                          "either way; refused by default)."),
        click.option("--aid", "chosen_aid", callback=_aid, metavar="HEX",
                     help="pos-emv: the application the cardholder chooses (default: the "
                          "card's highest priority one)."),
        click.option("--terminal-id", envvar="UNIONCARD_TERMINAL_ID", show_envvar=True,
                     callback=parse_terminal_id, metavar="HEX",
                     help="pos-emv with --journal: this POS's terminal id (12 hex digits) in "
                          "its records and batch files. Needed for the first sale on a "
                          "journal, which remembers it."),
    )):
        f = option(f)
    return f


def check_emv_options(mode: str, params: dict[str, Any]) -> None:
    """Options of the other mode are usage errors, never silently ignored."""
    names = _NOT_FOR_EMV if mode == EMV_MODE else _EMV_ONLY
    wrong = [flag for name, flag in names.items() if params.get(name) not in (None, ())]
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)} {'has' if len(wrong) == 1 else 'have'} "
                               f"no meaning for --mode {mode}")


def emv_lines(outcome: Any) -> list[str]:
    """The lines of `outcome_lines` and the EMV facts: TVR, TSI, CID, AC, path, CVM."""
    d = outcome.details
    lines = outcome_lines(outcome)
    if d.get("aid"):
        lines.insert(1, f"  {d.get('label') or 'application'} {d['aid']} ({d['interface']}), "
                        f"PAN {d.get('pan') or '-'}")
    if d.get("tvr"):
        lines.append(f"  TVR {d['tvr']}  TSI {d['tsi']}  CID {d.get('cid') or '-'}  "
                     f"AC {d.get('ac') or '-'}  ATC {d.get('atc') or '-'}")
    if d.get("path"):
        lines.append(f"  {d['path']}, ODA {d.get('oda', 'none')}, CVM results "
                     f"{d.get('cvm_results', '-')}"
                     + (f", ARC {d['arc']}" if d.get("arc") else ""))
    if d.get("record"):
        lines.append(f"  journaled #{outcome.journal_id}: terminal {d['record']['terminal_id']} "
                     f"seq {d['record']['terminal_seq']}")
    if d.get("signature_required"):
        lines.append("  the cardholder signs the receipt")
    return [printable(line) for line in lines]


def tap_emv(params: dict[str, Any]) -> None:
    """Run ``tap --mode pos-emv`` with the tap command's parsed ``params``."""
    import secrets
    from importlib import resources

    from unioncard.crypto.keystore import Keystore
    from unioncard.terminal.driver import run
    from unioncard.terminal.emv import CapkStore, EmvPurchase, EmvSettings
    from unioncard.terminal.issuer_host import SimulatedIssuer

    check_emv_options(EMV_MODE, params)
    amount = params.get("amount")
    if not amount:
        raise click.UsageError("a sale needs --amount FEN (more than 0)")
    data = resources.files("unioncard") / "data"
    files = [str(path) for path in params.get("capk_files") or ()] or [
        str(data / name) for name in DEFAULT_CAPK_FILES]
    capks = CapkStore.load(*files)
    keys = Keystore.load(params["issuer_keys"]) if params.get("issuer_keys") else \
        Keystore.test()
    rules = None
    if params.get("rules_file"):
        from unioncard.tariffs import load as load_rules

        rules = load_rules(params["rules_file"])
    mcc: int | None = params.get("mcc")
    settings = EmvSettings(accept_expired_capk=bool(params.get("accept_expired_capk")),
                           mcc=EmvSettings().mcc if mcc is None else mcc)
    session = EmvPurchase(
        amount, now=params.get("at") or dt.datetime.now(),
        unpredictable_number=secrets.token_bytes(4), random_draw=secrets.randbelow(99) + 1,
        settings=settings, contactless=params.get("contact") is False,
        pins=params.get("pins") or (), capks=capks, rules=rules,
        merchant=params.get("merchant"), chosen_aid=params.get("chosen_aid"))
    with ExitStack() as stack:
        journal = _open_journal(stack, params)
        card = open_link(stack, params.get("card_image"), params.get("reader"), what="card",
                         wait=params.get("wait", 10.0))
        assert card is not None
        if params.get("trace_file") is not None:
            record_trace(stack, params["trace_file"], card, None)
        outcome = run(session, card=card, host=SimulatedIssuer.from_keystore(keys))
        if journal is not None and outcome.details.get("clearing"):
            outcome = _journal_sale(journal, params.get("terminal_id"), session, outcome)
    details = dict(outcome.details)
    if keys.test_keys:
        details["test_keys"] = True
    if details.get("clearing"):  # printed output never shows a full PAN
        from unioncard.apdu.masking import mask_digits

        details["clearing"] = {**details["clearing"],
                               "pan": mask_digits(details["clearing"]["pan"])}
    outcome = outcome.with_changes(details=details)
    finish(outcome.to_dict(), emv_lines(outcome), as_json=params.get("as_json", False),
           status=outcome.decision.exit_status)


def _open_journal(stack: ExitStack, params: dict[str, Any]) -> Any:
    """The journal of ``--journal`` (None without it), its POS terminal id checked before
    the card is touched (the first sale on a journal needs ``--terminal-id``)."""
    from unioncard.commands.terminal_io import open_journal

    if params.get("journal_path") is None:
        if params.get("terminal_id") is not None:
            raise click.UsageError("--terminal-id names the POS in its journal: give "
                                   "--journal FILE too")
        return None
    if params.get("terminal_id") is None and not Path(params["journal_path"]).exists():
        raise click.UsageError("the first EMV sale on a journal needs --terminal-id HEX (this "
                               "POS's terminal id, 12 hex digits); the journal remembers it")
    journal = stack.enter_context(open_journal(params["journal_path"]))
    journal.emv_terminal_id(params.get("terminal_id"))
    return journal


def _journal_sale(journal: Any, terminal_id: bytes | None, session: Any, outcome: Any) -> Any:
    """Journal the approved sale (one durable commit) before it is reported approved."""
    from unioncard.terminal.emv.record import sale_record
    from unioncard.terminal.journal import JournalError

    try:
        number, record = journal.record_emv_sale(
            terminal_id, lambda terminal, seq: sale_record(session, outcome, terminal_id=terminal,
                                                           terminal_seq=seq))
    except (JournalError, ValueError) as exc:
        raise JournalError(f"the card approved the sale, but it could not be journaled: "
                           f"{exc}") from None
    return outcome.with_changes(journal_id=number,
                                details={**outcome.details, "record": record.to_dict()})
