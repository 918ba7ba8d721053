"""Scoring benchmark: every user's top-N on local Spark, beside Spark ALS's recommendForAllUsers.

    python bench/bench_score.py --ml100k /data/ml-100k                      # MovieLens 100k only
    python bench/bench_score.py --ml100k /data/ml-100k --synthetic --als    # + 25M-shaped set and ALS

The model is the dot model with random weights (timing does not depend on them), 64 factors
unless --factors says otherwise. The nn model has its own benchmark, bench_nn_score.py.

What is timed (wall clock, after one untimed warm-up job so JVM and Python-worker start-up are
not counted):

- cfrec `score()`: the nightly step as it runs: read the ratings table, gather each user's rated
  items, score every user against every item in `mapInArrow`, mask rated items, keep the top N,
  write the partition, check it and swap it in.
- cfrec `recommend()` into Spark's `noop` sink: the same computation without the Parquet write.
- a bare torch loop in this one process, no Spark (synthetic set only): blocks of users scored with
  one float32 matrix product each, rated items masked, `topk`; the floor the nightly step is held
  to (the ratings are read into per-user arrays beforehand, untimed). Every 50th user's list from
  it is compared item for item with the published one: the bfloat16 screen must not change a list;
- ALS `recommendForAllUsers(N)` into the `noop` sink, on an ALSModel holding the very same user and
  item vectors: a rank-64 model fitted with maxIter=1 on a small sample, whose factor tables are
  then replaced with the benchmark's. ALS does not exclude rated items; cfrec does.

The synthetic set has MovieLens 25M's shape: 162,541 users, 62,423 items, 64 factors, random
normal vectors, and 25,000,095 ratings drawn with a popularity skew (item = n_items * u^2).
During the synthetic set's `score()` the peak resident memory of the Python driver, the Spark JVM
(driver and executor in local mode) and the Python workers is sampled (bench/memory.py) and printed.
Figures print as a table; nothing is written outside --workdir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memory import PeakMemory  # noqa: E402

from cfmodel.registry.artifact import ArtifactConfig, ModelArtifact  # noqa: E402
from cfmodel.registry.registry import ModelRegistry  # noqa: E402
from cfmodel.scoring.recommend import recommend, score  # noqa: E402
from cfmodel.spark import get_spark  # noqa: E402
from cfmodel.training.ids import IdIndex  # noqa: E402
from cfmodel.training.models import EmbeddingDotBias  # noqa: E402
from cfmodel.warehouse import Warehouse, publish  # noqa: E402
from cfmodel.warehouse.schemas import RECOMMENDATIONS  # noqa: E402

ALS_WHAT = "Spark ALS recommendForAllUsers -> noop (no exclusion)"
BARE_WHAT = f"bare torch loop, one process, {torch.get_num_threads()} threads (matmul + mask + topk, no Spark)"
# Every this-many-th user's list is compared, item for item, with the bare float32 loop's.
EXACTNESS_SAMPLE = 50
ML25M_SHAPE = {"users": 162_541, "items": 62_423, "ratings": 25_000_095, "factors": 64}


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def write_frame(frame: pd.DataFrame):
    def write(tmp: Path) -> None:
        tmp.mkdir()
        frame.to_parquet(tmp / "part-0.parquet", index=False)

    return write


def load_avg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def bench_ml100k(spark, data: Path, workdir: Path, top_n: int, n_factors: int, seed: int, with_als: bool) -> list[dict]:
    wh = Warehouse.open(workdir / "ml100k")
    ratings = pd.read_csv(
        data / "u.data",
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": "float32", "timestamp": "int64"},
    )
    items = pd.read_csv(
        data / "u.item", sep="|", encoding="latin-1", header=None, usecols=[0, 1], names=["item_id", "title"], dtype=str
    )
    publish(wh.table("ratings"), write_frame(ratings))
    publish(wh.table("items"), write_frame(items))
    model = random_artifact(ratings["user_id"].nunique(), ratings["item_id"].nunique(), n_factors, seed)
    model.users, model.items = IdIndex.from_values(ratings["user_id"]), IdIndex.from_values(ratings["item_id"])
    write_index_tables(wh, model)
    ModelRegistry(wh.models).save(model)
    ModelRegistry(wh.models).set_current(model.version)
    score(spark, wh.root, "2026-01-01", top_n)  # warm-up
    _, nightly = timed(lambda: score(spark, wh.root, "2026-01-02", top_n))
    frame = spark.read.parquet(str(wh.table("ratings")))
    _, compute = timed(lambda: recommend(spark, frame, model, top_n).write.format("noop").mode("overwrite").save())
    shape = f"{len(model.users)} users x {len(model.items)} items, {model.model.n_factors} factors, 100k ratings"
    rows = [
        {
            "data": "ml-100k",
            "what": "cfrec score() (read, score, write, check, publish)",
            "shape": shape,
            "seconds": nightly,
        },
        {"data": "ml-100k", "what": "cfrec recommend() -> noop", "shape": shape, "seconds": compute},
    ]
    if with_als:
        # ALS ids are ints: the positions of the same vectors.
        als = als_with_factors(spark, model, workdir / "ml100k-als")
        als.recommendForAllUsers(top_n).write.format("noop").mode("overwrite").save()  # warm-up
        _, als_seconds = timed(lambda: als.recommendForAllUsers(top_n).write.format("noop").mode("overwrite").save())
        rows.append({"data": "ml-100k", "what": ALS_WHAT, "shape": shape, "seconds": als_seconds})
    return rows


def write_index_tables(wh: Warehouse, model: ModelArtifact) -> None:
    """The id index tables an ingest writes beside the ratings (here every rated id is the model's)."""
    publish(wh.table("user_index"), write_frame(model.users.to_frame()))
    publish(wh.table("item_index"), write_frame(model.items.to_frame()))


def random_artifact(n_users: int, n_items: int, n_factors: int, seed: int) -> ModelArtifact:
    torch.manual_seed(seed)
    model = EmbeddingDotBias(n_users, n_items, n_factors)
    with torch.no_grad():
        for emb in (model.u_weight, model.i_weight):
            emb.weight.normal_(0.0, 1.0 / np.sqrt(n_factors))
        for emb in (model.u_bias, model.i_bias):
            emb.weight.normal_(0.0, 0.1)
    return ModelArtifact(
        version="bench-random",
        model=model.eval(),
        users=IdIndex([str(u) for u in range(n_users)]),
        items=IdIndex([str(i) for i in range(n_items)]),
        config=ArtifactConfig(model_type="dot", hparams=model.hparams(), n_users=n_users, n_items=n_items),
        metrics={},
    )


def synthetic_ratings(spark, n_users: int, n_items: int, n_ratings: int, seed: int):
    from pyspark.sql import functions as F

    return spark.range(n_ratings).select(
        (F.floor(F.rand(seed) * n_users)).cast("string").alias("user_id"),
        (F.floor(F.pow(F.rand(seed + 1), 2) * n_items)).cast("string").alias("item_id"),
        (F.floor(F.rand(seed + 2) * 5) + 1).cast("float").alias("rating"),
        F.lit(0).cast("long").alias("timestamp"),
    )


def als_with_factors(spark, model: ModelArtifact, workdir: Path):
    """An ALSModel whose factors are exactly `model`'s: fit a tiny rank-k ALS, swap its factor tables."""
    from pyspark.ml.recommendation import ALS, ALSModel

    rank = model.model.n_factors
    tiny = spark.createDataFrame(
        [(u, i, float((u + i) % 5 + 1)) for u in range(30) for i in range(20)], "user int, item int, rating float"
    )
    path = workdir / "als-model"
    ALS(rank=rank, maxIter=1, userCol="user", itemCol="item", ratingCol="rating", seed=0).fit(
        tiny
    ).write().overwrite().save(str(path))
    f = model.factors()
    for table, vectors in (("userFactors", f["user_vectors"]), ("itemFactors", f["item_vectors"])):
        frame = pd.DataFrame(
            {"id": np.arange(len(vectors), dtype=np.int32), "features": list(vectors.astype(np.float32))}
        )
        shutil.rmtree(path / table)
        spark.createDataFrame(frame, "id int, features array<float>").repartition(8).write.parquet(str(path / table))
    return ALSModel.load(str(path))


def bench_synthetic(spark, workdir: Path, top_n: int, shape: dict, with_als: bool, seed: int) -> list[dict]:
    wh = Warehouse.open(workdir / "synthetic")
    model, build = timed(lambda: random_artifact(shape["users"], shape["items"], shape["factors"], seed))
    ModelRegistry(wh.models).save(model)
    ModelRegistry(wh.models).set_current(model.version)
    ratings = synthetic_ratings(spark, shape["users"], shape["items"], shape["ratings"], seed)
    _, generate = timed(lambda: publish(wh.table("ratings"), lambda tmp: ratings.write.parquet(str(tmp))))
    write_index_tables(wh, model)
    print(f"  synthetic set written in {generate:.0f}s (model built in {build:.0f}s)", flush=True)
    label = (
        f"{shape['users']} users x {shape['items']} items, {shape['factors']} factors, "
        f"{shape['ratings'] / 1e6:.1f}M ratings"
    )
    frame = spark.read.parquet(str(wh.table("ratings")))
    rows = []
    score(spark, wh.root, "2026-01-01", top_n)  # warm-up: JVM code paths and Python workers
    with PeakMemory() as memory:
        report, nightly = timed(lambda: score(spark, wh.root, "2026-01-02", top_n))
    print(f"  peak resident memory during score(): {memory.summary()}", flush=True)
    rows.append(
        {
            "data": "synthetic 25M-shaped",
            "what": "cfrec score() (read, score, write, check, publish)",
            "shape": label,
            "seconds": nightly,
            "rows": report.rows,
        }
    )
    print(f"  cfrec score(): {nightly:.1f}s", flush=True)
    _, compute = timed(lambda: recommend(spark, frame, model, top_n).write.format("noop").mode("overwrite").save())
    rows.append(
        {"data": "synthetic 25M-shaped", "what": "cfrec recommend() -> noop", "shape": label, "seconds": compute}
    )
    print(f"  cfrec recommend() -> noop: {compute:.1f}s", flush=True)
    loop, prepare, reference = bare_torch_loop(model, wh.table("ratings"), top_n)
    rows.append({"data": "synthetic 25M-shaped", "what": BARE_WHAT, "shape": label, "seconds": loop})
    print(f"  {BARE_WHAT}: {loop:.1f}s (+{prepare:.1f}s reading the ratings into per-user CSR)", flush=True)
    same, compared = same_lists(wh.partition(RECOMMENDATIONS, "2026-01-02"), reference)
    print(f"  published lists identical to the bare float32 loop's: {same} of {compared} sampled users", flush=True)
    if with_als:
        als = als_with_factors(spark, model, workdir)
        _, als_seconds = timed(lambda: als.recommendForAllUsers(top_n).write.format("noop").mode("overwrite").save())
        rows.append({"data": "synthetic 25M-shaped", "what": ALS_WHAT, "shape": label, "seconds": als_seconds})
        print(f"  ALS recommendForAllUsers -> noop: {als_seconds:.1f}s", flush=True)
    return rows


def bare_torch_loop(model: ModelArtifact, ratings_path: Path, top_n: int) -> tuple[float, float, dict]:
    """The floor without Spark: one process, torch's own threads, blocks of users scored with one
    float32 matrix product each, their rated items masked, `topk`. Returns (seconds of the loop,
    seconds of reading the ratings into per-user CSR beforehand, not counted in the loop, and the
    lists of every EXACTNESS_SAMPLE-th user: {user_id: [item_id, ...]})."""
    import pyarrow.parquet as pq

    from cfmodel.scoring.topk import top_k

    started = time.perf_counter()
    table = pq.read_table(ratings_path, columns=["user_id", "item_id"])
    users = model.users.encode(table.column("user_id").to_numpy())
    items = model.items.encode(table.column("item_id").to_numpy())
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    indptr = np.searchsorted(users, np.arange(len(model.users) + 1))
    prepare = time.perf_counter() - started
    net = model.model
    block = max(1, net.pairs_per_block // net.n_items)
    reference = {}
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, net.n_users, block):
            stop = min(start + block, net.n_users)
            rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
            cols = items[indptr[start] : indptr[stop]]
            listed, _ = top_k(net.ranking_scores(torch.arange(start, stop)), top_n, rows, cols)
            for user in range(-start % EXACTNESS_SAMPLE, stop - start, EXACTNESS_SAMPLE):
                reference[model.users.ids[start + user]] = [model.items.ids[i] for i in listed[user] if i >= 0]
    return time.perf_counter() - started, prepare, reference


def same_lists(partition: Path, reference: dict) -> tuple[int, int]:
    """(users whose published list is the reference list, item for item in rank order; users compared)."""
    import pyarrow.parquet as pq

    recs = pq.read_table(partition, columns=["user_id", "rank", "item_id"]).to_pandas()
    recs = recs[recs["user_id"].isin(reference)].sort_values(["user_id", "rank"])
    published = recs.groupby("user_id")["item_id"].apply(list).to_dict()
    return sum(published.get(user) == items for user, items in reference.items()), len(reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ml100k", type=Path, help="folder with MovieLens 100k's u.data and u.item")
    parser.add_argument("--synthetic", action="store_true", help="also time the MovieLens-25M-shaped synthetic set")
    parser.add_argument(
        "--als", action="store_true", help="also time Spark ALS recommendForAllUsers on the same vectors"
    )
    parser.add_argument("--users", type=int, default=ML25M_SHAPE["users"], help="synthetic users (default: ML-25M's)")
    parser.add_argument("--items", type=int, default=ML25M_SHAPE["items"], help="synthetic items (default: ML-25M's)")
    parser.add_argument(
        "--ratings", type=int, default=ML25M_SHAPE["ratings"], help="synthetic ratings (default: ML-25M's)"
    )
    parser.add_argument("--factors", type=int, default=ML25M_SHAPE["factors"], help="factors (default 64)")
    parser.add_argument("--top-n", type=int, default=10, help="recommendations per user (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not args.ml100k and not args.synthetic:
        parser.error("nothing to time: pass --ml100k DIR and/or --synthetic")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cfrec-bench-"))
    spark = get_spark("cfrec-bench-score")
    cores = spark.sparkContext.defaultParallelism
    print(f"local Spark, {cores} cores, torch {torch.__version__}, load average before: {load_avg()}", flush=True)
    rows = []
    try:
        if args.ml100k:
            rows += bench_ml100k(spark, args.ml100k, workdir, args.top_n, args.factors, args.seed, args.als)
        if args.synthetic:
            shape = {"users": args.users, "items": args.items, "ratings": args.ratings, "factors": args.factors}
            rows += bench_synthetic(spark, workdir, args.top_n, shape, args.als, args.seed)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average after: {load_avg()}\n")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print()
    for data in ("ml-100k", "synthetic 25M-shaped"):
        by_what = {r["what"]: r["seconds"] for r in rows if r["data"] == data}
        nightly = by_what.get("cfrec score() (read, score, write, check, publish)")
        if ALS_WHAT in by_what:
            ratio = by_what[ALS_WHAT] / by_what["cfrec recommend() -> noop"]
            print(f"{data}: ALS recommendForAllUsers / cfrec recommend(), same vectors and sink: {ratio:.2f}x")
            als_ratio = nightly / by_what[ALS_WHAT]
            print(f"{data}: cfrec score() / ALS recommendForAllUsers: {als_ratio:.2f} (target <= 0.33)")
        if BARE_WHAT in by_what:
            print(f"{data}: cfrec score() / bare torch loop: {nightly / by_what[BARE_WHAT]:.2f} (target <= 1.5)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cores": cores}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
