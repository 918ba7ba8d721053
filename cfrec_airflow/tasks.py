"""Task builders shared by the cfrec DAGs in dags/. Declarations only: the work runs inside the tasks.

Everything machine-specific comes from the environment (CFREC_*), DAG params or the
`spark_default` connection; see the README's "Deploying" section.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, task

from cfrec_airflow.alerts import on_failure  # light: the callback must be importable when the DAG is parsed

JOBS_DIR = os.environ.get("CFREC_JOBS_DIR", str(Path(__file__).resolve().parent.parent / "jobs"))
WAREHOUSE = os.environ.get("CFREC_WAREHOUSE", "/data/cfrec/warehouse")
TRAIN_QUEUE = os.environ.get("CFREC_TRAIN_QUEUE", "default")
TRAIN_POOL = os.environ.get("CFREC_TRAIN_POOL", "gpu")

# Downstream DAGs schedule on this; each event's extra names the run date and partition.
RECOMMENDATIONS = Asset(name="cfrec_recommendations", uri=f"file://{WAREHOUSE}/recommendations")


def default_args() -> dict:
    return {
        "owner": "cfrec",
        "retries": int(os.environ.get("CFREC_RETRIES", "2")),
        "retry_delay": timedelta(seconds=float(os.environ.get("CFREC_RETRY_DELAY_SECONDS", "120"))),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": on_failure,
    }


def model_params(**defaults) -> dict:
    """Params of the training and scoring steps; None means the model type's own default."""
    values = {
        "model": "dot",
        "n_factors": None,
        "epochs": None,
        "lr": None,
        "wd": None,
        "bs": None,
        "warm_start": True,
        "device": "auto",
        "top_n": 10,
        "gate_tolerance": 0.01,
        **defaults,
    }
    return {
        "warehouse": Param(WAREHOUSE, type="string", description="root folder of the Parquet tables and models"),
        "model": Param(values["model"], enum=["dot", "nn", "rank"], description="model type"),
        "n_factors": Param(values["n_factors"], type=["null", "integer"], minimum=1),
        "epochs": Param(values["epochs"], type=["null", "integer"], minimum=1),
        "lr": Param(values["lr"], type=["null", "number"], exclusiveMinimum=0),
        "wd": Param(values["wd"], type=["null", "number"], minimum=0),
        "bs": Param(values["bs"], type=["null", "integer"], minimum=1),
        "warm_start": Param(
            values["warm_start"],
            type="boolean",
            description="start from the vectors of the model promoted before this date",
        ),
        "device": Param(values["device"], type="string", description="auto, cpu, cuda or cuda:N"),
        "gate_tolerance": Param(
            values["gate_tolerance"],
            type="number",
            minimum=0,
            description="a candidate may be this much worse (relative) than the model it replaces",
        ),
        "top_n": Param(values["top_n"], type="integer", minimum=1, description="recommendations per user"),
        "shuffle_partitions": Param(8, type="integer", minimum=1),
    }


SPARK_CONF = {
    "spark.sql.shuffle.partitions": "{{ params.shuffle_partitions }}",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
}


def spark_job(task_id: str, job: str, args: list[str], **kwargs) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id="spark_default",
        application=f"{JOBS_DIR}/{job}.py",
        name=f"cfrec-{task_id}-{{{{ ds }}}}",
        conf=SPARK_CONF,
        application_args=args,
        **kwargs,
    )


def model_steps(version_suffix: str = ""):
    """train >> evaluate >> gate >> score >> publish_tables >> publish, keyed on the logical date."""

    @task(task_id="train", pool=TRAIN_POOL, queue=TRAIN_QUEUE)
    def train(params=None, ds=None) -> dict:
        from cfmodel.pipeline import train_candidate

        options = {k: params[k] for k in ("model", "n_factors", "epochs", "lr", "wd", "bs")}
        return train_candidate(
            params["warehouse"],
            ds,
            options,
            warm_start=params["warm_start"],
            device=params["device"],
            version_suffix=version_suffix,
        )

    @task(task_id="evaluate")
    def evaluate(candidate: dict, params=None, ds=None) -> dict:
        from cfmodel.reporting.tables import publish_metrics

        return publish_metrics(params["warehouse"], ds, candidate["version"])

    @task(task_id="gate")
    def gate(candidate: dict, evaluation: dict, params=None, ds=None) -> dict:
        from cfmodel.pipeline import gate as gate_model

        return gate_model(params["warehouse"], ds, candidate["version"], params["gate_tolerance"])

    score = spark_job(
        "score",
        "score",
        [
            "--warehouse",
            "{{ params.warehouse }}",
            "--run-date",
            "{{ ds }}",
            "--top-n",
            "{{ params.top_n }}",
            "--model-version",
            "{{ ti.xcom_pull(task_ids='gate')['score_with'] }}",
        ],
    )
    publish_tables = spark_job(
        "publish_tables",
        "publish",
        [
            "--warehouse",
            "{{ params.warehouse }}",
            "--run-date",
            "{{ ds }}",
            "--model-version",
            "{{ ti.xcom_pull(task_ids='gate')['score_with'] }}",
        ],
    )

    @task(task_id="publish", outlets=[RECOMMENDATIONS])
    def publish(decision: dict, params=None, ds=None, outlet_events=None) -> dict:
        from cfmodel.reporting.tables import recommendations_summary

        summary = recommendations_summary(params["warehouse"], ds)
        outlet_events[RECOMMENDATIONS].extra = {"run_date": ds, "model_version": decision["score_with"], **summary}
        return summary

    candidate = train()
    evaluation = evaluate(candidate)
    decision = gate(candidate, evaluation)
    decision >> score >> publish_tables
    announced = publish(decision)
    publish_tables >> announced
    return candidate, announced
