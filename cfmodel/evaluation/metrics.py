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
