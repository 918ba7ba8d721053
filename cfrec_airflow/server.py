"""`cfrec airflow start|stop`: a local `airflow standalone` bound to 127.0.0.1 with cfrec's DAGs.

It runs in its own process group so that stopping it stops the scheduler, dag-processor,
triggerer and api-server it spawned, not only the parent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cfmodel.errors import CfrecError
from cfrec_airflow import local as airflow_local
from cfrec_airflow.settings import pools, settings

DEFAULT_PORT = 8280


def server_environment(home: Path, port: int, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        **airflow_local.local_environment(home),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # Airflow sizes its worker pools for big machines; 32 processes would swamp 2 cores.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "CFREC_INPUT_PATH": os.environ.get("CFREC_INPUT_PATH", str(data_dir / "input")),
        "CFREC_WAREHOUSE": os.environ.get("CFREC_WAREHOUSE", str(data_dir / "warehouse")),
    }


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def running_pid(home: Path) -> int | None:
    pid_file = home / "standalone.pid"
    if not pid_file.is_file():
        return None
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink()
        return None
    return pid


def start(home: str | Path, port: int = DEFAULT_PORT, data_dir: str | Path = "demo", timeout: float = 180) -> dict:
    home, data_dir = Path(home).resolve(), Path(data_dir).resolve()
    if running_pid(home):
        raise CfrecError(f"an Airflow server from {home} is already running; stop it with 'cfrec airflow stop'")
    home.mkdir(parents=True, exist_ok=True)
    log = home / "standalone.log"
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "standalone"],
        env=server_environment(home, port, data_dir),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (home / "standalone.pid").write_text(f"{process.pid} {port}\n")
    deadline = time.monotonic() + timeout
    while not healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(home)
            raise CfrecError(f"Airflow did not become healthy on port {port}; see {log}")
        time.sleep(1)
    for name, slots, description in pools(settings()):
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "pools", "set", name, str(slots), description],
            env=server_environment(home, port, data_dir),
            check=True,
            capture_output=True,
            timeout=120,
        )
    passwords = home / "simple_auth_manager_passwords.json.generated"
    credentials = json.loads(passwords.read_text()) if passwords.is_file() else {}
    user, password = next(iter(credentials.items()), ("admin", "(see the log)"))
    return {
        "url": f"http://127.0.0.1:{port}",
        "user": user,
        "password": password,
        "pid": process.pid,
        "home": str(home),
        "log": str(log),
    }


def stop(home: str | Path, timeout: float = 60) -> dict:
    home = Path(home).resolve()
    pid = running_pid(home)
    if pid is None:
        return {"stopped": False, "reason": f"no Airflow server from {home} is running"}
    group = os.getpgid(pid)
    # SIGINT lets standalone shut its children down; then make sure nothing of the group is left.
    for sig, grace in ((signal.SIGINT, timeout * 0.6), (signal.SIGTERM, timeout * 0.3), (signal.SIGKILL, 5)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(group):
            time.sleep(0.5)
        if not group_alive(group):
            break
    (home / "standalone.pid").unlink(missing_ok=True)
    return {"stopped": True, "pid": pid, "left_running": group_alive(group)}


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    # Zombies of the group still answer signal 0: count only processes that are not defunct.
    result = subprocess.run(["ps", "-o", "stat=", "-g", str(group)], capture_output=True, text=True)
    return any(not stat.startswith("Z") for stat in result.stdout.split())
