"""cfrec_nightly: the night's rating files -> ingest -> quality gate -> warm-started training ->
evaluation -> model gate -> scoring -> published tables and a `cfrec_recommendations` Asset event.

Every task is keyed on the logical date and overwrites what it wrote for that date, so backfills
and re-runs reproduce the same tables. Every option of `cfrec run` is a param of this DAG.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import dag

from cfmodel.config import IngestConfig, QualityConfig
from cfrec_airflow.settings import settings
from cfrec_airflow.tasks import MODEL_STEPS, default_args, ingest_steps, input_ready, model_steps, params

env = settings()


@dag(
    dag_id="cfrec_nightly",
    description="Nightly ratings ingest, warm-started training, gated promotion and top-N scoring",
    schedule=env.nightly_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cfrec"],
    params=params(IngestConfig, QualityConfig, *MODEL_STEPS, input_path=env.input_path),
)
def cfrec_nightly():
    wait_for_input = PythonSensor(
        task_id="wait_for_input",
        python_callable=input_ready,
        mode="reschedule",
        poke_interval=300,
        # Reaching the timeout fails the run at once (Airflow never retries a sensor's timeout); the
        # retries are for a poke that fails, e.g. an unreachable mount.
        timeout=timedelta(hours=env.input_timeout_hours),
    )
    ingest, checked = ingest_steps()
    candidate, _ = model_steps()
    wait_for_input >> ingest
    checked >> candidate


cfrec_nightly()
