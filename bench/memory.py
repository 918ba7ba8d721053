"""Peak resident memory of a local Spark job's processes, sampled while it runs.

In local mode the Spark driver and its executor are one JVM (a child of this Python process) and
each task's Python code runs in a pyspark worker process under it. `PeakMemory` polls them all
every `interval` seconds and keeps each one's largest resident set.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import psutil


@dataclass
class PeakMemory:
    interval: float = 0.2
    peaks: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (role, bytes)

    def __enter__(self) -> PeakMemory:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        me = psutil.Process(os.getpid())
        while True:
            self._sample(me, "python driver")
            for child in me.children(recursive=True):
                self._sample(child, None)
            if self._stop.wait(self.interval):
                return

    def _sample(self, process: psutil.Process, role: str | None) -> None:
        try:
            rss = process.memory_info().rss
            if role is None:
                command = " ".join(process.cmdline())
                role = "spark jvm" if "java" in process.name() else "python worker" if "pyspark" in command else "other"
        except psutil.Error:  # gone between listing and reading
            return
        previous = self.peaks.get(process.pid, (role, 0))
        self.peaks[process.pid] = (role, max(previous[1], rss))

    def summary(self) -> dict[str, float]:
        """GB: the Python driver's peak, the JVM's (Spark driver and executor), the largest Python
        worker's and the sum of every Python worker's peak."""

        by_role: dict[str, list[int]] = {}
        for role, rss in self.peaks.values():
            by_role.setdefault(role, []).append(rss)
        workers = by_role.get("python worker", [])
        return {
            "python_driver_peak_gb": _gib(max(by_role.get("python driver", []), default=0)),
            "spark_jvm_peak_gb": _gib(max(by_role.get("spark jvm", []), default=0)),
            "python_worker_peak_gb": _gib(max(workers, default=0)),
            "python_workers_summed_peaks_gb": _gib(sum(workers)),
        }


def _gib(size: int) -> float:
    return round(size / 2**30, 2)
