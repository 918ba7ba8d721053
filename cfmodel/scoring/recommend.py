"""The score task: every user's top-N unrated items, scored on Spark executors.

Users are spread over partitions by the shuffle that gathers their rated items. Each partition
scores its users against all items (the model is broadcast) with one vectorised block per few
hundred users inside `mapInArrow`, masks what they rated (and items the model has no trained
vector for) and keeps the top N. Users the model has no trained vector for (new since it was
trained, or every rating of theirs held out) get the most-popular unrated items instead (`source` =
`popular`), so every user in the ratings table gets N rows. Nothing is collected on the driver but per-item counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.errors import CfrecError
from cfmodel.registry.artifact import ModelArtifact
from cfmodel.registry.registry import POPULARITY_LISTS, ModelRegistry
from cfmodel.scoring.because import because_items
from cfmodel.scoring.popularity import Popularity
from cfmodel.scoring.rated import counted, gather_rated, gather_rated_files, item_counts
from cfmodel.scoring.screen import SCREEN_USERS_PER_BLOCK, screened_top_k, screens
from cfmodel.scoring.topk import csr_cells, top_k
from cfmodel.training.ids import IdIndex
from cfmodel.training.models import CollabModel, clipped
from cfmodel.warehouse import Warehouse, is_published, publish
from cfmodel.warehouse.schemas import ITEM_INDEX, RATINGS, RECOMMENDATIONS

log = logging.getLogger(__name__)

SOURCE_MODEL, SOURCE_POPULAR = "model", "popular"
# What executors produce; the model version is added to every row afterwards.
SCORED = RECOMMENDATIONS.without("model_version")
# Popularity blocks are n + (most items one user rated) wide, far narrower than the catalog.
COLD_USERS_PER_BLOCK = 4096


@dataclass
class ScoringContext:
    """Everything an executor needs, shipped once per executor as a broadcast.

    The catalog is the model's items in model order followed by items the model has never seen,
    so a catalog index below `model.n_items` is also the model's item index.
    """

    model: CollabModel | None  # None: the most-popular list for every user
    users: IdIndex
    trained_users: np.ndarray | None  # users with no trained vector get the popular list
    untrained_items: np.ndarray  # never in a model's list
    catalog_ids: np.ndarray
    titles: np.ndarray
    popularity: Popularity
    n: int
    scale: tuple[float, float] | None = None  # a rating model's shown scores are clipped to it
    candidates: int = 0  # models that offer candidates score this many unrated ones per user; 0: all


def _csr(rated: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    return rated.offsets.to_numpy(), rated.values.to_numpy(zero_copy_only=False)


def _rows(
    ctx: ScoringContext,
    user_ids: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    source: str,
    predicted: np.ndarray | None = None,
    because: np.ndarray | None = None,
) -> pa.RecordBatch:
    found = items >= 0
    per_user = found.sum(axis=1)
    picked = items[found]
    ratings = np.full(len(picked), np.nan, np.float32) if predicted is None else predicted[found].astype(np.float32)
    reason = np.full(len(picked), -1) if because is None else because[found]
    has_reason = reason >= 0
    reason = np.maximum(reason, 0)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.repeat(user_ids, per_user), pa.string()),
            pa.array(np.broadcast_to(np.arange(1, items.shape[1] + 1, dtype=np.int32), items.shape)[found]),
            pa.array(ctx.catalog_ids[picked], pa.string()),
            pa.array(scores[found].astype(np.float32)),
            pa.array(ratings, mask=np.isnan(ratings)),
            pa.array(np.full(len(picked), source, dtype=object), pa.string()),
            pa.array(ctx.titles[picked], pa.string()),
            pa.array(ctx.catalog_ids[reason], pa.string(), mask=~has_reason),
            pa.array(ctx.titles[reason], pa.string(), mask=~has_reason),
        ],
        schema=SCORED.arrow,
    )


def users_per_block(model: CollabModel, n: int, candidates: int = 0) -> int:
    if screens(model, n):
        return SCREEN_USERS_PER_BLOCK
    width = min(candidates, model.n_items) if candidates else model.n_items
    return max(1, model.pairs_per_block // max(width, 1))


def model_top_n(
    model: CollabModel,
    users: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    n: int,
    masked_items: np.ndarray | None = None,
    candidates: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The best `n` items of each user in `users` (model indices), never a masked (row, col) cell
    nor a masked item, and the scores to show for them (NaN pads stay NaN).

    With `candidates`, a model that offers candidate items (`CollabModel.candidate_items`) scores
    only that many per user beyond what is masked; the others rank as unscored (-inf). Dot-product
    models go through the exact bfloat16 screen where the hardware makes it pay (`screen`)."""
    users_t = torch.as_tensor(users, dtype=torch.long, device=model.device)
    with torch.inference_mode():
        if screens(model, n):
            items, best = screened_top_k(model, users_t, n, rows, cols, masked_items)
        else:
            scores = _block_scores(model, users_t, rows, cols, candidates, masked_items)
            items, best = top_k(scores, n, rows, cols, masked_items)
        shown = model.shown_scores(users_t, torch.from_numpy(best).to(users_t.device)).cpu().numpy()
    return items, shown


def _block_scores(
    model: CollabModel,
    users: torch.Tensor,
    rows: np.ndarray,
    cols: np.ndarray,
    candidates: int,
    masked_items: np.ndarray | None,
) -> torch.Tensor:
    if candidates:
        # Enough candidates that `candidates` remain after the user's rated and masked items.
        most_rated = int(np.bincount(rows).max()) if len(rows) else 0
        count = candidates + most_rated + (0 if masked_items is None else len(masked_items))
        picked = model.candidate_items(users, count)
        if picked is not None:
            scores = torch.full((len(users), model.n_items), -torch.inf, device=users.device)
            return scores.scatter_(1, picked, model.candidate_scores(users, picked).float())
    return model.list_scores(users, rows, cols)


def predicted_ratings(
    model: CollabModel, users: np.ndarray, items: np.ndarray, scale: tuple[float, float] | None
) -> np.ndarray:
    """The rating shown beside each listed item (items [users, k], -1 = none), within the scale;
    NaN where the model cannot predict one (a ranking model without a rating model)."""
    with torch.inference_mode():
        out = model.predicted_ratings(torch.as_tensor(users, dtype=torch.long), torch.as_tensor(np.maximum(items, 0)))
    if out is None:
        return np.full(items.shape, np.nan, np.float32)
    predicted = out.float().numpy().copy()
    if scale is not None:
        predicted = np.clip(predicted, *scale)
    predicted[items < 0] = np.nan
    return predicted


def recommend_batch(ctx: ScoringContext, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """(user_id, rated: list of catalog indices) -> recommendation rows, one Arrow batch per block."""
    user_index = ctx.users.encode(batch.column("user_id").to_numpy(zero_copy_only=False))
    known = user_index >= 0
    if ctx.trained_users is not None:
        known[known] = ctx.trained_users[user_index[known]]
    model = ctx.model

    known_batch = batch.filter(pa.array(known))
    known_index = user_index[known]
    block = users_per_block(model, ctx.n, ctx.candidates) if known_batch.num_rows else 1
    for start in range(0, known_batch.num_rows, block):
        part = known_batch.slice(start, block)
        offsets, rated = _csr(part.column("rated"))
        rows, cols = csr_cells(offsets, rated, model.n_items)
        users = known_index[start : start + block]
        items, best = model_top_n(model, users, rows, cols, ctx.n, ctx.untrained_items, ctx.candidates)
        best = clipped(model, best, ctx.scale)
        predicted = best if model.predicts_ratings else predicted_ratings(model, users, items, ctx.scale)
        because = because_items(model, rows, cols, items)
        user_ids = part.column("user_id").to_numpy(zero_copy_only=False)
        yield _rows(ctx, user_ids, items, best, SOURCE_MODEL, predicted, because)

    cold_batch = batch.filter(pa.array(~known))
    block = COLD_USERS_PER_BLOCK
    for start in range(0, cold_batch.num_rows, block):
        part = cold_batch.slice(start, block)
        offsets, rated = _csr(part.column("rated"))
        items, counts = ctx.popularity.top_n(offsets, rated, ctx.n)
        yield _rows(ctx, part.column("user_id").to_numpy(zero_copy_only=False), items, counts, SOURCE_POPULAR)


def scoring_catalog(model: ModelArtifact | None, item_ids: np.ndarray | pd.Series) -> IdIndex:
    """The items scoring knows: the model's, in model order, then the others of `item_ids`."""
    return (model.items if model is not None else IdIndex([])).extended(item_ids)


def check_request(n: int, candidates: int) -> None:
    if n < 1:
        raise CfrecError(f"top-N must be at least 1, got {n}")
    if candidates < 0:
        raise CfrecError(f"candidates must be 0 (score every item) or more, got {candidates}")


def scoring_context(
    model: ModelArtifact | None, counts: pd.DataFrame, titles: Warehouse | None, n: int, candidates: int = 0
) -> ScoringContext:
    """The broadcast for `model` (None: popularity alone) and the catalog of `counts` (item_id,
    ratings); titles come from the warehouse's items table (null without one). `candidates`: see
    `model_top_n`."""
    catalog = scoring_catalog(model, counts["item_id"])
    catalog_ids = catalog.ids
    per_item = np.zeros(len(catalog), np.int64)
    per_item[catalog.encode(counts["item_id"])] = counts["ratings"].to_numpy()
    popular_only = ScoringContext(
        model=None,
        users=IdIndex([]),
        trained_users=None,
        untrained_items=np.empty(0, np.int64),
        catalog_ids=catalog_ids,
        titles=titles.titles(catalog_ids) if titles is not None else np.full(len(catalog), None, dtype=object),
        popularity=Popularity.from_counts(per_item, catalog_ids),
        n=n,
    )
    if model is None:
        return popular_only
    return replace(
        popular_only,
        model=model.model.cpu().eval(),
        users=model.users,
        trained_users=model.trained_users,
        untrained_items=model.untrained_items,
        scale=tuple(model.config.rating_scale) if model.config.rating_scale else None,
        candidates=candidates,
    )


def scoring_input(
    spark: SparkSession,
    ratings: DataFrame,
    model: ModelArtifact | None,
    n: int,
    titles: Warehouse | None = None,
    candidates: int = 0,
) -> tuple[ScoringContext, DataFrame]:
    """What `recommend` scores: the broadcast context and each user's rated items as catalog
    indices (user_id, rated)."""
    check_request(n, candidates)
    ratings = ratings.select("user_id", "item_id")
    counts = item_counts(ratings)
    ctx = scoring_context(model, counts, titles, n, candidates)
    return ctx, gather_rated(spark, ratings, ctx.catalog_ids, int(counts["ratings"].sum()))


def score_rated(spark: SparkSession, ctx: ScoringContext, rated: DataFrame) -> DataFrame:
    """(user_id, rated) -> recommendation rows, scored where the rows are."""
    payload = spark.sparkContext.broadcast(ctx)

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = payload.value
        for batch in batches:
            yield from recommend_batch(context, batch)

    return rated.mapInArrow(score_partition, SCORED.ddl)


def recommend(
    spark: SparkSession,
    ratings: DataFrame,
    model: ModelArtifact | None,
    n: int,
    titles: Warehouse | None = None,
    candidates: int = 0,
) -> DataFrame:
    """ratings (user_id, item_id, ...) -> (user_id, rank, item_id, score, source, title), N rows per user.

    `titles`: the warehouse whose items table names the items; without it the title column is null.
    `candidates`: see `model_top_n`.
    """
    return score_rated(spark, *scoring_input(spark, ratings, model, n, titles, candidates))


@dataclass
class ScoreReport:
    run_date: str
    model_version: str
    top_n: int
    rows: int = 0
    users: int = 0
    users_by_source: dict[str, int] | None = None
    users_without_vector: int = 0  # users the model has no vector for: they got the popularity list
    users_with_fewer_than_n: int = 0  # users who rated nearly the whole catalog
    users_with_nothing_left: int = 0  # users who rated every item there is to recommend: no rows
    path: str = ""


def score(
    spark: SparkSession,
    warehouse: str | Path,
    run_date: str,
    top_n_items: int = 10,
    model_version: str | None = None,
    candidates: int = 0,
) -> ScoreReport:
    """Write recommendations/run_date=RUN_DATE/ with `model_version` (default: the current model;
    POPULARITY_LISTS: the most-popular unrated items for every user). `candidates`: see `model_top_n`."""
    check_request(top_n_items, candidates)
    wh = Warehouse.open(warehouse)
    model = None if model_version == POPULARITY_LISTS else ModelRegistry(wh.models).load(model_version)
    version = model.version if model is not None else POPULARITY_LISTS
    wh.require(RATINGS)
    if not wh.table(ITEM_INDEX).exists():  # a warehouse the ingest did not write
        ratings = spark.read.parquet(str(wh.table(RATINGS))).select("user_id", "item_id")
        ctx, rated = scoring_input(spark, ratings, model, top_n_items, wh, candidates)
        rated = rated.persist(StorageLevel.MEMORY_AND_DISK)
        known_users = rated.count()
    else:
        # The ingest's item index names every item of the ratings, so the items' counts come from
        # the gathered lists, in the pass that counts the users, not from a pass of their own.
        item_ids = pq.read_table(wh.table(ITEM_INDEX), columns=["id"]).column("id").to_numpy(zero_copy_only=False)
        catalog = scoring_catalog(model, item_ids).ids
        rated = gather_rated_files(spark, wh.table_files(RATINGS), catalog).persist(StorageLevel.MEMORY_AND_DISK)
        per_item, known_users = counted(rated, len(catalog))
        counts = pd.DataFrame({"item_id": catalog, "ratings": per_item})
        ctx = scoring_context(model, counts, wh, top_n_items, candidates)
        if not np.array_equal(ctx.catalog_ids, catalog):
            raise CfrecError("scoring catalog mismatch: the gathered indices would name other items")
    try:
        return _score_rated_users(spark, wh, ctx, rated, known_users, run_date, version)
    finally:
        rated.unpersist()


def _score_rated_users(
    spark: SparkSession,
    wh: Warehouse,
    ctx: ScoringContext,
    rated: DataFrame,
    known_users: int,
    run_date: str,
    version: str,
) -> ScoreReport:
    """Score the gathered users (`known_users` of them, persisted in `rated`), write, check, publish."""
    top_n_items = ctx.n
    recs = score_rated(spark, ctx, rated).withColumn("model_version", F.lit(version))
    recs = recs.select(*RECOMMENDATIONS.column_names)
    target = wh.partition(RECOMMENDATIONS, run_date)
    report = ScoreReport(run_date, version, top_n_items, path=str(target))

    def write(tmp: Path) -> None:
        recs.write.mode("overwrite").parquet(str(tmp))
        # Checked before the swap, so a partition that fails the check never becomes visible.
        # Named file by file: Spark skips a hidden folder given as the path.
        files = sorted(str(f) for f in tmp.glob("*.parquet"))
        written = spark.read.schema(recs.schema).parquet(*files) if files else spark.createDataFrame([], recs.schema)
        for name, value in check_recommendations(written, top_n_items).items():
            setattr(report, name, value)
        if report.users != known_users:
            report.users_with_nothing_left = users_with_nothing_left(ctx, rated, written, known_users - report.users)

    publish(target, write)
    if report.users_without_vector:
        log.warning("%d users have no model vector and got the popularity list", report.users_without_vector)
    if report.users_with_nothing_left:
        log.warning("%d users rated every item there is to recommend: no list", report.users_with_nothing_left)
    log.info("score: %s", report)
    return report


# More users without a list than this is not a few enthusiasts who rated everything.
MAX_USERS_CHECKED = 10_000


def users_with_nothing_left(ctx: ScoringContext, rated: DataFrame, written: DataFrame, missing: int) -> int:
    """The users of the ratings table without a row in `written` (`missing` of them): each must have
    nothing left to recommend, which scoring them again here confirms; otherwise scoring lost them."""
    if 0 < missing <= MAX_USERS_CHECKED:
        listless = rated.join(written.select("user_id").distinct(), "user_id", "left_anti").toArrow()
        rescored = [rows for part in listless.to_batches() for rows in recommend_batch(ctx, part)]
        lost = len({user for rows in rescored for user in rows.column("user_id").to_pylist()})
        if listless.num_rows == missing and not lost:
            return missing
        missing = lost or missing
    raise CfrecError(f"scoring lost users: {missing} users of the ratings table have no recommendations")


def check_recommendations(recs: DataFrame, n: int) -> dict[str, object]:
    """Counts of a written partition by source."""
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
    return {
        "rows": sum(r["rows"] for r in by_source.values()),
        "users": users,
        "users_by_source": {s: by_source[s]["users"] if s in by_source else 0 for s in (SOURCE_MODEL, SOURCE_POPULAR)},
        "users_without_vector": by_source[SOURCE_POPULAR]["users"] if SOURCE_POPULAR in by_source else 0,
        # Users who rated nearly the whole catalog have fewer than N unrated items left.
        "users_with_fewer_than_n": sum(r["short_users"] for r in by_source.values()),
    }


@dataclass
class RecommendationsSummary:
    run_date: str
    rows: int
    users: int
    users_by_source: dict[str, int]
    model_versions: list[str]
    path: str


def recommendations_summary(warehouse: str | Path, run_date: str) -> RecommendationsSummary:
    """Counts of a published recommendations partition, read with pyarrow (no Spark). Raises if
    the partition was never published."""
    wh = Warehouse.open(warehouse, create=False)
    partition = wh.partition(RECOMMENDATIONS, run_date)
    if not is_published(partition):
        raise CfrecError(f"no published recommendations for {run_date} in {wh.root}")
    recs = pq.read_table(partition, columns=["user_id", "source", "model_version"]).to_pandas()
    users = recs.groupby("source")["user_id"].nunique()
    return RecommendationsSummary(
        run_date=run_date,
        rows=int(len(recs)),
        users=int(recs["user_id"].nunique()),
        users_by_source={str(k): int(v) for k, v in users.items()},
        model_versions=sorted(recs["model_version"].unique().tolist()),
        path=str(partition),
    )
