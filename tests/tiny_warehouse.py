"""A small warehouse written with pandas (no Spark): ratings with planted taste groups, items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

N_GROUPS = 3


def planted_ratings(n_users=90, n_items=60, per_user=20, seed=0) -> pd.DataFrame:
    """User u likes items of group u % 3 (rates them 4-5) and dislikes the others (1-2)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False):
            liked = i % N_GROUPS == u % N_GROUPS
            rows.append(
                (
                    f"u{u}",
                    f"i{i}",
                    float(rng.integers(4, 6) if liked else rng.integers(1, 3)),
                    int(rng.integers(0, 10**6)),
                )
            )
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def write_warehouse(root: Path, ratings: pd.DataFrame | None = None, index_tables: bool = False) -> Path:
    ratings = planted_ratings() if ratings is None else ratings
    (root / "ratings").mkdir(parents=True, exist_ok=True)
    ratings.to_parquet(root / "ratings" / "part-0.parquet", index=False)
    items = sorted(ratings["item_id"].unique())
    (root / "items").mkdir(exist_ok=True)
    pd.DataFrame({"item_id": items, "title": [f"Title of {i}" for i in items]}).to_parquet(
        root / "items" / "part-0.parquet"
    )
    (root / "datasets").mkdir(exist_ok=True)
    pd.DataFrame({"source": ["test"], "rating_min": [1.0], "rating_max": [5.0]}).to_parquet(
        root / "datasets" / "part-0.parquet"
    )
    if index_tables:
        for column, table in (("user_id", "user_index"), ("item_id", "item_index")):
            ids = sorted(ratings[column].unique(), reverse=True)  # deliberately not the sorted order
            (root / table).mkdir(exist_ok=True)
            pd.DataFrame({"id": ids, "index": np.arange(len(ids), dtype=np.int64)}).to_parquet(
                root / table / "part-0.parquet"
            )
    return root


def planted_choices(n_users=90, n_items=60, per_user=12, seed=0) -> pd.DataFrame:
    """User u rates only items of group u % 3: *which* items get rated carries the taste."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        own = [i for i in range(n_items) if i % N_GROUPS == u % N_GROUPS]
        for i in rng.choice(own, per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), int(rng.integers(0, 10**6))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
