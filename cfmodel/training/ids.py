"""Mapping string ids to contiguous integer indices and back."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


class IdIndex:
    """Ids in index order: position i holds the id whose index is i."""

    def __init__(self, ids: Iterable[str]) -> None:
        self._index = pd.Index(list(ids), dtype=object)
        if not self._index.is_unique:
            raise ValueError("ids must be unique")

    @classmethod
    def from_values(cls, values: Iterable[str]) -> IdIndex:
        """Distinct values in sorted order, so the same data always gives the same indices."""
        return cls(sorted(pd.unique(pd.Series(list(values), dtype=object))))

    def __len__(self) -> int:
        return len(self._index)

    @property
    def ids(self) -> np.ndarray:
        return self._index.to_numpy()

    def encode(self, values: Iterable[str]) -> np.ndarray:
        """Indices of `values`; -1 for ids this index does not know."""
        return self._index.get_indexer(pd.Index(list(values), dtype=object)).astype(np.int64)

    def decode(self, indices: np.ndarray) -> np.ndarray:
        return self._index.to_numpy()[np.asarray(indices)]

    def extended(self, values: Iterable[str]) -> IdIndex:
        """A new index keeping every existing assignment and appending unseen ids in sorted order."""
        new = sorted(set(pd.unique(pd.Series(list(values), dtype=object))) - set(self._index))
        return IdIndex([*self._index, *new])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"id": self._index.to_numpy(), "index": np.arange(len(self), dtype=np.int64)})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> IdIndex:
        ordered = frame.sort_values("index")
        if not np.array_equal(ordered["index"].to_numpy(), np.arange(len(ordered))):
            raise ValueError("id table indices are not contiguous from 0")
        return cls(ordered["id"].astype(str))
