"""Holding out ratings for validation: random (fastai's RandomSplitter) or the latest of each user."""

from __future__ import annotations

import numpy as np

from cfmodel.errors import CfrecError
from cfmodel.training.config import SPLITS
from cfmodel.training.interactions import Interactions


def check_valid_pct(valid_pct: float) -> None:
    if not 0.0 <= valid_pct < 1.0:
        raise CfrecError(f"valid_pct must be in [0, 1), got {valid_pct}")


def random_split(n_rows: int, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, valid rows): a random `valid_pct` of the rows, reproducible from `seed`."""
    check_valid_pct(valid_pct)
    order = np.random.default_rng(seed).permutation(n_rows)
    n_valid = int(round(n_rows * valid_pct))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def latest_split(users: np.ndarray, timestamps: np.ndarray, valid_pct: float) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, valid rows): each user's latest round(n * valid_pct) ratings are held out.

    A user always keeps at least one rating in train (a user with one rating keeps it), so every
    validation user has a vector; ties in time are broken by row order, latest row last.
    """
    check_valid_pct(valid_pct)
    users = np.asarray(users, np.int64)
    n = len(users)
    order = np.lexsort((np.arange(n), np.asarray(timestamps), users))  # by user, then time, then row
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n])
    n_valid = np.minimum(np.round(counts * valid_pct).astype(np.int64), counts - 1)
    position = np.arange(n) - np.repeat(starts, counts)  # 0 = the user's earliest rating
    held_out = position >= np.repeat(counts - n_valid, counts)
    return np.sort(order[~held_out]), np.sort(order[held_out])


def split(
    data: Interactions, valid_pct: float, seed: int, strategy: str = "random"
) -> tuple[Interactions, Interactions]:
    """(train, valid) by `strategy`: "random" or "time" (the latest ratings of each user)."""
    if strategy == "random":
        train_rows, valid_rows = random_split(len(data), valid_pct, seed)
    elif strategy == "time":
        if data.timestamps is None:
            raise CfrecError("a time-based split needs rating timestamps, and these ratings have none")
        train_rows, valid_rows = latest_split(data.users, data.timestamps, valid_pct)
    else:
        raise CfrecError(f"unknown split '{strategy}' (use {' or '.join(SPLITS)})")
    return data.subset(train_rows), data.subset(valid_rows)
