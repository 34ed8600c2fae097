"""The one place numba flags are set, for every fast path in unioncard.

Kernels are compiled by ``numba.njit`` (nopython mode) with the on-disk cache on
(the first call in a fresh environment pays the compilation; later processes load
the cached machine code).  ``UNIONCARD_JIT_DEBUG=1`` turns on numba's bounds
checking, which the test suite uses to prove that kernels never read outside their
buffers; numba's cache does not key on that flag, so debug builds are not cached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import numba

__all__ = ["JIT_OPTIONS", "jit"]

F = TypeVar("F", bound=Callable[..., Any])

DEBUG = os.environ.get("UNIONCARD_JIT_DEBUG") == "1"

JIT_OPTIONS: dict[str, Any] = {
    "cache": not DEBUG,
    "nogil": True,
    "boundscheck": DEBUG,
}


def jit(function: F | None = None, **overrides: Any) -> Any:
    """``numba.njit`` with the project's flags; usable bare or with overrides."""
    options = {**JIT_OPTIONS, **overrides}
    if function is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(function)
