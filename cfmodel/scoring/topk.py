"""Top-N selection over a block of scores, excluding what each user already rated.

A block is [users, items] scores (higher is better). Exclusions arrive either as one index array
per user or in CSR form (offsets into one flat array of item indices), which is what a Parquet
list column gives for free. Selection runs on torch's `topk`, several times faster than numpy's
argpartition on wide rows; inputs and outputs are numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def sigmoid_range(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))) * (high - low) + low


def exclusion_pairs(exclude: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One index array per user -> (row, column) coordinates of every excluded cell."""
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
    if not lengths.sum():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows = np.repeat(np.arange(len(exclude), dtype=np.int64), lengths)
    cols = np.concatenate([np.asarray(e, np.int64) for e in exclude])
    return rows, cols


def csr_pairs(offsets: np.ndarray, values: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR exclusions -> (row, column) coordinates, keeping only columns inside the block.

    Items beyond `n_columns` exist in the catalog but not in the model (they appeared after
    training), so the model cannot recommend them and there is nothing to mask.
    """
    offsets = np.asarray(offsets, np.int64)
    values = np.asarray(values, np.int64)[offsets[0] : offsets[-1]]
    rows = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    inside = (values >= 0) & (values < n_columns)
    return rows[inside], values[inside]


def top_n_masked(
    scores: torch.Tensor | np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Best `n` columns per row of `scores`, never a masked (row, col) cell.

    Returns (items int64, values float32), each [rows, min(n, columns)], best first. Where a row
    has fewer than n candidates the tail holds item -1 and value NaN. `scores` is modified in place.
    """
    # Inference mode lets the in-place mask write into blocks a model produced under inference mode.
    with torch.inference_mode():
        block = torch.as_tensor(scores)
        if block.dtype != torch.float32:
            block = block.float()
        if len(rows):
            block[torch.tensor(np.asarray(rows, np.int64)), torch.tensor(np.asarray(cols, np.int64))] = -torch.inf
        k = min(n, block.shape[1])
        if k == 0:
            return np.empty((block.shape[0], 0), np.int64), np.empty((block.shape[0], 0), np.float32)
        values, items = torch.topk(block, k, dim=1, largest=True, sorted=True)
    values, items = values.numpy().copy(), items.numpy().astype(np.int64)
    # topk orders NaN above everything, so a NaN anywhere in a row's candidates shows up here.
    if np.isnan(values).any():
        raise ValueError("the model produced NaN scores; refusing to rank them")
    missing = np.isneginf(values)
    values[missing] = np.nan
    items[missing] = -1
    return items, values


def top_n_from_scores(
    scores: torch.Tensor | np.ndarray, exclude: Sequence[np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """`top_n_masked` with one exclusion array per user."""
    rows, cols = exclusion_pairs(exclude)
    return top_n_masked(scores, rows, cols, n)


def dot_logits(
    user_vectors: np.ndarray, user_bias: np.ndarray, item_vectors: np.ndarray, item_bias: np.ndarray
) -> torch.Tensor:
    """u . i + b_u + b_i for every (user, item) pair of the block, as one matrix product."""
    logits = (
        torch.as_tensor(np.asarray(user_vectors, np.float32)) @ torch.as_tensor(np.asarray(item_vectors, np.float32)).T
    )
    logits += torch.as_tensor(np.asarray(user_bias, np.float32))[:, None]
    logits += torch.as_tensor(np.asarray(item_bias, np.float32))[None, :]
    return logits


def top_n(
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    exclude: Sequence[np.ndarray],
    n: int,
    y_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Best `n` items per user by the dot model's predicted rating, never an item in `exclude`.

    The sigmoid is monotonic, so ranking happens on the logits and only the winners are mapped
    to predicted ratings. Returns (items, scores) as `top_n_masked` does.
    """
    items, best = top_n_from_scores(dot_logits(user_vectors, user_bias, item_vectors, item_bias), exclude, n)
    found = ~np.isnan(best)
    best[found] = sigmoid_range(best[found], *y_range)
    return items, best.astype(np.float32)
