"""cfrec's DAGs under a real Airflow: scheduler, dag-processor, triggerer and api-server as separate
processes with the LocalExecutor over PostgreSQL, driven through the REST API as users drive it.

MovieLens 100k split by time into two nights. A backfill of both dates is created with Airflow's
backfill API; the first night's score job crashes once after writing its output and before
publishing it, and the scheduler's retry must succeed with nothing partial left. Each published
night's Asset event must trigger the consumer DAG, whose output is checked; every process is
stopped by PID at the end.
"""

import shutil
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from support import free_port, postgres_server

from cfmodel import processes
from cfrec_airflow import server as services

pytestmark = pytest.mark.slow

DATES = ["2026-11-01", "2026-11-02"]
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def nightly_inputs(ml100k, tmp_path_factory):
    """u.data split by time into two nights; each night's folder also has u.item and u.genre."""
    root = tmp_path_factory.mktemp("nights")
    ratings = pd.read_csv(ml100k / "u.data", sep="\t", names=["u", "i", "r", "t"], dtype=str)
    ratings = ratings.sort_values("t", key=lambda t: t.astype(int), kind="stable")
    cuts = [0, 80_000, len(ratings)]
    for date, start, stop in zip(DATES, cuts, cuts[1:]):
        night = root / date
        night.mkdir()
        ratings.iloc[start:stop].to_csv(night / "u.data", sep="\t", header=False, index=False)
        for name in ("u.item", "u.genre"):
            shutil.copy(ml100k / name, night / name)
    return root


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """The four components over a PostgreSQL metadata database; the fault to inject is armed in
    their environment (a marker file records that it fired)."""
    home = tmp_path_factory.mktemp("airflow")
    marker = home / "crashed-once"
    with postgres_server("airflow") as (port, _), pytest.MonkeyPatch.context() as env:
        env.setenv("CFREC_RETRY_DELAY_SECONDS", "1")
        env.setenv("CFREC_INJECT_FAULT", f"recommendations/run_date={DATES[0]}:{marker}")
        database = f"postgresql+psycopg2://cfrec@127.0.0.1:{port}/airflow"
        state = services.start(home, free_port(), database)
        try:
            yield state["url"], services.token(state["url"]), marker, state
        finally:
            stopped = services.stop(home)
    assert stopped["left_running"] == []
    assert not any(processes.alive(pid) for pid in state["pids"].values())


def api(airflow, method, path, body=None):
    url, token = airflow[:2]
    return services.api(url, token, method, path, body)


def wait_for(check, timeout=RUN_TIMEOUT, what="the runs"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(3)
    raise AssertionError(f"{what} did not finish within {timeout} s")


def nightly_runs(airflow):
    return api(airflow, "GET", "/dags/cfrec_nightly/dagRuns?limit=50")["dag_runs"]


def test_a_backfill_through_the_rest_api_retries_a_fault_and_triggers_the_consumer(airflow, nightly_inputs, tmp_path):
    warehouse = tmp_path / "warehouse"
    for dag_id in ("cfrec_nightly", "cfrec_recommendations_consumer"):
        api(airflow, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
    # Unpausing schedules the latest interval, whose files will never come: end it, as an operator would.
    for run in nightly_runs(airflow):
        if run["run_type"] == "scheduled":
            api(airflow, "PATCH", f"/dags/cfrec_nightly/dagRuns/{run['dag_run_id']}", {"state": "failed"})

    conf = {
        "input_path": f"{nightly_inputs}/{{ds}}",
        "warehouse": str(warehouse),
        "epochs": 4,
        "max_drop_fraction": 0.9,  # the second night is an increment, far smaller than the first load
    }
    start = datetime.fromisoformat(DATES[0]).replace(tzinfo=UTC)
    backfill = api(
        airflow,
        "POST",
        "/backfills",
        {
            "dag_id": "cfrec_nightly",
            "from_date": start.isoformat(),
            "to_date": (start + timedelta(days=len(DATES) - 1)).isoformat(),
            "dag_run_conf": conf,
            "max_active_runs": 1,
            "reprocess_behavior": "completed",
        },
    )

    def finished():
        runs = [r for r in nightly_runs(airflow) if r["run_type"] == "backfill"]
        done = len(runs) == len(DATES) and all(r["state"] in ("success", "failed") for r in runs)
        return runs if done else None

    runs = wait_for(finished)
    assert {r["logical_date"][:10]: r["state"] for r in runs} == {d: "success" for d in DATES}
    wait_for(lambda: api(airflow, "GET", f"/backfills/{backfill['id']}")["completed_at"], 120, "the backfill")

    first = next(r for r in runs if r["logical_date"].startswith(DATES[0]))
    tasks = api(airflow, "GET", f"/dags/cfrec_nightly/dagRuns/{first['dag_run_id']}/taskInstances")["task_instances"]
    tries = {t["task_id"]: (t["state"], t["try_number"]) for t in tasks}
    assert airflow[2].exists(), "the injected crash never happened"
    assert tries["score"] == ("success", 2), tries  # failed once, retried by the scheduler
    assert all(state == "success" for state, _ in tries.values()), tries
    version = api(
        airflow,
        "GET",
        f"/dags/cfrec_nightly/dagRuns/{first['dag_run_id']}/taskInstances/train/xcomEntries/return_value",
    )["value"]
    assert f"rank-{DATES[0]}" in str(version)

    partitions = sorted(p.name for p in (warehouse / "recommendations").iterdir())
    assert partitions == [f"run_date={d}" for d in DATES]  # nothing hidden or partial beside them
    for date in DATES:
        recs = pd.read_parquet(warehouse / "recommendations" / f"run_date={date}")
        assert recs["user_id"].nunique() == len(recs) // 10 and not recs.duplicated(["user_id", "item_id"]).any()
    assert pd.read_parquet(warehouse / "recommendations" / f"run_date={DATES[-1]}")["user_id"].nunique() == 943

    # Each published night is an Asset event; the scheduler runs the consumer on it.
    analytics = warehouse / "analytics" / "most_recommended"

    def consumed():  # events that arrive together are consumed by one run
        runs = api(airflow, "GET", "/dags/cfrec_recommendations_consumer/dagRuns")["dag_runs"]
        written = analytics.is_dir() and len([p for p in analytics.iterdir() if p.name.startswith("run_date=")])
        done = runs and written == len(DATES) and all(r["state"] in ("success", "failed") for r in runs)
        return runs if done else None

    consumer_runs = wait_for(consumed, timeout=300, what="the consumer")
    assert {r["run_type"] for r in consumer_runs} == {"asset_triggered"}
    assert all(r["state"] == "success" for r in consumer_runs), consumer_runs
    assert sorted(p.name for p in analytics.iterdir()) == [f"run_date={d}" for d in DATES]
    top = pd.read_parquet(analytics / f"run_date={DATES[-1]}")
    assert top["title"].notna().all() and top["users"].is_monotonic_decreasing
