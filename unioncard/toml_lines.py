"""Line numbers for TOML tables and keys, which ``tomllib`` does not report (rule files,
toll tables).

:class:`SourceMap` scans the text once with a small TOML-aware lexer (strings,
multi-line strings, comments, nested arrays and inline tables) and records the
first line of every table and key under its *path* as ``tomllib`` would build it;
arrays of tables are indexed, so the third ``[[rule]]`` is ``("rule", 2)`` and its
effect's rate is ``("rule", 2, "effect", "percent")``, whether written as a
``[rule.effect]`` table, a dotted key or an inline table.

>>> text = '[[rule]]\\nid = "a"\\n\\n[[rule]]\\nid = "b"\\neffect = { kind = "price" }\\n'
>>> smap = SourceMap(text)
>>> smap.line(("rule", 1)), smap.line(("rule", 1, "effect", "kind")), smap.line(("rule", 0, "x"))
(4, 6, 1)
"""

from __future__ import annotations

import functools
import re
import tomllib

__all__ = ["Path", "SourceMap"]

Path = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\\n]|\\.)*"'
_LITERAL = r"'[^'\n]*'"
_PART = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED = rf"{_PART}(?:[ \t]*\.[ \t]*{_PART})*"
_KEY = re.compile(rf"({_DOTTED})[ \t]*=")
_HEADER = re.compile(rf"\[(\[)?[ \t]*({_DOTTED})[ \t]*\](?(1)\])")
"""A table header, ``[a.b]``, or an array of tables' (group 1 set), ``[[a.b]]``."""
_BLANK = re.compile(r"[ \t\r]+|#[^\n]*")
"""Spaces and a comment, up to the end of the line."""
_MULTI_BASIC = r'"""(?:\\.|[^\\])*?""""{0,2}'
_MULTI_LITERAL = r"'''.*?''''{0,2}"
_STRING = re.compile(f"{_MULTI_BASIC}|{_MULTI_LITERAL}|{_BASIC}|{_LITERAL}", re.S)
"""Any TOML string: multi-line ones end at the first closing three quotes, plus up to two."""


@functools.lru_cache(maxsize=1024)
def _split(dotted: str) -> tuple[str, ...]:
    """The names of a dotted key, unquoted as ``tomllib`` reads them."""
    parts = []
    table = tomllib.loads(f"{dotted} = 0")
    while isinstance(table, dict):
        name, table = next(iter(table.items()))
        parts.append(name)
    return tuple(parts)


class SourceMap:
    """First line (1-based) of each table and key path in a TOML document."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        self._arrays: dict[tuple[str, ...], int] = {}
        self._scan(text)

    def line(self, path: Path) -> int | None:
        """Line of ``path``, or of its nearest recorded ancestor; ``None`` if none is."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None

    def exact(self, path: Path) -> int | None:
        """Line of ``path`` itself, ``None`` when it was not seen."""
        return self._lines.get(path)

    # -- scanning ---------------------------------------------------------------------

    def _resolve(self, names: tuple[str, ...], array: bool) -> Path:
        """Turn a header's names into a path, indexing arrays of tables on the way."""
        out: list[str | int] = []
        for i, name in enumerate(names):
            out.append(name)
            prefix = names[: i + 1]
            last = i == len(names) - 1
            if last and array:
                index = self._arrays.get(prefix, 0)
                self._arrays[prefix] = index + 1
                out.append(index)
            elif prefix in self._arrays:
                out.append(self._arrays[prefix] - 1)
        return tuple(out)

    def _scan(self, text: str) -> None:
        i, n, line = 0, len(text), 1
        table: Path = ()
        # Open brackets: ("[", path, count) for arrays, ("{", path, 0) for inline tables.
        stack: list[tuple[str, Path, int]] = []
        expect_key = True
        pending: Path = ()
        while i < n:
            c = text[i]
            if c == "\n":
                line += 1
                i += 1
                if not stack:
                    expect_key = True
                continue
            blank = _BLANK.match(text, i)
            if blank is not None:
                i = blank.end()
                continue
            if expect_key and not stack and c == "[":
                match = _HEADER.match(text, i)
                if match is not None:
                    table = self._resolve(_split(match.group(2)), bool(match.group(1)))
                    self._lines.setdefault(table, line)
                    i = match.end()
                    expect_key = False
                    continue
            if expect_key and (not stack or stack[-1][0] == "{"):
                match = _KEY.match(text, i)
                if match is not None:
                    base = stack[-1][1] if stack else table
                    pending = base + _split(match.group(1))
                    for end in range(len(base) + 1, len(pending) + 1):
                        self._lines.setdefault(pending[:end], line)
                    i = match.end()
                    expect_key = False
                    continue
            if c in "\"'":
                string = _STRING.match(text, i)
                j = n if string is None else string.end()
                line += text.count("\n", i, j)
                i = j
                continue
            if c == "[":
                stack.append(("[", pending, 0))
            elif c == "{":
                path = pending
                if stack and stack[-1][0] == "[":
                    kind, array_path, count = stack[-1]
                    stack[-1] = (kind, array_path, count + 1)
                    path = (*array_path, count)
                    self._lines.setdefault(path, line)
                stack.append(("{", path, 0))
                expect_key = True
            elif c == "," and stack and stack[-1][0] == "{":
                expect_key = True
            elif c in "]}" and stack:
                stack.pop()
                expect_key = False
            i += 1
