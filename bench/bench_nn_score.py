"""nn scoring benchmark: every user's top-N from the `nn` model, exact and from candidates.

    python bench/bench_nn_score.py                                   # 25M shape, random weights
    python bench/bench_nn_score.py --ml100k /data/ml-100k            # + a trained nn's recall

The `nn` model cannot rank a user's items with one matrix product: every (user, item) pair goes
through the network. Scoring therefore has two paths, both timed here the way a Spark task runs
them (`recommend_batch`, one thread, rated items masked, top N kept, rows built):

- exact: every pair (`--candidates 0`);
- candidates (the nightly default, `ScoreConfig.candidates`): users are grouped by k-means on
  their first layer's projection, each group's items ranked once by the network at the group's
  centre, and each user scores only the best C of their group's items exactly.

At the 25M shape (162,541 users x 62,423 items, fastai's default EmbeddingNN: embedding widths
600, layers 100-50) the model has random weights, which time the same as trained ones; a sample
of users is scored and the time extrapolated to all users on the Spark cores. The one-off cost of
the clusters (built once per Python worker, all users) is timed in full and added. Recall@10 of the
candidate lists against the exact ones is measured on the same sample: random weights have no
taste structure for the clusters to find, so this is a hard case. With --ml100k, the nn model is
trained on MovieLens 100k (default settings) and the recall of its candidate lists measured on
every user with fewer than 120 ratings (heavier users' blocks are scored exactly), with C scaled
to the small catalog.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cfmodel.scoring.popularity import Popularity  # noqa: E402
from cfmodel.scoring.recommend import ScoringContext, recommend_batch  # noqa: E402
from cfmodel.training.ids import IdIndex  # noqa: E402
from cfmodel.training.neural import EmbeddingNN  # noqa: E402

ML25M_SHAPE = {"users": 162_541, "items": 62_423, "ratings": 25_000_095}
MAX_RATED = 120


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread, as in a Spark task."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def context(model: EmbeddingNN, top_n: int, candidates: int) -> ScoringContext:
    ids = np.array([str(i) for i in range(model.n_items)], dtype=object)
    return ScoringContext(
        model=model,
        users=IdIndex([str(u) for u in range(model.n_users)]),
        trained_users=None,
        untrained_items=np.empty(0, np.int64),
        catalog_ids=ids,
        titles=np.full(model.n_items, None, dtype=object),
        popularity=Popularity.from_counts(np.zeros(model.n_items, np.int64), ids),
        n=top_n,
        candidates=candidates,
    )


def lists(ctx: ScoringContext, users: np.ndarray, rated: list[np.ndarray]) -> tuple[dict, float]:
    """{user: listed item ids} as a Spark task writes them, and the seconds it took on one thread."""
    batch = pa.RecordBatch.from_arrays(
        [pa.array([str(u) for u in users]), pa.array(rated, pa.list_(pa.int32()))], names=["user_id", "rated"]
    )
    with one_thread():
        started = time.perf_counter()
        rows = pa.Table.from_batches(list(recommend_batch(ctx, batch)))
        seconds = time.perf_counter() - started
    frame = rows.select(["user_id", "item_id"]).to_pandas()
    return frame.groupby("user_id")["item_id"].apply(set).to_dict(), seconds


def recall(exact: dict, approx: dict) -> float:
    """Share of the exact lists' items that the candidate lists also hold."""
    found = sum(len(items & approx.get(user, set())) for user, items in exact.items())
    return found / max(1, sum(len(items) for items in exact.values()))


def cluster_seconds(model: EmbeddingNN) -> float:
    with one_thread(), torch.inference_mode():
        model.__dict__.pop("_scoring_cache", None)
        started = time.perf_counter()
        model._clusters()
        return time.perf_counter() - started


def bench_shape(shape: dict, sample_users: int, top_n: int, candidates: list[int], cores: int, seed: int) -> list:
    torch.manual_seed(seed)
    model = EmbeddingNN(shape["users"], shape["items"]).eval()
    rng = np.random.default_rng(seed)
    per_user = shape["ratings"] // shape["users"]
    users = np.sort(rng.choice(shape["users"], sample_users, replace=False))
    rated = [np.unique((rng.random(rng.poisson(per_user)) ** 2 * shape["items"]).astype(np.int32)) for _ in users]
    scale = shape["users"] / sample_users / cores

    exact, seconds = lists(context(model, top_n, 0), users, rated)
    rows = [
        {"candidates": "all (exact)", "sample s": seconds, "clusters s": 0.0, "all users min": seconds * scale / 60}
    ]
    print(f"  exact: {sample_users} users in {seconds:.1f}s", flush=True)
    clusters = cluster_seconds(model)
    print(f"  clusters of {shape['users']} users: {clusters:.1f}s", flush=True)
    for count in candidates:
        approx, seconds = lists(context(model, top_n, count), users, rated)
        rows.append(
            {
                "candidates": count,
                "sample s": seconds,
                "clusters s": clusters,
                "all users min": (clusters + seconds * scale) / 60,
                "recall@10": recall(exact, approx),
            }
        )
        print(f"  candidates {count}: {seconds:.1f}s, recall@10 {rows[-1]['recall@10']:.4f}", flush=True)
    return rows


def bench_trained_ml100k(data: Path, top_n: int, candidates: list[int], seed: int) -> list:
    from cfmodel.training.config import TrainConfig
    from cfmodel.training.interactions import Interactions
    from cfmodel.training.loop import fit
    from cfmodel.training.models import model_for

    ratings = pd.read_csv(data / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"])
    users, items = ratings["user"].to_numpy() - 1, ratings["item"].to_numpy() - 1
    config = TrainConfig.for_model("nn", seed=seed)
    torch.manual_seed(seed)
    model = model_for(config, users.max() + 1, items.max() + 1, (0.0, 5.5))
    started = time.perf_counter()
    data = Interactions(users, items, ratings["rating"].to_numpy(np.float32), None)
    fit(model, data, None, config, torch.device("cpu"), False)
    print(f"  trained nn on ml-100k in {time.perf_counter() - started:.0f}s", flush=True)
    model.eval()
    # Blocks of users whose candidates plus rated items exceed a quarter of the catalog are scored
    # exactly; users with fewer than MAX_RATED ratings keep blocks on the candidate path.
    per_user = np.bincount(users, minlength=model.n_users)
    light = np.flatnonzero(per_user < MAX_RATED)
    print(f"  {len(light)} of {model.n_users} users have fewer than {MAX_RATED} ratings", flush=True)
    rated = [np.sort(items[users == u]).astype(np.int32) for u in light]
    exact, _ = lists(context(model, top_n, 0), light, rated)
    rows = []
    for count in candidates:
        approx, seconds = lists(context(model, top_n, count), light, rated)
        rows.append({"candidates": count, "all users s": seconds, "recall@10": recall(exact, approx)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ml100k", type=Path, help="also train an nn on MovieLens 100k's u.data and measure recall")
    parser.add_argument("--sample-users", type=int, default=300, help="users of the 25M shape scored (default 300)")
    parser.add_argument("--candidates", default="500,1000,2000", help="candidate counts (default 500,1000,2000)")
    parser.add_argument("--cores", type=int, default=2, help="Spark cores the time is extrapolated to (default 2)")
    parser.add_argument("--top-n", type=int, default=10, help="recommendations per user (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.candidates.split(",")]
    with open("/proc/loadavg") as f:
        print(f"torch {torch.__version__}, load average before: {' '.join(f.read().split()[:3])}", flush=True)

    print("MovieLens-25M shape, fastai-default nn, random weights:")
    table = pd.DataFrame(bench_shape(ML25M_SHAPE, args.sample_users, args.top_n, counts, args.cores, args.seed))
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.ml100k:
        print(f"\nMovieLens 100k, nn trained with default settings, users with < {MAX_RATED} ratings:")
        small = [c for c in (25, 50, 100, 200, 300) if (c + MAX_RATED) * 4 <= 1682]
        print(pd.DataFrame(bench_trained_ml100k(args.ml100k, args.top_n, small, args.seed)).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
