"""The most-popular list: what users the model cannot score are recommended instead.

Popularity is the number of ratings an item has in the complete ratings table; ties go to the
smaller item id so that the list is the same on every run and every executor. Each user still
gets only items they have not rated, so a user who rated the top items sees the next ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfmodel.scoring.topk import top_n_masked


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
    def from_counts(cls, catalog_ids: np.ndarray, counts: np.ndarray) -> Popularity:
        catalog_ids = np.asarray(catalog_ids, dtype=object)
        counts = np.asarray(counts, np.int64)
        if len(catalog_ids) != len(counts):
            raise ValueError("one count per catalog item is needed")
        order = np.lexsort((catalog_ids.astype(str), -counts)).astype(np.int64)
        position = np.empty_like(order)
        position[order] = np.arange(len(order), dtype=np.int64)
        return cls(order=order, position=position, counts=counts)

    def __len__(self) -> int:
        return len(self.order)

    def top_n(self, offsets: np.ndarray, rated: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Best `n` unrated catalog items for each user of a CSR block of rated catalog indices.

        Returns (items, counts) like `ranking.top_n_masked`: [users, min(n, catalog)], -1/NaN
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
        positions, _ = top_n_masked(block, rows[inside], cols[inside], n)
        found = positions >= 0
        items = np.full(positions.shape, -1, np.int64)
        items[found] = self.order[positions[found]]
        counts = np.full(positions.shape, np.nan, np.float32)
        counts[found] = self.counts[items[found]]
        return items, counts
