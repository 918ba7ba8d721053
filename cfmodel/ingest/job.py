"""The ingest task: a source's raw files -> clean increments, current tables, rejects, indices, a report.

One run, for one `run_date`:

1. parse the rating files (Spark, explicit layout) into a hidden staging folder holding every
   input row once, clean or with a reject reason, then mark superseded duplicates
   (`cfmodel.ingest.dedup`); counting lines separately gives the input count that
   `input = clean + rejected` is checked against;
2. publish this run's clean rows as `ratings_increments/run_date=D` (and items likewise), its
   rejects as `rejects/run_date=D`;
3. rebuild `ratings` and `items` as the deduplicated union of all increments, extend
   `user_index` / `item_index`, record the rating scale in `datasets`, and write
   `ingest_report/run_date=D`.

Every table is published atomically; re-running a date replaces that date's partitions.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.errors import CfrecError
from cfmodel.ingest import dedup, increments, indices, planning
from cfmodel.ingest import parsing as sources
from cfmodel.ingest.layouts import CSV_SOURCE
from cfmodel.warehouse.store import Warehouse, publish

log = logging.getLogger(__name__)

REJECT_COLUMNS = ["source", "table", "source_file", "line_number", "raw", "reason"]
# Reject rows written per Parquet file: keeps a garbage input from producing one huge file.
REJECTS_PER_FILE = 1_000_000

REPORT_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType()),
        T.StructField("input_files", T.ArrayType(T.StringType())),
        T.StructField("input_rows", T.LongType()),
        T.StructField("clean_rows", T.LongType()),
        T.StructField("rejected_rows", T.LongType()),
        T.StructField("rejects_by_reason", T.MapType(T.StringType(), T.LongType())),
        T.StructField("item_files", T.ArrayType(T.StringType())),
        T.StructField("item_input_rows", T.LongType()),
        T.StructField("item_rows", T.LongType()),
        T.StructField("item_rejects", T.LongType()),
        T.StructField("item_rejects_by_reason", T.MapType(T.StringType(), T.LongType())),
        T.StructField("extra_rows", T.MapType(T.StringType(), T.LongType())),
        T.StructField("extra_rejects_by_reason", T.MapType(T.StringType(), T.MapType(T.StringType(), T.LongType()))),
        T.StructField("ratings_on_unknown_items", T.LongType()),
        T.StructField("ratings_rows", T.LongType()),
        T.StructField("superseded_earlier_rows", T.LongType()),
        T.StructField("users", T.LongType()),
        T.StructField("new_users", T.LongType()),
        T.StructField("items", T.LongType()),
        T.StructField("new_items", T.LongType()),
        T.StructField("rating_min", T.DoubleType()),
        T.StructField("rating_max", T.DoubleType()),
        T.StructField("seconds", T.DoubleType()),
    ]
)
STAGING_SCHEMA = (
    "user_id string, item_id string, rating double, timestamp bigint, reason string, "
    "source_file string, line_number bigint, raw string"
)
DATASETS_SCHEMA = (
    "source string, rating_min double, rating_max double, rating_step double, scale_origin string, run_date string"
)


def _write(df: DataFrame, path: Path, files: int | None = None) -> None:
    if files:
        df = df.coalesce(files)
    publish(path, lambda tmp: df.write.parquet(str(tmp)))


def _count_by_reason(parsed: DataFrame) -> tuple[int, dict[str, int]]:
    counts = {row["reason"]: row["count"] for row in parsed.groupBy("reason").count().collect()}
    return counts.pop(None, 0), dict(sorted(counts.items()))


def _check_accounted(what: str, input_rows: int, clean: int, by_reason: dict[str, int]) -> None:
    rejected = sum(by_reason.values())
    if input_rows != clean + rejected:
        raise CfrecError(f"ingest lost {what}: {input_rows} input != {clean} clean + {rejected} rejected")


def _data_lines(lines: sources.TextLines, header: bool) -> tuple[DataFrame, int]:
    """Lines after each file's header, and how many there are."""
    total = sum(lines.lines_per_file.values())
    if not header:
        return lines.frame, total
    with_lines = sum(1 for n in lines.lines_per_file.values() if n)
    return lines.frame.where(F.col("line_number") > 1), total - with_lines


def parse_rating_files(spark: SparkSession, plan: planning.IngestPlan) -> tuple[DataFrame, int]:
    """Every input rating row with its reason, duplicates not yet resolved (`cfmodel.ingest.dedup`), and
    the input row count (counted independently of parsing)."""
    spec = plan.ratings
    if spec.text is not None:
        lines, input_rows = _data_lines(sources.read_lines(spark, spec.files, spec.text.encoding), spec.text.header)
        return sources.parse_ratings(lines, spec, plan.scale), input_rows
    frames, input_rows = [], 0
    for file in spec.files:
        rows = sources.read_parquet_rows(spark, file)
        present = rows.schema["fields"].dataType.names
        missing = [c for c in (spec.user, spec.item, spec.rating, spec.timestamp) if c and c not in present]
        if missing:
            raise CfrecError(f"{file.name} has no column {', '.join(missing)} (columns: {', '.join(present)})")
        frames.append(sources.parse_parquet_ratings(rows, spec, plan.scale))
        input_rows += spark.read.parquet(str(file.path)).count()
    parsed = frames[0]
    for other in frames[1:]:
        parsed = parsed.unionByName(other)
    return parsed, input_rows


def parse_item_files(spark: SparkSession, plan: planning.IngestPlan) -> tuple[DataFrame, int]:
    """Every input item row with its reason, duplicates not yet resolved, and the input row count."""
    text = plan.items.text
    lines, input_rows = _data_lines(sources.read_lines(spark, plan.items.files, text.encoding), text.header)
    return sources.parse_items(lines, plan.items), input_rows


def parse_extra_files(spark: SparkSession, extra: planning.ExtraPlan) -> tuple[DataFrame, int]:
    """Every input row of a side file with its reason, duplicates not yet resolved, and the input row count."""
    lines, input_rows = _data_lines(sources.read_lines(spark, extra.files, extra.text.encoding), extra.text.header)
    return sources.parse_extra(lines, extra), input_rows


@dataclass
class StagedRatings:
    clean: DataFrame  # user_id, item_id, rating (float), timestamp
    rejects: DataFrame  # source_file, line_number, raw, reason
    clean_rows: int
    by_reason: dict[str, int]
    superseded: DataFrame  # cached: release with unpersist()


def stage_ratings(spark: SparkSession, parsed: DataFrame, staging: Path) -> StagedRatings:
    """Parse once into `staging`, then resolve duplicates and count, reading only the columns needed.

    Clean rows are staged without their raw line (most of the bytes): the few superseded
    duplicates get theirs back by re-reading just those lines.
    """
    parsed.select(
        "user_id",
        "item_id",
        "rating",
        "timestamp",
        "reason",
        "source_file",
        "line_number",
        F.when(F.col("reason").isNotNull(), F.col("raw")).alias("raw"),
    ).write.parquet(str(staging))
    staged = spark.read.schema(STAGING_SCHEMA).parquet(str(staging))
    superseded = dedup.superseded_rows(staged, dedup.RATING_KEY, dedup.ratings_newest_first())
    n_superseded = superseded.count()
    clean_rows, by_reason = _count_by_reason(staged)
    clean = staged.where(F.col("reason").isNull())
    rejects = staged.where(F.col("reason").isNotNull()).select("source_file", "line_number", "raw", "reason")
    if n_superseded:
        clean_rows -= n_superseded
        by_reason = dict(sorted({**by_reason, dedup.SUPERSEDED: n_superseded}.items()))
        clean = clean.join(superseded, dedup.ROW_ID, "left_anti")
        lines = parsed.select(*dedup.ROW_ID, "raw").join(superseded, dedup.ROW_ID, "left_semi")
        rejects = rejects.unionByName(lines.withColumn("reason", F.lit(dedup.SUPERSEDED)))
    clean = clean.select("user_id", "item_id", F.col("rating").cast("float").alias("rating"), "timestamp")
    return StagedRatings(clean, rejects, clean_rows, by_reason, superseded)


def _rejects(parsed: DataFrame, source: str, table: str) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull()).select(
        F.lit(source).alias("source"), F.lit(table).alias("table"), *REJECT_COLUMNS[2:]
    )


def _check_same_source(wh: Warehouse, source: str) -> None:
    path = wh.table("datasets")
    if path.exists():
        recorded = pd.read_parquet(path, columns=["source"])["source"]
        if len(recorded) and recorded.iloc[0] != source:
            raise CfrecError(
                f"warehouse {wh.root} holds '{recorded.iloc[0]}' data; ingesting '{source}' into it "
                "would mix two id spaces (use another warehouse)"
            )


def _ingest_items(spark: SparkSession, plan: planning.IngestPlan, wh: Warehouse, run_date: str):
    """Parse and publish this run's items increment; returns (parsed items or None, report fields)."""
    partition = wh.partition(increments.ITEMS_INCREMENTS, run_date)
    if plan.items is None:
        shutil.rmtree(partition, ignore_errors=True)  # a re-run without an items file keeps no stale items
        log.warning("no items file in %s: ratings are kept, item titles unknown", plan.root)
        return None, {
            "item_files": [],
            "item_input_rows": 0,
            "item_rows": 0,
            "item_rejects": 0,
            "item_rejects_by_reason": {},
        }
    parsed, input_rows = parse_item_files(spark, plan)
    parsed = dedup.resolve(parsed, ["item_id"], dedup.file_order_newest_first())
    clean, by_reason = _count_by_reason(parsed)
    _check_accounted("item rows", input_rows, clean, by_reason)
    _write(parsed.where(F.col("reason").isNull()).select(*increments.ITEMS_COLUMNS), partition, files=1)
    return parsed, {
        "item_files": [f.name for f in plan.items.files],
        "item_input_rows": input_rows,
        "item_rows": clean,
        "item_rejects": sum(by_reason.values()),
        "item_rejects_by_reason": by_reason,
    }


def _ingest_extras(spark: SparkSession, plan: planning.IngestPlan, wh: Warehouse, run_date: str):
    """Parse and publish this run's increment of each side table (users, to_read, ...); returns the
    parsed frames (cached) and the report fields. A side file absent from this run's input leaves
    no partition for the date."""
    for missing in plan.missing_extras:
        shutil.rmtree(wh.partition(increments.increments_table(missing.table), run_date), ignore_errors=True)
    parsed_frames, rows, rejects = [], {}, {}
    for extra in plan.extras:
        parsed, input_rows = parse_extra_files(spark, extra)
        parsed = dedup.resolve(parsed, list(extra.key), dedup.file_order_newest_first())
        parsed_frames.append((extra.table, parsed))
        clean, by_reason = _count_by_reason(parsed)
        _check_accounted(f"{extra.table} rows", input_rows, clean, by_reason)
        columns = [c.name for c in extra.columns]
        _write(
            parsed.where(F.col("reason").isNull()).select(*columns).orderBy(*extra.key),
            wh.partition(increments.increments_table(extra.table), run_date),
            files=1,
        )
        rows[extra.table], rejects[extra.table] = clean, by_reason
    return parsed_frames, {"extra_rows": rows, "extra_rejects_by_reason": rejects}


def _record_scale(spark: SparkSession, plan: planning.IngestPlan, wh: Warehouse, run_date: str) -> tuple[float, float]:
    scale = plan.scale
    if scale.known:
        low, high = float(scale.min), float(scale.max)
        origin = "options" if plan.source == CSV_SOURCE else "layout"
    else:
        # The generic source without a stated scale: the observed range over all current ratings.
        row = increments.read_ratings(spark, wh.table("ratings")).agg(F.min("rating"), F.max("rating")).first()
        low, high, origin = float(row[0]), float(row[1]), "inferred"
    step = None if scale.step is None else float(scale.step)
    dataset = spark.createDataFrame([(plan.source, low, high, step, origin, run_date)], DATASETS_SCHEMA)
    _write(dataset, wh.table("datasets"), files=1)
    return low, high


def ingest(
    spark: SparkSession, source: str, input_dir: str | Path, warehouse: str | Path, run_date: str, **options
) -> dict:
    """Ingest `source` files from `input_dir` as the increment of `run_date`; returns the report.

    `options`: `ratings_file`, `items_file` (name or glob in `input_dir`), `encoding` for every
    source; the column and scale options of `cfmodel.ingest.layouts.CSV_DEFAULTS` for `csv`.
    """
    started = time.perf_counter()
    plan = planning.plan_ingest(source, input_dir, **options)
    wh = Warehouse.open(warehouse)
    _check_same_source(wh, plan.source)

    parsed, input_rows = parse_rating_files(spark, plan)
    staging = wh.root / ".staging" / f"ratings-{run_date}-{uuid.uuid4().hex[:12]}"
    items_parsed = staged = None
    extras_parsed = []
    try:
        staged = stage_ratings(spark, parsed, staging)
        clean_rows, by_reason = staged.clean_rows, staged.by_reason
        _check_accounted("rating rows", input_rows, clean_rows, by_reason)
        if clean_rows == 0:
            files = ", ".join(f.name for f in plan.ratings.files)
            raise CfrecError(f"no clean ratings in {files} ({input_rows} rows read; rejects by reason: {by_reason})")

        _write(staged.clean, wh.partition(increments.RATINGS_INCREMENTS, run_date))
        items_parsed, item_report = _ingest_items(spark, plan, wh, run_date)
        extras_parsed, extra_report = _ingest_extras(spark, plan, wh, run_date)

        rejected = (
            sum(by_reason.values())
            + item_report["item_rejects"]
            + sum(sum(r.values()) for r in extra_report["extra_rejects_by_reason"].values())
        )
        rejects = _rejects(staged.rejects, plan.source, "ratings")
        if items_parsed is not None:
            rejects = rejects.unionByName(_rejects(items_parsed, plan.source, "items"))
        for table, parsed_extra in extras_parsed:
            rejects = rejects.unionByName(_rejects(parsed_extra, plan.source, table))
        _write(rejects, wh.partition("rejects", run_date), files=max(1, -(-rejected // REJECTS_PER_FILE)))

        ratings_rows, increment_rows = increments.materialise_ratings(spark, wh, run_date)
        increments.materialise_items(spark, wh, run_date)
        for extra in [*plan.extras, *plan.missing_extras]:  # earlier nights may have had the file
            increments.materialise_latest(spark, wh, extra.table, list(extra.key), run_date)
        items = increments.read_items(spark, wh.table("items"))
        this_run = increments.read_ratings(spark, wh.partition(increments.RATINGS_INCREMENTS, run_date))
        unknown_items = this_run.join(items, "item_id", "left_anti").count()
        if unknown_items:
            log.warning("%d clean ratings are on items missing from the items table", unknown_items)
        index_summary = indices.update_indices(spark, wh, increments.read_ratings(spark, wh.table("ratings")))
        rating_min, rating_max = _record_scale(spark, plan, wh, run_date)

        report = {
            "source": plan.source,
            "input_files": [f.name for f in plan.ratings.files],
            "input_rows": input_rows,
            "clean_rows": clean_rows,
            "rejected_rows": sum(by_reason.values()),
            "rejects_by_reason": by_reason,
            **item_report,
            **extra_report,
            "ratings_on_unknown_items": unknown_items,
            "ratings_rows": ratings_rows,
            "superseded_earlier_rows": increment_rows - ratings_rows,
            "users": index_summary["user_index"]["ids"],
            "new_users": index_summary["user_index"]["new_ids"],
            "items": index_summary["item_index"]["ids"],
            "new_items": index_summary["item_index"]["new_ids"],
            "rating_min": rating_min,
            "rating_max": rating_max,
            "seconds": round(time.perf_counter() - started, 3),
        }
        _write(spark.createDataFrame([report], REPORT_SCHEMA), wh.partition("ingest_report", run_date), files=1)
    finally:
        if staged is not None:
            staged.superseded.unpersist()
        if items_parsed is not None:
            items_parsed.unpersist()
        for _, parsed_extra in extras_parsed:
            parsed_extra.unpersist()
        shutil.rmtree(staging, ignore_errors=True)
    log.info("ingest %s %s: %s", source, run_date, report)
    return report
