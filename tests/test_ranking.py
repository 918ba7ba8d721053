import numpy as np
import pytest

from cfmodel.scoring.popularity import Popularity
from cfmodel.scoring.topk import csr_pairs, sigmoid_range, top_n, top_n_from_scores, top_n_masked


def brute_force(uv, ub, iv, ib, exclude, n):
    out = []
    for u in range(len(uv)):
        scores = {i: uv[u] @ iv[i] + ub[u] + ib[i] for i in range(len(iv)) if i not in set(exclude[u])}
        out.append(sorted(scores, key=lambda i: -scores[i])[:n])
    return out


def test_top_n_matches_brute_force_and_excludes_rated():
    rng = np.random.default_rng(3)
    uv, iv = rng.normal(size=(20, 4)), rng.normal(size=(50, 4))
    ub, ib = rng.normal(size=20), rng.normal(size=50)
    exclude = [rng.choice(50, size=rng.integers(0, 30), replace=False) for _ in range(20)]
    items, scores = top_n(uv, ub, iv, ib, exclude, 10, (0.0, 5.5))
    assert items.shape == (20, 10)
    assert items.tolist() == brute_force(uv, ub, iv, ib, exclude, 10)
    for row, rated in zip(items, exclude):
        assert not set(row) & set(rated)
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert np.all((scores > 0) & (scores < 5.5))


def test_scores_are_predicted_ratings_in_y_range():
    uv, iv = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0]])
    items, scores = top_n(uv, np.zeros(1), iv, np.array([0.5, 0.0]), [np.array([], int)], 2, (1.0, 5.0))
    assert items.tolist() == [[0, 1]]
    assert np.allclose(scores, [sigmoid_range(2.5, 1.0, 5.0), sigmoid_range(0.0, 1.0, 5.0)])


def test_fewer_candidates_than_n_pads_with_minus_one():
    uv, iv = np.ones((2, 2)), np.eye(3, 2)
    exclude = [np.array([0, 1]), np.array([0, 1, 2])]
    items, scores = top_n(uv, np.zeros(2), iv, np.zeros(3), exclude, 2, (0.0, 5.5))
    assert items.tolist() == [[2, -1], [-1, -1]]
    assert np.isnan(scores[0, 1]) and np.isnan(scores[1]).all()


def test_masked_top_n_from_csr_matches_list_exclusions():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(6, 30)).astype(np.float32)
    exclude = [rng.choice(30, size=k, replace=False) for k in (0, 3, 29, 30, 5, 1)]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in exclude])])
    flat = np.concatenate(exclude)
    rows, cols = csr_pairs(offsets, flat, 30)
    from_csr = top_n_masked(scores.copy(), rows, cols, 4)
    from_lists = top_n_from_scores(scores.copy(), exclude, 4)
    np.testing.assert_array_equal(from_csr[0], from_lists[0])
    np.testing.assert_array_equal(from_csr[1], from_lists[1])
    items, values = from_csr
    assert items[3].tolist() == [-1] * 4 and np.isnan(values[3]).all()  # rated everything
    assert items[2].tolist()[0] == ({*range(30)} - set(exclude[2].tolist())).pop() and items[2, 1] == -1
    for row, rated in zip(items, exclude):
        assert not set(row[row >= 0]) & set(rated.tolist())
    expected = [
        sorted(set(range(30)) - set(e.tolist()), key=lambda i: -scores[u, i])[:4] for u, e in enumerate(exclude)
    ]
    assert [r[r >= 0].tolist() for r in items] == expected


def test_csr_pairs_skip_items_outside_the_model_and_honour_slices():
    offsets = np.array([2, 4, 7])  # a slice of a longer list column: values before 2 belong to other rows
    values = np.array([9, 9, 0, 5, 1, 6, 2])
    rows, cols = csr_pairs(offsets, values, n_columns=5)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1), (1, 2)]


def test_nan_scores_are_refused_not_ranked():
    scores = np.array([[0.1, np.nan, 0.3]], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        top_n_from_scores(scores, [np.array([], int)], 2)


def test_popularity_ranks_by_count_then_id_and_skips_rated():
    ids = np.array(["b", "a", "c", "d", "e"], dtype=object)
    pop = Popularity.from_counts(ids, np.array([5, 5, 9, 1, 0]))
    assert ids[pop.order].tolist() == ["c", "a", "b", "d", "e"]
    offsets = np.array([0, 0, 2, 7])
    rated = np.array([2, 1, 0, 1, 2, 3, 4])  # user 1 rated c and a; user 2 rated everything
    items, counts = pop.top_n(offsets, rated, 3)
    assert ids[items[0]].tolist() == ["c", "a", "b"] and counts[0].tolist() == [9, 5, 5]
    assert ids[items[1]].tolist() == ["b", "d", "e"] and counts[1].tolist() == [5, 1, 0]
    assert items[2].tolist() == [-1, -1, -1] and np.isnan(counts[2]).all()
