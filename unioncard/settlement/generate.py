"""A generated day of offline records, for benchmarks and trials (``unioncard demo generate``).

`generate_day` writes batch files (docs/records.md) holding a realistic day of a
province-wide union card: several city unions (issuers), bus, metro and toll
operators, partner merchants, members of every category, each card's offline and
online seqs counting up, fares priced by the shipped rules as terminals price them,
and real TACs computed with the keystore's TAC keys (by default the published test
keys).  Records are built as numpy columns and their TACs in bulk
(`unioncard.crypto.tac_batch`), so millions are written in seconds; the same seed
gives the same files.  Every record settles as accepted against the same keystore.

A day can follow earlier ones (`day_before` of all their files): the next date, the
same cards and terminals numbered as before, each card counter's seq, each purse's
balance, each known terminal's seq and batch id going on from where those days left
them, so the days settle one after the other with nothing replayed and no gap between
them.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unioncard.offline.batch import (
    BATCH_FORMAT_VERSION,
    HEADER_MAGIC,
    TRAILER_MAGIC,
    batch_file_name,
)
from unioncard.offline.record import NO_RULE, RECORD_SIZE
from unioncard.settlement.columns import RECORD_DTYPE, record_crcs

if TYPE_CHECKING:
    from unioncard.crypto.keystore import Keystore

__all__ = ["DayBefore", "DayPlan", "day_before", "generate_day"]

ISSUERS = (0x10000000FFFFFFFF, 0x20000000FFFFFFFF, 0x30000000FFFFFFFF)
"""Three city unions issuing the province-wide card."""
ORGANIZATIONS = ("市总工会", "区总工会", "铁路工会", "教育工会", "")
ROUTES = ("1", "2", "5", "11", "42", "101", "305", "808", "M1", "M2", "M3")
MERCHANTS = (("EXAMPLE-PARTNER-0001", 5411), ("SUPERMARKET-0042", 5411),
             ("CANTEEN-7", 5812), ("BOOKSHOP-3", 5942))
MIX = {"bus": 0.55, "metro": 0.15, "etc": 0.10, "pos": 0.12, "load": 0.08}
FIRST_DAY = dt.date(2026, 5, 1)
DIVERSIFIER_BASE = {1: 0x5500000000000000, 2: 0x1101000000000000}
"""A card's diversifier for its transit purse (application 1) and its ETC purse (2): the
base plus the card's number."""
_START_BALANCE = 60_000
_NEW_TERMINAL = (1000, 1)
"""A terminal's first seq and first batch id."""


def _purse(card: np.ndarray, application: np.ndarray) -> np.ndarray:
    """A card's purse, numbered: ``card * 2 + application - 1``."""
    return card.astype(np.int64) * 2 + application.astype(np.int64) - 1


def _counter(card: np.ndarray, application: np.ndarray, load: np.ndarray) -> np.ndarray:
    """A purse's counter (offline seq: purchases, online seq: loads), numbered:
    ``purse * 2 + is_load``."""
    return _purse(card, application) * 2 + load.astype(np.int64)


@dataclass(frozen=True, slots=True)
class DayPlan:
    """The shape of a generated day: ``records`` in total, spread over ``terminals``
    terminals and ``cards`` cards, at most ``batch_records`` records per batch file."""

    records: int
    day: dt.date = FIRST_DAY
    cards: int = 0
    terminals: int = 0
    batch_records: int = 20_000
    seed: int | None = None

    def resolved(self, before: DayBefore | None = None) -> DayPlan:
        """The plan with its defaults filled in: one card for every 20 records (after
        earlier days: the cards their records number), a terminal for every 5 000
        records, the day after ``before``, and the day's date as its seed (20260501)."""
        day = before.day + dt.timedelta(days=1) if before is not None else self.day
        cards = self.cards or (before.cards if before is not None
                               else max(10, self.records // 20))
        terminals = self.terminals or max(5, self.records // 5_000)
        seed = self.seed if self.seed is not None else int(day.strftime("%Y%m%d"))
        return DayPlan(self.records, day, cards, terminals, self.batch_records, seed)


@dataclass(frozen=True, slots=True)
class DayBefore:
    """What generated days' batch files leave for the next day (`day_before`)."""

    day: dt.date
    """The last date of its records."""
    cards: int
    """Its records' cards are numbered below this (the highest seen, plus one)."""
    next_seq: np.ndarray
    """Each card counter's next seq (by `_counter`; -1: the counter has no record)."""
    balance: np.ndarray
    """Each purse's last balance (by `_purse`; -1: no record)."""
    terminals: dict[int, tuple[int, int]]
    """Each terminal's next seq and next batch id."""


def generate_day(out: str | Path, plan: DayPlan, keys: Keystore | None = None, *,
                 after: DayBefore | None = None,
                 progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write the day's batch files into ``out`` (created); their paths.  ``after``: the
    day this one follows (`day_before`)."""
    from unioncard.crypto import Keystore

    plan = plan.resolved(after)
    keys = keys or Keystore.test()
    rng = np.random.default_rng(plan.seed)
    records = _records(plan, rng, keys, after)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    terminal = records["terminal_id"].view("S6").ravel()
    order = np.lexsort((records["terminal_seq"], terminal))
    records = records[order]
    bounds = np.flatnonzero(terminal[order][1:] != terminal[order][:-1]) + 1
    created = dt.datetime.combine(plan.day, dt.time(23, 30))
    done = 0
    for chunk in np.split(records, bounds):
        terminal_id = bytes(chunk["terminal_id"][0])
        first = (after.terminals if after else {}).get(int.from_bytes(terminal_id, "big"),
                                                      _NEW_TERMINAL)[1]
        for number, start in enumerate(range(0, len(chunk), plan.batch_records), first):
            part = chunk[start:start + plan.batch_records]
            path = directory / batch_file_name(terminal_id, number)
            path.write_bytes(_batch_bytes(terminal_id, number, created, part))
            paths.append(path)
            done += len(part)
            if progress is not None:
                progress(done)
    return paths


def day_before(paths: Sequence[str | Path]) -> DayBefore:
    """What the generated days in the batch files ``paths`` leave for the next day: their
    last date, their cards, where each card counter, purse and terminal stands (give
    every earlier day: a counter goes on from the last day it was used).  Files are
    read whole and checked (`unioncard.settlement.columns.decode_batch`); `ValueError` for
    a damaged file, none at all, or records not of a generated day (a card the generator
    does not number)."""
    from unioncard.settlement.columns import Columns, decode_batch
    from unioncard.settlement.errors import BatchRefused
    from unioncard.settlement.keyindex import grown

    if not paths:
        raise ValueError("no batch files: nothing for a next day to follow")
    last_day, cards = None, 0
    next_seq = np.zeros(0, np.int64)
    balance, balance_at = np.zeros(0, np.int64), np.zeros(0, np.int64)
    terminals: dict[int, tuple[int, int]] = {}
    for path in paths:
        try:
            batch = decode_batch(Path(path).read_bytes(), str(path))
        except BatchRefused as exc:
            raise ValueError(f"{path}: {exc.reason}") from None
        if not batch.count:
            continue
        cols = Columns(batch.records)
        application = cols.field("application")
        base = np.select([application == 1, application == 2],
                         [DIVERSIFIER_BASE[1], DIVERSIFIER_BASE[2]], 0).astype(np.uint64)
        card = (cols.diversifier - base).astype(np.int64)
        issuer = np.asarray(ISSUERS, np.uint64)[np.abs(card) % len(ISSUERS)]
        strange = (base == 0) | (card < 0) | (card >= 1_000_000_000) | (cols.issuer != issuer)
        if strange.any():
            raise ValueError(f"{path}: record {int(np.argmax(strange))} is not of a generated "
                             "day (its card is not one the generator numbers)")
        cards = max(cards, int(card.max()) + 1)
        counter = _counter(card, application, cols.is_load)
        next_seq = grown(next_seq, int(counter.max()) + 1, -1)
        np.maximum.at(next_seq, counter, cols.field("card_seq") + 1)
        purse = _purse(card, application)
        when = cols.when.astype(np.int64)
        order = np.lexsort((when, purse))  # each purse's latest record last
        latest = order[np.r_[purse[order][1:] != purse[order][:-1], True]]
        size = int(purse.max()) + 1
        balance, balance_at = grown(balance, size, -1), grown(balance_at, size, -1)
        newer = latest[when[latest] >= balance_at[purse[latest]]]
        balance[purse[newer]] = cols.field("balance_after")[newer]
        balance_at[purse[newer]] = when[newer]
        day = cols.when.max().astype("datetime64[D]").item()
        last_day = day if last_day is None else max(last_day, day)
        terminal = int.from_bytes(batch.terminal_id, "big")
        seq, number = terminals.get(terminal, (0, 0))
        terminals[terminal] = (max(seq, int(cols.field("terminal_seq").max()) + 1),
                               max(number, batch.batch_id + 1))
    if last_day is None:
        raise ValueError("the batch files hold no records: nothing for a next day to follow")
    return DayBefore(last_day, cards, grown(next_seq, cards * 4, -1)[:cards * 4],
                     grown(balance, cards * 2, -1)[:cards * 2], terminals)


def _records(plan: DayPlan, rng: np.random.Generator, keys: Keystore,
             before: DayBefore | None) -> np.ndarray:
    from unioncard.tariffs import default_rules, evaluate_batch

    n = plan.records
    r = np.zeros(n, RECORD_DTYPE)
    r["record_version"] = 1
    kinds = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    card = rng.integers(0, plan.cards, n)
    issuer = np.asarray(ISSUERS, np.uint64)[card % len(ISSUERS)]
    member = (card % 10) < 7  # 70% of the cards are union member cards
    etc = kinds == "etc"
    application = np.where(etc, 2, 1).astype(np.uint8)
    diversifier = np.where(etc, np.uint64(DIVERSIFIER_BASE[2]), np.uint64(DIVERSIFIER_BASE[1])
                           ) + card.astype(np.uint64)
    r["issuer"] = _bytes_of(issuer, 8)
    r["diversifier"] = _bytes_of(diversifier, 8)
    r["application"] = application
    r["key_version"] = application  # transit keys 01, ETC keys 02 (docs/protocol.md §3.4)
    load = kinds == "load"
    r["tx_type"] = np.where(load, 0x02, np.where(etc, 0x09, 0x06))
    mode = np.select([kinds == "bus", kinds == "metro", etc, kinds == "pos"], [1, 2, 6, 7], 0)
    r["mode"] = mode
    r["card_type"] = np.where(member, 0x55, 0x01)
    r["category_flags"] = np.where(member, (card // 10) % 8, 0)
    r["member_status"] = np.where(member, 1, 0)
    organization = _table(ORGANIZATIONS, 48, "utf-8")
    r["organization"] = organization[np.where(member, card % (len(ORGANIZATIONS) - 1),
                                              len(ORGANIZATIONS) - 1)]
    r["card_expiry"] = np.frombuffer(bytes.fromhex("20301231"), np.uint8)
    seconds = np.sort(rng.integers(5 * 3600, 23 * 3600, n))
    when = np.datetime64(plan.day, "s") + seconds.astype("timedelta64[s]")
    r["date"] = _bcd(when, "date")
    r["time"] = _bcd(when, "time")
    _places(r, rng, kinds, card)
    listed = np.select([kinds == "bus", kinds == "metro", etc, kinds == "pos"],
                       [rng.choice([100, 200, 300], n), rng.choice([300, 400, 600], n),
                        rng.choice([2500, 5000, 10000], n), rng.integers(500, 20000, n)],
                       rng.choice([1000, 2000, 5000], n)).astype(np.int64)
    r["list_amount"] = listed
    charged = listed.copy()
    rules = default_rules()
    purchase = np.flatnonzero(~load)
    from unioncard.settlement.analyze import context_batch

    r["ruleset_version"] = np.where(load[:, None], 0, np.frombuffer(
        bytes.fromhex(rules.version), np.uint8))
    r["rules"] = NO_RULE
    if purchase.size:
        quoted = evaluate_batch(context_batch(r[purchase], when[purchase]), rules)
        charged[purchase] = quoted.charged
        width = min(quoted.rules.shape[1], 8)
        slots = np.where(quoted.rules[:, :width] >= 0, quoted.rules[:, :width], NO_RULE)
        rules_column = np.full((purchase.size, 8), NO_RULE, np.int64)
        rules_column[:, :width] = slots
        r["rules"][purchase] = rules_column
    r["charged_amount"] = charged
    _counters(r, card, application, load, when, before)
    _terminals(r, plan, rng, kinds, before)
    _tacs(r, keys, load)
    r["crc"] = record_crcs(r.view(np.uint8).reshape(n, RECORD_SIZE))
    return r


def _table(texts: Sequence[str], width: int, encoding: str = "ascii") -> np.ndarray:
    """Texts as ``00``-padded rows of ``width`` bytes."""
    return np.frombuffer(b"".join(t.encode(encoding).ljust(width, b"\0") for t in texts),
                         np.uint8).reshape(len(texts), width)


def _bytes_of(values: np.ndarray, width: int) -> np.ndarray:
    return values.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - width:]


def _bcd(when: np.ndarray, part: str) -> np.ndarray:
    text = np.datetime_as_string(when, unit="s")  # YYYY-MM-DDThh:mm:ss
    digits = (np.char.replace(np.char.replace(np.char.replace(text, "-", ""), ":", ""), "T", "")
              ).astype("S14")
    raw = np.frombuffer(digits.tobytes(), np.uint8).reshape(-1, 14) - ord("0")
    pairs = (raw[:, 0::2] << 4) | raw[:, 1::2]
    return pairs[:, :4] if part == "date" else pairs[:, 4:]


def _places(r: np.ndarray, rng: np.random.Generator, kinds: np.ndarray,
            card: np.ndarray) -> None:
    n = len(r)
    route = _table(ROUTES, 16)[rng.integers(0, len(ROUTES), n)]
    transit = np.isin(kinds, ["bus", "metro"])
    r["route"][transit] = route[transit]
    metro = kinds == "metro"
    r["station"][metro] = rng.integers(0x0101, 0x0140, int(metro.sum()))
    etc = kinds == "etc"
    r["station"][etc] = rng.integers(1, 30, int(etc.sum()))
    r["entry_station"][etc] = rng.integers(0x0200, 0x0230, int(etc.sum()))
    r["vehicle_class"][etc] = 1 + (card[etc] % 3)
    pos = kinds == "pos"
    choice = rng.integers(0, len(MERCHANTS), n)
    names = _table([m for m, _ in MERCHANTS], 24)[choice]
    r["merchant"][pos] = names[pos]
    r["mcc"][pos] = np.asarray([c for _, c in MERCHANTS])[choice][pos]


def _counters(r: np.ndarray, card: np.ndarray, application: np.ndarray, load: np.ndarray,
              when: np.ndarray, before: DayBefore | None) -> None:
    """Each card purse's offline seq (purchases) and online seq (loads) count up in time
    order, from a start per card (or where the day before left it); balances follow the
    amounts."""
    n = len(r)
    counter = _counter(card, application, load)
    order = np.lexsort((np.arange(n), when, counter))
    ranked = counter[order]
    first = np.r_[True, ranked[1:] != ranked[:-1]]
    run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    position = np.arange(n) - run_start
    start = _left(before.next_seq if before else None, ranked, (ranked * 7) % 400)
    seq = np.empty(n, np.int64)
    seq[order] = start + position
    if n and seq.max() > 0xFFFF:
        raise ValueError("a card's seq would pass 65535 (the records' 2-byte counter): "
                         "fewer records per card")
    r["card_seq"] = seq
    purse = _purse(card, application)
    order = np.lexsort((np.arange(n), when, purse))
    signed = np.where(load, r["charged_amount"], -r["charged_amount"].astype(np.int64))
    ranked = purse[order]
    first = np.r_[True, ranked[1:] != ranked[:-1]]
    running = np.cumsum(signed[order])
    base = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    offset = running - np.where(first, running - signed[order], 0)[base]
    balance = np.empty(n, np.int64)
    balance[order] = _left(before.balance if before else None, ranked, _START_BALANCE) + offset
    r["balance_after"] = np.clip(balance, 0, 100_000)


def _left(values: np.ndarray | None, rows: np.ndarray, default: Any) -> np.ndarray:
    """``values`` at ``rows`` where the day before left one (not -1), else ``default``."""
    out = np.broadcast_to(np.asarray(default, np.int64), rows.shape).copy()
    if values is not None:
        known = rows < len(values)
        left = np.full(rows.shape, -1, np.int64)
        left[known] = values[rows[known]]
        out = np.where(left >= 0, left, out)
    return out


def _terminals(r: np.ndarray, plan: DayPlan, rng: np.random.Generator, kinds: np.ndarray,
               before: DayBefore | None) -> None:
    """Operators by kind (bus companies, metro, toll roads, merchants, load points); each
    terminal's seq counts up in time order (from 1000, or where the day before left it)."""
    n = len(r)
    prefix = {"bus": 0x3101_0000_0000, "metro": 0x3102_0000_0000, "etc": 0x1101_0000_0000,
              "pos": 0x5800_0000_0000, "load": 0x0000_0000_0000}
    terminal = np.zeros(n, np.uint64)
    per_kind = max(1, plan.terminals // len(prefix))
    for kind, base in prefix.items():
        rows = np.flatnonzero(kinds == kind)
        terminal[rows] = np.uint64(base + 0xA0) + rng.integers(0, per_kind, rows.size
                                                              ).astype(np.uint64)
    r["terminal_id"] = _bytes_of(terminal, 6)
    order = np.lexsort((np.arange(n), terminal))
    ranked = terminal[order]
    first = np.r_[True, ranked[1:] != ranked[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    first_seq = np.full(n, _NEW_TERMINAL[0], np.int64)
    if before is not None:
        distinct, which = np.unique(ranked, return_inverse=True)
        first_seq = np.array([before.terminals.get(t, _NEW_TERMINAL)[0]
                              for t in distinct.tolist()], np.int64)[which.ravel()]
    seq = np.empty(n, np.int64)
    seq[order] = first_seq + np.arange(n) - start
    r["terminal_seq"] = seq


def _tacs(r: np.ndarray, keys: Keystore, load: np.ndarray) -> None:
    from unioncard.crypto.tac_batch import load_tacs, purchase_tacs, tac_keys_distinct
    from unioncard.settlement.inputs import RunInputs

    inputs = RunInputs(keys)
    issuers = r["issuer"].copy().view(">u8").ravel().astype(np.uint64)
    masters, row = inputs.tac_master_keys(issuers, r["key_version"])
    if (row < 0).any():
        raise ValueError("the keystore has no TAC key for some generated cards")
    tac_keys = tac_keys_distinct(masters, row, r["diversifier"])
    purchase = ~load
    if purchase.any():
        r["tac"][purchase] = purchase_tacs(
            tac_keys[purchase], r["charged_amount"][purchase], r["tx_type"][purchase],
            r["terminal_id"][purchase], r["terminal_seq"][purchase], r["date"][purchase],
            r["time"][purchase])
    if load.any():
        r["tac"][load] = load_tacs(
            tac_keys[load], r["balance_after"][load], r["card_seq"][load],
            r["charged_amount"][load], r["tx_type"][load], r["terminal_id"][load],
            r["date"][load], r["time"][load])


def _batch_bytes(terminal_id: bytes, batch_id: int, created: dt.datetime,
                 records: np.ndarray) -> bytes:
    header = (HEADER_MAGIC + BATCH_FORMAT_VERSION.to_bytes(2, "big")
              + RECORD_SIZE.to_bytes(2, "big") + terminal_id + batch_id.to_bytes(4, "big")
              + bytes.fromhex(created.strftime("%Y%m%d%H%M%S")) + bytes(7))
    trailer = (TRAILER_MAGIC + len(records).to_bytes(4, "big")
               + int(records["list_amount"].sum(dtype=np.uint64)).to_bytes(8, "big")
               + int(records["charged_amount"].sum(dtype=np.uint64)).to_bytes(8, "big")
               + bytes(4))
    body = header + records.tobytes() + trailer
    return body + zlib.crc32(body).to_bytes(4, "big")
