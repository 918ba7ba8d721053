"""Ratings as index arrays: what the training loop, the splits and the metrics work on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays, one entry per rating: user index, item index, rating, timestamp (optional)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", np.asarray(self.users, np.int64))
        object.__setattr__(self, "items", np.asarray(self.items, np.int64))
        object.__setattr__(self, "ratings", np.asarray(self.ratings, np.float32))
        if self.timestamps is not None:
            object.__setattr__(self, "timestamps", np.asarray(self.timestamps, np.int64))
        lengths = {len(self.users), len(self.items), len(self.ratings)}
        if self.timestamps is not None:
            lengths.add(len(self.timestamps))
        if len(lengths) != 1:
            raise ValueError(f"users, items, ratings (and timestamps) must have equal lengths, got {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.ratings)

    def subset(self, rows: np.ndarray) -> Interactions:
        ts = None if self.timestamps is None else self.timestamps[rows]
        return Interactions(self.users[rows], self.items[rows], self.ratings[rows], ts)

    def by_user(self, n_users: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR layout of each user's items: (indptr [n_users + 1], items sorted by user)."""
        order = np.argsort(self.users, kind="stable")
        indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(self.users, minlength=n_users), out=indptr[1:])
        return indptr, self.items[order]

    def item_counts(self, n_items: int) -> np.ndarray:
        return np.bincount(self.items, minlength=n_items)
