"""Rating and top-N metrics.

Ranking protocol: a user counts if they have at least one relevant (held-out) item; their top k
list holds items they did not rate in training; gains are binary; the ideal DCG and the MAP
normaliser use min(k, #relevant); coverage is distinct recommended items over the catalog size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RANKING_K = 10


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
    recommended = np.asarray(recommended, np.int64)[:, :k]
    if len(recommended) != len(relevant):
        raise ValueError(f"{len(recommended)} lists for {len(relevant)} users' relevant items")
    lengths = np.fromiter((len(r) for r in relevant), np.int64, len(relevant))
    rows = np.repeat(np.arange(len(relevant)), lengths)
    items = np.concatenate([np.asarray(r, np.int64) for r in relevant]) if len(relevant) else rows
    if items.min(initial=0) < 0:
        raise ValueError("relevant items are item indices, never negative")
    # One sorted array of (user, item) keys for every user at once: the relevant items, each once.
    width = int(max(items.max(initial=-1), recommended.max(initial=-1))) + 1
    relevant_keys = np.unique(rows * width + items)
    n_relevant = np.bincount(relevant_keys // max(width, 1), minlength=len(relevant))
    counted = n_relevant > 0
    listed = recommended[counted]
    n_relevant = n_relevant[counted]
    if not len(listed):
        return {f"{name}@{k}": 0.0 for name in ("precision", "recall", "ndcg", "map", "coverage")} | {"users": 0}

    filled = listed >= 0
    # A slot's rank among the filled slots of its row: empty slots are skipped, not counted as ranks.
    ranks = np.cumsum(filled, axis=1) - 1
    keys = np.flatnonzero(counted)[:, None] * width + listed
    hits = filled & np.isin(keys, relevant_keys)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(k, n_relevant)]
    n_hits = hits.sum(axis=1)
    dcg = np.where(hits, discounts[np.where(filled, ranks, 0)], 0.0).sum(axis=1)
    precision_at_hits = np.where(hits, np.cumsum(hits, axis=1) / (np.maximum(ranks, 0) + 1), 0.0)
    return {
        f"precision@{k}": float(np.mean(n_hits / k)),
        f"recall@{k}": float(np.mean(n_hits / n_relevant)),
        f"ndcg@{k}": float(np.mean(dcg / ideal)),
        f"map@{k}": float(np.mean(precision_at_hits.sum(axis=1) / np.minimum(k, n_relevant))),
        f"coverage@{k}": len(np.unique(listed[filled])) / catalog_size if catalog_size else 0.0,
        "users": len(listed),
    }
