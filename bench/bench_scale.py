"""Nightly training at scale: the whole train step of each model, default settings, on planted data.

    python bench/bench_scale.py                              # MovieLens-25M shape: 25M ratings
    python bench/bench_scale.py --ratings 2000000 --models dot,rank --device cuda

Writes a warehouse of synthetic ratings with MovieLens 25M's users and items (162,541 x 62,423)
and a planted structure: users and items belong to 64 taste groups; half of a user's ratings go
to items of the user's own group, half to the catalog at large, both skewed to popular items as
real catalogs are; a rating is 3 + (the pair's affinity in 16 hidden factors) + noise, on 1-5
stars. Then runs `pipeline.train` (hold-out split, fit with validation and early stopping, the
ranking model's rating model, refit on every rating, save) for each model in a fresh process and
prints one row per model: epochs, seconds per epoch, the whole step's seconds, peak resident
memory of that process (and of the GPU), and the hold-out quality reached beside the most-popular
list's, the noise floor telling how far the ratings can be predicted at all.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ML25M_USERS, ML25M_ITEMS, ML25M_RATINGS = 162_541, 62_423, 25_000_095
GROUPS, FACTORS, NOISE = 64, 16, 0.5


def planted_cells(n_users: int, n_items: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user index, item index, rating) of `n` distinct pairs, sorted by user then item, with taste
    groups and hidden factors (see the module doc)."""
    rng = np.random.default_rng(seed)
    user_group, item_group = rng.integers(0, GROUPS, n_users), rng.integers(0, GROUPS, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    activity = rng.lognormal(0.0, 1.0, n_users)
    activity = np.minimum(activity / activity.sum(), n_items / 4 / n)  # nobody rates a quarter of the catalog
    activity /= activity.sum()
    # Items of one group in popularity order, to draw from the top of the user's own group.
    by_group = np.argsort(item_group, kind="stable")
    starts = np.searchsorted(item_group[by_group], np.arange(GROUPS + 1))
    sizes = np.diff(starts)
    keys = np.empty(0, np.int64)
    while len(keys) < n:  # repeated pairs are dropped: draw until there are n distinct ones
        draws = int((n - len(keys)) * 1.2) + 1000
        users = rng.choice(n_users, draws, p=activity)
        groups = user_group[users]
        in_group = by_group[starts[groups] + (sizes[groups] * rng.random(draws) ** 2).astype(np.int64)]
        items = np.where(rng.random(draws) < 0.5, in_group, rng.choice(n_items, draws, p=popularity))
        keys = np.unique(np.concatenate([keys, users.astype(np.int64) * n_items + items]))
    keys = np.sort(rng.choice(keys, n, replace=False))
    users, items = keys // n_items, keys % n_items
    user_factors = rng.normal(0, 1, (n_users, FACTORS)).astype(np.float32)
    item_factors = rng.normal(0, 1, (n_items, FACTORS)).astype(np.float32)
    same = (user_group[users] == item_group[items]).astype(np.float32)
    affinity = np.einsum("ij,ij->i", user_factors[users], item_factors[items]) / np.sqrt(FACTORS)
    ratings = np.clip(np.rint(3.0 + 0.5 * same + affinity + rng.normal(0, NOISE, len(keys))), 1, 5)
    return users, items, ratings.astype(np.float32)


def planted_ratings(n_users: int, n_items: int, n: int, seed: int = 0) -> pd.DataFrame:
    """`planted_cells` as the ratings table."""
    return ratings_frame(*planted_cells(n_users, n_items, n, seed))


def ratings_frame(users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> pd.DataFrame:
    """Index cells as the ratings table: string ids, the row number as the timestamp."""
    return pd.DataFrame(
        {
            "user_id": users.astype(str),
            "item_id": items.astype(str),
            "rating": ratings,
            "timestamp": np.arange(len(users), dtype=np.int64),
        }
    )


def write_warehouse(root: Path, ratings: pd.DataFrame) -> None:
    """The tables `pipeline.train` reads: ratings and the recorded rating scale."""
    for table, frame in (
        ("ratings", ratings),
        ("datasets", pd.DataFrame({"source": ["synthetic"], "rating_min": [1.0], "rating_max": [5.0]})),
    ):
        (root / table).mkdir(parents=True)
        frame.to_parquet(root / table / "part-0.parquet", index=False)


def train_one(warehouse: str, model: str, device: str, out: multiprocessing.Queue) -> None:
    """One model's nightly train step in this (fresh) process; its figures go to `out`."""
    import torch

    from cfmodel import pipeline
    from cfmodel.config import Night, TrainRun
    from cfmodel.registry.registry import ModelRegistry
    from cfmodel.training.config import TrainConfig
    from cfmodel.warehouse import Warehouse

    started = time.perf_counter()
    result = pipeline.train(Night(warehouse, "2026-01-01"), TrainConfig(model=model), TrainRun(device=device))
    seconds = time.perf_counter() - started
    artifact = ModelRegistry(Warehouse.open(warehouse).models).load(result.version)
    history = artifact.metrics["history"]
    epoch_seconds = [h["seconds"] for h in history]
    cuda = torch.cuda.is_available() and result.device.startswith("cuda")
    out.put(
        {
            "model": model,
            "device": result.device,
            "epochs": result.epochs_run,
            "best_epoch": artifact.metrics["best_epoch"],
            "seconds_per_epoch": round(float(np.median(epoch_seconds)), 1),
            "fit_seconds": round(result.train_seconds, 1),
            "train_step_seconds": round(seconds, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            **{k: round(v, 4) for k, v in result.metrics.items() if k in ("rmse", "ndcg@10", "precision@10")},
            "popularity_ndcg@10": round(result.baseline.get("ndcg@10", float("nan")), 4),
        }
    )


def train_in_fresh_process(warehouse: str, model: str, device: str) -> dict:
    """`train_one` in a spawned process; its row, or an error if the process dies first (say, out of
    memory) instead of waiting for ever."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=train_one, args=(warehouse, model, device, out))
    process.start()
    while True:
        try:
            row = out.get(timeout=5)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(f"training {model} on {device} died (exit code {process.exitcode})") from None
    process.join()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=int, default=ML25M_RATINGS, help="ratings drawn (default: ML-25M's)")
    parser.add_argument("--users", type=int, default=ML25M_USERS)
    parser.add_argument("--items", type=int, default=ML25M_ITEMS)
    parser.add_argument("--models", default="dot,rank", help="comma-separated models (default dot,rank)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="cfrec-bench-scale-"))
    try:
        started = time.perf_counter()
        ratings = planted_ratings(args.users, args.items, args.ratings, args.seed)
        write_warehouse(workdir / "wh", ratings)
        print(
            f"{len(ratings):,} distinct ratings of {ratings['user_id'].nunique():,} users on "
            f"{ratings['item_id'].nunique():,} items written in {time.perf_counter() - started:.0f}s; "
            f"rating noise floor (RMSE) ~{NOISE}",
            flush=True,
        )
        del ratings
        rows = []
        for model in args.models.split(","):
            row = train_in_fresh_process(str(workdir / "wh"), model, args.device)
            rows.append(row)
            print(json.dumps(row), flush=True)
        print()
        print(pd.DataFrame(rows).to_string(index=False))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
