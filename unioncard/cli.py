"""The ``unioncard`` command.

Each command group lives in ``unioncard/commands/<group>.py`` and exposes a
click group named ``group``; this module only assembles them.  Errors a user
can fix (a bad file, a bad option) end in one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from unioncard import __version__
from unioncard.errors import UnionCardError

__all__ = ["main", "root"]

# (module under unioncard.commands, attribute): the sub-commands, in help order.
COMMAND_MODULES = ("trace", "card", "sim", "tariffs", "demo")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="unioncard")
def root() -> None:
    """unioncard: terminal engine and smart-card simulator for trade-union member cards.

    Decode APDU traces, issue and serve simulated cards (transit purse, ETC,
    member identity) and PSAMs, and quote member benefits.  Run
    ``unioncard COMMAND --help`` for each command.
    """


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"unioncard.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"unioncard.commands.{name}":
                continue  # group not built yet
            raise
        root.add_command(module.group, name)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning library errors into one-line messages."""
    try:
        root.main(args=argv, prog_name="unioncard", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (UnionCardError, OSError) as exc:
        click.echo(f"unioncard: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
