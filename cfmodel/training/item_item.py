"""The closed-form item-item term of the ranking model: EASE (Steck 2019).

On the binary [users, items] matrix X of who rated what, B = I - P / diag(P) with
P = (X'X + l2 I)^-1 and a zero diagonal; a user's scores are x_u B, each rated item adding its
row. It sees every pair of items at full rank, which the ranking model's low-rank vectors cannot;
added to them (`EmbeddingDotRank`), it lifts the published lists above either alone.

B is [items, items]: the term is used on catalogs of at most ITEM_ITEM_MAX_ITEMS
(`cfmodel.training.config`) items.
"""

from __future__ import annotations

import numpy as np
import torch

# Cells of the dense [users, items] chunk of X that `item_gram` holds at once (64 MB).
GRAM_CELLS_PER_CHUNK = 1 << 24


def item_gram(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """X'X of the binary matrix of these (user, item) pairs (a pair given twice counts once):
    [n_items, n_items] co-occurrence counts, float32. Users go in chunks, each a sparse X_c'
    times a dense X_c: one multiply-add per (rating, item), and never all of X dense at once."""
    pairs = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    pair_users, pair_items = pairs // n_items, pairs % n_items
    gram = torch.zeros(n_items, n_items)
    step = max(1, min(n_users, GRAM_CELLS_PER_CHUNK // max(n_items, 1)))
    bounds = np.searchsorted(pair_users, np.arange(0, n_users + step, step))
    for first, (start, stop) in zip(range(0, n_users, step), zip(bounds[:-1], bounds[1:])):
        rows = torch.as_tensor(pair_users[start:stop] - first)
        cols = torch.as_tensor(pair_items[start:stop])
        dense = torch.zeros(step, n_items)
        dense[rows, cols] = 1.0
        ones = torch.ones(len(rows))
        sparse = torch.sparse_coo_tensor(torch.stack([cols, rows]), ones, (n_items, step), check_invariants=False)
        gram += torch.sparse.mm(sparse, dense)
    return gram


def ease_weights(gram: torch.Tensor, l2: float) -> torch.Tensor:
    """B = I - P / diag(P), P = (gram + l2 I)^-1, zero diagonal (float32; the matrix is symmetric
    positive definite, so a Cholesky factorisation inverts it)."""
    regularised = gram.to(torch.float32).clone()
    regularised.diagonal().add_(float(l2))
    p = torch.cholesky_inverse(torch.linalg.cholesky(regularised))
    weights = -p / p.diagonal()
    weights.diagonal().zero_()
    return weights
