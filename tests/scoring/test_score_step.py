"""The score step on a small planted warehouse: who gets a list, and when the step refuses to publish."""

import shutil

import pandas as pd
import pytest
from pyspark.sql import functions as F
from support import planted_ratings, write_warehouse

from cfmodel.errors import CfrecError
from cfmodel.registry.registry import POPULARITY_LISTS, ModelRegistry
from cfmodel.scoring import recommend as score_module
from cfmodel.training.config import TrainConfig
from cfmodel.training.trainer import train

N_ITEMS = 24


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """Planted ratings plus one user who rated every item."""
    ratings = planted_ratings(n_users=30, n_items=N_ITEMS, per_user=10)
    fan = pd.DataFrame({"user_id": "fan", "item_id": [f"i{i}" for i in range(N_ITEMS)], "rating": 4.0, "timestamp": 1})
    wh = write_warehouse(tmp_path_factory.mktemp("score") / "wh", pd.concat([ratings, fan], ignore_index=True))
    trained = train(wh, "2026-04-01", TrainConfig.for_model("dot", epochs=2), device="cpu")
    ModelRegistry(wh / "models").set_current(trained.version)
    return wh


@pytest.fixture(scope="module")
def indexed(warehouse, tmp_path_factory):
    """The same warehouse with the id index tables an ingest writes: the score step then takes the
    catalog from the item index and counts the items in the gathered lists."""
    copy = tmp_path_factory.mktemp("indexed") / "wh"
    shutil.copytree(warehouse, copy)
    ratings = pd.read_parquet(copy / "ratings")
    for column, table in (("user_id", "user_index"), ("item_id", "item_index")):
        ids = sorted(ratings[column].unique(), reverse=True)
        (copy / table).mkdir()
        pd.DataFrame({"id": ids, "index": range(len(ids))}).to_parquet(copy / table / "part-0.parquet")
    return copy


@pytest.fixture(params=["warehouse", "indexed"])
def any_warehouse(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("version", [None, POPULARITY_LISTS])
def test_both_ways_of_counting_items_publish_the_same_lists(spark, warehouse, indexed, version):
    reports = [score_module.score(spark, wh, "2026-04-04", 5, version) for wh in (warehouse, indexed)]
    assert reports[0].users_by_source == reports[1].users_by_source and reports[0].rows == reports[1].rows
    tables = [
        pd.read_parquet(wh / "recommendations" / "run_date=2026-04-04").sort_values(["user_id", "rank"])
        for wh in (warehouse, indexed)
    ]
    pd.testing.assert_frame_equal(*(t.reset_index(drop=True) for t in tables))


@pytest.mark.parametrize("version", [None, POPULARITY_LISTS])
def test_a_user_who_rated_every_item_gets_no_list_and_the_night_goes_on(spark, any_warehouse, version):
    warehouse = any_warehouse
    report = score_module.score(spark, warehouse, "2026-04-02", 5, version)
    assert (report.users, report.users_with_nothing_left, report.rows) == (30, 1, 150)
    recs = pd.read_parquet(warehouse / "recommendations" / "run_date=2026-04-02")
    assert "fan" not in set(recs["user_id"]) and recs["user_id"].nunique() == 30


def test_a_user_scoring_dropped_fails_the_step_before_anything_is_published(spark, any_warehouse, monkeypatch):
    warehouse = any_warehouse
    scored = score_module.score_rated

    def dropping(*args):  # a scoring bug that loses a user who does have unrated items
        return scored(*args).where(F.col("user_id") != "u3")

    monkeypatch.setattr(score_module, "score_rated", dropping)
    with pytest.raises(CfrecError, match="scoring lost users: 1 users"):
        score_module.score(spark, warehouse, "2026-04-03", 5)
    assert not (warehouse / "recommendations" / "run_date=2026-04-03").exists()


def test_each_users_rated_items_are_gathered_whatever_the_frames_id_types(spark):
    """Ids declared non-null, or numbers: the gathering casts them as the catalog spells them."""
    import numpy as np

    from cfmodel.scoring.rated import gather_rated

    rows = [(1, 10), (2, 11), (1, 12), (3, 10), (1, 10)]
    ratings = spark.createDataFrame(rows, "user_id int not null, item_id long not null")
    catalog = np.array(["12", "11", "10"], dtype=object)
    gathered = {row["user_id"]: sorted(row["rated"]) for row in gather_rated(spark, ratings, catalog, 5).collect()}
    assert gathered == {"1": [0, 2, 2], "2": [1], "3": [2]}


def test_the_rated_items_read_from_the_tables_files_are_those_spark_gathers(spark, tmp_path, monkeypatch):
    """Users with ratings in several files and row groups, in chunks smaller than a row group: each
    gets one row with every rated item once, as the gathering through Spark's scan gives."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cfmodel.scoring import rated

    rng = np.random.default_rng(3)
    users = np.array([f"u{i}" for i in rng.integers(0, 40, 3000)], dtype=object)
    items = np.array([f"i{i}" for i in rng.integers(0, 300, 3000)], dtype=object)
    (tmp_path / "ratings").mkdir()
    for part, rows in enumerate((slice(0, 1700), slice(1700, 3000))):
        table = pa.table({"user_id": users[rows], "item_id": items[rows], "rating": np.ones(3000)[rows]})
        pq.write_table(table, tmp_path / "ratings" / f"part-{part}.parquet", row_group_size=500)
    files = sorted((tmp_path / "ratings").glob("*.parquet"))
    assert [pq.ParquetFile(f).num_row_groups for f in files] == [4, 3]
    catalog = np.array([f"i{i}" for i in range(299, -1, -1)], dtype=object)
    monkeypatch.setattr(rated, "RATINGS_PER_GATHER_TASK", 200)

    def lists(frame):
        found = [(row["user_id"], sorted(row["rated"])) for row in frame.collect()]
        assert len({user for user, _ in found}) == len(found)  # one row per user
        return dict(found)

    from_files = lists(rated.gather_rated_files(spark, files, catalog))
    through_spark = lists(
        rated.gather_rated(spark, spark.read.parquet(*map(str, files)).select("user_id", "item_id"), catalog, 3000)
    )
    expected = {}
    for user, item in zip(users, items):
        expected.setdefault(user, []).append(299 - int(item[1:]))
    assert from_files == through_spark == {user: sorted(found) for user, found in expected.items()}


@pytest.mark.parametrize(
    ("top_n", "candidates", "message"), [(0, 0, "top-N must be at least 1"), (5, -1, "candidates")]
)
def test_a_bad_request_is_refused_before_any_work_either_way(spark, any_warehouse, top_n, candidates, message):
    with pytest.raises(CfrecError, match=message):
        score_module.score(spark, any_warehouse, "2026-04-05", top_n, candidates=candidates)
    assert not (any_warehouse / "recommendations" / "run_date=2026-04-05").exists()
