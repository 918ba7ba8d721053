"""Measuring a model on held-out ratings, beside the most-popular list on the same hold-out.

Protocol (the one `cfrec evaluate`, the training loop's validation and the nightly metrics all
use): users = every user with a held-out rating; candidates = the catalog minus the items the user
rated in training and minus items nobody rated in training; relevant = the user's held-out items
(any rating); top k by score (`cfmodel.evaluation.metrics` has the metrics). Rating models also
get RMSE and MAE over the held-out ratings whose user and item appear in training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cfmodel.evaluation.metrics import RANKING_K, mae, ranking_metrics, rmse
from cfmodel.scoring.popularity import Popularity
from cfmodel.scoring.topk import top_k
from cfmodel.training.interactions import Interactions
from cfmodel.training.models import CollabModel

# Scores held at once when ranking a block of users: 16M float32 = 64 MB whatever the catalog size.
PAIRS_PER_BLOCK = 1 << 24


@torch.no_grad()
def predict(
    model: CollabModel, users: np.ndarray, items: np.ndarray, device: torch.device | str = "cpu", bs: int = 1 << 16
) -> np.ndarray:
    """The model's predicted ratings for (user, item) pairs, in batches."""
    model.eval()
    out = [
        model(torch.as_tensor(users[i : i + bs], device=device), torch.as_tensor(items[i : i + bs], device=device))
        .float()
        .cpu()
        .numpy()
        for i in range(0, len(users), bs)
    ]
    return np.concatenate(out) if out else np.empty(0, np.float32)


@torch.no_grad()
def recommended_items(
    score_fn: Callable[[torch.Tensor, np.ndarray, np.ndarray], torch.Tensor],
    users: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray],
    k: int,
    n_items: int,
    never: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Top k items per user by `score_fn(users, rows, cols) -> [users, n_items]` (cells `rows`,
    `cols`: each user's `seen` items, CSR: indptr, items), skipping the seen items and the `never`
    items; -1 fills rows with too few candidates."""
    users = np.asarray(users, np.int64)
    indptr, seen_items = seen
    out = np.full((len(users), min(k, n_items)), -1, np.int64)
    block = max(1, PAIRS_PER_BLOCK // max(n_items, 1))
    for start in range(0, len(users), block):
        batch = users[start : start + block]
        counts = indptr[batch + 1] - indptr[batch]
        cols = np.concatenate([seen_items[indptr[u] : indptr[u + 1]] for u in batch]) if counts.sum() else counts[:0]
        rows = np.repeat(np.arange(len(batch)), counts)
        scores = score_fn(torch.as_tensor(batch, device=device), rows, cols).float().clone()
        # A diverged model is measured as it is (its NaN scores rank first) rather than refused here.
        items, _ = top_k(scores, k, rows, cols, masked_columns=never, refuse_nan=False)
        out[start : start + len(batch)] = items
    return out


def holdout_metrics(
    model: CollabModel,
    train: Interactions,
    holdout: Interactions,
    n_items: int,
    k: int = RANKING_K,
    device: torch.device | str = "cpu",
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{"model": {...}, "popularity": {...}} on `holdout`, by the protocol above.

    Held-out ratings whose user or item is not in `train` are counted as "unseen_rows". With
    `max_users`, ranking is measured on a seeded sample of that many held-out users (the count is
    reported as "users"). A model that computes users' vectors from their ratings (the ranking
    model) is measured with `train` as their history: its user rows are rewritten.
    """
    result: dict[str, dict[str, float]] = {"model": {}, "popularity": {}}
    if len(holdout) == 0:
        return result
    item_counts = train.item_counts(n_items)
    if model.predicts_ratings:
        known_users = np.bincount(train.users, minlength=int(holdout.users.max()) + 1) > 0
        scored = known_users[holdout.users] & (item_counts[holdout.items] > 0)
        rated = holdout.subset(np.flatnonzero(scored))
        predicted = predict(model, rated.users, rated.items, device)
        result["model"].update(
            rmse=rmse(predicted, rated.ratings),
            mae=mae(predicted, rated.ratings),
            unseen_rows=int(len(holdout) - len(rated)),
        )
    users = np.unique(holdout.users)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    n_users = int(max(train.users.max(initial=-1), holdout.users.max(initial=-1), users.max(initial=-1))) + 1
    seen = train.by_user(n_users)
    indptr, relevant_items = holdout.by_user(n_users)
    relevant = [relevant_items[indptr[u] : indptr[u + 1]] for u in users]
    never = np.flatnonzero(item_counts == 0)
    model.eval()
    model.encode_users(train)
    popular = Popularity.from_counts(item_counts).score_fn(device)
    for name, score_fn in (("model", model.list_scores), ("popularity", popular)):
        recommended = recommended_items(score_fn, users, seen, k, n_items, never, device)
        result[name].update(ranking_metrics(recommended, relevant, k, n_items))
    return result
