"""Holding out ratings for validation: a seeded random share of the ratings (like fastai's
RandomSplitter, but the same ratings every night), or the latest of each user."""

from __future__ import annotations

import numpy as np

from cfmodel.errors import CfrecError
from cfmodel.training.config import SPLITS
from cfmodel.training.interactions import Interactions


def check_valid_pct(valid_pct: float) -> None:
    if not 0.0 <= valid_pct < 1.0:
        raise CfrecError(f"valid_pct must be in [0, 1), got {valid_pct}")


def id_keys(ids: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each id (a string as ingest keeps it): the same id, the same key, every night."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(ids, dtype=object).astype(str).astype(object))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# The stream of an evaluation's hold-out (`cfrec evaluate --holdout random`), apart from the
# validation split's: with one stream, the validation part drawn from what the hold-out leaves
# would hold the very rows already held out, none, and training would run without validation.
VALIDATION_STREAM, HOLDOUT_STREAM = 0, 0x5EED_0F_7E57


def random_split(
    user_keys: np.ndarray, item_keys: np.ndarray, valid_pct: float, seed: int, stream: int = VALIDATION_STREAM
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, valid rows): about `valid_pct` of the rows, chosen by a seeded hash of each
    rating's (user, item) keys rather than by its position. So a rating that is held out one night
    is held out every night with the same seed: no model of any night trained on it, and two nights'
    models can be compared on the same hold-out (`cfmodel.registry.compare`). Splits of different
    `stream`s are independent of each other, whatever their seeds."""
    check_valid_pct(valid_pct)
    with np.errstate(over="ignore"):
        users = np.asarray(user_keys, np.uint64)
        items = np.asarray(item_keys, np.uint64)
        mixed = _mix(_mix(users + np.uint64(seed & 0xFFFFFFFF)) ^ (items * np.uint64(0x9E3779B97F4A7C15)))
        if stream != VALIDATION_STREAM:
            mixed = _mix(mixed ^ np.uint64(stream))
    fraction = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    held_out = fraction < valid_pct
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


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
    data: Interactions,
    valid_pct: float,
    seed: int,
    strategy: str = "random",
    keys: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Interactions, Interactions]:
    """(train, valid) by `strategy`: "random" or "time" (the latest ratings of each user). `keys`:
    the `id_keys` of every user and item index, which make the random split the same on every night's
    data; without them the indices themselves are the keys."""
    if strategy == "random":
        user_keys, item_keys = keys if keys is not None else (None, None)
        train_rows, valid_rows = random_split(
            data.users.astype(np.uint64) if user_keys is None else user_keys[data.users],
            data.items.astype(np.uint64) if item_keys is None else item_keys[data.items],
            valid_pct,
            seed,
        )
    elif strategy == "time":
        if data.timestamps is None:
            raise CfrecError("a time-based split needs rating timestamps, and these ratings have none")
        train_rows, valid_rows = latest_split(data.users, data.timestamps, valid_pct)
    else:
        raise CfrecError(f"unknown split '{strategy}' (use {' or '.join(SPLITS)})")
    return data.subset(train_rows), data.subset(valid_rows)
