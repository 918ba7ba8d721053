"""Rating and top-N metrics, and the most-popular baseline they are compared against.

Ranking protocol: a user counts if they have at least one relevant (held-out) item; their top k
list holds items they did not rate in training; gains are binary; the ideal DCG and the MAP
normaliser use min(k, #relevant); coverage is distinct recommended items over the catalog size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, float) - np.asarray(actual, float)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(actual, float))))


def ranking_metrics(
    recommended: np.ndarray,
    relevant: Sequence[np.ndarray],
    k: int,
    catalog_size: int,
) -> dict[str, float]:
    """recommended: [users, >=k] item indices, best first (-1 = empty slot); relevant: per user."""
    recommended = np.asarray(recommended)[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg, average_precision = [], [], [], []
    shown = set()
    for row, rel in zip(recommended, relevant):
        rel = np.unique(np.asarray(rel))
        if len(rel) == 0:
            continue
        row = row[row >= 0]
        shown.update(row.tolist())
        hits = np.isin(row, rel)
        n_hits = int(hits.sum())
        denominator = min(k, len(rel))
        precision.append(n_hits / k)
        recall.append(n_hits / len(rel))
        ndcg.append(float(discounts[: len(row)][hits].sum() / discounts[:denominator].sum()))
        precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        average_precision.append(float(precision_at_hits.sum() / denominator))
    mean = lambda values: float(np.mean(values)) if values else 0.0  # noqa: E731
    return {
        f"precision@{k}": mean(precision),
        f"recall@{k}": mean(recall),
        f"ndcg@{k}": mean(ndcg),
        f"map@{k}": mean(average_precision),
        f"coverage@{k}": len(shown) / catalog_size if catalog_size else 0.0,
        "users": len(precision),
    }


def popularity_scores(train_items: np.ndarray, n_items: int) -> np.ndarray:
    """Number of training ratings per item: the most-popular baseline's score."""
    return np.bincount(np.asarray(train_items, np.int64), minlength=n_items).astype(np.float64)


def top_k_excluding(scores: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Top k columns of each row of `scores` ([users, items] or one shared [items] row), skipping
    each user's `exclude` items; ties broken by lower item index. -1 fills rows with too few items."""
    scores = np.asarray(scores, np.float64)
    shared = scores.ndim == 1
    out = np.full((len(exclude), k), -1, np.int64)
    if shared:
        order = np.lexsort((np.arange(len(scores)), -scores))
    for u, excluded in enumerate(exclude):
        if shared:
            ranked = order[~np.isin(order, excluded)][:k]
        else:
            row = scores[u].copy()
            row[np.asarray(excluded, np.int64)] = -np.inf
            ranked = np.lexsort((np.arange(len(row)), -row))[:k]
            ranked = ranked[np.isfinite(row[ranked])]
        out[u, : len(ranked)] = ranked
    return out
