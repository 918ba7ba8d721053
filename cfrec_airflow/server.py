"""`cfrec airflow start|stop`: Airflow as users run it, with cfrec's DAGs: scheduler, dag-processor,
triggerer and api-server as separate processes with the LocalExecutor, bound to 127.0.0.1, over
SQLite (the zero-setup default) or a PostgreSQL metadata database.

`start` migrates the database, creates cfrec's pools, starts each component in its own process
group (recorded in `<home>/services.json`) and waits for the API's health check; `stop` ends them by
PID. `token` gets a bearer token for the REST API from the simple auth manager.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cfmodel.errors import CfrecError
from cfmodel.processes import alive, end_groups
from cfrec_airflow import local as airflow_local
from cfrec_airflow.settings import pools, settings

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
DEFAULT_PORT = 8280
STATE = "services.json"


def environment(
    home: Path, port: int, database: str | None = None, data_dir: str | Path | None = None
) -> dict[str, str]:
    """The environment every component shares: one home, one database, one JWT secret."""
    home = Path(home)
    secret_file = home / "jwt_secret"
    if not secret_file.is_file():
        home.mkdir(parents=True, exist_ok=True)
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    env = {
        **os.environ,
        **airflow_local.local_environment(home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Airflow sizes its worker pools for big machines; 32 processes would swamp 2 cores.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__SECRET_KEY": secret_file.read_text(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    if database:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database
    if data_dir is not None:
        env["CFREC_INPUT_PATH"] = os.environ.get("CFREC_INPUT_PATH", str(Path(data_dir) / "input"))
        env["CFREC_WAREHOUSE"] = os.environ.get("CFREC_WAREHOUSE", str(Path(data_dir) / "warehouse"))
    return env


def _airflow(*args: str, env: dict[str, str], timeout: float = 300) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise CfrecError(f"airflow {' '.join(args)} failed: {lines[-1] if lines else done.returncode}")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def running(home: Path) -> bool:
    path = Path(home).resolve() / STATE
    return path.is_file() and any(alive(pid) for pid in json.loads(path.read_text())["pids"].values())


def start(
    home: str | Path,
    port: int = DEFAULT_PORT,
    database: str | None = None,
    data_dir: str | Path | None = None,
    timeout: float = 180,
) -> dict:
    """Start the four components; returns the URL, their PIDs and the log folder."""
    home = Path(home).resolve()
    if running(home):
        raise CfrecError(f"an Airflow from {home} is already running; stop it with 'cfrec airflow stop'")
    env = environment(home, port, database, data_dir)
    _airflow("db", "migrate", env=env)
    for name, slots, description in pools(settings()):
        _airflow("pools", "set", name, str(slots), description, env=env)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids = {}
    for component in COMPONENTS:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), component],
            env=env,
            stdout=(logs / f"{component}.log").open("w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        pids[component] = process.pid
    state = {"url": f"http://127.0.0.1:{port}", "pids": pids, "logs": str(logs), "home": str(home)}
    (home / STATE).write_text(json.dumps(state) + "\n")
    deadline = time.monotonic() + timeout
    while not healthy(port):
        dead = [c for c, pid in pids.items() if not alive(pid)]
        if dead or time.monotonic() > deadline:
            stop(home)
            raise CfrecError(f"Airflow did not start ({', '.join(dead) or 'timeout'}); see {logs}")
        time.sleep(1)
    return state


def stop(home: Path, grace: float = 30) -> dict:
    """SIGTERM each component's process group, SIGKILL what is left after `grace` seconds."""
    path = Path(home).resolve() / STATE
    if not path.is_file():
        return {"stopped": [], "reason": f"no Airflow from {Path(home).resolve()} is running"}
    pids = json.loads(path.read_text())["pids"]
    end_groups(pids.values(), grace)
    path.unlink()
    return {"stopped": sorted(pids), "pids": pids, "left_running": [c for c, pid in pids.items() if alive(pid)]}


def token(url: str) -> str:
    """A bearer token for the REST API (the simple auth manager, every user an admin)."""
    with urllib.request.urlopen(urllib.request.Request(f"{url}/auth/token", method="GET"), timeout=10) as reply:
        return json.load(reply)["access_token"]


def api(url: str, bearer: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/api/v2{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)
