"""Command-line groups of ``unioncard``; each module exposes a click group ``group``."""
