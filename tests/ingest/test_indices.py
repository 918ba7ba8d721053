import pytest
from pyspark.sql import functions as F

from cfmodel.errors import CfrecError
from cfmodel.ingest import indices
from cfmodel.warehouse import Warehouse
from cfmodel.warehouse.schemas import USER_INDEX


def test_numbering_is_contiguous_and_sorted_across_partitions(spark):
    ids = [f"u{n:05d}" for n in range(0, 3000, 3)]
    frame = spark.createDataFrame([(i,) for i in reversed(ids)], "id string").repartition(7)
    numbered = indices._numbered(frame, start=40)
    try:
        assert numbered.rdd.getNumPartitions() > 1
        got = dict(numbered.collect())
    finally:
        numbered.unpersist()
    assert got == {i: 40 + n for n, i in enumerate(sorted(ids))}


def test_update_keeps_assignments_and_appends_new_ids_in_order(spark, tmp_path):
    wh = Warehouse.open(tmp_path / "wh")
    first = spark.createDataFrame([("b", "x"), ("a", "y"), ("c", "x")], "user_id string, item_id string")
    assert indices.update_indices(spark, wh, first) == {
        "user_index": {"ids": 3, "new_ids": 3},
        "item_index": {"ids": 2, "new_ids": 2},
    }
    second = spark.createDataFrame([("0", "y"), ("d", "z"), ("a", "x")], "user_id string, item_id string")
    assert indices.update_indices(spark, wh, second)["user_index"] == {"ids": 5, "new_ids": 2}
    users = dict(spark.read.parquet(str(wh.table("user_index"))).collect())
    assert users == {"a": 0, "b": 1, "c": 2, "0": 3, "d": 4}


def test_a_broken_index_is_refused(spark):
    broken = spark.createDataFrame([("a", 0), ("b", 2)], USER_INDEX.ddl)
    with pytest.raises(CfrecError, match="not a contiguous index"):
        indices.check_index(broken, "user_index")
    assert indices.check_index(broken.where(F.col("id") == "a"), "user_index") == 1
