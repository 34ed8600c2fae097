"""Gate circuits of the DES S-boxes, for bitsliced DES (`unioncard.crypto.des_bitslice`).

Bitsliced DES computes each S-box with word-wide logic instead of table lookups: bit j
of every word belongs to message j, so one AND of two 64-bit words is 64 gates.  This
module derives the circuits from the S-box tables of FIPS 46-3 (`des_tables.SBOXES`)
and writes them as numba functions (`unioncard/crypto/_sbox_gates.py`, generated: run
``python -m unioncard.crypto.sbox_circuits`` after changing this module; it also removes
the numba cache of the package's kernels, which inline the circuits).

A Boolean function of the six inputs is a truth table of 64 bits.  Each is built by
splitting on one input ``v`` (Shannon's expansion, f = f0 when v = 0, f1 when v = 1):

- a constant half, or halves that are each other's complement, cost one gate:
  ``f0 ^ v`` (f1 = not f0), ``f1 & v`` (f0 = 0), ``f0 & ~v`` (f1 = 0), ``f0 | v``
  (f1 = 1); ``f1 | ~v`` (f0 = 1) costs two;
- otherwise the Davio forms ``f0 ^ (d & v)`` or ``f1 ^ (d & ~v)`` with ``d = f0 ^ f1``
  (two gates), or the multiplexer ``f0 ^ ((f0 ^ f1) & v)`` (three);

choosing the input and form of least cost, recursively, and sharing every function
the four outputs of an S-box have in common.  That gives 76 to 102 gates an S-box
(total `GATE_COUNT`), about twice the best published circuits (44 an S-box on average,
found by long searches), and with no table lookups the eight S-boxes of a round cost
about 800 word instructions for 64 blocks.

>>> [len(circuit(box)[0]) for box in range(8)]
[98, 76, 77, 102, 88, 79, 81, 84]
>>> evaluate(0, 0b011011)  # S1 of 011011 is 5 (the textbook example)
5
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import NamedTuple

from unioncard.crypto.des_tables import sbox

__all__ = ["GATE_COUNT", "Gate", "circuit", "evaluate", "render"]

_ALL = (1 << 64) - 1
_INPUTS = tuple(sum(1 << x for x in range(64) if (x >> (5 - i)) & 1) for i in range(6))
"""The truth table of input ``a{i}`` (a0 = the S-box input's first bit)."""
_COST = {"xor": 1, "and": 1, "andn": 1, "or": 1, "orn": 2, "pdavio": 2, "ndavio": 2,
         "mux": 3}


class Gate(NamedTuple):
    """``name = left op right``; op is ``^``, ``&``, ``&~`` (and not), ``|`` or ``~``
    (``right`` unused)."""

    name: str
    op: str
    left: str
    right: str = ""


def _output(box: int, bit: int) -> int:
    """The truth table of output ``bit`` (0 = the most significant) of S-box ``box``."""
    return sum(1 << x for x in range(64) if (sbox(box, x) >> (3 - bit)) & 1)


def _half(f: int, i: int, value: int) -> int:
    """f with input ``i`` fixed to ``value`` (a function of the other inputs)."""
    shift = 1 << (5 - i)
    if value:
        high = f & _INPUTS[i]
        return high | (high >> shift)
    low = f & ~_INPUTS[i] & _ALL
    return low | (low << shift)


@functools.cache
def _plan(f: int) -> tuple[int, tuple[str, int, int, int]]:
    """(gates, (form, input, g, h)): the cheapest split of ``f`` counted as a tree."""
    if f in (0, _ALL) or f in _INPUTS:
        return 0, ("leaf", 0, 0, 0)
    if f ^ _ALL in _INPUTS:
        return 1, ("not", 0, f ^ _ALL, 0)
    best: tuple[int, tuple[str, int, int, int]] | None = None
    for i in range(6):
        f0, f1 = _half(f, i, 0), _half(f, i, 1)
        if f0 == f1:
            continue
        d = f0 ^ f1
        options = []
        if d == _ALL:
            options.append(("xor", f0, 0))
        if f0 == 0:
            options.append(("and", f1, 0))
        if f1 == 0:
            options.append(("andn", f0, 0))
        if f1 == _ALL:
            options.append(("or", f0, 0))
        if f0 == _ALL:
            options.append(("orn", f1, 0))
        if f0 not in (0, _ALL) and d not in (0, _ALL):
            options.append(("pdavio", f0, d))
        if f1 not in (0, _ALL) and d not in (0, _ALL):
            options.append(("ndavio", f1, d))
        if f0 not in (0, _ALL) and f1 not in (0, _ALL):
            options.append(("mux", f0, f1))
        for form, g, h in options:
            cost = _COST[form] + _plan(g)[0] + (_plan(h)[0] if h else 0)
            if best is None or cost < best[0]:
                best = (cost, (form, i, g, h))
    assert best is not None  # f depends on some input
    return best


def circuit(box: int) -> tuple[list[Gate], list[str]]:
    """The gates of S-box ``box`` (0 = S1) over inputs ``a0``..``a5`` and the names of its
    four outputs, most significant first."""
    names = {table: f"a{i}" for i, table in enumerate(_INPUTS)}
    gates: list[Gate] = []

    def emit(op: str, left: str, right: str = "") -> str:
        gates.append(Gate(f"t{len(gates)}", op, left, right))
        return gates[-1].name

    def build(f: int) -> str:
        if f in names:
            return names[f]
        form, i, g, h = _plan(f)[1]
        v = f"a{i}"
        if form == "not":
            name = emit("~", build(g))
        elif form in ("xor", "and", "or"):
            name = emit({"xor": "^", "and": "&", "or": "|"}[form], build(g), v)
        elif form == "andn":
            name = emit("&~", build(g), v)
        elif form == "orn":
            name = emit("|", build(g), build(_INPUTS[i] ^ _ALL))
        elif form == "pdavio":
            name = emit("^", build(g), emit("&", build(h), v))
        elif form == "ndavio":
            name = emit("^", build(g), emit("&~", build(h), v))
        else:  # mux
            low, high = build(g), build(h)
            name = emit("^", low, emit("&", emit("^", low, high), v))
        names[f] = name
        return name

    outputs = [build(_output(box, bit)) for bit in range(4)]
    return gates, outputs


def _run(gates: list[Gate], values: dict[str, int], mask: int) -> dict[str, int]:
    for gate in gates:
        left, right = values[gate.left], values.get(gate.right, 0)
        values[gate.name] = {"^": left ^ right, "&": left & right, "&~": left & ~right & mask,
                             "|": left | right, "~": ~left & mask}[gate.op]
    return values


def evaluate(box: int, value: int) -> int:
    """S-box ``box`` of the 6-bit ``value``, computed by its circuit (one bit wide)."""
    gates, outputs = circuit(box)
    values = _run(gates, {f"a{i}": (value >> (5 - i)) & 1 for i in range(6)}, 1)
    return sum(values[name] << (3 - bit) for bit, name in enumerate(outputs))


GATE_COUNT = sum(len(circuit(box)[0]) for box in range(8))
"""Gates of the eight S-boxes together."""


def render() -> str:
    """The source of `unioncard.crypto._sbox_gates`."""
    names = ", ".join(f'"s{box + 1}"' for box in range(8))
    parts = [
        '"""DES S-box circuits for bitsliced DES: generated by `unioncard.crypto.sbox_circuits`'
        "\n(python -m unioncard.crypto.sbox_circuits); do not edit.\n\n"
        "Each ``sN(a)`` takes S-box N's six input words (``a[0]`` = the first input bit of"
        "\nevery lane) and returns its four output words, most significant first.\n"
        '"""\n\nfrom typing import Any\n\nfrom unioncard.jit import inline\n\n'
        f"__all__ = [{names}]\n"]
    for box in range(8):
        gates, outputs = circuit(box)
        lines = [f'\n\n@inline\ndef s{box + 1}(a: Any) -> Any:',
                 f'    """S{box + 1}: {len(gates)} gates."""',
                 "    a0, a1, a2, a3, a4, a5 = a"]
        for gate in gates:
            expression = (f"~{gate.left}" if gate.op == "~" else
                          f"{gate.left} & ~{gate.right}" if gate.op == "&~" else
                          f"{gate.left} {gate.op} {gate.right}")
            lines.append(f"    {gate.name} = {expression}")
        lines.append(f"    return {', '.join(outputs)}")
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


GENERATED = Path(__file__).with_name("_sbox_gates.py")
"""Where `render`'s output lives."""

if __name__ == "__main__":
    GENERATED.write_text(render())
    # numba's cache knows a kernel by its own file: the kernels that inline these circuits
    # (des_bitslice, tac_batch) would keep their old machine code
    stale = sorted(GENERATED.parent.joinpath("__pycache__").glob("*.nb[ic]"))
    for path in stale:
        path.unlink()
    print(f"wrote {GENERATED}: {GATE_COUNT} gates; removed {len(stale)} numba cache files",
          file=sys.stderr)
