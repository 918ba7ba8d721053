"""Tune the ranking model on a validation part of the training file only (never the test file).

    python bench/tune_rank.py --data $CFREC_TEST_DATA/ml-100k [--split u1] [--seeds 42,43] \
        --grid "n_factors=64,128 wd=0.05,0.1,0.2 epochs=6,10"
    python bench/tune_rank.py --planted 16000,6000,2464000 --grid "patience=5,0"

SPLIT.base (or bench_scale's planted data of that shape) is split as `cfrec evaluate --holdout
random` splits a file (20%); each setting of the grid trains on the rest and is scored on that part
by the protocol of `cfrec evaluate` (NDCG@10, P@10, the most-popular list's NDCG@10), with each
seed; the table is sorted by mean NDCG@10.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cfmodel.evaluation.files import evaluate_frames, holdout_split, read_ratings_file  # noqa: E402
from cfmodel.ingest.source_options import get_layout  # noqa: E402
from cfmodel.training.config import TrainConfig  # noqa: E402


def parse_grid(text: str) -> list[dict]:
    axes = []
    for part in text.split():
        name, values = part.split("=")
        axes.append([(name, _value(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("CFREC_TEST_DATA", "../shared/data")) / "ml-100k"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--split", default="u1")
    parser.add_argument("--model", default="rank")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--grid", default="", help='e.g. "n_factors=64,128 wd=0.05,0.1"')
    parser.add_argument(
        "--planted",
        metavar="USERS,ITEMS,RATINGS",
        help="tune on bench_scale's planted data of this shape instead of SPLIT.base (e.g. 16000,6000,2464000)",
    )
    args = parser.parse_args(argv)

    if args.planted:
        from bench_scale import planted_ratings

        base = planted_ratings(*(int(v) for v in args.planted.split(",")))
    else:
        base = read_ratings_file(args.data / f"{args.split}.base", get_layout("movielens-100k"))
    train, valid = holdout_split(base, "random", 0.2, 42)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for setting in parse_grid(args.grid):
        scores, seconds, popular = [], [], []
        for seed in seeds:
            config = TrainConfig.for_model(args.model, seed=seed, **setting)
            started = time.perf_counter()
            measured = evaluate_frames(train, valid, config, device="cpu", progress=False)
            seconds.append(time.perf_counter() - started)
            scores.append((measured["ndcg@10"], measured["precision@10"]))
            popular.append(measured["popularity"]["ndcg@10"])
        ndcg, precision = np.array(scores).T
        results.append((ndcg.mean(), ndcg.std(), precision.mean(), np.mean(seconds), setting))
        print(
            f"{ndcg.mean():.4f} +- {ndcg.std():.4f}  P@10 {precision.mean():.4f}  most popular {np.mean(popular):.4f}  "
            f"{np.mean(seconds):.1f}s  {setting}",
            flush=True,
        )
    print("\nbest first:")
    for ndcg, spread, precision, seconds, setting in sorted(results, key=lambda r: -r[0]):
        print(f"| {setting} | {ndcg:.4f} +- {spread:.4f} | {precision:.4f} | {seconds:.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
