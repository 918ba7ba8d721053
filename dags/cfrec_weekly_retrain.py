"""cfrec_weekly_retrain: a cold-start retrain with the full hyper-parameters on everything ingested
so far, gated and scored like the nightly model. Its versions carry a `-full` suffix."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from cfrec_airflow.tasks import default_args, model_params, model_steps


@dag(
    dag_id="cfrec_weekly_retrain",
    description="Weekly cold-start retrain with full hyper-parameters, gated and scored",
    schedule=os.environ.get("CFREC_WEEKLY_SCHEDULE", "0 6 * * 0"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cfrec"],
    params=model_params(warm_start=False, n_factors=100, epochs=20),
)
def cfrec_weekly_retrain():
    model_steps(version_suffix="-full")


cfrec_weekly_retrain()
