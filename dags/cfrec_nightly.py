"""cfrec_nightly: ingest -> train -> score, once a day.

Spark steps go through SparkSubmitOperator on the `spark_default` connection, so pointing that
connection at a cluster (spark://, yarn, k8s://) moves them there unchanged. Locally, set
AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[*]"}'.
Only declarations live here: torch and pyspark are imported inside the tasks.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, task

JOBS_DIR = os.environ.get("CFREC_JOBS_DIR", str(Path(__file__).resolve().parent.parent / "jobs"))

DEFAULT_ARGS = {
    "owner": "cfrec",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
}

SPARK_CONF = {
    "spark.sql.shuffle.partitions": "{{ params.shuffle_partitions }}",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
}


@dag(
    dag_id="cfrec_nightly",
    description="Nightly ratings ingest, embedding-model training and top-N scoring",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["cfrec"],
    params={
        "source": Param("movielens-100k", type="string", description="layout of the input files"),
        "input_path": Param(os.environ.get("CFREC_INPUT_PATH", "/data/cfrec/input"), type="string",
                            description="folder holding the night's rating files"),
        "warehouse": Param(os.environ.get("CFREC_WAREHOUSE", "/data/cfrec/warehouse"), type="string",
                           description="root folder of the Parquet tables and models"),
        "top_n": Param(10, type="integer", minimum=1, description="recommendations per user"),
        "n_factors": Param(50, type="integer", minimum=1),
        "epochs": Param(5, type="integer", minimum=1),
        "lr": Param(5e-3, type="number", exclusiveMinimum=0),
        "wd": Param(0.1, type="number", minimum=0),
        "bs": Param(256, type="integer", minimum=1),
        "device": Param("auto", type="string", description="auto, cpu, cuda or cuda:N"),
        "shuffle_partitions": Param(8, type="integer", minimum=1),
    },
)
def cfrec_nightly():
    ingest = SparkSubmitOperator(
        task_id="ingest",
        conn_id="spark_default",
        application=f"{JOBS_DIR}/ingest.py",
        name="cfrec-ingest-{{ ds }}",
        conf=SPARK_CONF,
        application_args=[
            "--source", "{{ params.source }}",
            "--input", "{{ params.input_path }}",
            "--warehouse", "{{ params.warehouse }}",
            "--run-date", "{{ ds }}",
        ],
    )

    @task(task_id="train")
    def train(params=None, ds=None) -> str:
        from cfmodel.promotion import promote
        from cfmodel.train import train as train_model
        from cfmodel.training import TrainConfig
        from cfmodel.warehouse import Warehouse

        config = TrainConfig(
            n_factors=params["n_factors"], epochs=params["epochs"], lr=params["lr"], wd=params["wd"], bs=params["bs"]
        )
        trained = train_model(params["warehouse"], ds, config, device=params["device"])
        promote(Warehouse.open(params["warehouse"]).models, trained)
        return trained.version

    score = SparkSubmitOperator(
        task_id="score",
        conn_id="spark_default",
        application=f"{JOBS_DIR}/score.py",
        name="cfrec-score-{{ ds }}",
        conf=SPARK_CONF,
        application_args=[
            "--warehouse", "{{ params.warehouse }}",
            "--run-date", "{{ ds }}",
            "--top-n", "{{ params.top_n }}",
            "--model-version", "{{ ti.xcom_pull(task_ids='train') }}",
        ],
    )

    ingest >> train() >> score


cfrec_nightly()
