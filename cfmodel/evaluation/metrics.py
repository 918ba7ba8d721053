"""Rating and top-N metrics, and the most-popular baseline they are compared against.

Ranking protocol: a user counts if they have at least one relevant (held-out) item; their top k
list holds items they did not rate in training; gains are binary; the ideal DCG and the MAP
normaliser use min(k, #relevant); coverage is distinct recommended items over the catalog size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from cfmodel.training.interactions import Interactions

# Scores held at once when ranking a block of users: 16M float32 = 64 MB whatever the catalog size.
PAIRS_PER_BLOCK = 1 << 24
RANKING_K = 10


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, float) - np.asarray(actual, float)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(actual, float))))


def ranking_metrics(
    recommended: np.ndarray,
    relevant: Sequence[np.ndarray],
    k: int,
    catalog_size: int,
) -> dict[str, float]:
    """recommended: [users, >=k] item indices, best first (-1 = empty slot); relevant: per user."""
    recommended = np.asarray(recommended)[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg, average_precision = [], [], [], []
    shown = set()
    for row, rel in zip(recommended, relevant):
        rel = np.unique(np.asarray(rel))
        if len(rel) == 0:
            continue
        row = row[row >= 0]
        shown.update(row.tolist())
        hits = np.isin(row, rel)
        n_hits = int(hits.sum())
        denominator = min(k, len(rel))
        precision.append(n_hits / k)
        recall.append(n_hits / len(rel))
        ndcg.append(float(discounts[: len(row)][hits].sum() / discounts[:denominator].sum()))
        precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        average_precision.append(float(precision_at_hits.sum() / denominator))
    mean = lambda values: float(np.mean(values)) if values else 0.0  # noqa: E731
    return {
        f"precision@{k}": mean(precision),
        f"recall@{k}": mean(recall),
        f"ndcg@{k}": mean(ndcg),
        f"map@{k}": mean(average_precision),
        f"coverage@{k}": len(shown) / catalog_size if catalog_size else 0.0,
        "users": len(precision),
    }


def popularity_scores(train_items: np.ndarray, n_items: int) -> np.ndarray:
    """Number of training ratings per item: the most-popular baseline's score."""
    return np.bincount(np.asarray(train_items, np.int64), minlength=n_items).astype(np.float64)


def top_k_excluding(scores: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Top k columns of each row of `scores` ([users, items] or one shared [items] row), skipping
    each user's `exclude` items; ties broken by lower item index. -1 fills rows with too few items."""
    scores = np.asarray(scores, np.float64)
    shared = scores.ndim == 1
    out = np.full((len(exclude), k), -1, np.int64)
    if shared:
        order = np.lexsort((np.arange(len(scores)), -scores))
    for u, excluded in enumerate(exclude):
        if shared:
            ranked = order[~np.isin(order, excluded)][:k]
        else:
            row = scores[u].copy()
            row[np.asarray(excluded, np.int64)] = -np.inf
            ranked = np.lexsort((np.arange(len(row)), -row))[:k]
            ranked = ranked[np.isfinite(row[ranked])]
        out[u, : len(ranked)] = ranked
    return out


@torch.no_grad()
def predict(
    model: torch.nn.Module, users: np.ndarray, items: np.ndarray, device: torch.device | str = "cpu", bs: int = 1 << 16
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
def top_k_scored(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    users: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray],
    k: int,
    n_items: int,
    never: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Top k items per user by `score_fn(users) -> [users, n_items]`, skipping the user's `seen`
    items (CSR: indptr, items) and the `never` items; -1 fills rows with too few candidates."""
    users = np.asarray(users, np.int64)
    indptr, seen_items = seen
    k = min(k, n_items)
    out = np.full((len(users), k), -1, np.int64)
    never_t = torch.as_tensor(np.asarray(never if never is not None else [], np.int64), device=device)
    block = max(1, PAIRS_PER_BLOCK // max(n_items, 1))
    for start in range(0, len(users), block):
        batch = users[start : start + block]
        scores = score_fn(torch.as_tensor(batch, device=device)).float().clone()
        counts = indptr[batch + 1] - indptr[batch]
        cols = (
            np.concatenate([seen_items[indptr[u] : indptr[u + 1]] for u in batch])
            if counts.sum()
            else np.empty(0, np.int64)
        )
        rows = np.repeat(np.arange(len(batch)), counts)
        scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = float("-inf")
        scores[:, never_t] = float("-inf")
        values, index = scores.topk(k, dim=1)
        index[torch.isneginf(values)] = -1
        out[start : start + len(batch)] = index.cpu().numpy()
    return out


def popularity_score_fn(train_items: np.ndarray, n_items: int, device: torch.device | str = "cpu"):
    """The most-popular baseline as a score function; ties go to the lower item index."""
    counts = torch.as_tensor(popularity_scores(train_items, n_items), device=device)
    row = (counts - torch.arange(n_items, device=device, dtype=torch.float64) / (n_items + 1)).float()
    return lambda users: row.expand(len(users), -1)


def holdout_metrics(
    model: torch.nn.Module,
    train: Interactions,
    holdout: Interactions,
    n_items: int,
    k: int = RANKING_K,
    device: torch.device | str = "cpu",
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{"model": {...}, "popularity": {...}} on `holdout`, by the ranking protocol above.

    Rating models also get rmse and mae over the held-out ratings whose user and item both appear
    in `train` (the others are counted as "unseen_rows"). Items nobody rated in `train` are never
    recommended. With `max_users`, ranking is measured on a seeded sample of that many
    held-out users (the count is reported as "users").
    """
    result = {"model": {}, "popularity": {}}
    if len(holdout) == 0:
        return result
    item_counts = train.item_counts(n_items)
    if getattr(model, "predicts_ratings", False):
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
    for name, score_fn in (
        ("model", model.score_all),
        ("popularity", popularity_score_fn(train.items, n_items, device)),
    ):
        recommended = top_k_scored(score_fn, users, seen, k, n_items, never, device)
        result[name].update(ranking_metrics(recommended, relevant, k, n_items))
    return result
