"""``python -m unioncard``: the same as the ``unioncard`` command."""

from unioncard.cli import main

if __name__ == "__main__":
    main()
