"""Paths a user gives on the command line or in a DAG's params, resolved once and checked."""

from __future__ import annotations

from pathlib import Path

from cfmodel.errors import CfrecError


def resolved(path: str | Path, what: str) -> Path:
    """`path` made absolute with links followed; a link loop is a CfrecError naming `what` it is."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # Python reports a symbolic link loop as RuntimeError
        raise CfrecError(f"{what} {path} cannot be resolved: {exc}") from None
