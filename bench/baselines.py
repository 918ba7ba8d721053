"""Reference models the benchmarks measure cfrec beside."""

from __future__ import annotations

import numpy as np


def ease_weights(x: np.ndarray, lam: float) -> np.ndarray:
    """EASE (Steck 2019), the closed-form item-item model on a binary [users, items] matrix:
    B = I - P / diag(P) with P = (X'X + lambda I)^-1, zero diagonal; a user's scores are x_u B."""
    gram = x.T @ x + lam * np.eye(x.shape[1])
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b
