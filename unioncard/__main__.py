"""``python -m unioncard``: the same as the ``unioncard`` command."""

from unioncard.cli import main

main()
