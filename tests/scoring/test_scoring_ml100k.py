"""Nightly scoring and the analytics tables on real MovieLens 100k.

One warehouse serves every test here: a good model trained for D1 without five users and
without item 50 (so those users have no vector and that item is unknown to the model), scored
and published for D1; then a deliberately poor model trained for D2, which the gate refuses,
and the D2 run that therefore scores with the D1 model.
"""

from datetime import UTC, date, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cfmodel.cli import main
from cfmodel.config import GateConfig
from cfmodel.registry.artifact import ArtifactConfig, ModelArtifact
from cfmodel.registry.gate import gate_for_date
from cfmodel.registry.registry import ModelRegistry
from cfmodel.reporting.metrics import publish_metrics
from cfmodel.reporting.tables import publish_tables
from cfmodel.scoring import recommend as score_module
from cfmodel.scoring.recommend import recommendations_summary, score
from cfmodel.training.config import TrainConfig
from cfmodel.training.trainer import train
from cfmodel.warehouse import Warehouse, publish
from cfmodel.warehouse.schemas import RECOMMENDATIONS
from cfmodel.warehouse.sql import query, register_spark_views

D1, D2 = "2026-03-01", "2026-03-02"
TOP_N, SIMILAR_K = 10, 5
COLD_USERS = {"1", "2", "3", "500", "943"}
UNSEEN_ITEM = "50"


def write_frame(frame):
    def write(tmp):
        tmp.mkdir()
        frame.to_parquet(tmp / "part-0.parquet", index=False)

    return write


@pytest.fixture(scope="module")
def nightly(spark, ml100k, tmp_path_factory):
    wh = Warehouse.open(tmp_path_factory.mktemp("scoring") / "wh")
    ratings = pd.read_csv(
        ml100k / "u.data",
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": "float32", "timestamp": "int64"},
    )
    items = pd.read_csv(
        ml100k / "u.item",
        sep="|",
        encoding="latin-1",
        header=None,
        usecols=[0, 1],
        names=["item_id", "title"],
        dtype=str,
    )
    publish(wh.table("items"), write_frame(items))

    seen = ratings[~ratings["user_id"].isin(COLD_USERS) & (ratings["item_id"] != UNSEEN_ITEM)]
    publish(wh.table("ratings"), write_frame(seen))
    # A rating model, whose scores are its predicted ratings; its lists fall below popularity on
    # MovieLens, so this gate judges ratings (the default gate would refuse it).
    by_rmse = GateConfig(gate_metric="rmse")
    # Not refitted on every rating, so some items keep untrained vectors, which no list may show.
    good = train(wh.root, D1, TrainConfig.for_model("dot", epochs=3, refit=False))
    first_gate = gate_for_date(wh.root, D1, good.version, by_rmse)
    publish(wh.table("ratings"), write_frame(ratings))  # the cold users and item arrive after training
    reports = {D1: score(spark, wh.root, D1, TOP_N)}
    tables = {D1: publish_tables(spark, wh.root, D1, similar_k=SIMILAR_K)}

    poor = train(wh.root, D2, TrainConfig.for_model("dot", epochs=1, lr=1e-5))
    second_gate = gate_for_date(wh.root, D2, poor.version, by_rmse)
    reports[D2] = score(spark, wh.root, D2, TOP_N)
    tables[D2] = publish_tables(spark, wh.root, D2, similar_k=SIMILAR_K)
    return SimpleNamespace(
        wh=wh,
        ratings=ratings,
        items=items,
        good=good,
        poor=poor,
        gates=(first_gate, second_gate),
        reports=reports,
        tables=tables,
    )


def recommendations(nightly, run_date):
    return pd.read_parquet(nightly.wh.partition("recommendations", run_date))


def expected_popular(ratings, user, n):
    counts = ratings.groupby("item_id").size().rename("n").reset_index()
    ranked = counts.sort_values(["n", "item_id"], ascending=[False, True])
    rated = set(ratings.loc[ratings["user_id"] == user, "item_id"])
    return ranked[~ranked["item_id"].isin(rated)].head(n)


def test_every_user_gets_n_ranked_unrated_items(nightly):
    recs = recommendations(nightly, D1)
    assert (nightly.wh.partition("recommendations", D1) / "_SUCCESS").exists()
    assert list(recs.columns) == RECOMMENDATIONS.column_names
    assert len(recs) == 943 * TOP_N and recs["user_id"].nunique() == 943
    ranks = recs.sort_values(["user_id", "rank"]).groupby("user_id")["rank"].apply(tuple)
    assert (ranks == tuple(range(1, TOP_N + 1))).all()
    assert recs.merge(nightly.ratings, on=["user_id", "item_id"]).empty, "an already-rated item was recommended"
    ordered = recs.sort_values(["user_id", "rank"])
    assert (ordered.groupby("user_id")["score"].diff().dropna() <= 0).all()
    titles = recs.merge(nightly.items, on="item_id", suffixes=("", "_items"))
    assert len(titles) == len(recs) and (titles["title"] == titles["title_items"]).all()
    assert set(recs["model_version"]) == {nightly.good.version}
    report = nightly.reports[D1]
    assert report.rows == 943 * TOP_N and report.users_by_source == {"model": 938, "popular": 5}
    assert report.users_with_fewer_than_n == 0


def test_model_lists_are_the_models_best_unrated_items(nightly):
    recs = recommendations(nightly, D1)
    model = recs[recs["source"] == "model"]
    # Predicted ratings within the 1-5 scale, though the model's y-range reaches 5.5.
    assert model["score"].between(1.0, 5.0).all() and UNSEEN_ITEM not in set(model["item_id"])
    f = nightly.good.factors()
    users, items = nightly.good.users, nightly.good.items
    untrained = set(items.ids[~nightly.good.trained_items])  # every rating of theirs was held out
    assert untrained and not untrained & set(model["item_id"])
    for user in ["10", "100", "250", "942"]:
        u = users.encode([user])[0]
        logits = f["user_vectors"][u] @ f["item_vectors"].T + f["user_bias"][u] + f["item_bias"]
        rated = set(nightly.ratings.loc[nightly.ratings["user_id"] == user, "item_id"])
        candidates = items.decode(np.argsort(-logits, kind="stable"))
        ranked = [i for i in candidates if i not in rated and i not in untrained][:TOP_N]
        mine = model[model["user_id"] == user].sort_values("rank")
        assert mine["item_id"].tolist() == ranked
        predicted = nightly.good.model(torch_long([u] * TOP_N), torch_long(items.encode(ranked))).detach().numpy()
        np.testing.assert_allclose(mine["score"], np.clip(predicted, 1.0, 5.0), rtol=1e-4)


def torch_long(values):
    import torch

    return torch.as_tensor(np.asarray(values), dtype=torch.long)


def test_users_without_vectors_get_the_popular_list(nightly):
    recs = recommendations(nightly, D1)
    popular = recs[recs["source"] == "popular"]
    assert set(popular["user_id"]) == COLD_USERS
    for user in COLD_USERS:
        expected = expected_popular(nightly.ratings, user, TOP_N)
        mine = popular[popular["user_id"] == user].sort_values("rank")
        assert mine["item_id"].tolist() == expected["item_id"].tolist()
        assert mine["score"].tolist() == expected["n"].astype(float).tolist()
    # item 50 is unknown to the model but is the most rated item: popular lists may offer it
    not_rated_50 = [u for u in COLD_USERS if expected_popular(nightly.ratings, u, 1)["item_id"].iloc[0] == UNSEEN_ITEM]
    assert all(
        popular[(popular["user_id"] == u) & (popular["rank"] == 1)]["item_id"].iloc[0] == UNSEEN_ITEM
        for u in not_rated_50
    )


def test_worse_model_is_not_promoted_and_the_night_scores_with_the_current_one(nightly):
    first, second = nightly.gates
    assert first.promoted and first.reason == "no model to judge against"
    assert not second.promoted and second.current == nightly.good.version == second.score_with
    assert second.metric == "rmse" and second.candidate_value > second.current_value * 1.01
    assert (nightly.wh.models / "CURRENT").read_text().strip() == nightly.good.version
    assert set(recommendations(nightly, D2)["model_version"]) == {nightly.good.version}

    runs = pd.read_parquet(nightly.wh.table("model_runs")).set_index("model_version")
    assert runs.loc[nightly.good.version, "promoted"] and runs.loc[nightly.good.version, "is_current"]
    assert runs.loc[nightly.good.version, "gate_metric"] == "rmse" and runs.loc[nightly.good.version, "gate_value"] < 1
    assert not runs.loc[nightly.poor.version, "promoted"] and not runs.loc[nightly.poor.version, "is_current"]
    assert "worse than current" in runs.loc[nightly.poor.version, "promotion_reason"]
    assert runs.loc[nightly.poor.version, "compared_with"] == nightly.good.version
    assert (
        runs.loc[nightly.good.version, "data_ratings"]
        == len(nightly.ratings)
        - (nightly.ratings["user_id"].isin(COLD_USERS) | (nightly.ratings["item_id"] == UNSEEN_ITEM)).sum()
    )
    assert runs.loc[nightly.good.version, "run_date"] == date(2026, 3, 1)
    assert runs["model_type"].tolist() == ["dot", "dot"] and runs["device"].tolist() == ["cpu", "cpu"]
    assert (runs["train_seconds"] > 0).all() and '"epochs": 1' in runs.loc[nightly.poor.version, "params"]


def test_metrics_partitions_hold_each_nights_model(nightly):
    metrics = pd.read_parquet(nightly.wh.table("metrics"))
    metrics["run_date"] = metrics["run_date"].astype(str)
    by_night = metrics.set_index(["run_date", "model_version", "split", "metric"])["value"]
    assert by_night[(D1, nightly.good.version, "valid", "rmse")] < 1.0
    own_rmse = nightly.poor.metrics["valid"]["model"]["rmse"]  # on its own hold-out
    assert by_night[(D2, nightly.poor.version, "valid", "rmse")] == pytest.approx(own_rmse)
    # The gate measured it again beside the good model, on the held-out ratings both know.
    second_gate = nightly.gates[1]
    assert second_gate.holdout_ratings > 0 and second_gate.candidate_value == pytest.approx(own_rmse, rel=0.02)
    assert (
        set(metrics["run_date"]) == {D1, D2}
        and not metrics.duplicated(["run_date", "model_version", "split", "metric"]).any()
    )
    # the ranking metrics stand beside the popularity baseline's; RMSE has no baseline
    ndcg = metrics[(metrics["run_date"] == D1) & (metrics["metric"] == "ndcg@10")].iloc[0]
    assert 0 < ndcg["value"] < 1 and 0 < ndcg["popularity"] < 1 and 0 < ndcg["evaluated_users"] <= 943
    assert not metrics["metric"].isin(["users", "unseen_rows"]).any()  # counts, not metrics
    assert metrics[metrics["metric"] == "rmse"]["popularity"].isna().all()

    again = publish_metrics(nightly.wh.root, D2, nightly.poor.version)
    assert again.versions == [nightly.poor.version]
    assert again.metrics[nightly.poor.version]["valid/rmse"]["model"] == pytest.approx(own_rmse)


def test_recommendations_summary_for_the_asset_event(nightly):
    summary = recommendations_summary(nightly.wh.root, D1)
    assert summary.rows == 943 * TOP_N and summary.users == 943
    assert summary.users_by_source == {"model": 938, "popular": 5}
    assert summary.model_versions == [nightly.good.version]
    from cfmodel.errors import CfrecError

    with pytest.raises(CfrecError, match="no published recommendations for 2031-01-01"):
        recommendations_summary(nightly.wh.root, "2031-01-01")


def test_similar_items_are_cosine_neighbours_never_the_item_itself(nightly):
    similar = pd.read_parquet(nightly.wh.table("similar_items"))
    trained = nightly.good.trained_items
    n_trained = int(trained.sum())  # items with every rating held out have no trained vector
    assert 1600 < n_trained < len(nightly.good.items)
    assert len(similar) == n_trained * SIMILAR_K and similar["item_id"].nunique() == n_trained
    untrained_ids = set(nightly.good.items.ids[~trained])
    assert not untrained_ids & (set(similar["item_id"]) | set(similar["similar_item_id"]))
    assert not (similar["item_id"] == similar["similar_item_id"]).any()
    assert similar["similarity"].between(-1.0001, 1.0001).all()
    assert (similar.sort_values(["item_id", "rank"]).groupby("item_id")["similarity"].diff().dropna() <= 0).all()
    vectors = nightly.good.factors()["item_vectors"]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for item in ["1", "181", "1682"]:
        i = nightly.good.items.encode([item])[0]
        if not trained[i]:
            continue
        cosine = unit @ unit[i]
        cosine[i] = -np.inf
        cosine[~trained] = -np.inf
        expected = nightly.good.items.decode(np.argsort(-cosine, kind="stable")[:SIMILAR_K]).tolist()
        assert similar[similar["item_id"] == item].sort_values("rank")["similar_item_id"].tolist() == expected


def test_factor_tables_hold_the_models_vectors(nightly):
    f = nightly.good.factors()
    for kind, ids in (("user", nightly.good.users), ("item", nightly.good.items)):
        table = pd.read_parquet(nightly.wh.table(f"{kind}_factors"))
        assert len(table) == len(ids) and set(table["model_version"]) == {nightly.good.version}
        index = ids.encode(table[f"{kind}_id"])
        np.testing.assert_array_equal(np.stack(table["factors"].to_numpy()), f[f"{kind}_vectors"][index])
        np.testing.assert_array_equal(table["bias"].to_numpy(), f[f"{kind}_bias"][index])


def canonical(frame: pd.DataFrame) -> list[tuple]:
    """Rows as comparable tuples whichever reader produced them: dates as text, arrays as tuples, NaN as None."""

    def cell(value):
        if isinstance(value, (list, tuple, np.ndarray)):
            return tuple(cell(v) for v in value)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, datetime) and value.tzinfo is not None:  # Spark hands back naive UTC
            return value.astimezone(UTC).replace(tzinfo=None).isoformat()
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return value.item() if isinstance(value, np.generic) else value

    frame = frame[sorted(frame.columns)]
    return sorted((tuple(cell(v) for v in row) for row in frame.itertuples(index=False, name=None)), key=repr)


def test_each_table_reads_the_same_with_pandas_spark_and_duckdb(nightly, spark):
    names = register_spark_views(spark, nightly.wh.root)
    assert set(names) >= {
        "recommendations",
        "similar_items",
        "item_factors",
        "user_factors",
        "metrics",
        "model_runs",
        "ratings",
        "items",
    }
    for name, partitioned in nightly.wh.tables().items():
        with_pandas = pd.read_parquet(nightly.wh.table(name))
        if partitioned:
            with_pandas["run_date"] = with_pandas["run_date"].astype(str)
        with_spark = spark.table(name).toPandas()
        with_duckdb = query(nightly.wh.root, f"SELECT * FROM {name}")
        assert len(with_pandas) == len(with_spark) == len(with_duckdb) > 0, name
        assert canonical(with_pandas) == canonical(with_spark) == canonical(with_duckdb), name
    assert spark.sql(f"SELECT count(*) FROM recommendations WHERE run_date = DATE'{D2}'").first()[0] == 943 * TOP_N


def test_crash_while_writing_leaves_the_previous_partition_intact(nightly, spark, monkeypatch):
    before = recommendations(nightly, D1).sort_values(["user_id", "rank"]).reset_index(drop=True)

    def crash(*args, **kwargs):  # the files are written; the job dies before the partition is swapped in
        raise RuntimeError("driver lost")

    monkeypatch.setattr(score_module, "check_recommendations", crash)
    with pytest.raises(RuntimeError, match="driver lost"):
        score(spark, nightly.wh.root, D1, TOP_N)
    after = recommendations(nightly, D1).sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert sorted(p.name for p in nightly.wh.table("recommendations").iterdir()) == [f"run_date={D1}", f"run_date={D2}"]
    assert spark.read.parquet(str(nightly.wh.partition("recommendations", D1))).count() == 943 * TOP_N
    assert (
        query(nightly.wh.root, f"SELECT count(*) AS n FROM recommendations WHERE run_date = DATE '{D1}'")["n"][0]
        == 943 * TOP_N
    )


def test_cfrec_sql_answers_the_readme_questions(nightly, capsys):
    warehouse = str(nightly.wh.root)
    assert (
        main(
            [
                "sql",
                "--warehouse",
                warehouse,
                "--format",
                "csv",
                f"SELECT r.rank, i.title FROM recommendations r JOIN items i USING (item_id) "
                f"WHERE r.user_id = '1' AND r.run_date = DATE '{D1}' ORDER BY r.rank",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    expected = expected_popular(nightly.ratings, "1", TOP_N).merge(nightly.items, on="item_id")["title"].tolist()
    assert lines[0] == "rank,title" and [line.split(",", 1)[1].strip('"') for line in lines[1:]] == expected

    assert (
        main(
            [
                "sql",
                "--warehouse",
                warehouse,
                "--format",
                "json",
                "SELECT run_date, metric, value FROM metrics WHERE metric = 'rmse' ORDER BY run_date",
            ]
        )
        == 0
    )
    import json

    trend = json.loads(capsys.readouterr().out)
    assert [row["run_date"] for row in trend] == [D1, D2] and trend[0]["value"] < trend[1]["value"]

    assert main(["sql", "--warehouse", warehouse, "SELECT nonsense FROM recommendations"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cfrec sql: error: Binder Error") and err.count("\n") == 1


def test_model_version_argument_and_unknown_version(nightly, spark):
    from cfmodel.errors import CfrecError

    with pytest.raises(CfrecError, match="'dot-1999-01-01' not found"):
        score(spark, nightly.wh.root, D2, TOP_N, model_version="dot-1999-01-01")
    assert ModelRegistry(nightly.wh.models).current() == nightly.good.version


@pytest.mark.parametrize("model_type", ["nn", "rank"])
def test_other_model_types_score_through_score_all(nightly, spark, model_type):
    import torch

    from cfmodel.scoring.recommend import recommend
    from cfmodel.training.models import build_model

    users, items = nightly.good.users, nightly.good.items
    torch.manual_seed(0)
    module = build_model(model_type, n_users=len(users), n_items=len(items)).eval()
    model = ModelArtifact(f"{model_type}-test", module, users, items, ArtifactConfig(model_type=model_type), {})
    frame = spark.read.parquet(str(nightly.wh.table("ratings")))
    recs = recommend(spark, frame, model, TOP_N).toPandas()
    assert recs.groupby("user_id").size().eq(TOP_N).all() and recs["user_id"].nunique() == 943
    assert recs.merge(nightly.ratings, on=["user_id", "item_id"]).empty
    with torch.no_grad():
        for user in ["10", "942"]:
            u = users.encode([user])[0]
            scores = module.score_all(torch.tensor([u]))[0].numpy()
            rated = set(nightly.ratings.loc[nightly.ratings["user_id"] == user, "item_id"])
            ranked = [i for i in items.decode(np.argsort(-scores, kind="stable")) if i not in rated][:TOP_N]
            mine = recs[recs["user_id"] == user].sort_values("rank")
            assert mine["item_id"].tolist() == ranked
            np.testing.assert_allclose(mine["score"], scores[items.encode(ranked)], rtol=1e-5)


def test_nan_scores_refused_in_a_spark_worker_are_one_line_and_publish_nothing(nightly, capsys):
    import torch

    broken = ModelArtifact(
        "dot-2031-01-01", nightly.good.model, nightly.good.users, nightly.good.items, nightly.good.config, {}
    )
    state = {k: v.clone() for k, v in nightly.good.model.state_dict().items()}
    try:
        with torch.no_grad():
            nightly.good.model.i_weight.weight[3] = float("nan")
        ModelRegistry(nightly.wh.models).save(broken)
    finally:
        nightly.good.model.load_state_dict(state)
    argv = ["score", "--warehouse", str(nightly.wh.root), "--run-date", "2031-01-01", "--model-version", broken.version]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ValueError: the model produced NaN scores; refusing to rank them" in err, err
    assert not nightly.wh.partition(RECOMMENDATIONS, "2031-01-01").exists()


def test_a_night_without_a_usable_model_publishes_everyones_popular_list(nightly, spark, tmp_path):
    from cfmodel.registry.registry import POPULARITY_LISTS

    wh = Warehouse.open(tmp_path / "wh")
    publish(wh.table("items"), write_frame(nightly.items))
    publish(wh.table("ratings"), write_frame(nightly.ratings))
    report = score(spark, wh.root, D1, TOP_N, model_version=POPULARITY_LISTS)
    assert report.users == 943 and report.users_by_source == {"model": 0, "popular": 943}
    recs = recommendations(SimpleNamespace(wh=wh), D1)
    assert set(recs["model_version"]) == {POPULARITY_LISTS} and set(recs["source"]) == {"popular"}
    for user in ("1", "405"):
        mine = recs[recs["user_id"] == user].sort_values("rank")
        assert mine["item_id"].tolist() == expected_popular(nightly.ratings, user, TOP_N)["item_id"].tolist()
    assert recs["title"].notna().all() and recs["because_item_id"].isna().all()
    tables = publish_tables(spark, wh.root, D1, POPULARITY_LISTS)
    assert (tables.model_version, tables.similar_items, tables.user_factors) == (POPULARITY_LISTS, 0, 0)
    assert not wh.table("similar_items").exists()
