"""The terminal process of the SIGKILL campaign: it taps cards until it is killed.

Usage: ``python campaign_worker.py DIR SEED FIRST``

``DIR`` holds the card images (``card-*.json``), the PSAM image (``psam.json``) and the
journal (``journal.sqlite``).  Transaction n (from ``FIRST`` on) presents a card and taps
a flow of `campaign.FLOWS`, both chosen from ``SEED`` and n, at `campaign.sigkill_time`
(n).  A card is its image, opened with write-through: every commit of the card is on disk
before its answer is used, as a card keeps what it committed when the terminal dies.  The
worker prints ``ready`` once, then ``begin n card flow`` before each transaction and
``end n decision`` after it; it never stops by itself.
"""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

import campaign  # beside this script

from unioncard.applet_sim import SimulatedCard
from unioncard.terminal import TransactionJournal
from unioncard.transport import Channel, InProcessTransport


def main(argv: list[str]) -> None:
    directory, seed, first = Path(argv[1]), argv[2], int(argv[3])
    cards = sorted(directory.glob("card-*.json"))
    psam = InProcessTransport(SimulatedCard.load(directory / "psam.json", write_through=True))
    psam.power_on()
    psam_link = Channel(psam)
    journal = TransactionJournal(directory / "journal.sqlite")
    flows = sorted(campaign.FLOWS)
    print("ready", flush=True)
    for n in itertools.count(first):
        choice = random.Random(f"{seed}/{n}")
        path, flow = choice.choice(cards), choice.choice(flows)
        print(f"begin {n} {path.stem} {flow}", flush=True)
        card = InProcessTransport(SimulatedCard.load(path, write_through=True))
        card.power_on()
        outcome = campaign.tap(campaign.FLOWS[flow], card=Channel(card), psam=psam_link,
                               journal=journal, when=campaign.sigkill_time(n))
        print(f"end {n} {outcome.decision.value}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
