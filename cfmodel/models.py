"""Embedding models as plain PyTorch modules."""

from __future__ import annotations

import torch
from torch import nn


def sigmoid_range(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.sigmoid(x) * (high - low) + low


def default_y_range(rating_min: float, rating_max: float) -> tuple[float, float]:
    """fastai's habit of a little headroom above the top rating: 1-5 stars -> (0, 5.5)."""
    return (min(0.0, rating_min), rating_max + (rating_max - rating_min) / 8)


class EmbeddingDotBias(nn.Module):
    """fastai's `EmbeddingDotBias`: rating = sigmoid_range(u . i + b_u + b_i, *y_range)."""

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50, y_range: tuple[float, float] = (0.0, 5.5)):
        super().__init__()
        self.y_range = tuple(float(v) for v in y_range)
        self.u_weight = nn.Embedding(n_users, n_factors)
        self.i_weight = nn.Embedding(n_items, n_factors)
        self.u_bias = nn.Embedding(n_users, 1)
        self.i_bias = nn.Embedding(n_items, 1)
        for emb in (self.u_weight, self.i_weight, self.u_bias, self.i_bias):
            nn.init.trunc_normal_(emb.weight, std=0.01)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.u_weight(users) * self.i_weight(items)).sum(dim=1)
        logits = dot + self.u_bias(users).squeeze(1) + self.i_bias(items).squeeze(1)
        return sigmoid_range(logits, *self.y_range)
