"""The nightly DAG on a real Spark standalone cluster (master + worker on 127.0.0.1).

Run alone with: pytest -m cluster
"""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pandas as pd
import pytest
from support import standalone_cluster

from cfrec_airflow import local as airflow_local

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PROBE = """
from cfmodel.spark import get_spark
spark = get_spark("cfrec-probe")
def origin(_):
    import cfmodel
    yield cfmodel.__file__
print("EXECUTOR_CFMODEL=" + spark.sparkContext.parallelize([0], 1).mapPartitions(origin).first())
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("spark-standalone")) as info:
        yield info
    for pid in info["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_executors_get_cfmodel_from_the_driver(cluster, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    result = subprocess.run(
        ["spark-submit", "--master", cluster["url"], "--executor-memory", "1g", str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    origin = [line for line in result.stdout.splitlines() if line.startswith("EXECUTOR_CFMODEL=")]
    assert origin and "cfmodel.zip" in origin[0], result.stdout[-2000:]


def test_nightly_dag_on_standalone_cluster(cluster, airflow_db, ml100k, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": cluster["url"]}))
    warehouse = tmp_path / "wh"
    logical_date = datetime(2026, 10, 5, tzinfo=UTC)
    conf = {"source": "movielens-100k", "input_path": str(ml100k), "warehouse": str(warehouse)}
    dag_run = airflow_local.run_dag("cfrec_nightly", logical_date, conf)
    states = airflow_local.task_states(dag_run)
    assert dag_run.state == "success", states
    assert set(states.values()) == {"success"}

    recs = pd.read_parquet(warehouse / "recommendations" / "run_date=2026-10-05")
    assert len(recs) == 943 * 10 and recs["user_id"].nunique() == 943
    rated = pd.read_csv(ml100k / "u.data", sep="\t", names=["user_id", "item_id", "r", "t"], dtype=str)
    assert recs.merge(rated, on=["user_id", "item_id"]).empty
    # The Spark steps really ran on the cluster: the master lists their applications.
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['ui_port']}/json/", timeout=5) as reply:
        apps = [app["name"] for app in json.load(reply)["completedapps"]]
    assert any(name.startswith("cfrec-ingest") for name in apps), apps
    assert any(name.startswith("cfrec-score") for name in apps), apps
