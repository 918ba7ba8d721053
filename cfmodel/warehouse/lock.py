"""One writer per warehouse at a time, enforced: every pipeline step that writes holds this lock.

The lock is an exclusive `flock` on `<warehouse>/.lock`, so the operating system drops it when its
holder exits, however it exits: a killed run never leaves a stale lock behind. A second writer waits
up to `CFREC_LOCK_WAIT_SECONDS` (default 0) and then fails with one line naming the holder.

Readers and a step's publishing exclude each other through a second lock, `<warehouse>/.readers.lock`:
readers share it (`reading`), a step holds it alone from its first visible change to its commit
(`readers_excluded`). So a reader never sees half a step, and a publish never moves files from under
a reader; each waits for the other up to `CFREC_READ_WAIT_SECONDS` (default 600).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cfmodel.errors import CfrecError

LOCK_FILE = ".lock"
READERS_FILE = ".readers.lock"
POLL_SECONDS = 0.5


def _wait_setting(name: str, default: str) -> float:
    value = os.environ.get(name, default)
    try:
        return max(0.0, float(value))
    except ValueError:
        raise CfrecError(f"{name} must be a number of seconds, got '{value}'") from None


def wait_seconds() -> float:
    """How long a writer waits for another writer."""
    return _wait_setting("CFREC_LOCK_WAIT_SECONDS", "0")


def read_wait_seconds() -> float:
    """How long a writer about to change what readers see waits for them to finish, and how long a
    reader waits for a step to finish publishing."""
    return _wait_setting("CFREC_READ_WAIT_SECONDS", "600")


def _acquire(handle: object, mode: int, wait: float, busy: Callable[[], str]) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise CfrecError(busy()) from None
            time.sleep(POLL_SECONDS)


@contextmanager
def writer_lock(root: Path, step: str, wait: float | None = None) -> Iterator[None]:
    """Hold the warehouse's writer lock while `step` writes; CfrecError if another writer keeps it
    longer than `wait` seconds (default: CFREC_LOCK_WAIT_SECONDS)."""
    path = Path(root) / LOCK_FILE
    with open(path, "a+") as handle:
        _acquire(
            handle,
            fcntl.LOCK_EX,
            wait_seconds() if wait is None else wait,
            lambda: (
                f"warehouse {root} is being written by {_holder(handle)}; one writer at a time: "
                "run this step again when it has finished"
            ),
        )
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


@contextmanager
def reading(root: Path, wait: float | None = None) -> Iterator[None]:
    """Read the warehouse's tables as one consistent state: no step changes what is visible while
    any reader holds this (shared) lock, and a reader arriving while a step publishes waits for the
    whole step. A warehouse this process cannot write to is read without the lock."""
    try:
        handle = open(Path(root) / READERS_FILE, "a+")  # noqa: SIM115 (held across the yield)
    except OSError:
        yield
        return
    seconds = read_wait_seconds() if wait is None else wait
    with handle:
        _acquire(
            handle,
            fcntl.LOCK_SH,
            seconds,
            lambda: (
                f"warehouse {root} is still publishing a step after {seconds:.0f} s "
                "(CFREC_READ_WAIT_SECONDS); try again later"
            ),
        )
        yield


@contextmanager
def readers_excluded(root: Path, wait: float | None = None) -> Iterator[None]:
    """Hold off readers while a step changes what they see; waits for those reading to finish."""
    seconds = read_wait_seconds() if wait is None else wait
    with open(Path(root) / READERS_FILE, "a+") as handle:
        _acquire(
            handle,
            fcntl.LOCK_EX,
            seconds,
            lambda: (
                f"readers of warehouse {root} kept it busy for {seconds:.0f} s "
                "(CFREC_READ_WAIT_SECONDS); nothing was changed"
            ),
        )
        yield


def _holder(handle: object) -> str:
    try:
        handle.seek(0)
        holder = json.loads(handle.read())
        return f"'{holder['step']}' (pid {holder['pid']} on {holder['host']} since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
