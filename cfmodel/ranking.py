"""Top-N selection over dot-product scores, excluding what each user already rated."""

from __future__ import annotations

import numpy as np


def sigmoid_range(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))) * (high - low) + low


def top_n(
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    exclude: list[np.ndarray],
    n: int,
    y_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Best `n` items per user by predicted rating, never an item in that user's `exclude` list.

    Returns (items, scores), each [users, min(n, n_items)], best first. Where a user has fewer than
    n candidates the tail holds item -1 and score NaN.
    """
    logits = user_vectors @ item_vectors.T
    logits += user_bias[:, None]
    logits += item_bias[None, :]
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
    if lengths.sum():
        rows = np.repeat(np.arange(len(exclude)), lengths)
        logits[rows, np.concatenate(exclude).astype(np.int64)] = -np.inf
    k = min(n, logits.shape[1])
    if k == 0:
        return np.empty((len(logits), 0), np.int64), np.empty((len(logits), 0), np.float32)
    candidates = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    candidate_logits = np.take_along_axis(logits, candidates, axis=1)
    order = np.argsort(-candidate_logits, axis=1, kind="stable")
    items = np.take_along_axis(candidates, order, axis=1)
    best = np.take_along_axis(candidate_logits, order, axis=1)
    missing = np.isneginf(best)
    scores = sigmoid_range(np.where(missing, 0.0, best), *y_range).astype(np.float32)
    scores[missing] = np.nan
    items[missing] = -1
    return items, scores
