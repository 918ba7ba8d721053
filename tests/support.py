"""What the tests share: real-data locations, file writers, a small warehouse with planted taste,
and a throwaway Spark standalone cluster."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from cfmodel.training.interactions import Interactions
from cfmodel.warehouse.sql_server import spark_home

REPO = Path(__file__).resolve().parent.parent


# -- real data and files ----------------------------------------------------------------------------------------------


def real_data_dir(name: str) -> Path:
    root = os.environ.get("CFREC_TEST_DATA")
    if not root:
        pytest.skip("CFREC_TEST_DATA is not set (point it at the folder holding ml-100k/ to run real-data tests)")
    path = Path(root) / name
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


def text_folder(content: str, name: str = "part-0.parquet"):
    """A `publish` writer: a folder holding one file of `content`."""

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / name).write_text(content)

    return write


def snapshot(root: Path) -> dict[str, str]:
    """Every visible file under `root` (hidden folders of writes in progress aside) and its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


def ingest_files(spark, source: str, input_dir, warehouse, run_date: str, **options) -> dict:
    """The ingest step on a folder of `source` files, its report as a dict."""
    from dataclasses import asdict

    from cfmodel.config import IngestConfig
    from cfmodel.ingest.job import ingest

    config = IngestConfig(source=source, input_path=str(input_dir), **options)
    return asdict(ingest(spark, warehouse, run_date, config))


# -- a small warehouse written with pandas (no Spark) ---------------------------------------------------------------

N_GROUPS = 3


def planted_ratings(n_users=90, n_items=60, per_user=20, seed=0) -> pd.DataFrame:
    """User u likes items of group u % 3 (rates them 4-5) and dislikes the others (1-2); like most
    people, they rate mostly what they like (70% of their ratings), so the lists have a taste to find."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        own = [i for i in range(n_items) if i % N_GROUPS == u % N_GROUPS]
        other = [i for i in range(n_items) if i % N_GROUPS != u % N_GROUPS]
        n_own = round(per_user * 0.7)
        picked = [*rng.choice(own, n_own, replace=False), *rng.choice(other, per_user - n_own, replace=False)]
        for i in rng.permutation(picked):
            liked = i % N_GROUPS == u % N_GROUPS
            rows.append(
                (
                    f"u{u}",
                    f"i{i}",
                    float(rng.integers(4, 6) if liked else rng.integers(1, 3)),
                    int(rng.integers(0, 10**6)),
                )
            )
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def write_warehouse(root: Path, ratings: pd.DataFrame | None = None, index_tables: bool = False) -> Path:
    ratings = planted_ratings() if ratings is None else ratings
    (root / "ratings").mkdir(parents=True, exist_ok=True)
    ratings.to_parquet(root / "ratings" / "part-0.parquet", index=False)
    items = sorted(ratings["item_id"].unique())
    (root / "items").mkdir(exist_ok=True)
    pd.DataFrame({"item_id": items, "title": [f"Title of {i}" for i in items]}).to_parquet(
        root / "items" / "part-0.parquet"
    )
    (root / "datasets").mkdir(exist_ok=True)
    pd.DataFrame({"source": ["test"], "rating_min": [1.0], "rating_max": [5.0]}).to_parquet(
        root / "datasets" / "part-0.parquet"
    )
    if index_tables:
        for column, table in (("user_id", "user_index"), ("item_id", "item_index")):
            ids = sorted(ratings[column].unique(), reverse=True)  # deliberately not the sorted order
            (root / table).mkdir(exist_ok=True)
            pd.DataFrame({"id": ids, "index": np.arange(len(ids), dtype=np.int64)}).to_parquet(
                root / table / "part-0.parquet"
            )
    return root


def planted_choices(n_users=90, n_items=60, per_user=12, seed=0) -> pd.DataFrame:
    """User u rates only items of group u % 3: *which* items get rated carries the taste."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        own = [i for i in range(n_items) if i % N_GROUPS == u % N_GROUPS]
        for i in rng.choice(own, per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), int(rng.integers(0, 10**6))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def rating_interactions(n_users=200, n_items=150, n=20000, k=3, seed=0) -> Interactions:
    """Ratings from a rank-k taste model plus noise."""
    rng = np.random.default_rng(seed)
    uv, iv = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    ratings = np.clip(3.0 + 0.8 * np.einsum("ij,ij->i", uv[users], iv[items]) + rng.normal(0, 0.3, n), 1, 5)
    return Interactions(users, items, ratings, rng.integers(0, 10**6, n))


def choice_interactions(n_users=300, n_items=120, per_user=30, seed=0) -> Interactions:
    """Each user rates items of their own taste group mostly: who-rates-what has structure."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 4, n_users)
    item_group = np.arange(n_items) % 4
    users, items = [], []
    for u in range(n_users):
        own = np.flatnonzero(item_group == groups[u])
        picks = rng.choice(own, per_user, replace=False)
        users += [u] * per_user
        items += picks.tolist()
    users, items = np.array(users), np.array(items)
    return Interactions(users, items, rng.integers(1, 6, len(users)).astype(float))


# -- the end-to-end nights on MovieLens 100k (the `nights` fixture, tests/conftest.py) -----------------------------

# MovieLens 100k's u.data split by time into two nights: a first load of 80,000 ratings, then an
# increment of 20,000.
NIGHTS = ("2026-11-19", "2026-11-20")
NIGHT_SIZES = (80_000, 20_000)
NIGHT_DATE = NIGHTS[-1]  # the night after which the warehouse holds every rating
# Options away from their defaults, given to `cfrec run` and to the DAG alike; the later night is
# an increment far smaller than the first load, which the drop check would otherwise stop.
NIGHT_OPTIONS = {"epochs": 4, "similar_k": 5, "gate_tolerance": 0.02, "max_drop_fraction": 0.9}


def split_nights(ml100k: Path, root: Path) -> Path:
    """`root/<date>/` for each of NIGHTS: that night's ratings by time, plus u.item, u.genre and u.user."""
    import shutil

    ratings = pd.read_csv(ml100k / "u.data", sep="\t", names=["u", "i", "r", "t"], dtype=str)
    ratings = ratings.sort_values("t", key=lambda t: t.astype(int), kind="stable")
    stops = np.cumsum(NIGHT_SIZES)
    for date, start, stop in zip(NIGHTS, stops - NIGHT_SIZES, stops):
        night = root / date
        night.mkdir(parents=True)
        ratings.iloc[start:stop].to_csv(night / "u.data", sep="\t", header=False, index=False)
        for name in ("u.item", "u.genre", "u.user"):
            shutil.copy(ml100k / name, night / name)
    return root


# -- Airflow's services, driven through the REST API -----------------------------------------------------------------


RUN_TIMEOUT = 900
FINISHED = ("success", "failed")  # a DAG run's final states
NIGHTLY = "cfrec_nightly"


def group_survivors(pids) -> list[str]:
    """`ps` lines of processes still in the process groups led by `pids`, unreaped zombies of this
    process aside."""
    ps = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout.splitlines()
    groups = {str(pid) for pid in pids}
    return [line for line in ps if line.split()[0] in groups and not line.split()[1].startswith("Z")]


class LiveAirflow:
    """A running `cfrec_airflow.server` and the REST calls the tests make to it, as users would."""

    def __init__(self, state: dict, fault_marker: Path) -> None:
        from cfrec_airflow import server

        self.state, self.url, self.fault_marker = state, state["url"], fault_marker
        self.token = server.token(self.url)

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        from cfrec_airflow import server

        return server.api(self.url, self.token, method, path, body)

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}")

    def trigger(self, dag_id: str, logical_date: str, conf: dict) -> dict:
        body = {"logical_date": f"{logical_date}T00:00:00Z", "conf": conf}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body)

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict]:
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances")["task_instances"]
        return {t["task_id"]: t for t in found}

    def retried_tasks(self, dag_id: str, run_id: str) -> str:
        """One line per task of a run that failed or needed more than one try: its state, tries and
        the errors each try's log ends with, so that a failed run says why in the test's report."""
        logs = Path(self.state["home"]) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        lines = []
        for task_id, task in sorted(self.tasks(dag_id, run_id).items()):
            if task["state"] == "success" and task["try_number"] <= 1:
                continue
            tries = sorted((logs / f"task_id={task_id}").glob("attempt=*.log"))
            errors = [f"{log.stem}: {logged_errors(log)}" for log in tries]
            lines.append(f"{task_id} {task['state']} after {task['try_number']} tries ({'; '.join(errors)})")
        return f"{run_id}: " + " | ".join(lines)

    def xcom(self, dag_id: str, run_id: str, task_id: str):
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        value = self.api("GET", path)["value"]  # the stored JSON, as a string or already parsed
        return json.loads(value) if isinstance(value, str) else value

    def end_scheduled_nights(self) -> list[str]:
        """Fail the nightly DAG's scheduled runs still at work, as an operator would: their files never
        come, and with one active run at a time such a run holds back every triggered or backfilled
        night. Unpausing schedules one, and so does each midnight (UTC) a test session lives through.
        Returns their run ids."""
        runs = self.runs(NIGHTLY)
        waiting = [r["dag_run_id"] for r in runs if r["run_type"] == "scheduled" and r["state"] not in FINISHED]
        for run_id in waiting:
            self.api("PATCH", f"/dags/{NIGHTLY}/dagRuns/{quote(run_id)}", {"state": "failed"})
        return waiting

    def wait_for_runs(self, dag_id: str, run_ids: list[str], timeout: float = RUN_TIMEOUT) -> list[dict]:
        def finished():
            self.end_scheduled_nights()
            runs = [self.run(dag_id, run_id) for run_id in run_ids]
            return runs if all(r["state"] in FINISHED for r in runs) else None

        try:
            return wait_for(finished, timeout, f"{dag_id} runs {run_ids}")
        except AssertionError as late:
            raise AssertionError(f"{late}; " + " || ".join(self.progress(dag_id, r) for r in run_ids)) from None

    def progress(self, dag_id: str, run_id: str, events: int = 6) -> str:
        """Where a run stands: each task's state and tries, and for each unfinished task the last
        `events` lines its latest log holds, so that a run that never ends says where it waits."""
        logs = Path(self.state["home"]) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        said = []
        for task_id, task in sorted(self.tasks(dag_id, run_id).items()):
            said.append(f"{task_id} {task['state']} x{task['try_number']}")
            tries = sorted((logs / f"task_id={task_id}").glob("attempt=*.log"))
            if task["state"] not in ("success", "skipped") and tries:
                said[-1] += " [" + " / ".join(logged_events(tries[-1])[-events:]) + "]"
        return f"{run_id}: " + "; ".join(said)


def log_entries(log: Path) -> list[dict]:
    """The entries of an Airflow task log (JSON lines); lines that are not JSON are skipped."""
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def logged_errors(log: Path, width: int = 300) -> str:
    """What an Airflow task log says went wrong: the last error printed by the job and the exception
    the task failed with, each shortened to `width` characters."""
    said = []
    for entry in log_entries(log):
        event = str(entry.get("event", ""))
        if entry.get("level") == "error":
            detail = (entry.get("error_detail") or [{}])[-1]
            said.append(f"{event}: {detail.get('exc_type', '')}: {str(detail.get('exc_value', ''))[:width]}")
        elif "Error" in event or "Exception" in event:
            said.append(event[:width])
    return " / ".join(said[-2:]) or "no error logged"


def logged_events(log: Path, width: int = 200) -> list[str]:
    """The events of an Airflow task log, each with its time, shortened to `width`."""
    return [
        f"{str(entry.get('timestamp', ''))[11:19]} {str(entry.get('event', ''))[:width]}" for entry in log_entries(log)
    ]


def wait_for(check, timeout: float = RUN_TIMEOUT, what: str = "the runs", every: float = 2):
    """check()'s first truthy answer, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what} did not finish within {timeout} s")


# -- a PostgreSQL server --------------------------------------------------------------------------------------------

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


@contextmanager
def postgres_server(*databases: str):
    """PostgreSQL 15 on 127.0.0.1 in a temporary folder (run as user postgres when the tests run as
    root), with `databases` created and user `cfrec` trusted; yields (port, psql(sql, database))."""
    import shutil
    import tempfile

    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 is not installed ({POSTGRES_BIN}; Debian's postgresql-15)")
    # Not under pytest's folder: that one is private to this user, and the server may run as another.
    root = Path(tempfile.mkdtemp(prefix="cfrec-postgres-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    port, data = free_port(), root / "data"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    def psql(sql: str, database: str = databases[0] if databases else "postgres") -> str:
        return run(
            "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "cfrec", "-At", "-c", sql, database
        ).stdout.decode()

    run(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "cfrec", "--no-sync")
    options = f"-h 127.0.0.1 -p {port} -k {root} -F"
    run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        for database in databases:
            run(str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cfrec", database)
        yield port, psql
    finally:
        run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


# -- a Spark standalone cluster (one master, one worker) on 127.0.0.1 --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
