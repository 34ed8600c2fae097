"""The registry of issued card numbers: ``issued.json`` beside the card images
(docs/issuance.md).

A card's issuance number gives its transit application serial, its ETC card
number and so its diversified keys: two members with one number would hold
the same card.  The registry maps each number to the one member it was given
to, for ever: a member issued before keeps the number on reissue, a new member
gets the next number never given, and `CardRegistry.add` refuses a number that
belongs to another member (`RegistryError`).  A directory of cards issued
before the registry existed gets one built from its images (`from_images`),
refused when two images already share a number.

>>> registry = CardRegistry()
>>> registry.assign("20260001", first=1), registry.assign("20260002", first=1)
(1, 2)
>>> registry.assign("20260009", first=1), registry.assign("20260001", first=1)
(3, 1)
>>> registry.add(2, "20260009")
Traceback (most recent call last):
...
unioncard.applet_sim.registry.RegistryError: card number 2 belongs to member 20260002, ...
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unioncard.errors import DecodeError, UnionCardError

__all__ = ["REGISTRY_NAME", "CardRegistry", "RegistryError"]

REGISTRY_NAME = "issued.json"
REGISTRY_FORMAT = "unioncard-issued-cards"
REGISTRY_VERSION = 1
CARD_NO_LIMIT = 10**12
"""Card numbers are 1 .. 10**12 - 1 (12 digits of the serial)."""


class RegistryError(UnionCardError):
    """A card number would go to a second member, or the registry cannot be read."""


def _numbers(card_no: int) -> dict[str, str]:
    from unioncard.applet_sim.personalize import CardNumbers

    numbers = CardNumbers(card_no)
    return {"transit_serial": numbers.transit_serial.hex().upper(),
            "etc_card_no": numbers.etc_card_no.hex().upper()}


class CardRegistry:
    """Card number ↔ member number, one to one."""

    def __init__(self) -> None:
        self._members: dict[str, int] = {}
        self._cards: dict[int, str] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._cards)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(sorted(self._cards.items()))

    def card_no(self, member_no: str) -> int | None:
        """The number given to ``member_no``, or None."""
        return self._members.get(member_no)

    def member_no(self, card_no: int) -> str | None:
        """The member ``card_no`` was given to, or None."""
        return self._cards.get(card_no)

    def add(self, card_no: int, member_no: str) -> None:
        """Record that ``card_no`` is ``member_no``'s; refused when either has another."""
        if not 1 <= card_no < CARD_NO_LIMIT:
            raise RegistryError(f"card number {card_no} is not in 1..{CARD_NO_LIMIT - 1}")
        owner = self._cards.get(card_no)
        if owner is not None and owner != member_no:
            raise RegistryError(f"card number {card_no} belongs to member {owner}, not "
                                f"{member_no}: a card number is given to one member only")
        mine = self._members.get(member_no)
        if mine is not None and mine != card_no:
            raise RegistryError(f"member {member_no} has card number {mine}, not {card_no}")
        self._cards[card_no] = member_no
        self._members[member_no] = card_no

    def assign(self, member_no: str, *, first: int) -> int:
        """The member's number: the one given before, else the lowest number at least
        ``first`` never given to anyone (now given to ``member_no``)."""
        known = self._members.get(member_no)
        if known is not None:
            return known
        candidate = max(first, self._next)
        while candidate in self._cards:
            candidate += 1
        if candidate >= CARD_NO_LIMIT:
            raise RegistryError(f"no card number left for member {member_no}")
        self._next = candidate + 1
        self.add(candidate, member_no)
        return candidate

    # --- the file ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION,
                "cards": [{"card_no": card_no, "member_no": member_no, **_numbers(card_no)}
                          for card_no, member_no in self]}

    def save(self, path: str | Path) -> None:
        """Write the registry atomically (a new file readable by its owner only)."""
        from unioncard.atomic_file import write_atomically

        cards = [json.dumps(card, ensure_ascii=False) for card in self.to_json()["cards"]]
        text = (f'{{"format": "{REGISTRY_FORMAT}", "version": {REGISTRY_VERSION}, "cards": ['
                + ",".join(f"\n  {card}" for card in cards) + ("\n" if cards else "") + "]}\n")
        write_atomically(path, text.encode("utf-8"), new_file_mode=0o600)

    @classmethod
    def load(cls, path: str | Path) -> CardRegistry:
        """Read a registry file; a malformed one raises `RegistryError` naming it."""
        from unioncard.bounded_read import REGISTRY_LIMIT, read_utf8

        text = read_utf8(path, limit=REGISTRY_LIMIT, what="card registry", error=RegistryError,
                         empty=False)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path}: the card registry is not JSON ({exc.msg}, line "
                                f"{exc.lineno} column {exc.colno})") from None
        except (ValueError, RecursionError):  # a number of thousands of digits, deep nesting
            raise RegistryError(f"{path}: the card registry is not one a release wrote (a "
                                "number too long or arrays nested too deeply)") from None
        if not isinstance(doc, dict) or doc.get("format") != REGISTRY_FORMAT:
            raise RegistryError(f"{path}: not a card registry (format {REGISTRY_FORMAT!r})")
        if doc.get("version") != REGISTRY_VERSION:
            raise RegistryError(f"{path}: card registry version {doc.get('version')!r}; this "
                                f"release reads version {REGISTRY_VERSION}")
        registry = cls()
        cards = doc.get("cards")
        if not isinstance(cards, list):
            raise RegistryError(f"{path}: the card registry has no list of cards")
        for index, entry in enumerate(cards):
            card_no = entry.get("card_no") if isinstance(entry, dict) else None
            member_no = entry.get("member_no") if isinstance(entry, dict) else None
            if not (isinstance(card_no, int) and not isinstance(card_no, bool)
                    and isinstance(member_no, str) and member_no.isdigit()):
                raise RegistryError(f"{path}: card entry {index + 1} needs an integer card_no "
                                    "and a member_no of digits")
            try:
                registry.add(card_no, member_no)
            except RegistryError as exc:
                raise RegistryError(f"{path}: card entry {index + 1}: {exc}") from None
        return registry

    @classmethod
    def from_images(cls, directory: Path) -> CardRegistry:
        """The registry of a directory of card images issued without one: each
        ``<member_no>-card.json`` gives its member (from the member application, else the
        file name) and its number (from the transit serial).  Refused when an image cannot
        be read or two carry one number (the second member's card must be issued again)."""
        from unioncard.applet_sim.card import SimulatedCard
        from unioncard.applet_sim.summary import card_summary

        registry = cls()
        found: dict[int, Path] = {}
        for path in sorted(directory.glob("*-card.json")):
            try:
                summary = card_summary(SimulatedCard.load(path))
                serial = next(p["app_serial"] for p in summary["purses"] if "app_serial" in p)
                card_no = int(serial[-12:])
            except (DecodeError, LookupError, StopIteration, ValueError) as exc:
                raise RegistryError(
                    f"{path}: cannot tell which card number this image holds ({exc}), so no "
                    f"registry of {directory} can be built; move it out of the directory "
                    "and issue again") from None
            member = summary.get("member") or {}
            member_no = member.get("member_no") or path.name.removesuffix("-card.json")
            if card_no in found and registry.member_no(card_no) != member_no:
                raise RegistryError(
                    f"{directory}: {found[card_no].name} and {path.name} hold the same card "
                    f"number {card_no} (the same serial and keys); move the card issued by "
                    "mistake out of the directory, then issue its member again")
            try:
                registry.add(card_no, member_no)
            except RegistryError as exc:
                raise RegistryError(f"{path}: {exc}") from None
            found[card_no] = path
        return registry
