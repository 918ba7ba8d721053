"""cfrec_weekly_retrain: a cold-start retrain with the full hyper-parameters on everything ingested
so far, gated and scored like the nightly model. Its versions carry a `-full` suffix."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from cfrec_airflow.settings import settings
from cfrec_airflow.tasks import MODEL_STEPS, default_args, model_steps, params


@dag(
    dag_id="cfrec_weekly_retrain",
    description="Weekly cold-start retrain with full hyper-parameters, gated and scored",
    schedule=settings().weekly_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cfrec"],
    params=params(*MODEL_STEPS, warm_start="none", n_factors=100, epochs=20, version_suffix="-full"),
)
def cfrec_weekly_retrain():
    model_steps()


cfrec_weekly_retrain()
