"""cfrec's DAGs under a real Airflow (tests/conftest.py: scheduler, dag-processor, triggerer and
api-server as separate processes with the LocalExecutor over PostgreSQL), driven through the REST API
as users drive it.

The `nights` fixture backfills two MovieLens 100k nights with Airflow's backfill API while
`cfrec run` runs the same nights in-process; the first night's score job crashes once after writing
its output and before publishing it. Here: the scheduler's retry and what the runs left, the
consumer DAG triggered by each night's Asset event, and a triggered night on a Spark cluster
overlapping the weekly retrain on one warehouse.

Run alone with: pytest -m scheduler
"""

import json
import shutil
import urllib.request

import pandas as pd
import pytest
from support import FINISHED, NIGHT_OPTIONS, NIGHTS, wait_for

from cfrec_airflow.settings import settings

pytestmark = [pytest.mark.slow, pytest.mark.scheduler]

LATER = "2026-11-22"


def partitions(table) -> list[str]:
    return sorted(p.name for p in table.iterdir())  # hidden leftovers of a crash would show here


def test_the_backfill_ran_every_night_and_the_scheduler_retried_the_crash(nights, airflow):
    failed = [airflow.retried_tasks("cfrec_nightly", r["dag_run_id"]) for r in nights.runs if r["state"] != "success"]
    assert [(r["logical_date"][:10], r["state"]) for r in nights.runs] == [(d, "success") for d in NIGHTS], failed
    assert airflow.fault_marker.exists(), "the injected crash never happened"
    for run, date in zip(nights.runs, NIGHTS):
        tasks = airflow.tasks("cfrec_nightly", run["dag_run_id"])
        tries = {name: (t["state"], t["try_number"]) for name, t in tasks.items()}
        assert all(state == "success" for state, _ in tries.values()), tries
        # Only the first night's score failed, once, and the scheduler's retry published it.
        assert tries["score"] == ("success", 2 if date == NIGHTS[0] else 1), tries
        assert airflow.xcom("cfrec_nightly", run["dag_run_id"], "train")["version"] == f"rank-{date}"
        decision = airflow.xcom("cfrec_nightly", run["dag_run_id"], "gate")
        assert decision["version"] == f"rank-{date}" and decision["reason"]
        summary = airflow.xcom("cfrec_nightly", run["dag_run_id"], "publish")
        assert summary["rows"] == 10 * summary["users"] > 0

    for table in ("recommendations", "metrics", "ingest_report", "rejects", "ratings_increments"):
        assert partitions(nights.dag / table) == [f"run_date={d}" for d in NIGHTS], table
    for date in NIGHTS:
        recs = pd.read_parquet(nights.dag / "recommendations" / f"run_date={date}")
        assert len(recs) == 10 * recs["user_id"].nunique() and not recs.duplicated(["user_id", "item_id"]).any()


def test_each_published_night_triggers_the_consumer(nights, airflow):
    analytics = nights.dag / "analytics" / "most_recommended"

    def consumed():  # events that arrive together are consumed by one run
        runs = airflow.runs("cfrec_recommendations_consumer")
        written = analytics.is_dir() and len([p for p in analytics.iterdir() if p.name.startswith("run_date=")])
        done = runs and written == len(NIGHTS) and all(r["state"] in FINISHED for r in runs)
        return runs if done else None

    runs = wait_for(consumed, timeout=300, what="the consumer")
    assert {r["run_type"] for r in runs} == {"asset_triggered"}
    assert all(r["state"] == "success" for r in runs), runs
    assert partitions(analytics) == [f"run_date={d}" for d in NIGHTS]
    top = pd.read_parquet(analytics / f"run_date={NIGHTS[-1]}")
    assert top["title"].notna().all() and top["users"].is_monotonic_decreasing


def overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.cluster
def test_a_triggered_night_on_a_cluster_and_the_weekly_retrain_overlap_safely(
    nights, airflow, spark_cluster, ml100k, tmp_path
):
    warehouse = tmp_path / "warehouse"
    shutil.copytree(nights.dag, warehouse, ignore=shutil.ignore_patterns(".lock", ".readers.lock"))
    # The cluster is a connection made through the API; the night's conf sends its Spark jobs there.
    cluster = {"connection_id": "spark_cluster", "conn_type": "spark", "host": spark_cluster["url"]}
    airflow.api("POST", "/connections", cluster)
    nightly = airflow.trigger(
        "cfrec_nightly",
        LATER,
        {
            "input_path": str(nights.inputs / NIGHTS[-1]),  # yesterday's files delivered again
            "warehouse": str(warehouse),
            "spark_conn_id": "spark_cluster",
            **NIGHT_OPTIONS,
        },
    )
    weekly = airflow.trigger("cfrec_weekly_retrain", LATER, {"warehouse": str(warehouse), "epochs": 4})
    assert nightly["conf"]["spark_conn_id"] == "spark_cluster" and nightly["state"] == "queued"
    try:
        done = {"nightly": airflow.wait_for_runs("cfrec_nightly", [nightly["dag_run_id"]])[0]}
    except AssertionError as late:  # a night that never ends also says what the cluster was doing
        raise AssertionError(f"{late}; the cluster's applications: {cluster_apps(spark_cluster['ui_port'])}") from None
    done["weekly"] = airflow.wait_for_runs("cfrec_weekly_retrain", [weekly["dag_run_id"]])[0]
    assert {name: run["state"] for name, run in done.items()} == {"nightly": "success", "weekly": "success"}
    assert overlap(*[(run["start_date"], run["end_date"]) for run in done.values()]), "the runs never overlapped"

    tasks = {
        "nightly": airflow.tasks("cfrec_nightly", nightly["dag_run_id"]),
        "weekly": airflow.tasks("cfrec_weekly_retrain", weekly["dag_run_id"]),
    }
    for name, run_tasks in tasks.items():  # nothing failed on the lock or waited for a retry
        assert {t: (ti["state"], ti["try_number"]) for t, ti in run_tasks.items()} == {
            t: ("success", 1) for t in run_tasks
        }, name
    # Writers of both DAGs took turns in the one-slot pool: no two of them ever ran at once.
    writers = sorted(
        (ti["start_date"], ti["end_date"], f"{name}.{t}")
        for name, run_tasks in tasks.items()
        for t, ti in run_tasks.items()
        if ti["pool"] == settings().writer_pool
    )
    assert {w[2] for w in writers} >= {"nightly.ingest", "nightly.score", "weekly.score", "weekly.publish_tables"}
    assert all(a[1] <= b[0] for a, b in zip(writers, writers[1:])), writers

    versions = {
        "nightly": airflow.xcom("cfrec_nightly", nightly["dag_run_id"], "train")["version"],
        "weekly": airflow.xcom("cfrec_weekly_retrain", weekly["dag_run_id"], "train")["version"],
    }
    assert versions == {"nightly": f"rank-{LATER}", "weekly": f"rank-{LATER}-full"}
    current = (warehouse / "models" / "CURRENT").read_text().strip()
    assert (warehouse / "models" / current / "config.json").is_file()
    for version in versions.values():
        assert (warehouse / "models" / version / "metrics.json").is_file()
    runs = pd.read_parquet(warehouse / "model_runs")
    assert runs["model_version"].value_counts()[list(versions.values())].tolist() == [1, 1]

    # The night's table is one complete list per user, from one model, whichever run published last.
    assert partitions(warehouse / "recommendations") == [f"run_date={d}" for d in (*NIGHTS, LATER)]
    recs = pd.read_parquet(warehouse / "recommendations" / f"run_date={LATER}")
    assert len(recs) == 9430 and recs["user_id"].nunique() == 943 and recs["model_version"].nunique() == 1
    rated = pd.read_csv(ml100k / "u.data", sep="\t", names=["user_id", "item_id", "r", "t"], dtype=str)
    assert recs.merge(rated, on=["user_id", "item_id"]).empty

    # The published night triggers the consumer, which writes into this warehouse too: its leftovers
    # are looked for once it is done, not while its step is at work.
    def consumed():
        written = (warehouse / "analytics" / "most_recommended" / f"run_date={LATER}").is_dir()
        return written and all(r["state"] in FINISHED for r in airflow.runs("cfrec_recommendations_consumer"))

    wait_for(consumed, timeout=300, what="the consumer of the triggered night")
    assert not [p for p in warehouse.rglob(".tmp-*")] and not [p for p in warehouse.rglob(".old-*")]

    # The night's Spark jobs ran on the cluster (the weekly's on the default connection, locally).
    apps = sorted(app["name"] for app in cluster_apps(spark_cluster["ui_port"])["completedapps"])
    assert [a for a in apps if a != "cfrec-probe"] == ["cfrec-ingest", "cfrec-score", "cfrec-tables"]


def cluster_apps(ui_port: int) -> dict[str, list[dict]]:
    """The standalone master's applications by kind (active, waiting, completed): name, state, cores."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as reply:
        state = json.load(reply)
    keep = ("id", "name", "state", "cores", "duration")
    return {
        kind: [{k: app.get(k) for k in keep} for app in state.get(kind, [])]
        for kind in ("activeapps", "waitingapps", "completedapps")
    }
