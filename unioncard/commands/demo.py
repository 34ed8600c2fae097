"""``unioncard demo``: decode the sample trace that ships with unioncard.

The sample (``unioncard/data/sample_trace.txt``) is one bus fare paid with a
union member card: PPSE and UnionPay selection, GPO, records with the PAN
(masked), the T-Union purse with the member card type in EF 0015, and an EP
purchase with the PSAM (MAC1, MAC2, TAC computed with the project's test keys).
"""

from __future__ import annotations

from importlib import resources

import click

from unioncard.apdu.indexer import concat, iter_index_records
from unioncard.apdu.trace_decode import describe, pair, render
from unioncard.apdu.trace_stats import TraceStats
from unioncard.apdu.trace_text import read_text

__all__ = ["SAMPLE", "group"]

SAMPLE = "data/sample_trace.txt"


@click.command(name="demo")
@click.option("--unmask", is_flag=True, help="Show the sample card's PAN in full.")
def group(unmask: bool) -> None:
    """Decode the sample trace of a union member card paying a bus fare.

    The same as ``unioncard trace decode`` on the sample file, followed by a
    summary from the bulk indexer.  ``unioncard trace decode --json`` gives
    the decoded trace as JSON.
    """
    sample = resources.files("unioncard").joinpath(SAMPLE)
    click.echo(f"Sample trace: {sample}\n")
    with sample.open("rb") as stream:
        for exchange in pair(read_text(stream)):
            for line in render(describe(exchange, unmask)):
                click.echo(line)
            click.echo()
    with sample.open("rb") as stream:
        stats = TraceStats(offsets=False)
        stats.add(concat(iter_index_records(read_text(stream))))
    doc = stats.summary()
    ex = doc["exchanges"]["by_device"]
    click.echo(f"{doc['frames']['total']} frames, {doc['exchanges']['total']} exchanges "
               f"(card {ex['card']['exchanges']}, PSAM {ex['psam']['exchanges']}); "
               f"{doc['tlv']['objects']} TLV objects in {doc['tlv']['responses_tlv']} responses, "
               f"{doc['tlv']['responses_raw_data']} purse/raw responses")
