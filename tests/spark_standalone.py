"""A throwaway Spark standalone cluster (one master, one worker) on 127.0.0.1 for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def start(cls: str, args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
    return subprocess.Popen(
        [str(spark_home() / "bin" / "spark-class"), cls, *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as reply:
            return sum(w["state"] == "ALIVE" for w in json.load(reply).get("workers", []))
    except OSError:
        return 0


@contextmanager
def standalone_cluster(workdir: Path, cores: int = 2, memory: str = "3g", timeout: float = 90):
    """Yields the master URL once a worker has registered; stops both processes by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    master = start(
        "org.apache.spark.deploy.master.Master",
        ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)],
        workdir / "master.log",
    )
    worker = None
    try:
        url = f"spark://127.0.0.1:{port}"
        worker = start(
            "org.apache.spark.deploy.worker.Worker",
            [
                url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(cores),
                "--memory",
                memory,
                "--webui-port",
                str(worker_ui),
                "--work-dir",
                str(workdir / "work"),
            ],
            workdir / "worker.log",
        )
        deadline = time.monotonic() + timeout
        while alive_workers(ui_port) < 1:
            if time.monotonic() > deadline or master.poll() is not None or worker.poll() is not None:
                logs = "\n".join((workdir / f).read_text()[-2000:] for f in ("master.log", "worker.log"))
                raise RuntimeError(f"Spark standalone cluster did not come up:\n{logs}")
            time.sleep(0.5)
        yield {"url": url, "ui_port": ui_port, "pids": (master.pid, worker.pid)}
    finally:
        if worker is not None:
            stop(worker)
        stop(master)
