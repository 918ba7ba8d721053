"""`cfrec demo`: synthetic data through the real nightly DAG, in-process, then a look at the output."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from cfmodel.config import ScoreConfig
from cfmodel.datasets.synth import SynthSpec, generate
from cfmodel.errors import CfrecError
from cfmodel.registry.registry import ModelRegistry
from cfmodel.reporting.report import report_path
from cfmodel.warehouse import Warehouse
from cfmodel.warehouse.schemas import INGEST_REPORT, ITEMS, MODELS, RATINGS, RECOMMENDATIONS, REJECTS
from cfrec_airflow import local as airflow_local

SHOW_USERS = 3
SHOW_ITEMS = 5


def _predicted(rating: float | None) -> str:
    return "" if rating is None or rating != rating else f"  predicted {rating:.2f}"  # NaN: none


def describe_output(warehouse: Path, run_date: str) -> str:
    import pandas as pd

    wh = Warehouse.open(warehouse, create=False)
    lines = [f"Tables in {warehouse}:"]
    for table in (RATINGS, ITEMS, REJECTS, INGEST_REPORT, RECOMMENDATIONS):
        path = wh.table(table)
        lines.append(f"  {table.name:<16} {len(pd.read_parquet(path)):>8} rows   {path}")
    lines.append(f"  {MODELS:<16} current = {ModelRegistry(wh.models).current()}")

    items = pd.read_parquet(wh.table(ITEMS))
    items["genres"] = items["genres"].map(lambda g: ", ".join(g))
    ratings = pd.read_parquet(wh.table(RATINGS))
    recs = pd.read_parquet(wh.partition(RECOMMENDATIONS, run_date))
    users = recs["user_id"].drop_duplicates().head(SHOW_USERS)
    for user in users:
        liked = ratings[ratings["user_id"] == user].nlargest(3, ["rating", "timestamp"]).merge(items, on="item_id")
        # Recommendations carry their own title (null when the item is unknown); only genres are looked up.
        top = (
            recs[recs["user_id"] == user]
            .nsmallest(SHOW_ITEMS, "rank")
            .merge(items[["item_id", "genres"]], on="item_id", how="left")
        )
        lines.append(f"\nUser {user} rated highly:")
        lines += [f"    {r.rating:.0f}*  {r.title}  [{r.genres}]" for r in liked.itertuples()]
        lines.append("  and is recommended:")
        lines += [f"  {r.rank:>2}. {r.title}  [{r.genres}]{_predicted(r.predicted_rating)}" for r in top.itertuples()]
    return "\n".join(lines)


def demo_conf(input_dir: Path, warehouse: Path, scoring: ScoreConfig) -> dict:
    """The demo night's `dag_run.conf`: the synthetic files, the warehouse and every scoring option given."""
    return {"source": "movielens-100k", "input_path": str(input_dir), "warehouse": str(warehouse), **asdict(scoring)}


def run_demo(workdir: str | Path, users: int, items: int, ratings: int, scoring: ScoreConfig) -> dict:
    workdir = Path(workdir).expanduser().resolve()
    input_dir, warehouse, airflow_home = workdir / "input", workdir / "warehouse", workdir / "airflow"
    started = time.perf_counter()
    print(f"Writing a synthetic data set ({users} users, {items} items, {ratings} ratings) to {input_dir}")
    generate(input_dir, SynthSpec(n_users=users, n_items=items, n_ratings=ratings))

    airflow_local.configure(airflow_home)
    airflow_local.init_db()
    logical_date = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    run_date = logical_date.date().isoformat()
    print(f"Running DAG cfrec_nightly for {run_date} in-process (SQLite metadata in {airflow_home}, local Spark)")
    dag_run = airflow_local.run_dag("cfrec_nightly", logical_date, demo_conf(input_dir, warehouse, scoring))
    states = airflow_local.task_states(dag_run)
    if dag_run.state != "success":
        raise CfrecError(
            f"DAG run ended {dag_run.state} (tasks: {states}); task logs are under {airflow_home / 'logs'}"
        )
    print(f"DAG run succeeded: {states}\n")
    print(describe_output(warehouse, run_date))
    report = report_path(warehouse, run_date)
    print(f"\nreport: {report}")
    return {
        "dag_run": str(dag_run.state),
        "tasks": states,
        "warehouse": str(warehouse),
        "report": str(report),
        "seconds": round(time.perf_counter() - started, 1),
    }
