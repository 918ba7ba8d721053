"""The nightly path on real MovieLens 100k, run once for every end-to-end module that reads it."""

from datetime import UTC, datetime

import pytest
from support import NIGHT_DATE, NIGHT_OPTIONS

from cfmodel.cli import main
from cfrec_airflow import local as airflow_local


@pytest.fixture(scope="session")
def nights(ml100k, airflow_db, tmp_path_factory, spark):
    """ML-100k through `cfrec run` in-process and through the nightly DAG, into two warehouses."""
    root = tmp_path_factory.mktemp("nights")
    argv = [
        "run",
        "--source",
        "movielens-100k",
        "--input",
        str(ml100k),
        "--warehouse",
        str(root / "cli"),
        "--run-date",
        NIGHT_DATE,
    ]
    for name, value in NIGHT_OPTIONS.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    assert main(argv) == 0
    conf = {"source": "movielens-100k", "input_path": str(ml100k), "warehouse": str(root / "dag"), **NIGHT_OPTIONS}
    dag_run = airflow_local.run_dag("cfrec_nightly", datetime(2026, 11, 21, tzinfo=UTC), conf)
    return root / "cli", root / "dag", dag_run
