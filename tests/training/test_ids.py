import numpy as np
import pandas as pd
import pytest

from cfmodel.training.ids import IdIndex


def test_from_values_is_sorted_distinct_and_keeps_spelling():
    index = IdIndex.from_values(["b", "007", "a", "b", "7"])
    assert list(index.ids) == ["007", "7", "a", "b"]
    assert len(index) == 4


def test_encode_decode_round_trip_and_unknown_ids():
    index = IdIndex.from_values(["u1", "u2", "u3"])
    codes = index.encode(["u3", "u1", "nobody", "u2"])
    assert codes.tolist() == [2, 0, -1, 1]
    assert index.decode(np.array([2, 0, 1])).tolist() == ["u3", "u1", "u2"]


def test_extended_keeps_existing_assignments_and_appends_new_ids():
    old = IdIndex.from_values(["c", "a"])
    new = old.extended(["z", "a", "b", "c", "b"])
    assert list(new.ids) == ["a", "c", "b", "z"]
    assert new.encode(["a", "c"]).tolist() == old.encode(["a", "c"]).tolist()


def test_frame_round_trip_and_validation():
    index = IdIndex.from_values(["x", "y"])
    assert list(IdIndex.from_frame(index.to_frame().iloc[::-1]).ids) == ["x", "y"]
    with pytest.raises(ValueError):
        IdIndex.from_frame(pd.DataFrame({"id": ["x", "y"], "index": [0, 2]}))
    with pytest.raises(ValueError):
        IdIndex(["x", "x"])
