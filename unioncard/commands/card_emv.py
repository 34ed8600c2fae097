"""The payment applications in ``unioncard card read``: a few lines per application.

`unioncard.terminal.emv.read` reads them; this writes what a person reads.
"""

from __future__ import annotations

from typing import Any

from unioncard.commands.common import yuan

__all__ = ["payment_lines"]


def _date(yymmdd: str | None) -> str:
    """An n6 date as YYYY-MM-DD: years 00-49 are 20YY, 50-99 19YY (EMV Book 4 §6.7.3)."""
    if not yymmdd:
        return "-"
    century = "19" if yymmdd[:2].isdigit() and int(yymmdd[:2]) >= 50 else "20"
    return f"{century}{yymmdd[:2]}-{yymmdd[2:4]}-{yymmdd[4:]}"


def payment_lines(apps: list[dict[str, Any]]) -> list[str]:
    """One block per application: label and AID, PAN and dates, counters and EC, the log."""
    lines = []
    for app in apps:
        name = app.get("preferred_name") or app.get("label") or "payment application"
        lines.append(f"{name} ({app['aid']}): PAN {app.get('pan') or '-'}"
                     + (f" PSN {app['psn']}" if app.get("psn") else "")
                     + f", valid {_date(app.get('effective'))} to {_date(app.get('expiry'))}")
        if app.get("cardholder_name"):
            lines.append(f"  cardholder {app['cardholder_name']}")
        facts = [f"ATC {app['atc']}" if app.get("atc") is not None else "",
                 f"last online ATC {app['last_online_atc']}"
                 if app.get("last_online_atc") is not None else "",
                 f"PIN tries left {app['pin_tries']}" if app.get("pin_tries") is not None else "",
                 f"EC balance {yuan(app['ec_balance'])}"
                 if app.get("ec_balance") is not None else ""]
        if any(facts):
            lines.append("  " + ", ".join(f for f in facts if f))
        if app.get("read_after_gpo"):
            lines.append("  records read after GET PROCESSING OPTIONS (the card asked for it)")
        for entry in app.get("log", []):
            if "raw" in entry:
                lines.append(f"  log: {entry['raw']}")
                continue
            when = entry.get("9A", "")
            amount = entry.get("9F02")
            lines.append(f"  log: {_date(when)} "
                         + (yuan(int(amount)) if amount and amount.isdigit() else "-")
                         + (f" ATC {int(entry['9F36'], 16)}" if entry.get("9F36") else ""))
    return lines
