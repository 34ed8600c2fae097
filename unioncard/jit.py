"""The one place numba flags are set, for every fast path in unioncard.

Kernels are compiled by ``numba.njit`` (nopython mode) with the on-disk cache on
(the first call in a fresh environment pays the compilation; later processes load
the cached machine code).  ``UNIONCARD_JIT_DEBUG=1`` turns on numba's bounds
checking, which the test suite uses to prove that kernels never read outside their
buffers; numba's cache does not key on that flag, so debug builds are not cached.
`prefetch` is a hint kernels give about the memory they will read next (a hint, not a
read: bounds checking does not apply to it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import numba

__all__ = ["JIT_OPTIONS", "inline", "jit", "prefetch"]

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


def inline(function: F) -> Any:
    """`jit`, with numba inlining ``function`` into its callers (the small pieces of a hot
    loop, such as the S-box circuits of bitsliced DES)."""
    return jit(function, inline="always")


def _prefetch_intrinsic() -> Any:
    """``prefetch(array, i)``: a hint (LLVM's ``llvm.prefetch``, for reading, kept in every
    cache level) that row ``i`` of ``array`` will be read soon.  Random lookups into large
    tables issue it a few keys ahead, so the memory reads of several keys overlap instead
    of each waiting for the one before."""
    from llvmlite import ir
    from numba.core import cgutils as untyped_cgutils
    from numba.core import types
    from numba.extending import intrinsic

    cgutils: Any = untyped_cgutils  # numba's code generation helpers carry no annotations

    @intrinsic
    def prefetch(typingctx, array, index):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            kind = signature.args[0]
            view = context.make_array(kind)(context, builder, args[0])
            at = [args[1]] + [context.get_constant(types.intp, 0)] * (kind.ndim - 1)
            pointer = cgutils.get_item_pointer2(
                context, builder, view.data, cgutils.unpack_tuple(builder, view.shape),
                cgutils.unpack_tuple(builder, view.strides), kind.layout, at)
            if getattr(pointer.type, "is_opaque", False):  # LLVM 15 and later
                name = "llvm.prefetch.p0"
            else:
                pointer, name = builder.bitcast(pointer, ir.IntType(8).as_pointer()), \
                    "llvm.prefetch.p0i8"
            i32 = ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]),
                name)
            builder.call(function, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3),
                                    ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(array, types.intp), codegen

    return prefetch


prefetch = _prefetch_intrinsic()
