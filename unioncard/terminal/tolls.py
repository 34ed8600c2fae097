"""Toll tables: the toll between two stations of a road network, by vehicle class (TOML).

A toll table is operator data, not code::

    # unioncard toll table
    network = "1101"                  # the road network (EF 0019 network, 4 hex digits)
    name = "Example expressway"

    [[toll]]
    entry = "0203"                    # station codes (EF 0019 station, 4 hex digits)
    exit = "0007"
    fen = { 1 = 10000, 2 = 15000 }    # vehicle class -> toll in fen

A toll applies in both directions unless the reverse pair is listed too.
`TollTable.toll` gives the toll of a trip; `TollTable.longest_toll` the
highest toll into an exit, which the exit lane charges when the card carries
no usable entry (docs/terminal.md, "ETC").  Errors name the file and the line.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unioncard.bounded_read import TOLL_TABLE_LIMIT, read_utf8
from unioncard.errors import UnionCardError

__all__ = ["TollTable", "TollTableError", "load_toll_table", "parse_toll_table"]

HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
MAX_TOLL = 10_000_000
"""A toll above 100 000 yuan is a typing error, not a toll."""


class TollTableError(UnionCardError, ValueError):
    """An invalid toll table: the message names the file, the entry and the problem."""


@dataclass(frozen=True, slots=True)
class TollTable:
    """Tolls of one network: ``(entry, exit, vehicle class) -> fen``."""

    network: int
    name: str = ""
    tolls: dict[tuple[int, int, int], int] = field(default_factory=dict)

    def toll(self, entry: int, exit: int, vehicle_class: int) -> int | None:
        """The toll from ``entry`` to ``exit`` for ``vehicle_class``, or None if unlisted."""
        found = self.tolls.get((entry, exit, vehicle_class))
        return found if found is not None else self.tolls.get((exit, entry, vehicle_class))

    def longest_toll(self, exit: int, vehicle_class: int) -> int | None:
        """The highest toll of any trip ending at ``exit`` for ``vehicle_class``."""
        found = [fen for (a, b, cls), fen in self.tolls.items()
                 if cls == vehicle_class and exit in (a, b)]
        return max(found) if found else None

    @property
    def stations(self) -> set[int]:
        return {s for a, b, _ in self.tolls for s in (a, b)}


class _Where:
    """Where a key or table is: the file and its line (`toml_lines.SourceMap`, made
    the first time a line is asked for, then kept); the file alone for one it lacks."""

    def __init__(self, source: str, text: str) -> None:
        self.source, self.text = source, text

    @functools.cached_property
    def _lines(self) -> Any:
        from unioncard.toml_lines import SourceMap

        return SourceMap(self.text)

    def __call__(self, *path: str | int) -> str:
        line = self._lines.line(path) if path else None
        return self.source if line is None else f"{self.source}:{line}"


def _code(where: Callable[[], str], value: Any, what: str) -> int:
    """A station or network code; ``where`` names the place, asked only for an error."""
    if isinstance(value, str) and len(value) == 4 and all(c in HEX_DIGITS for c in value):
        return int(value, 16)
    raise TollTableError(f"{where()}: {what} must be 4 hex digits in quotes, got {value!r}")


def parse_toll_table(text: str, source: str = "<toll table>") -> TollTable:
    """Read a toll table document; `TollTableError` names what is wrong, where."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TollTableError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise TollTableError(f"{source}: not valid TOML: nested too deeply") from None
    at = _Where(source, text)
    unknown = sorted(set(doc) - {"network", "name", "toll"})
    if unknown:
        raise TollTableError(f"{at(unknown[0])}: unknown entries {', '.join(unknown)}")
    network = _code(lambda: at("network"), doc.get("network"), "network")
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise TollTableError(f"{at('name')}: name must be a string")
    entries = doc.get("toll", [])
    if not isinstance(entries, list) or not entries:
        raise TollTableError(f"{at('toll')}: no [[toll]] entries")
    tolls: dict[tuple[int, int, int], int] = {}
    for index, entry in enumerate(entries):
        def where(*key: str, index: int = index) -> str:
            return f"{at('toll', index, *key)}: [[toll]] #{index + 1}"

        if not isinstance(entry, dict):
            raise TollTableError(f"{where()} is not a table")
        extra = sorted(set(entry) - {"entry", "exit", "fen"})
        if extra:
            raise TollTableError(f"{where(extra[0])}: unknown entries {', '.join(extra)}")
        entry_code = _code(lambda: where("entry"), entry.get("entry"), "entry")
        exit_code = _code(lambda: where("exit"), entry.get("exit"), "exit")
        if entry_code == exit_code:
            raise TollTableError(f"{where('exit')}: entry and exit are the same station")
        fens = entry.get("fen")
        if not isinstance(fens, dict) or not fens:
            raise TollTableError(f"{where('fen')}: fen must map vehicle classes to tolls, "
                                 "e.g. fen = { 1 = 10000 }")
        for cls_text, fen in fens.items():
            if not cls_text.isdigit() or not 1 <= int(cls_text) <= 255:
                raise TollTableError(f"{where('fen', cls_text)}: vehicle class {cls_text!r} "
                                     "is not 1..255")
            if not isinstance(fen, int) or isinstance(fen, bool) or not 0 <= fen <= MAX_TOLL:
                raise TollTableError(f"{where('fen', cls_text)}: toll for class {cls_text} "
                                     f"must be integer fen 0..{MAX_TOLL}, got {fen!r}")
            key = (entry_code, exit_code, int(cls_text))
            if key in tolls:
                raise TollTableError(f"{where('fen', cls_text)}: {entry['entry']} -> "
                                     f"{entry['exit']} class {cls_text} is listed twice")
            tolls[key] = fen
    return TollTable(network, name, tolls)


def load_toll_table(path: str | Path) -> TollTable:
    """A toll table file: UTF-8, a regular file of at most `TOLL_TABLE_LIMIT` bytes."""
    text = read_utf8(path, limit=TOLL_TABLE_LIMIT, what="toll table", error=TollTableError)
    return parse_toll_table(text, str(path))
