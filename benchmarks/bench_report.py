"""Collects figures measured by the trace benchmarks and prints them as one table at the end.

pytest-benchmark's own table gives each test's min/median/max and, within a
group, the ratio to the fastest.  This adds what that table cannot: MB/s and
records/s, and our-versus-pyemv ratios of medians measured in the same run.
It also holds the one measure several benchmarks compare with: the OpenSSL DES limit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from unioncard.crypto.des import TripleDES

__all__ = ["BULK", "Report", "openssl_block_rate"]

BULK = 8 << 20
"""Bytes of one-key bulk encryption in the OpenSSL limit measure."""


class Report:
    def __init__(self, title: str) -> None:
        self.title = title
        self.medians: dict[str, float] = {}
        self.lines: list[str] = []

    def median(self, name: str, benchmark: Any) -> float:
        """Remember (and return) the median seconds of a finished benchmark."""
        value = float(benchmark.stats.stats.median)
        self.medians[name] = value
        return value

    def add(self, line: str) -> None:
        self.lines.append(line)

    def emit(self, config: Any) -> None:
        """Print past pytest's output capture (the way ``capsys.disabled()`` does)."""
        if not self.lines:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n== {self.title} ==")
            for line in self.lines:
                print(line)


def openssl_block_rate(benchmark: Any, report: Report, name: str) -> float:
    """DES blocks per second of OpenSSL through `cryptography`: one key, ECB, `BULK` bytes,
    the absolute upper limit of a TAC check (its median is kept in ``report`` as ``name``).
    ``TripleDES(K‖K‖K)`` is single DES run three times: the check below pins that."""
    data = np.random.default_rng(1).integers(0, 256, BULK, dtype=np.uint8).tobytes()
    cipher = Cipher(TripleDES(bytes.fromhex("133457799BBCDFF1") * 3), modes.ECB())
    check = cipher.encryptor().update(bytes.fromhex("0123456789ABCDEF"))
    assert check == bytes.fromhex("85E813540F0AB405")  # K‖K‖K is single DES

    def run() -> bytes:
        encryptor = cipher.encryptor()
        return encryptor.update(data) + encryptor.finalize()

    out = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert len(out) == BULK
    return (BULK // 8) / report.median(name, benchmark)
