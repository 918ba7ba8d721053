"""Example downstream DAG: runs whenever fresh recommendations are published, and writes the day's
most recommended items with DuckDB (no cluster needed)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from cfrec_airflow.settings import settings
from cfrec_airflow.tasks import RECOMMENDATIONS, default_args


@dag(
    dag_id="cfrec_recommendations_consumer",
    description="Most recommended items of each fresh recommendations partition",
    schedule=[RECOMMENDATIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args=default_args(),
    tags=["cfrec", "example"],
)
def cfrec_recommendations_consumer():
    @task(pool=settings().writer_pool)
    def most_recommended(triggering_asset_events=None) -> list[dict]:
        from dataclasses import asdict

        from cfmodel import pipeline
        from cfmodel.config import Night

        results = []
        for event in triggering_asset_events[RECOMMENDATIONS]:
            night = Night(event.extra["warehouse"], event.extra["run_date"])
            results.append(asdict(pipeline.most_recommended(night)))
        return results

    most_recommended()


cfrec_recommendations_consumer()
