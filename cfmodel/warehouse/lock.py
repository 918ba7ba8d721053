"""One writer per warehouse at a time, enforced: every pipeline step that writes holds this lock.

The lock is an exclusive `flock` on `<warehouse>/.lock`, so the operating system drops it when its
holder exits, however it exits: a killed run never leaves a stale lock behind. A second writer waits
up to `CFREC_LOCK_WAIT_SECONDS` (default 0) and then fails with one line naming the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cfmodel.errors import CfrecError

LOCK_FILE = ".lock"
POLL_SECONDS = 0.5


def wait_seconds() -> float:
    value = os.environ.get("CFREC_LOCK_WAIT_SECONDS", "0")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise CfrecError(f"CFREC_LOCK_WAIT_SECONDS must be a number of seconds, got '{value}'") from None


@contextmanager
def writer_lock(root: Path, step: str, wait: float | None = None) -> Iterator[None]:
    """Hold the warehouse's writer lock while `step` writes; CfrecError if another writer keeps it
    longer than `wait` seconds (default: CFREC_LOCK_WAIT_SECONDS)."""
    path = Path(root) / LOCK_FILE
    deadline = time.monotonic() + (wait_seconds() if wait is None else wait)
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CfrecError(
                        f"warehouse {root} is being written by {_holder(handle)}; one writer at a time: "
                        "run this step again when it has finished"
                    ) from None
                time.sleep(POLL_SECONDS)
        try:
            handle.seek(0)
            handle.truncate()
            holder = {
                "step": step,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            handle.write(json.dumps(holder))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(handle: object) -> str:
    try:
        handle.seek(0)
        holder = json.loads(handle.read())
        return f"'{holder['step']}' (pid {holder['pid']} on {holder['host']} since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
