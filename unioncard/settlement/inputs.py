"""What a settlement run is given besides the batches: keys, rule sets, hotlist, operators.

`RunInputs` travels to every worker of a run (Dask pickles it), so it holds the
hotlist by path and opens it once per process.  The keys of a record are chosen
by its issuer and key version (`Keystore.for_card`, docs/keystore.md); a record
priced by a rule set is re-priced with the rule set its version hash names
(docs/tariffs.md, "Versions").

>>> from unioncard.crypto import Keystore
>>> inputs = RunInputs(Keystore.test())
>>> masters, index = inputs.tac_master_keys(np.array([0x10000000FFFFFFFF, 7], np.uint64),
...                                         np.array([1, 9], np.uint8))
>>> masters.shape, index.tolist()
((1, 16), [0, -1])
>>> inputs.operator(bytes.fromhex("310100001234"))
'310100001234'
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unioncard.errors import CryptoError, SettlementError

if TYPE_CHECKING:
    from unioncard.crypto.keystore import Keystore
    from unioncard.offline.hotlist import Hotlist
    from unioncard.tariffs import RuleSet

__all__ = ["RunInputs", "read_operators"]


@dataclass(frozen=True)
class RunInputs:
    """The keystore, the rule sets by version hash (the shipped ones always among them),
    the hotlist file (None: none) and the operators (terminal id prefix → name)."""

    keys: Keystore
    rulesets: tuple[RuleSet, ...] = ()
    hotlist_path: str | None = None
    operators: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from unioncard.tariffs import default_rules

        known = {r.version: r for r in (*self.rulesets, default_rules())}
        object.__setattr__(self, "rulesets", tuple(known.values()))

    # --- keys ------------------------------------------------------------------------------

    def tac_master_keys(self, issuers: np.ndarray, key_versions: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The TAC master keys (MTK) the records need, ``uint8[M, 16]``, and each record's
        row among them (``-1``: no key of its key version for its issuer)."""
        rows: list[bytes] = []
        where: dict[bytes, int] = {}
        issuer_list, issuer_of = np.unique(issuers, return_inverse=True)  # a few city unions
        pair = issuer_of.reshape(-1) * 256 + np.asarray(key_versions, np.int64)
        row_of = np.full(len(issuer_list) * 256, -1, np.int64)
        for code in np.flatnonzero(np.bincount(pair, minlength=len(row_of))).tolist():
            key = self._tac_key(int(issuer_list[code >> 8]), code & 0xFF)
            if key is not None:
                row_of[code] = where.setdefault(key, len(rows))
                if row_of[code] == len(rows):
                    rows.append(key)
        chosen = row_of[pair]
        masters = (np.frombuffer(b"".join(rows), np.uint8).reshape(-1, 16) if rows
                   else np.zeros((0, 16), np.uint8))
        return masters, chosen

    def _tac_key(self, issuer: int, version: int) -> bytes | None:
        try:
            return self.keys.for_card(issuer.to_bytes(8, "big"), version).tac_mk
        except CryptoError:
            return None

    # --- rule sets, hotlist, operators ------------------------------------------------------

    def ruleset(self, version: bytes) -> RuleSet | None:
        """The rule set whose version hash is ``version`` (32 bytes), or None."""
        return self._by_version.get(version.hex())

    @functools.cached_property
    def _by_version(self) -> dict[str, RuleSet]:
        return {r.version: r for r in self.rulesets}

    @property
    def hotlist(self) -> Hotlist | None:
        """The hotlist, opened once per process (its index is memory-mapped)."""
        return None if self.hotlist_path is None else _open_hotlist(self.hotlist_path)

    def operator(self, terminal_id: bytes) -> str:
        """The operator of a terminal: the name of the longest matching prefix of
        ``operators``, else the terminal id itself."""
        text = terminal_id.hex().upper()
        for length in range(len(text), 0, -1):
            name = self.operators.get(text[:length])
            if name is not None:
                return name
        return text


@functools.cache
def _open_hotlist(path: str) -> Hotlist:
    from unioncard.offline.hotlist import Hotlist

    return Hotlist.load(path)


def read_operators(path: str | Path) -> dict[str, str]:
    """An operators file: CSV ``terminal_prefix,operator`` (a header line is optional);
    prefixes are hex digits of the terminal id.  `SettlementError` names the line."""
    from unioncard.bounded_read import read_utf8

    text = read_utf8(path, limit=16 << 20, what="operators file", error=SettlementError)
    operators: dict[str, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 1 and row[0].strip().lower() == "terminal_prefix":
            continue
        if len(row) != 2:
            raise SettlementError(f"{path}:{number}: expected terminal_prefix,operator")
        prefix, name = row[0].strip().upper(), row[1].strip()
        if not prefix or len(prefix) > 12 or any(ch not in "0123456789ABCDEF" for ch in prefix):
            raise SettlementError(f"{path}:{number}: {row[0]!r} is not a hex prefix of a "
                                  "terminal id (1 to 12 hex digits)")
        if not name or not name.isprintable():
            raise SettlementError(f"{path}:{number}: the operator's name is empty or not "
                                  "printable")
        if prefix in operators:
            raise SettlementError(f"{path}:{number}: prefix {prefix} is named twice")
        operators[prefix] = name
    return operators
