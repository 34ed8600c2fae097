"""The clearing report of a run, read back from the ledger (docs/settlement.md, "Reports").

Everything in the report comes from the ledger rows of the run's batches (and the
refusals of the run), never from what this process happened to compute, so a run
that was killed and started again reports exactly what an uninterrupted run does; the
gaps come from the run's index of settled seqs (`RunResult.gaps`), which once the run
is over holds every seq the ledger holds.

- `clearing.csv`: one line per (kind, day, operator, mode, route, merchant,
  organization) with count, list, charged, discount and rebate in fen;
- `clearing.json`: the same lines, totals per dimension, the batches, the counts per
  rejection reason and the suspicious gaps;
- `rejects.csv`: one line per rejected record and its reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unioncard.atomic_file import write_atomically
from unioncard.settlement.emv import EMV_REASONS, accepted_by_batch
from unioncard.settlement.ledger import Ledger
from unioncard.settlement.pipeline import RunResult, find_gaps
from unioncard.settlement.reasons import Reason

__all__ = ["LINE_COLUMNS", "Report", "build_report", "write_report"]

LINE_COLUMNS = ("kind", "day", "operator", "mode", "route", "merchant", "organization",
                "count", "list_amount", "charged_amount", "discount", "rebate")
REJECT_COLUMNS = ("batch_file", "terminal_id", "batch_id", "record", "reason",
                  "record_terminal_id", "terminal_seq", "card", "application", "kind",
                  "card_seq", "amount", "at")
_MODES = {0: "load", 1: "bus", 2: "metro", 3: "coach", 4: "ferry", 5: "taxi", 6: "etc",
          7: "pos"}
_AMOUNTS = ("count", "list_amount", "charged_amount", "discount", "rebate")


class Report:
    """A run's report: ``document`` is clearing.json; ``lines`` and ``rejects`` the rows of
    the two CSV files."""

    def __init__(self, document: dict[str, Any], lines: list[dict[str, Any]],
                 rejects: list[dict[str, Any]], states: dict[str, int]) -> None:
        self.document, self.lines, self.rejects = document, lines, rejects
        self.states = states
        """How many of the run's batches were settled now, already settled, refused: what
        this run did (not in the report files, which are the same however the run went)."""

    def summary(self) -> dict[str, Any]:
        """What ``settle --json`` prints: accepted, rejected by reason, totals, batches."""
        doc = self.document
        return {"accepted": doc["accepted"], "rejected": doc["rejected"],
                "totals": doc["totals"], "batches": self.states}


_APPLICATIONS = {0: "emv", 1: "transit", 2: "etc"}
"""A rejected record's application as the report names it (0: an EMV card sale)."""


def build_report(ledger: Ledger, run: RunResult) -> Report:
    """The report of ``run``'s batches as the ledger holds them."""
    settled = []
    for result in run.batches:
        if result.state != "refused":
            stored = ledger.batch(result.terminal_id, result.batch_id)
            if stored is not None:
                settled.append((result, stored))
    rows = [stored.row for _, stored in settled]
    by_row = {stored.row: (result, stored) for result, stored in settled}
    stored_of = {id(result): stored for result, stored in settled}
    lines = [dict(zip(LINE_COLUMNS, _named(line), strict=True))
             for line in (ledger.lines(rows) if rows else [])]
    rejects = []
    for stored_reject in (ledger.rejects(rows) if rows else []):
        (batch_row, record, reason, terminal, tseq, card, app, seq, load, amount,
         at) = stored_reject
        result, stored = by_row[batch_row]
        rejects.append(dict(zip(REJECT_COLUMNS, (
            result.source, stored.terminal_id.hex().upper(), stored.batch_id, record, reason,
            terminal.hex().upper(), tseq, card, _APPLICATIONS[app],
            "load" if load else "purchase", seq, amount, at), strict=True)))
    reasons = {r.label: 0 for r in Reason if r is not Reason.ACCEPTED}
    reasons.update((label, 0) for label in EMV_REASONS if label not in reasons)
    for reject in rejects:
        reasons[reject["reason"]] += 1
    emv_accepted = accepted_by_batch(ledger, rows)
    accepted = sum(stored.accepted for _, stored in settled) + sum(emv_accepted.values())
    gaps = [{"card": card, "kind": kind, "first_seq": first, "last_seq": last}
            for card, kind, first, last in (
                run.gaps if run.gaps is not None else find_gaps(ledger, rows))]
    states: dict[str, int] = defaultdict(int)
    for result in run.batches:
        states[result.state] += 1
    document = {
        "accepted": accepted,
        "rejected": {k: v for k, v in reasons.items() if v},
        "totals": _totals(lines),
        "by": {dimension: _by(lines, dimension)
               for dimension in ("day", "operator", "mode", "route", "merchant",
                                 "organization")},
        "lines": lines,
        "batches": [_batch_entry(result, stored_of.get(id(result)), emv_accepted)
                    for result in run.batches],
        "gaps": gaps,
    }
    return Report(document, lines, rejects, dict(sorted(states.items())))


def _named(line: Sequence[Any]) -> list[Any]:
    values = list(line)
    values[3] = _MODES.get(values[3], str(values[3])) if values[0] == "sale" else (
        "transit" if values[3] == 1 else "etc")
    return values


def _totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    sales = [line for line in lines if line["kind"] == "sale"]
    loads = [line for line in lines if line["kind"] == "load"]
    return {"sales": {k: sum(line[k] for line in sales) for k in _AMOUNTS},
            "loads": {"count": sum(line["count"] for line in loads),
                      "amount": sum(line["charged_amount"] for line in loads)}}


def _by(lines: list[dict[str, Any]], dimension: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        if line["kind"] != "sale":
            continue
        entry = out.setdefault(str(line[dimension]), dict.fromkeys(_AMOUNTS, 0))
        for key in _AMOUNTS:
            entry[key] += line[key]
    return dict(sorted(out.items()))


def _batch_entry(result: Any, stored: Any, emv_accepted: dict[int, int]) -> dict[str, Any]:
    """A batch as the report lists it: settled (now or before: the report is the same; its
    ledger entry ``stored``) or refused with the reason."""
    entry = {"file": result.source, "state": "refused" if result.state == "refused"
             else "settled", "reason": result.reason, "records": result.records,
             "terminal_id": result.terminal_id.hex().upper(), "batch_id": result.batch_id}
    if stored is not None:
        entry.update(records=stored.records,
                     accepted=stored.accepted + emv_accepted.get(stored.row, 0),
                     digest=stored.digest)
    return entry


def _csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_report(report: Report, out: str | Path) -> list[Path]:
    """Write clearing.csv, clearing.json and rejects.csv into ``out`` (each atomically)."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "clearing.csv": _csv(report.lines, LINE_COLUMNS),
        "clearing.json": (json.dumps(report.document, ensure_ascii=False,
                                     separators=(",", ":")) + "\n").encode("utf-8"),
        "rejects.csv": _csv(report.rejects, REJECT_COLUMNS),
    }
    return [write_atomically(directory / name, data) for name, data in files.items()]
