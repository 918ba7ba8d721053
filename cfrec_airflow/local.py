"""Running the DAGs in-process with Airflow's `dag.test()`: SQLite metadata, local Spark.

Used by `cfrec demo` and the tests. Airflow reads its configuration when first imported, so
`configure` must run before anything imports airflow.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cfrec_airflow.settings import dags_folder, pools, settings

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG


def local_environment(airflow_home: Path, dags: Path | None = None) -> dict[str, str]:
    """The environment of a local Airflow: its home, the DAGs folder (default `dags_folder()`),
    SQLite metadata, local Spark and this virtualenv's spark-submit and Python."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags or dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "AIRFLOW_CONN_SPARK_DEFAULT": os.environ.get(
            "AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[*]"}'
        ),
        # spark-submit and the Python that runs the jobs come from this virtualenv.
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
    }


def configure(airflow_home: Path, dags: Path | None = None) -> None:
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(airflow_home):
        raise RuntimeError("airflow was imported before its environment was configured")
    airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ.update(local_environment(airflow_home, dags))


def init_db() -> None:
    """Create the metadata database and the pools cfrec's tasks run in."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    for name, slots, description in pools(settings()):
        Pool.create_or_update_pool(name, slots=slots, description=description, include_deferred=False)


def load_dag(dag_id: str) -> DAG:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder()))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def run_dag(dag_id: str, logical_date: datetime, conf: dict) -> DagRun:
    """Run one DagRun in-process; returns it (check `.state`: dag.test() does not raise)."""
    return load_dag(dag_id).test(logical_date=logical_date, run_conf=conf)


def task_states(dag_run: DagRun) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
