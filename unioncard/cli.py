"""The ``unioncard`` command.

Each command lives in ``unioncard/commands/``; this module only names them.
A command's module is imported when that command runs (or when ``--help``
lists them), so ``unioncard tap`` never loads the trace indexer's numba, and
``unioncard --version`` loads nothing.  Errors a user can fix (a bad file, a
bad option) end in one line on stderr and a non-zero exit status, never a
traceback; with ``--json`` stdout then carries one JSON document saying so.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from unioncard import __version__
from unioncard.errors import UnionCardError

__all__ = ["COMMANDS", "main", "root"]

COMMANDS: dict[str, tuple[str, str]] = {
    "tap": ("tap", "group"),
    "load": ("load", "group"),
    "card": ("card", "group"),
    "journal": ("journal", "journal_command"),
    "batch": ("journal", "batch_group"),
    "hotlist": ("hotlist", "group"),
    "trace": ("trace", "group"),
    "sim": ("sim", "group"),
    "tariffs": ("tariffs", "group"),
    "settle": ("settle", "settle_command"),
    "ledger": ("settle", "ledger_command"),
    "demo": ("demo", "group"),
}
"""Command name -> (module under unioncard.commands, attribute), in help order."""

DECISION_COMMANDS = frozenset({("tap",), ("load",), ("card", "read")})
"""Commands whose JSON documents carry a ``decision``."""


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"unioncard.commands.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="unioncard")
def root() -> None:
    """unioncard: terminal engine and smart-card simulator for trade-union member cards.

    Run fares, tolls and loads on member cards (tap, load), read cards, keep the
    terminal's journal and export its offline records (journal, batch), decode
    APDU traces, issue and serve simulated cards and PSAMs, and quote member
    benefits.  Run ``unioncard COMMAND --help`` for each command.
    """


def _wants_json(argv: list[str]) -> bool:
    """Whether ``--json`` is among ``argv`` as the flag, not as the value of another option
    (``--merchant --json``) nor after ``--``: the command's options are walked as click
    parses them, down the groups."""
    command: click.Command = root
    ctx = click.Context(root)
    takes_value: set[str] = set()
    expect_value = False
    for token in argv:
        if expect_value:
            expect_value = False
            continue
        if token == "--":
            return False
        if token == "--json":
            return True
        if token.startswith("-") and "=" not in token:
            expect_value = token in takes_value
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(ctx, token)
            if sub is not None:
                command = sub
                takes_value = {name for param in sub.params if isinstance(param, click.Option)
                               and not param.is_flag and not param.count
                               for name in (*param.opts, *param.secondary_opts)}
    return False


def _json_error(argv: list[str], message: str, status: int) -> None:
    """With --json, stdout carries one JSON document even when the command never ran."""
    if not _wants_json(argv):
        return
    document: dict[str, Any] = {"error": message, "exit_status": status}
    if tuple(argv[:1]) in DECISION_COMMANDS or tuple(argv[:2]) in DECISION_COMMANDS:
        from unioncard.commands.common import error_document

        document = error_document(message, exit_status=status)
    click.echo(json.dumps(document, ensure_ascii=False))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning library errors into one-line messages."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        root.main(args=args, prog_name="unioncard", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        _json_error(args, exc.format_message(), exc.exit_code)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (UnionCardError, OSError) as exc:
        from unioncard.commands.common import error_text

        _fail(args, error_text(exc))
    except Exception as exc:
        sqlite = sys.modules.get("sqlite3")
        if sqlite is None or not isinstance(exc, sqlite.Error):
            raise
        _fail(args, f"a database (journal or ledger) cannot be used: {exc}")


def _fail(args: list[str], message: str) -> None:
    """Exit 1 with ``message``: one line on stderr (and the JSON document with --json)."""
    click.echo(f"unioncard: error: {message}", err=True)
    _json_error(args, message, 1)
    sys.exit(1)


if __name__ == "__main__":
    main()
