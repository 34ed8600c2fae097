"""The TVR, TSI, AIP, AUC and TTQ bits: each declared once, as docs/emv-kernel.md lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unioncard.terminal.emv.flags import AIP, AUC, TSI, TTQ, TVR, bit, names

DOC = Path(__file__).parents[2] / "docs" / "emv-kernel.md"
FIELDS = {"TVR": TVR, "TSI": TSI, "AIP": AIP, "AUC": AUC, "TTQ": TTQ}


def position(flag: object, size: int) -> tuple[int, int]:
    value = int(flag)  # type: ignore[call-overload]
    at = value.bit_length() - 1
    return size - at // 8, at % 8 + 1


def documented() -> dict[str, list[tuple[int, int, str]]]:
    text = DOC.read_text(encoding="utf-8")
    found: dict[str, list[tuple[int, int, str]]] = {name: [] for name in FIELDS}
    section = None
    for line in text.splitlines():
        heading = re.match(r"### (TVR|TSI) ", line)
        if heading:
            section = heading.group(1)
        row = re.match(r"\| (?:(AIP|AUC|TTQ) \| )?(\d) \| (\d) \| `(\w+)` \|", line)
        if row:
            field = row.group(1) or section
            assert field is not None
            found[field].append((int(row.group(2)), int(row.group(3)), row.group(4)))
    return found


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_docs_list_every_bit_where_it_is_declared(name: str) -> None:
    cls = FIELDS[name]
    declared = [(*position(m, cls.size()), m.name) for m in cls]
    assert documented()[name] == declared


def test_every_bit_is_one_bit_and_unique() -> None:
    for cls in FIELDS.values():
        values = [int(m) for m in cls]
        assert all(v and v & (v - 1) == 0 for v in values)
        assert len(set(values)) == len(values)


def test_bytes_and_names() -> None:
    tvr = TVR.EXPIRED_APPLICATION | TVR.EXCEEDS_FLOOR_LIMIT
    assert tvr.encoded() == bytes.fromhex("0040008000")
    assert TVR.of(tvr.encoded()) == tvr
    assert names(tvr) == ["expired_application", "exceeds_floor_limit"]
    assert TSI.ISSUER_AUTHENTICATION_PERFORMED.encoded() == bytes.fromhex("1000")
    assert TTQ.QPBOC.encoded() == bytes.fromhex("20000000")
    with pytest.raises(ValueError):
        TVR.of(bytes(4))
    with pytest.raises(ValueError):
        bit(6, 1, 5)
