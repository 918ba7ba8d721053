"""The score task: every user's top-N unrated items, scored on Spark executors.

Users are spread over partitions by the shuffle that gathers their rated items. Each partition
scores its users against all items (the model is broadcast) with one vectorised block per few
hundred users inside `mapInArrow`, masks what they rated and keeps the top N. Users the model
has no vector for get the most-popular unrated items instead (`source` = `popular`), so every
user in the ratings table gets N rows. Nothing is collected on the driver but per-item counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.errors import CfrecError
from cfmodel.registry import artifact
from cfmodel.scoring.popularity import Popularity
from cfmodel.scoring.scorers import scorer_for, users_per_block
from cfmodel.scoring.topk import csr_pairs, top_n_masked
from cfmodel.training.ids import IdIndex
from cfmodel.warehouse.store import Warehouse, publish

log = logging.getLogger(__name__)

SOURCE_MODEL, SOURCE_POPULAR = "model", "popular"
RECS_ARROW_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("source", pa.string()),
        ("title", pa.string()),
    ]
)
RECS_SCHEMA = "user_id string, rank int, item_id string, score float, source string, title string"
# Popularity blocks are n + (most items one user rated) wide, far narrower than the catalog.
COLD_USERS_PER_BLOCK = 4096
RECS_COLUMNS = ["user_id", "rank", "item_id", "score", "source", "model_version", "title"]


@dataclass
class ScoringContext:
    """Everything an executor needs, shipped once per executor as a broadcast.

    The catalog is the model's items in model order followed by items the model has never seen,
    so a catalog index below `scorer.n_items` is also the model's item index.
    """

    scorer: object
    users: IdIndex
    catalog_ids: np.ndarray
    titles: np.ndarray
    popularity: Popularity
    n: int


def _csr(rated: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    return rated.offsets.to_numpy(), rated.values.to_numpy(zero_copy_only=False)


def _rows(
    ctx: ScoringContext, user_ids: np.ndarray, items: np.ndarray, scores: np.ndarray, source: str
) -> pa.RecordBatch:
    found = items >= 0
    per_user = found.sum(axis=1)
    picked = items[found]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.repeat(user_ids, per_user), pa.string()),
            pa.array(np.broadcast_to(np.arange(1, items.shape[1] + 1, dtype=np.int32), items.shape)[found]),
            pa.array(ctx.catalog_ids[picked], pa.string()),
            pa.array(scores[found].astype(np.float32)),
            pa.array(np.full(len(picked), source, dtype=object), pa.string()),
            pa.array(ctx.titles[picked], pa.string()),
        ],
        schema=RECS_ARROW_SCHEMA,
    )


def recommend_batch(ctx: ScoringContext, batch: pa.RecordBatch):
    """(user_id, rated: list of catalog indices) -> recommendation rows, one Arrow batch per block."""
    user_index = ctx.users.encode(batch.column("user_id").to_numpy(zero_copy_only=False))
    known = user_index >= 0
    scorer = ctx.scorer

    known_batch = batch.filter(pa.array(known))
    known_index = user_index[known]
    block = users_per_block(scorer)
    for start in range(0, known_batch.num_rows, block):
        part = known_batch.slice(start, block)
        offsets, rated = _csr(part.column("rated"))
        rows, cols = csr_pairs(offsets, rated, scorer.n_items)
        users = known_index[start : start + block]
        items, best = top_n_masked(scorer.scores(users), rows, cols, ctx.n)
        best = scorer.report(users, best)  # NaN pads stay NaN
        yield _rows(ctx, part.column("user_id").to_numpy(zero_copy_only=False), items, best, SOURCE_MODEL)

    cold_batch = batch.filter(pa.array(~known))
    block = COLD_USERS_PER_BLOCK
    for start in range(0, cold_batch.num_rows, block):
        part = cold_batch.slice(start, block)
        offsets, rated = _csr(part.column("rated"))
        items, counts = ctx.popularity.top_n(offsets, rated, ctx.n)
        yield _rows(ctx, part.column("user_id").to_numpy(zero_copy_only=False), items, counts, SOURCE_POPULAR)


def item_counts(ratings: DataFrame) -> pd.DataFrame:
    """ratings -> pandas (item_id, ratings): one row per item, small enough for the driver."""
    return ratings.groupBy("item_id").count().withColumnRenamed("count", "ratings").toPandas()


def scoring_context(
    model: artifact.ModelArtifact, counts: pd.DataFrame, items: pd.DataFrame | None, n: int
) -> ScoringContext:
    catalog = model.items.extended(counts["item_id"])
    catalog_ids = catalog.ids
    per_item = np.zeros(len(catalog), np.int64)
    per_item[catalog.encode(counts["item_id"])] = counts["ratings"].to_numpy()
    titles = np.full(len(catalog), None, dtype=object)
    if items is not None and len(items):
        where = catalog.encode(items["item_id"])
        titles[where[where >= 0]] = items["title"].to_numpy(dtype=object)[where >= 0]
    return ScoringContext(
        scorer=scorer_for(model),
        users=model.users,
        catalog_ids=catalog_ids,
        titles=titles,
        popularity=Popularity.from_counts(catalog_ids, per_item),
        n=n,
    )


def recommend(
    spark: SparkSession,
    ratings: DataFrame,
    model: artifact.ModelArtifact,
    n: int,
    items: pd.DataFrame | None = None,
) -> DataFrame:
    """ratings (user_id, item_id, ...) -> (user_id, rank, item_id, score, source, title), N rows per user.

    `items` (item_id, title) supplies titles; without it the title column is null.
    """
    if n < 1:
        raise CfrecError(f"top-N must be at least 1, got {n}")
    ratings = ratings.select("user_id", "item_id")
    ctx = scoring_context(model, item_counts(ratings), items, n)
    payload = spark.sparkContext.broadcast(ctx)
    catalog = spark.createDataFrame(
        pd.DataFrame(
            {"item_id": ctx.catalog_ids.astype(str), "item_index": np.arange(len(ctx.catalog_ids), dtype=np.int32)}
        )
    )
    rated = (
        ratings.join(F.broadcast(catalog), "item_id")
        .groupBy("user_id")
        .agg(F.collect_list("item_index").alias("rated"))
    )

    def score_partition(batches):
        context = payload.value
        for batch in batches:
            yield from recommend_batch(context, batch)

    return rated.mapInArrow(score_partition, RECS_SCHEMA)


def read_titles(wh: Warehouse) -> pd.DataFrame | None:
    path = wh.table("items")
    if not path.exists():
        log.warning("no items table in %s: recommendations get no titles", wh.root)
        return None
    return pd.read_parquet(path, columns=["item_id", "title"])


def score(
    spark: SparkSession,
    warehouse: str | Path,
    run_date: str,
    top_n_items: int = 10,
    model_version: str | None = None,
) -> dict:
    """Write recommendations/run_date=RUN_DATE/ with `model_version` (default: the current model)."""
    wh = Warehouse.open(warehouse)
    model = artifact.load(wh.models, model_version)
    ratings = spark.read.parquet(str(wh.require("ratings"))).select("user_id", "item_id")
    recs = (
        recommend(spark, ratings, model, top_n_items, read_titles(wh))
        .withColumn("model_version", F.lit(model.version))
        .select(*RECS_COLUMNS)
    )
    target = wh.partition("recommendations", run_date)
    known_users = ratings.select("user_id").distinct().count()
    report = {"run_date": run_date, "model_version": model.version, "top_n": top_n_items}

    def write(tmp: Path) -> None:
        recs.write.mode("overwrite").parquet(str(tmp))
        # Checked before the swap, so a partition that fails the check never becomes visible.
        # Named file by file: Spark skips a hidden folder given as the path.
        files = sorted(str(f) for f in tmp.glob("*.parquet"))
        written = spark.read.schema(recs.schema).parquet(*files) if files else spark.createDataFrame([], recs.schema)
        report.update(check_recommendations(written, known_users, top_n_items))

    publish(target, write)
    report["path"] = str(target)
    if report["users_without_vector"]:
        log.warning("%d users have no model vector and got the popularity list", report["users_without_vector"])
    log.info("score: %s", report)
    return report


def check_recommendations(recs: DataFrame, known_users: int, n: int) -> dict:
    """Counts of a written partition by source; raises if a user of the ratings table is missing."""
    per_user = recs.groupBy("user_id", "source").agg(F.count("*").alias("n"))
    by_source = {
        row["source"]: row
        for row in per_user.groupBy("source")
        .agg(
            F.count("*").alias("users"),
            F.sum("n").alias("rows"),
            F.sum((F.col("n") < n).cast("long")).alias("short_users"),
        )
        .collect()
    }
    users = sum(r["users"] for r in by_source.values())
    if users != known_users:
        raise CfrecError(f"scoring lost users: {known_users} in the ratings table, {users} with recommendations")
    return {
        "rows": sum(r["rows"] for r in by_source.values()),
        "users": users,
        "users_by_source": {s: by_source[s]["users"] if s in by_source else 0 for s in (SOURCE_MODEL, SOURCE_POPULAR)},
        "users_without_vector": by_source[SOURCE_POPULAR]["users"] if SOURCE_POPULAR in by_source else 0,
        # Users who rated nearly the whole catalog have fewer than N unrated items left.
        "users_with_fewer_than_n": sum(r["short_users"] for r in by_source.values()),
    }
