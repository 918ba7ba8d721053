import numpy as np

from cfmodel.ranking import sigmoid_range, top_n


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
