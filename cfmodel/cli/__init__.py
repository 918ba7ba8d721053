"""The `cfrec` command line (`cfmodel.cli.main`), one module per group of commands."""

from cfmodel.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
