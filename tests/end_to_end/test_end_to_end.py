"""The whole nightly path on real MovieLens 100k as two nights (the `nights` fixture): `cfrec run`
in-process, and the nightly DAG backfilled under Airflow's scheduler."""

import json

import pandas as pd
import pytest
from support import NIGHT_DATE, NIGHT_OPTIONS, NIGHTS

from cfmodel.cli import main
from cfrec_airflow.demo import describe_output

pytestmark = pytest.mark.slow

N_USERS, N_ITEMS, TOP_N = 943, 1682, 10


def assert_recommendations(warehouse, run_date, ml100k, model_version):
    partition = warehouse / "recommendations" / f"run_date={run_date}"
    assert (partition / "_SUCCESS").exists()
    recs = pd.read_parquet(partition)
    assert list(recs.columns) == [
        "user_id",
        "rank",
        "item_id",
        "score",
        "predicted_rating",
        "source",
        "model_version",
        "title",
        "because_item_id",
        "because_title",
    ]
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
    # Each row's reason is one of the user's own ratings, named with its title.
    reasons = recs.merge(rated, left_on=["user_id", "because_item_id"], right_on=["user_id", "item_id"])
    assert len(reasons) == len(recs) and recs["because_title"].notna().all()
    assert recs.groupby("user_id")["because_item_id"].nunique().mean() > 1.5  # not one item for everything

    ordered = recs.sort_values(["user_id", "rank"])
    assert (ordered.groupby("user_id")["score"].diff().dropna() <= 0).all()
    # The list is the ranking model's; the rating model beside it predicts a rating for every row.
    assert recs["predicted_rating"].between(1.0, 5.0).all()
    assert recs["predicted_rating"].nunique() > 100
    assert set(recs["model_version"]) == {model_version}

    table = pd.read_parquet(warehouse / "recommendations")
    assert sorted(table["run_date"].astype(str).unique()) == list(NIGHTS)
    return recs


RUN_DATE, OPTIONS = NIGHT_DATE, NIGHT_OPTIONS
# Columns that record when and how long, not what.
VOLATILE = {"ingest_report": ["seconds"], "model_runs": ["created_at", "train_seconds"]}
COMPARED = (
    "ratings",
    "items",
    "users",
    "ingest_report",
    "quality",
    "recommendations",
    "similar_items",
    "item_factors",
    "user_factors",
    "metrics",
    "model_runs",
    "user_index",
    "item_index",
    "datasets",
)


def frozen(value):
    """Arrays, lists and maps (lists of pairs) as nested tuples: comparable and sortable."""
    if hasattr(value, "__len__") and not isinstance(value, str):
        return tuple(frozen(v) for v in value)
    return value


def table(warehouse, name):
    frame = pd.read_parquet(warehouse / name).drop(columns=VOLATILE.get(name, [])).map(frozen)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_cfrec_run_on_movielens_100k(nights, ml100k, capsys, spark):
    warehouse = nights.cli
    assert (
        main(
            [
                "sql",
                "--warehouse",
                str(warehouse),
                "--format",
                "json",
                "SELECT sum(input_rows)::BIGINT AS input_rows, sum(clean_rows)::BIGINT AS clean_rows, "
                "sum(rejected_rows)::BIGINT AS rejected_rows, min(item_rows) AS item_rows FROM ingest_report",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)[0]
    assert (report["input_rows"], report["clean_rows"], report["rejected_rows"]) == (100_000, 100_000, 0)
    assert report["item_rows"] == N_ITEMS

    first = assert_recommendations(warehouse, RUN_DATE, ml100k, f"rank-{RUN_DATE}")
    items = pd.read_parquet(warehouse / "items").set_index("item_id")
    assert items.loc["543", "title"] == "Misérables, Les (1995)"
    assert items.loc["1", "year"] == 1995 and list(items.loc["1", "genres"]) == ["Animation", "Children's", "Comedy"]

    config = json.loads((warehouse / "models" / f"rank-{RUN_DATE}" / "config.json").read_text())
    assert (config["n_users"], config["n_items"], config["n_factors"]) == (N_USERS, N_ITEMS, 128)
    assert config["hparams"]["history_dropout"] == 0.8
    # Published: refitted on every rating; the validated model, measured above, beside it.
    assert (warehouse / "models" / f"rank-{RUN_DATE}" / "holdout_model.pt").exists()
    assert config["hparams"]["rating"]["model_type"] == "dot" and config["hparams"]["rating"]["y_range"] == [0.0, 5.5]
    assert config["train"]["epochs"] == OPTIONS["epochs"]
    metrics = json.loads((warehouse / "models" / f"rank-{RUN_DATE}" / "metrics.json").read_text())
    assert metrics["valid"]["rating_model"]["rmse"] < 0.95
    # The lists beat the most-popular list on the hold-out, or the gate would not have let them out.
    assert metrics["valid"]["model"]["ndcg@10"] > 1.3 * metrics["valid"]["popularity"]["ndcg@10"]
    assert pd.read_parquet(warehouse / "similar_items").groupby("item_id").size().eq(OPTIONS["similar_k"]).all()

    # Re-scoring the same date replaces the partition rather than adding to it.
    assert main(["score", "--warehouse", str(warehouse), "--run-date", RUN_DATE]) == 0
    capsys.readouterr()
    again = assert_recommendations(warehouse, RUN_DATE, ml100k, f"rank-{RUN_DATE}")
    pd.testing.assert_frame_equal(
        first.sort_values(["user_id", "rank"]).reset_index(drop=True),
        again.sort_values(["user_id", "rank"]).reset_index(drop=True),
    )
    assert sorted(p.name for p in (warehouse / "recommendations").iterdir()) == [f"run_date={d}" for d in NIGHTS]


def test_nightly_dag_on_movielens_100k(nights, airflow, ml100k):
    warehouse, last = nights.dag, nights.runs[-1]
    states = {name: t["state"] for name, t in airflow.tasks("cfrec_nightly", last["dag_run_id"]).items()}
    assert last["state"] == "success", states
    assert set(states.values()) == {"success"} and {"ingest", "train", "score", "publish_tables"} <= set(states), states
    assert_recommendations(warehouse, RUN_DATE, ml100k, f"rank-{RUN_DATE}")
    assert (warehouse / "models" / "CURRENT").read_text().strip() == f"rank-{RUN_DATE}"
    for name in ("similar_items", "item_factors", "user_factors", "model_runs", f"metrics/run_date={RUN_DATE}"):
        assert (warehouse / name / "_SUCCESS").exists(), name

    # What `make demo` prints at the end: each shown user's recommendations with titles and scores.
    shown = describe_output(warehouse, RUN_DATE)
    recs = pd.read_parquet(warehouse / "recommendations" / f"run_date={RUN_DATE}")
    best = recs[(recs["user_id"] == recs["user_id"].iloc[0]) & (recs["rank"] == 1)].iloc[0]
    assert f" 1. {best['title']}  [" in shown and f"predicted {best['predicted_rating']:.2f}" in shown


def test_cfrec_run_and_the_nightly_dag_write_identical_tables(nights):
    cli, dag = nights.cli, nights.dag
    for name in COMPARED:
        pd.testing.assert_frame_equal(table(cli, name), table(dag, name), obj=name)
    decisions = [json.loads((w / "models" / f"rank-{RUN_DATE}" / "promotion.json").read_text()) for w in (cli, dag)]
    assert [d["promoted"] for d in decisions] == [True, True] and decisions[0]["reason"] == decisions[1]["reason"]
