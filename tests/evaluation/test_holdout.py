import math

import numpy as np
import pytest

from cfmodel.evaluation.holdout import holdout_metrics, recommended_items
from cfmodel.evaluation.metrics import mae, ranking_metrics, rmse
from cfmodel.scoring.popularity import Popularity
from cfmodel.training.interactions import Interactions


def test_rmse_and_mae_by_hand():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)


def test_ranking_metrics_by_hand():
    recommended = np.array([[10, 11, 12], [20, 21, 22], [30, 31, 32]])
    relevant = [np.array([11, 99]), np.array([20, 22, 21, 23]), np.array([], int)]
    m = ranking_metrics(recommended, relevant, k=3, catalog_size=100)
    # user 0: one hit at rank 2 of 2 relevant; user 1: hits at ranks 1-3 of 4 relevant; user 2 skipped.
    assert m["users"] == 2
    assert m["precision@3"] == pytest.approx((1 / 3 + 3 / 3) / 2)
    assert m["recall@3"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@3"] == pytest.approx((ndcg0 + 1.0) / 2)
    ap0 = (1 / 2) / 2
    ap1 = (1 + 1 + 1) / 3
    assert m["map@3"] == pytest.approx((ap0 + ap1) / 2)
    assert m["coverage@3"] == pytest.approx(6 / 100)


def test_a_hit_after_an_empty_slot_takes_the_next_rank_and_repeated_relevant_items_count_once():
    m = ranking_metrics(np.array([[-1, 7, 3]]), [np.array([3, 3, 9])], k=3, catalog_size=10)
    # Filled slots: 7 (rank 1), 3 (rank 2, a hit); relevant {3, 9}: ideal DCG over two ranks.
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m["recall@3"] == 0.5 and m["map@3"] == pytest.approx((1 / 2) / 2) and m["coverage@3"] == 0.2


def _one_user_at_a_time(recommended, relevant, k, catalog_size):
    """The protocol of the module's docstring, user by user, as the reference."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores, shown = [], set()
    for row, rel in zip(recommended[:, :k], relevant):
        rel = set(rel.tolist())
        if not rel:
            continue
        row = [item for item in row if item >= 0]
        shown.update(row)
        hits = [item in rel for item in row]
        found = np.cumsum(hits)
        d = min(k, len(rel))
        ndcg = sum(discounts[i] for i, hit in enumerate(hits) if hit) / discounts[:d].sum()
        ap = sum(found[i] / (i + 1) for i, hit in enumerate(hits) if hit) / d
        scores.append((sum(hits) / k, sum(hits) / len(rel), ndcg, ap))
    means = np.mean(scores, axis=0) if scores else np.zeros(4)
    return dict(zip([f"{m}@{k}" for m in ("precision", "recall", "ndcg", "map")], means)) | {
        f"coverage@{k}": len(shown) / catalog_size,
        "users": len(scores),
    }


def test_ranking_metrics_match_one_user_at_a_time_on_random_lists():
    rng = np.random.default_rng(0)
    for _ in range(200):
        users, catalog, k = int(rng.integers(0, 20)), int(rng.integers(1, 30)), int(rng.integers(1, 12))
        recommended = rng.integers(-1, catalog, (users, int(rng.integers(1, k + 3))))  # -1: empty slots anywhere
        relevant = [rng.integers(0, catalog, int(rng.integers(0, 6))) for _ in range(users)]  # repeats, none
        expected = _one_user_at_a_time(recommended, relevant, k, catalog)
        assert ranking_metrics(recommended, relevant, k, catalog) == pytest.approx(expected, abs=1e-12)


def test_empty_slots_count_as_misses():
    m = ranking_metrics(np.array([[5, -1]]), [np.array([5])], k=2, catalog_size=10)
    assert m["precision@2"] == 0.5 and m["recall@2"] == 1.0 and m["ndcg@2"] == 1.0 and m["map@2"] == 1.0
    assert m["coverage@2"] == 0.1


def csr(per_user):
    indptr = np.cumsum([0] + [len(items) for items in per_user])
    return indptr, np.concatenate([np.asarray(items, np.int64) for items in per_user])


def test_top_k_scored_skips_seen_and_never_items_and_fills_with_minus_one():
    import torch

    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 1.0, 1.0]])
    seen = csr([[0], [], [0, 1, 2]])
    top = recommended_items(
        lambda users, *rated: scores[users], np.array([0, 1, 2]), seen, k=3, n_items=4, never=np.array([3])
    )
    assert top[0].tolist() == [1, 2, -1]
    assert top[1].tolist() == [2, 1, 0]
    assert top[2].tolist() == [-1, -1, -1]


def test_the_popularity_baseline_skips_each_users_items_and_breaks_ties_by_lower_index():
    counts = np.bincount(np.array([3, 3, 3, 1, 1, 0, 2, 2]), minlength=5)
    score = Popularity.from_counts(counts).score_fn()
    top = recommended_items(score, np.array([0, 1, 2]), csr([[3], [], [0, 1, 2, 3, 4]]), k=2, n_items=5)
    assert top.tolist() == [[1, 2], [3, 1], [-1, -1]]
    tied = Popularity.from_counts(np.bincount(np.array([2, 2, 1, 1, 0]), minlength=4)).score_fn()
    assert recommended_items(tied, np.array([0]), csr([[]]), k=4, n_items=4)[0].tolist() == [1, 2, 0, 3]


class FixedScores:
    """A stand-in rating model: predicted rating = a fixed [users, items] table."""

    predicts_ratings = True

    def __init__(self, table):
        import torch

        self.table = torch.as_tensor(table, dtype=torch.float32)

    def eval(self):
        return self

    def encode_users(self, history):
        pass  # nothing computed from the history

    def __call__(self, users, items):
        return self.table[users, items]

    def list_scores(self, users, rows, cols):
        return self.table[users]


def test_holdout_metrics_by_hand():
    # 2 users, 6 items; nobody rated item 4 in train, so it is never recommended, and user 1's
    # test rating of it is left out of rmse.
    train = Interactions([0, 1, 1, 0, 1, 0], [0, 0, 1, 3, 2, 5], [5, 4, 3, 2, 4, 3])
    test = Interactions([0, 0, 1, 1], [1, 2, 3, 4], [4, 2, 5, 1])
    table = np.array([[9, 4.5, 1.0, 0.0, 8.0, 0.0], [9, 9.0, 4.0, 4.0, 8.0, 6.0]])
    m = holdout_metrics(FixedScores(table), train, test, n_items=6, k=2)
    model, pop = m["model"], m["popularity"]
    # rmse over (0,1), (0,2), (1,3): errors 0.5, -1.0, -1.0
    assert model["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 1) / 3)) and model["mae"] == pytest.approx(2.5 / 3)
    assert model["unseen_rows"] == 1
    # model: user 0 -> [1, 2], both relevant; user 1 -> [5, 3], a hit at rank 2 of 2 relevant
    ideal = 1 + 1 / math.log2(3)
    assert model["precision@2"] == pytest.approx(0.75) and model["recall@2"] == pytest.approx(0.75)
    assert model["ndcg@2"] == pytest.approx((1 + (1 / math.log2(3)) / ideal) / 2)
    assert model["map@2"] == pytest.approx((1 + 0.25) / 2)
    assert model["coverage@2"] == pytest.approx(4 / 6)
    # popularity: counts [2, 1, 1, 1, 0, 1], ties to the lower index: user 1 -> [3, 5], hit at rank 1
    assert pop["precision@2"] == pytest.approx(0.75)
    assert pop["ndcg@2"] == pytest.approx((1 + 1 / ideal) / 2)
    assert pop["map@2"] == pytest.approx((1 + 0.5) / 2)
    assert "rmse" not in pop and model["users"] == 2 == pop["users"]


def test_holdout_metrics_can_sample_users():
    train = Interactions(np.arange(40) % 20, np.arange(40) % 7, np.ones(40))
    test = Interactions(np.arange(20), np.full(20, 3), np.ones(20))
    sampled = holdout_metrics(
        FixedScores(np.random.default_rng(0).random((20, 7))), train, test, 7, max_users=5, seed=1
    )
    assert sampled["model"]["users"] == 5 and sampled["popularity"]["users"] == 5


def test_popularity_baseline_on_movielens_u1_matches_the_published_protocol(ml100k):
    """Most-popular on u1.base -> u1.test: NDCG@10 0.325, P@10 0.305 (the figures of the spec)."""
    import pandas as pd

    names = ["user", "item", "rating", "ts"]
    base = pd.read_csv(ml100k / "u1.base", sep="\t", names=names)
    test = pd.read_csv(ml100k / "u1.test", sep="\t", names=names)
    train = Interactions(base.user - 1, base.item - 1, base.rating)
    held = Interactions(test.user - 1, test.item - 1, test.rating)
    m = holdout_metrics(FixedScores(np.zeros((943, 1682))), train, held, n_items=1682)["popularity"]
    assert m["users"] == 459
    assert m["ndcg@10"] == pytest.approx(0.3254, abs=5e-4)
    assert m["precision@10"] == pytest.approx(0.3048, abs=5e-4)
    assert m["map@10"] == pytest.approx(0.1992, abs=5e-4)
