"""cfrec_nightly: the night's rating files -> ingest -> quality gate -> warm-started training ->
evaluation -> model gate -> scoring -> published tables and a `cfrec_recommendations` Asset event.

Every task is keyed on the logical date and overwrites what it wrote for that date, so backfills
and re-runs reproduce the same tables.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import Param, dag, task

from cfrec_airflow.tasks import default_args, model_params, model_steps, spark_job


def _input_ready(source: str, input_path: str, ds: str) -> bool:
    from cfmodel.pipeline import input_ready

    return input_ready(source, input_path, ds)


@dag(
    dag_id="cfrec_nightly",
    description="Nightly ratings ingest, warm-started training, gated promotion and top-N scoring",
    schedule=os.environ.get("CFREC_NIGHTLY_SCHEDULE", "@daily"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cfrec"],
    params={
        "source": Param("movielens-100k", type="string", description="layout of the input files"),
        "input_path": Param(
            os.environ.get("CFREC_INPUT_PATH", "/data/cfrec/input"),
            type="string",
            description="folder of the night's files; {ds} is replaced by the run date",
        ),
        "max_reject_fraction": Param(
            0.01, type="number", minimum=0, maximum=1, description="quality gate: most rows that may be rejected"
        ),
        "max_drop_fraction": Param(
            0.5,
            type="number",
            minimum=0,
            maximum=1,
            description="quality gate: largest drop in clean rows against the previous run",
        ),
        "input_timeout_hours": Param(12, type="number", minimum=0),
        **model_params(),
    },
)
def cfrec_nightly():
    wait_for_input = PythonSensor(
        task_id="wait_for_input",
        python_callable=_input_ready,
        op_kwargs={"source": "{{ params.source }}", "input_path": "{{ params.input_path }}", "ds": "{{ ds }}"},
        mode="reschedule",
        poke_interval=300,
        timeout=timedelta(hours=12),
        retries=0,
    )
    ingest = spark_job(
        "ingest",
        "ingest",
        [
            "--source",
            "{{ params.source }}",
            "--input",
            "{{ params.input_path | replace('{ds}', ds) }}",
            "--warehouse",
            "{{ params.warehouse }}",
            "--run-date",
            "{{ ds }}",
        ],
    )

    @task(task_id="quality_gate")
    def quality_gate(params=None, ds=None) -> dict:
        from cfmodel.ingest.quality import check_quality

        return check_quality(params["warehouse"], ds, params["max_reject_fraction"], params["max_drop_fraction"])

    candidate, _ = model_steps()
    wait_for_input >> ingest >> quality_gate() >> candidate


cfrec_nightly()
