import numpy as np
import pytest
import torch

from cfmodel.scoring.popularity import Popularity
from cfmodel.scoring.topk import csr_cells, top_k


def cells(exclude):
    rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
    cols = np.concatenate([np.asarray(e, np.int64) for e in exclude]) if len(exclude) else np.empty(0, np.int64)
    return rows, cols


def brute_force(scores, exclude, masked_columns, k):
    out = []
    for u, row in enumerate(scores):
        allowed = [i for i in range(len(row)) if i not in set(exclude[u]) and i not in set(masked_columns)]
        out.append(sorted(allowed, key=lambda i: (-row[i], i))[:k])
    return out


def test_top_k_matches_brute_force_and_never_returns_a_masked_cell():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(20, 50)).astype(np.float32)
    exclude = [rng.choice(50, size=rng.integers(0, 30), replace=False) for _ in range(20)]
    never = np.array([7, 11])
    items, values = top_k(torch.from_numpy(scores.copy()), 10, *cells(exclude), masked_columns=never)
    assert items.shape == (20, 10) and values.dtype == np.float32
    for row, expected in zip(items, brute_force(scores, exclude, never, 10)):
        assert row[row >= 0].tolist() == expected
    found = items >= 0
    assert np.all(np.diff(np.where(found, values, -np.inf), axis=1) <= 0)
    assert np.allclose(values[found], np.take_along_axis(scores, np.where(found, items, 0), 1)[found])


def test_fewer_candidates_than_k_pad_with_minus_one_and_nan():
    scores = np.ones((2, 3), np.float32)
    items, values = top_k(scores, 2, *cells([[0, 1], [0, 1, 2]]))
    assert items.tolist() == [[2, -1], [-1, -1]]
    assert np.isnan(values[0, 1]) and np.isnan(values[1]).all()
    assert top_k(np.ones((1, 2), np.float32), 5)[0].shape == (1, 2)  # never wider than the block


def test_csr_cells_skip_items_outside_the_model_and_honour_slices():
    offsets = np.array([2, 4, 7])  # a slice of a longer list column: values before 2 belong to other rows
    values = np.array([9, 9, 0, 5, 1, 6, 2])
    rows, cols = csr_cells(offsets, values, n_columns=5)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1), (1, 2)]


def test_nan_scores_are_refused_unless_asked_to_rank_them():
    scores = np.array([[0.1, np.nan, 0.3]], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        top_k(scores.copy(), 2)
    items, _ = top_k(scores.copy(), 2, refuse_nan=False)
    assert items.tolist() == [[1, 2]]  # torch ranks NaN first: a diverged model is measured as it is


def test_popularity_ranks_by_count_then_id_and_skips_rated():
    ids = np.array(["b", "a", "c", "d", "e"], dtype=object)
    pop = Popularity.from_counts(np.array([5, 5, 9, 1, 0]), ids)
    assert ids[pop.order].tolist() == ["c", "a", "b", "d", "e"]
    offsets = np.array([0, 0, 2, 7])
    rated = np.array([2, 1, 0, 1, 2, 3, 4])  # user 1 rated c and a; user 2 rated everything
    items, counts = pop.top_n(offsets, rated, 3)
    assert ids[items[0]].tolist() == ["c", "a", "b"] and counts[0].tolist() == [9, 5, 5]
    assert ids[items[1]].tolist() == ["b", "d", "e"] and counts[1].tolist() == [5, 1, 0]
    assert items[2].tolist() == [-1, -1, -1] and np.isnan(counts[2]).all()
    assert Popularity.from_counts(np.array([1, 3, 3])).order.tolist() == [1, 2, 0]  # without ids: by index
