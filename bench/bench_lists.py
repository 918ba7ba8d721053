"""The product benchmark: the recommendations table `cfrec run` publishes, scored on held-out ratings,
beside the most-popular list and EASE on the same split, in one run.

    python bench/bench_lists.py --data $CFREC_TEST_DATA/ml-100k [--split u1] [--seeds 42,43,44] [-- run options]

`cfrec run` ingests SPLIT.base (as the movielens-100k layout, with u.item) into a fresh warehouse and
publishes its lists with the given options (default settings when none). Relevant items are every
item a user rated in SPLIT.test; items rated in SPLIT.base are never relevant (nor recommended);
k = 10; NDCG and precision are averaged over the test users. EASE (Steck 2019): the closed-form
item-item model B = I - P / diag(P), P = (X'X + lambda I)^-1 on the binary base matrix.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import ease_weights  # noqa: E402

from cfmodel.evaluation.metrics import ranking_metrics  # noqa: E402

K = 10
COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", names=COLUMNS, dtype={"user_id": str, "item_id": str})


def score_lists(lists: dict[str, list[str]], base: pd.DataFrame, test: pd.DataFrame, n_items: int) -> dict:
    """NDCG@10 and P@10 of per-user lists of item ids against the test ratings."""
    relevant = test.groupby("user_id")["item_id"].apply(list)
    items = {item: i for i, item in enumerate(sorted(set(base["item_id"]) | set(test["item_id"])))}
    rows, rel = [], []
    for user, wanted in relevant.items():
        listed = [items.get(i, -1) for i in lists.get(user, [])][:K]
        rows.append(listed + [-1] * (K - len(listed)))
        rel.append(np.array([items[i] for i in wanted]))
    measured = ranking_metrics(np.array(rows), rel, K, n_items)
    return {"ndcg@10": measured["ndcg@10"], "precision@10": measured["precision@10"], "users": len(rows)}


def popularity_lists(base: pd.DataFrame) -> dict[str, list[str]]:
    ranked = base["item_id"].value_counts().index.tolist()
    rated = base.groupby("user_id")["item_id"].apply(set)
    return {user: [i for i in ranked if i not in seen][:K] for user, seen in rated.items()}


def ease_lists(base: pd.DataFrame, lam: float) -> dict[str, list[str]]:
    users, items = sorted(base["user_id"].unique()), sorted(base["item_id"].unique())
    u_index = {u: n for n, u in enumerate(users)}
    i_index = {i: n for n, i in enumerate(items)}
    x = np.zeros((len(users), len(items)))
    x[base["user_id"].map(u_index), base["item_id"].map(i_index)] = 1.0
    scores = x @ ease_weights(x, lam)
    scores[x > 0] = -np.inf
    best = np.argsort(-scores, axis=1)[:, :K]
    return {user: [items[j] for j in best[n]] for n, user in enumerate(users)}


def published_lists(data: Path, split: str, run_options: list[str], seed: int) -> tuple[dict, float, pd.DataFrame]:
    """Run `cfrec run` on SPLIT.base; the published lists, the seconds it took, the table itself."""
    from cfmodel.cli import main

    work = Path(tempfile.mkdtemp(prefix="cfrec-bench-lists-"))
    try:
        (work / "in").mkdir()
        shutil.copy(data / f"{split}.base", work / "in" / "u.data")
        shutil.copy(data / "u.item", work / "in" / "u.item")
        argv = ["run", "--source", "movielens-100k", "--input", str(work / "in"), "--warehouse", str(work / "wh")]
        argv += ["--run-date", "2026-01-01", "--seed", str(seed), "--no-tables", *run_options]
        started = time.perf_counter()
        if main(argv) != 0:
            raise SystemExit("cfrec run failed")
        seconds = time.perf_counter() - started
        table = pd.read_parquet(work / "wh" / "recommendations" / "run_date=2026-01-01")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ordered = table.sort_values(["user_id", "rank"])
    return ordered.groupby("user_id")["item_id"].apply(list).to_dict(), seconds, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("CFREC_TEST_DATA", "../shared/data")) / "ml-100k"
    parser.add_argument("--data", type=Path, default=default_data, help=f"the ml-100k folder (default {default_data})")
    parser.add_argument("--split", default="u1", help="SPLIT.base / SPLIT.test (default u1)")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds of the cfrec runs (default 42)")
    parser.add_argument("--ease-lambda", type=float, default=500.0, help="EASE's L2 weight (default 500)")
    parser.add_argument("run_options", nargs="*", help="options for cfrec run (after --)")
    args = parser.parse_args(argv)

    base, test = read(args.data / f"{args.split}.base"), read(args.data / f"{args.split}.test")
    n_items = len(set(base["item_id"]) | set(test["item_id"]))
    ease = ease_lists(base, args.ease_lambda)
    rows = [
        ("most popular unrated items", score_lists(popularity_lists(base), base, test, n_items), None),
        (f"EASE (lambda {args.ease_lambda:g})", score_lists(ease, base, test, n_items), None),
    ]
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        lists, seconds, table = published_lists(args.data, args.split, args.run_options, seed)
        measured = score_lists(lists, base, test, n_items)
        rated = base.merge(table, on=["user_id", "item_id"])
        measured["rated_items_listed"] = len(rated)
        measured["users_listed"] = table["user_id"].nunique()
        runs.append((seed, measured, seconds, table))
    print(f"\nMovieLens 100k {args.split}: lists scored on {args.split}.test, k = {K}, load {os.getloadavg()[0]:.1f}")
    print(f"cfrec run options: {' '.join(args.run_options) or '(defaults)'}\n")
    print("| what | NDCG@10 | P@10 |\n|---|---|---|")
    for name, measured, _ in rows:
        print(f"| {name} | {measured['ndcg@10']:.3f} | {measured['precision@10']:.3f} |")
    ndcg = np.array([m["ndcg@10"] for _, m, _, _ in runs])
    precision = np.array([m["precision@10"] for _, m, _, _ in runs])
    spread = f" (+- {ndcg.std():.3f} over seeds {args.seeds})" if len(runs) > 1 else ""
    print(f"| cfrec nightly table | {ndcg.mean():.3f}{spread} | {precision.mean():.3f} |")
    for seed, measured, seconds, table in runs:
        sources = table.groupby("source")["user_id"].nunique().to_dict()
        predicted = table["predicted_rating"].notna().mean() if "predicted_rating" in table else float("nan")
        print(
            f"seed {seed}: NDCG@10 {measured['ndcg@10']:.4f}, P@10 {measured['precision@10']:.4f}, "
            f"{measured['users_listed']} users listed ({sources}), rated items listed "
            f"{measured['rated_items_listed']}, rows with a predicted rating {predicted:.0%}, cfrec run {seconds:.0f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
