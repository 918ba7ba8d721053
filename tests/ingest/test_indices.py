import pyarrow as pa
import pytest

from cfmodel.errors import CfrecError
from cfmodel.ingest import indices
from cfmodel.warehouse import Warehouse
from cfmodel.warehouse.schemas import USER_INDEX


def test_new_ids_are_numbered_after_the_known_ones_in_the_order_python_sorts_them():
    known = pa.table({"id": ["m", "a"], "index": [0, 1]}, schema=USER_INDEX.arrow)
    ids = pa.array(["é", "b", "a", "Z", "b", "😀", "~", "10", "9"])
    extended = indices.numbered(known, ids, USER_INDEX.arrow)
    new = sorted({"é", "b", "Z", "😀", "~", "10", "9"})  # as IdIndex.extended orders them
    assert extended.to_pydict() == {"id": ["m", "a", *new], "index": list(range(2 + len(new)))}
    assert indices.check_index(extended, "user_index") == 9
    assert indices.numbered(extended, pa.array(["a", "m"]), USER_INDEX.arrow).equals(extended)


def test_update_keeps_assignments_and_appends_new_ids_in_order(spark, tmp_path):
    wh = Warehouse.open(tmp_path / "wh")
    first = spark.createDataFrame([("b", "x"), ("a", "y"), ("c", "x")], "user_id string, item_id string")
    assert indices.update_indices(wh, first) == {
        "user_index": {"ids": 3, "new_ids": 3},
        "item_index": {"ids": 2, "new_ids": 2},
    }
    second = spark.createDataFrame([("0", "y"), ("d", "z"), ("a", "x")], "user_id string, item_id string")
    assert indices.update_indices(wh, second)["user_index"] == {"ids": 5, "new_ids": 2}
    users = dict(spark.read.parquet(str(wh.table("user_index"))).collect())
    assert users == {"a": 0, "b": 1, "c": 2, "0": 3, "d": 4}


def test_a_broken_index_is_refused():
    for ids, numbers in [(["a", "b"], [0, 2]), (["a", "a"], [0, 1]), (["a", "b"], [1, 1]), (["a", None], [0, 1])]:
        broken = pa.table({"id": ids, "index": numbers}, schema=USER_INDEX.arrow)
        with pytest.raises(CfrecError, match="not a contiguous index"):
            indices.check_index(broken, "user_index")
    assert indices.check_index(pa.table({"id": ["a"], "index": [0]}, schema=USER_INDEX.arrow), "user_index") == 1
