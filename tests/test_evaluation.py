import math

import numpy as np
import pytest

from cfmodel.evaluation import mae, popularity_scores, ranking_metrics, rmse, top_k_excluding


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


def test_empty_slots_count_as_misses():
    m = ranking_metrics(np.array([[5, -1]]), [np.array([5])], k=2, catalog_size=10)
    assert m["precision@2"] == 0.5 and m["recall@2"] == 1.0 and m["ndcg@2"] == 1.0 and m["map@2"] == 1.0
    assert m["coverage@2"] == 0.1


def test_popularity_top_k_skips_each_users_items():
    pop = popularity_scores(np.array([3, 3, 3, 1, 1, 0, 2, 2]), n_items=5)
    assert pop.tolist() == [1, 2, 2, 3, 0]
    top = top_k_excluding(pop, [np.array([3]), np.array([], int), np.array([0, 1, 2, 3, 4])], k=2)
    assert top.tolist() == [[1, 2], [3, 1], [-1, -1]]


def test_top_k_with_per_user_scores():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    assert top_k_excluding(scores, [np.array([1]), np.array([], int)], k=2).tolist() == [[2, 0], [0, 1]]
