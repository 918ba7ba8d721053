"""The whole nightly path on real MovieLens 100k: `cfrec run` in-process, and the DAG via dag.test()."""

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from cfmodel.cli import main
from cfrec_airflow import local as airflow_local
from cfrec_airflow.demo import describe_output

pytestmark = pytest.mark.slow

N_USERS, N_ITEMS, TOP_N = 943, 1682, 10


def assert_recommendations(warehouse, run_date, ml100k, model_version):
    partition = warehouse / "recommendations" / f"run_date={run_date}"
    assert (partition / "_SUCCESS").exists()
    recs = pd.read_parquet(partition)
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score", "source", "model_version", "title"]
    assert set(recs["source"]) == {"model"}  # every MovieLens user is in the model
    assert recs["title"].notna().all()
    assert len(recs) == N_USERS * TOP_N
    assert recs["user_id"].nunique() == N_USERS
    ranks = recs.groupby("user_id")["rank"].apply(lambda r: tuple(sorted(r)))
    assert (ranks == tuple(range(1, TOP_N + 1))).all()
    assert not recs.duplicated(["user_id", "item_id"]).any()

    rated = pd.read_csv(ml100k / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"], dtype=str)
    overlap = recs.merge(rated, on=["user_id", "item_id"])
    assert overlap.empty, f"{len(overlap)} already-rated items recommended"
    assert set(recs["item_id"]) <= set(rated["item_id"])

    ordered = recs.sort_values(["user_id", "rank"])
    assert (ordered.groupby("user_id")["score"].diff().dropna() <= 0).all()
    assert recs["score"].between(0.0, 5.5).all()
    assert set(recs["model_version"]) == {model_version}

    table = pd.read_parquet(warehouse / "recommendations")
    assert table["run_date"].astype(str).unique().tolist() == [run_date]
    return recs


def test_cfrec_run_on_movielens_100k(spark, ml100k, tmp_path, capsys):
    warehouse, run_date = tmp_path / "wh", "2026-11-20"
    argv = [
        "run",
        "--source",
        "movielens-100k",
        "--input",
        str(ml100k),
        "--warehouse",
        str(warehouse),
        "--run-date",
        run_date,
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ingest"]["input_rows"] == 100_000 and report["ingest"]["clean_rows"] == 100_000
    assert report["ingest"]["rejected_rows"] == 0 and report["ingest"]["item_rows"] == N_ITEMS
    assert report["train"]["valid_rmse"] < 0.95
    assert report["score"]["rows"] == N_USERS * TOP_N and report["score"]["users_without_vector"] == 0

    first = assert_recommendations(warehouse, run_date, ml100k, f"dot-{run_date}")
    items = pd.read_parquet(warehouse / "items").set_index("item_id")
    assert items.loc["543", "title"] == "Misérables, Les (1995)"
    assert items.loc["1", "year"] == 1995 and list(items.loc["1", "genres"]) == ["Animation", "Children's", "Comedy"]

    config = json.loads((warehouse / "models" / f"dot-{run_date}" / "config.json").read_text())
    assert (config["n_users"], config["n_items"], config["n_factors"], config["y_range"]) == (
        N_USERS,
        N_ITEMS,
        50,
        [0.0, 5.5],
    )

    # Re-scoring the same date replaces the partition rather than adding to it.
    assert main(["score", "--warehouse", str(warehouse), "--run-date", run_date]) == 0
    capsys.readouterr()
    again = assert_recommendations(warehouse, run_date, ml100k, f"dot-{run_date}")
    pd.testing.assert_frame_equal(
        first.sort_values(["user_id", "rank"]).reset_index(drop=True),
        again.sort_values(["user_id", "rank"]).reset_index(drop=True),
    )
    assert [p.name for p in (warehouse / "recommendations").iterdir()] == [f"run_date={run_date}"]


def test_nightly_dag_on_movielens_100k(airflow_db, ml100k, tmp_path):
    warehouse = tmp_path / "wh"
    logical_date = datetime(2026, 11, 21, tzinfo=UTC)
    conf = {"source": "movielens-100k", "input_path": str(ml100k), "warehouse": str(warehouse), "top_n": TOP_N}
    dag_run = airflow_local.run_dag("cfrec_nightly", logical_date, conf)
    states = airflow_local.task_states(dag_run)
    assert dag_run.state == "success", states
    assert set(states.values()) == {"success"} and {"ingest", "train", "score", "publish_tables"} <= set(states), states

    assert_recommendations(warehouse, "2026-11-21", ml100k, "dot-2026-11-21")
    report = pd.read_parquet(warehouse / "ingest_report" / "run_date=2026-11-21").iloc[0]
    assert report["input_rows"] == 100_000 and report["clean_rows"] == 100_000
    metrics = json.loads((warehouse / "models" / "dot-2026-11-21" / "metrics.json").read_text())
    assert metrics["valid_rmse"] < 0.95
    assert (warehouse / "models" / "CURRENT").read_text().strip() == "dot-2026-11-21"
    for table in ("similar_items", "item_factors", "user_factors", "model_runs", "metrics/run_date=2026-11-21"):
        assert (warehouse / table / "_SUCCESS").exists(), table

    # What `make demo` prints at the end: each shown user's recommendations with titles and scores.
    shown = describe_output(warehouse, "2026-11-21")
    recs = pd.read_parquet(warehouse / "recommendations" / "run_date=2026-11-21")
    best = recs[(recs["user_id"] == recs["user_id"].iloc[0]) & (recs["rank"] == 1)].iloc[0]
    assert f" 1. {best['title']}  [" in shown and f"predicted {best['score']:.2f}" in shown
