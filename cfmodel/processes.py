"""Background servers cfrec starts (the SQL endpoint and its Derby metastore, a local Airflow): each
runs in its own process group, is known by its PID, probed by its port and ended by its group."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path


def alive(pid: int | None) -> bool:
    """Whether `pid` runs; a zombie (ended, not yet reaped by its parent) does not."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket() as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((host, port)) == 0


def end_groups(leaders: Iterable[int | None], grace: float = 30.0) -> None:
    """SIGTERM the process group of each leader, then SIGKILL what is left after `grace` seconds."""
    leaders = [pid for pid in leaders if alive(pid)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in leaders:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(alive(pid) for pid in leaders) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not any(alive(pid) for pid in leaders):
            return
