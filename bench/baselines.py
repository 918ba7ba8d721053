"""Reference models the benchmarks measure cfrec beside."""

from __future__ import annotations

import numpy as np
import torch

from cfmodel.training.item_item import ease_weights as solve_ease


def ease_weights(x: np.ndarray, lam: float) -> np.ndarray:
    """EASE (Steck 2019), the closed-form item-item model on a binary [users, items] matrix:
    B = I - P / diag(P) with P = (X'X + lambda I)^-1, zero diagonal; a user's scores are x_u B.
    The same solve as the ranking model's item-item term."""
    return solve_ease(torch.from_numpy(x.T @ x), lam).numpy().astype(x.dtype)
