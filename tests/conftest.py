from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import (
    FINISHED,
    NIGHT_OPTIONS,
    NIGHTS,
    REPO,
    LiveAirflow,
    free_port,
    group_survivors,
    postgres_server,
    real_data_dir,
    split_nights,
    standalone_cluster,
    wait_for,
)

from cfrec_airflow import local as airflow_local

# The DAGs and spark-submit jobs of this checkout; Airflow reads its configuration on first import,
# so it points at a throwaway home before any test module imports it.
os.environ["CFREC_DAGS_FOLDER"] = str(REPO / "dags")
os.environ["CFREC_JOBS_DIR"] = str(REPO / "jobs")
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cfrec-test-airflow-"))
airflow_local.configure(AIRFLOW_HOME)


@pytest.fixture(scope="session")
def ml100k() -> Path:
    return real_data_dir("ml-100k")


@pytest.fixture(scope="session")
def spark():
    from cfmodel.spark import get_spark

    session = get_spark("cfrec-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def airflow_db():
    airflow_local.init_db()
    yield AIRFLOW_HOME


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


# Under `pytest -n N` (`make test`): the services below (PostgreSQL, Airflow, a Spark cluster, the
# backfilled nights) start once, in the one worker that runs every module using them; the other
# modules are spread over the other workers, each module whole (its module fixtures built once).
SERVICES = frozenset({"postgres", "airflow", "spark_cluster", "nights"})
SERVICES_MODULES = frozenset(
    {
        "tests/airflow/test_cluster.py",
        "tests/airflow/test_scheduler.py",
        "tests/end_to_end/test_analysts.py",
        "tests/end_to_end/test_end_to_end.py",
    }
)


def pytest_collection_modifyitems(config, items):
    """The services' modules go first: they are the longest unit of work."""
    module = {item: item.path.relative_to(REPO).as_posix() for item in items}
    strays = sorted({module[i] for i in items if SERVICES & set(i.fixturenames)} - SERVICES_MODULES)
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} use(s) the shared services: add to SERVICES_MODULES")
    items.sort(key=lambda item: module[item] not in SERVICES_MODULES)  # stable: the rest keep their order


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own choice; a no-op without xdist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ServicesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "services" if path in SERVICES_MODULES else path

    config.option.loadscopereorder = False  # collection order: the services first
    return ServicesTogether(config, log)


# -- services shared by the end-to-end tests: one PostgreSQL, one Airflow, one Spark cluster --------------------------


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL 15 for the session: Airflow's metadata database and a Hive metastore's."""
    with postgres_server("airflow", "metastore") as server:
        yield server


@pytest.fixture(scope="session")
def airflow(postgres, tmp_path_factory) -> LiveAirflow:
    """Airflow's scheduler, dag-processor, triggerer and api-server as separate processes with the
    LocalExecutor over PostgreSQL, with the nightly, consumer and weekly DAGs unpaused; every process is
    stopped by PID at the end. Armed in their environment only: a crash of the first night's
    score after writing and before publishing, once, and a one-second first retry delay."""
    from cfrec_airflow import server as services

    home = tmp_path_factory.mktemp("airflow")
    marker = home / "crashed-once"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CFREC_INJECT_FAULT", f"recommendations/run_date={NIGHTS[0]}:{marker}")
        env.setenv("CFREC_RETRY_DELAY_SECONDS", "1")
        env.setenv("CFREC_WEEKLY_SCHEDULE", "none")  # the weekly retrain runs when a test triggers it
        env.setenv("PYSPARK_PYTHON", sys.executable)  # executors of a cluster run this interpreter
        state = services.start(home, free_port(), f"postgresql+psycopg2://cfrec@127.0.0.1:{postgres[0]}/airflow")
    try:
        live = LiveAirflow(state, marker)
        with pytest.raises(Exception, match="already running"):
            services.start(home)
        for dag_id in ("cfrec_nightly", "cfrec_recommendations_consumer", "cfrec_weekly_retrain"):
            wait_for(lambda d=dag_id: d in {x["dag_id"] for x in live.api("GET", "/dags")["dags"]}, 120, "parsing")
            live.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        # Unpausing schedules the latest night, whose files will never come: end it, as an operator would.
        wait_for(live.end_scheduled_nights, 120, "the scheduled run")
        yield live
    finally:
        stopped = services.stop(home)
    assert stopped["left_running"] == [], stopped
    assert group_survivors(stopped["pids"].values()) == []


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A Spark standalone master and worker on 127.0.0.1, stopped by PID at the end."""
    with standalone_cluster(tmp_path_factory.mktemp("spark-standalone")) as info:
        yield info
    for pid in info["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@dataclass
class Nights:
    """MovieLens 100k as two nights (NIGHTS), each run by `cfrec run` into `cli` and by a backfill
    of the nightly DAG under the scheduler into `dag`, with the same options."""

    inputs: Path
    cli: Path
    dag: Path
    runs: list[dict]  # the backfill's DAG runs, in date order


@pytest.fixture(scope="session")
def nights(ml100k, airflow, spark, tmp_path_factory) -> Nights:
    from cfmodel.cli import main

    root = tmp_path_factory.mktemp("nights")
    inputs = split_nights(ml100k, root / "input")
    conf = {"input_path": f"{inputs}/{{ds}}", "warehouse": str(root / "dag"), **NIGHT_OPTIONS}
    backfill = airflow.api(
        "POST",
        "/backfills",
        {
            "dag_id": "cfrec_nightly",
            "from_date": f"{NIGHTS[0]}T00:00:00Z",
            "to_date": f"{NIGHTS[-1]}T00:00:00Z",
            "dag_run_conf": conf,
            "max_active_runs": 1,
            "reprocess_behavior": "completed",
        },
    )
    # The same nights in-process while the scheduler works through the backfill.
    for date in NIGHTS:
        argv = ["run", "--source", "movielens-100k", "--input", str(inputs / date)]
        argv += ["--warehouse", str(root / "cli"), "--run-date", date]
        for name, value in NIGHT_OPTIONS.items():
            argv += ["--" + name.replace("_", "-"), str(value)]
        assert main(argv) == 0

    def backfilled():
        airflow.end_scheduled_nights()
        runs = [r for r in airflow.runs("cfrec_nightly") if r["run_type"] == "backfill"]
        done = len(runs) == len(NIGHTS) and all(r["state"] in FINISHED for r in runs)
        return sorted(runs, key=lambda r: r["logical_date"]) if done else None

    runs = wait_for(backfilled, what="the backfill")
    wait_for(lambda: airflow.api("GET", f"/backfills/{backfill['id']}")["completed_at"], 120, "the backfill's end")
    return Nights(inputs, root / "cli", root / "dag", runs)
