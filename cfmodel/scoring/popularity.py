"""The most-popular list: the baseline every model is measured beside, and what users the model
cannot score are recommended instead.

Popularity is an item's number of ratings; ties go to the smaller item id (or index) so that the
list is the same on every run and every executor. Each user still gets only items they have not
rated, so a user who rated the top items sees the next ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cfmodel.scoring.topk import top_k


@dataclass(frozen=True)
class Popularity:
    """Items of a catalog in popularity order.

    order[p] is the catalog index of the p-th most popular item; position[i] is where catalog
    item i stands in that order; counts[i] is its number of ratings (the score reported for it).
    """

    order: np.ndarray
    position: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray, catalog_ids: np.ndarray | None = None) -> Popularity:
        """Items by `counts` (ratings per catalog item), ties by id (`catalog_ids`) or else by index."""
        counts = np.asarray(counts, np.int64)
        if catalog_ids is not None and len(catalog_ids) != len(counts):
            raise ValueError("one count per catalog item is needed")
        ties = np.arange(len(counts)) if catalog_ids is None else np.asarray(catalog_ids, dtype=object).astype(str)
        order = np.lexsort((ties, -counts)).astype(np.int64)
        position = np.empty_like(order)
        position[order] = np.arange(len(order), dtype=np.int64)
        return cls(order=order, position=position, counts=counts)

    def __len__(self) -> int:
        return len(self.order)

    def score_fn(self, device: torch.device | str = "cpu") -> Callable[..., torch.Tensor]:
        """The list as a model's `list_scores` (users, and their rated cells, which change nothing):
        every user gets the same scores, higher for more popular."""
        row = torch.as_tensor((len(self) - self.position).astype(np.float32), device=device)
        return lambda users, *rated: row.expand(len(users), -1)

    def top_n(self, offsets: np.ndarray, rated: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Best `n` unrated catalog items for each user of a CSR block of rated catalog indices.

        Returns (items, counts) like `topk.top_k`: [users, min(n, catalog)], -1/NaN
        where a user has rated nearly everything. Only the first n + (most ratings of one user)
        positions can ever be needed, so the block is that wide and no wider.
        """
        offsets = np.asarray(offsets, np.int64)
        rated = np.asarray(rated, np.int64)[offsets[0] : offsets[-1]]
        lengths = np.diff(offsets)
        width = int(min(len(self.order), n + (lengths.max() if len(lengths) else 0)))
        rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        cols = self.position[rated]
        inside = cols < width
        # Earlier positions get larger keys; float32 holds positions exactly far beyond any catalog.
        keys = np.arange(width, 0, -1, dtype=np.float32)
        block = np.repeat(keys[None, :], len(lengths), axis=0)
        positions, _ = top_k(block, n, rows[inside], cols[inside])
        found = positions >= 0
        items = np.full(positions.shape, -1, np.int64)
        items[found] = self.order[positions[found]]
        counts = np.full(positions.shape, np.nan, np.float32)
        counts[found] = self.counts[items[found]]
        return items, counts
