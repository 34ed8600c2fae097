"""Hypothesis strategies for offline records and batches (`unioncard.offline`).

`offline_records` draws valid purchases and loads over the whole range of every
field (text at its byte limits, amounts up to 2³² − 1, all flag combinations
the format allows), so ``OfflineRecord.from_bytes(r.to_bytes()) == r`` holds for
each; `batches` draws whole batches of one terminal.  Settlement tests and
integrators' tests reuse them.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from unioncard.offline import Application, Batch, OfflineRecord, RecordFlags, TransactionType
from unioncard.offline.record import MAX_RULES, NO_RULE

__all__ = ["batches", "offline_records", "terminal_ids"]

MAX_FEN = 0xFFFF_FFFF

terminal_ids = st.binary(min_size=6, max_size=6)

_flags = st.sampled_from([
    RecordFlags(0),
    RecordFlags.RECOVERED,
    RecordFlags.NO_TAC,
    RecordFlags.RECOVERED | RecordFlags.NO_TAC,
    RecordFlags.NO_TAC | RecordFlags.UNVERIFIED,
    RecordFlags.RECOVERED | RecordFlags.NO_TAC | RecordFlags.UNVERIFIED,
])
_tacs = st.binary(min_size=4, max_size=4).filter(lambda tac: tac != bytes(4))
_ascii = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# UTF-8 takes at most 4 bytes a character: 12 characters always fit in 48 bytes.
_organizations = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12),
    st.sampled_from(["", "上海市总工会", "工" * 16, "A" * 48]),
)
_whens = st.datetimes(min_value=dt.datetime(1000, 1, 1),
                      max_value=dt.datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda when: when.replace(microsecond=0))
_expiries = st.one_of(st.none(), st.dates(min_value=dt.date(1000, 1, 1)))
_uint8, _uint16, _uint32 = (st.integers(0, (1 << bits) - 1) for bits in (8, 16, 32))
_amounts = st.one_of(st.integers(0, 100_000), st.integers(0, MAX_FEN))


@st.composite
def offline_records(draw: st.DrawFn, *, terminal_id: bytes | None = None,
                    load: bool | None = None) -> OfflineRecord:
    """A valid offline record; ``terminal_id`` fixes the terminal, ``load`` the kind
    (True: an EP load; False: a purchase or CAPP purchase; None: either)."""
    is_load = draw(st.booleans()) if load is None else load
    flags = draw(_flags)
    tac = bytes(4) if flags & RecordFlags.NO_TAC else draw(_tacs)
    if is_load:
        tx_type, mode = TransactionType.EP_LOAD, 0
        list_amount = charged = draw(_amounts)
        rules: tuple[int, ...] = ()
        ruleset_version = bytes(32)
    else:
        tx_type = draw(st.sampled_from([TransactionType.EP_PURCHASE,
                                        TransactionType.CAPP_PURCHASE]))
        mode = draw(st.one_of(st.integers(1, 7), st.integers(1, 255)))
        list_amount = draw(_amounts)
        charged = draw(st.integers(0, list_amount))
        rules = tuple(draw(st.lists(st.integers(0, NO_RULE - 1), max_size=MAX_RULES)))
        ruleset_version = draw(st.binary(min_size=32, max_size=32))
    return OfflineRecord(
        terminal_id=draw(terminal_ids) if terminal_id is None else terminal_id,
        terminal_seq=draw(_uint32),
        issuer=draw(st.binary(min_size=8, max_size=8)),
        diversifier=draw(st.binary(min_size=8, max_size=8)),
        application=draw(st.sampled_from(Application)),
        card_seq=draw(_uint16),
        key_version=draw(_uint8),
        tx_type=tx_type,
        mode=mode,
        card_type=draw(st.one_of(st.sampled_from([0x55, 0x01]), _uint8)),
        category_flags=draw(_uint8),
        member_status=draw(st.one_of(st.integers(0, 3), _uint8)),
        organization=draw(_organizations),
        card_expiry=draw(_expiries),
        list_amount=list_amount,
        charged_amount=charged,
        balance_after=draw(_amounts),
        rules=rules,
        route=draw(st.text(_ascii, max_size=16)),
        station=draw(_uint16),
        entry_station=draw(_uint16),
        merchant=draw(st.text(_ascii, max_size=24)),
        vehicle_class=draw(_uint8),
        mcc=draw(_uint16),
        when=draw(_whens),
        tac=tac,
        flags=flags,
        ruleset_version=ruleset_version,
        rounding=draw(st.integers(0, 2)),
    )


@st.composite
def batches(draw: st.DrawFn, max_records: int = 5) -> Batch[OfflineRecord]:
    """A valid batch: one terminal's records (up to ``max_records``), any batch id."""
    terminal_id = draw(terminal_ids)
    records = draw(st.lists(offline_records(terminal_id=terminal_id), max_size=max_records))
    created = draw(st.datetimes(min_value=dt.datetime(1000, 1, 1))).replace(microsecond=0)
    return Batch(terminal_id, draw(_uint32), created, tuple(records))
