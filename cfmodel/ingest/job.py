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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.config import IngestConfig
from cfmodel.errors import CfrecError
from cfmodel.ingest import dedup, increments, indices, planning
from cfmodel.ingest import parsing as sources
from cfmodel.ingest.source_options import CSV_SOURCE
from cfmodel.spark import session_settings, settings_for
from cfmodel.warehouse import Warehouse, publish, withdraw
from cfmodel.warehouse.atomic import write_arrow
from cfmodel.warehouse.schemas import (
    DATASETS,
    INGEST_REPORT,
    ITEMS,
    ITEMS_INCREMENTS,
    RATINGS,
    RATINGS_INCREMENTS,
    REJECTS,
    Table,
    increments_of,
)

log = logging.getLogger(__name__)

STAGING = ".staging"
# Reject rows written per Parquet file: keeps a garbage input from producing one huge file.
REJECTS_PER_FILE = 1_000_000
STAGING_SCHEMA = (
    "user_id string, item_id string, rating double, timestamp bigint, reason string, "
    "source_file string, line_number bigint, raw string"
)


@dataclass
class IngestReport:
    """What one ingest read and wrote: the `ingest_report/run_date=D` row."""

    source: str
    input_files: list[str]
    input_rows: int
    clean_rows: int
    rejected_rows: int
    rejects_by_reason: dict[str, int]
    item_files: list[str] = field(default_factory=list)
    item_input_rows: int = 0
    item_rows: int = 0
    item_rejects: int = 0
    item_rejects_by_reason: dict[str, int] = field(default_factory=dict)
    extra_rows: dict[str, int] = field(default_factory=dict)  # clean rows per side table
    extra_rejects_by_reason: dict[str, dict[str, int]] = field(default_factory=dict)
    ratings_on_unknown_items: int = 0  # this run's clean ratings whose item has no row in `items`
    ratings_rows: int = 0  # the current table
    superseded_earlier_rows: int = 0  # increment rows replaced by newer ratings
    users: int = 0
    new_users: int = 0
    items: int = 0
    new_items: int = 0
    rating_min: float | None = None
    rating_max: float | None = None
    seconds: float = 0.0

    @property
    def all_rejects(self) -> int:
        extras = sum(sum(r.values()) for r in self.extra_rejects_by_reason.values())
        return self.rejected_rows + self.item_rejects + extras


def _write(df: DataFrame, path: Path, files: int | None = None) -> None:
    if files:
        df = df.coalesce(files)
    publish(path, lambda tmp: df.write.parquet(str(tmp)))


def _write_row(table: Table, row: dict, path: Path) -> None:
    """One row built here, written with Arrow: a Spark job would cost more than the row."""
    if sorted(row) != sorted(table.column_names):  # Arrow would leave a missing column null
        raise ValueError(f"a {table.name} row needs the columns {table.column_names}, got {list(row)}")
    publish(path, write_arrow(pa.Table.from_pylist([row], schema=table.arrow)))


def _count_by_reason(parsed: DataFrame) -> tuple[int, dict[str, int]]:
    return _clean_and_rejects({row["reason"]: row["count"] for row in parsed.groupBy("reason").count().collect()})


def _clean_and_rejects(counts: dict[str | None, int]) -> tuple[int, dict[str, int]]:
    """Row counts by reason -> (clean rows, rejects by reason)."""
    counts = dict(counts)
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
    superseded: DataFrame | None  # cached: release with unpersist(); None when no row was superseded


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
    ).write.parquet(str(staging / "rows"))
    staged = spark.read.schema(STAGING_SCHEMA).parquet(str(staging / "rows"))
    clean_rows, by_reason = _count_by_reason(staged)
    superseded, n_superseded = dedup.superseded_rows(
        staged, dedup.RATING_KEY, dedup.ratings_newest_first(), clean_rows, staging / "repeated_hashes.parquet"
    )
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
        F.lit(source).alias("source"), F.lit(table).alias("table"), *REJECTS.column_names[2:]
    )


def _check_same_source(wh: Warehouse, source: str) -> None:
    path = wh.table(DATASETS)
    if path.exists():
        recorded = pd.read_parquet(path, columns=["source"])["source"]
        if len(recorded) and recorded.iloc[0] != source:
            raise CfrecError(
                f"warehouse {wh.root} holds '{recorded.iloc[0]}' data; ingesting '{source}' into it "
                "would mix two id spaces (use another warehouse)"
            )


@dataclass
class StagedSideTable:
    """A side file's increment (items, users, ...): parsed, resolved and its clean rows written to
    staging, waiting to be published as `partition`."""

    table: str
    partition: Path
    staged: Path
    parsed: DataFrame  # every row with its reason, cached: release with unpersist()
    input_rows: int
    clean_rows: int
    by_reason: dict[str, int]
    files: list[str]


def _stage_side_tables(
    spark: SparkSession, plan: planning.IngestPlan, wh: Warehouse, run_date: str, staging: Path
) -> list[StagedSideTable]:
    """The night's items and side tables, each parsed, deduplicated, checked and written to
    `staging` (one file each; side tables sorted by key); publishes nothing, so that it can run
    beside the ratings' staging, on the cores a small night's few rating partitions leave idle."""
    staged: list[StagedSideTable] = []

    def stage(
        table: str,
        what: str,
        parsed_rows: tuple[DataFrame, int],
        key: list[str],
        columns: list[str],
        order: list[str],
        inputs: list[planning.InputFile],
    ) -> None:
        parsed, input_rows = parsed_rows
        parsed, counts = dedup.resolve(parsed, key, dedup.file_order_newest_first())
        clean_rows, by_reason = _clean_and_rejects(counts)
        partition = wh.partition(increments_of(table), run_date)
        files = [f.name for f in inputs]
        side = StagedSideTable(table, partition, staging / table, parsed, input_rows, clean_rows, by_reason, files)
        staged.append(side)
        _check_accounted(what, input_rows, clean_rows, by_reason)
        clean = parsed.where(F.col("reason").isNull()).select(*columns)
        (clean.orderBy(*order) if order else clean).coalesce(1).write.parquet(str(side.staged))

    try:
        if plan.items is not None:
            items = parse_item_files(spark, plan)
            stage(ITEMS.name, "item rows", items, ["item_id"], ITEMS.column_names, [], plan.items.files)
        for extra in plan.extras:
            key, columns = list(extra.key), [c.name for c in extra.columns]
            stage(extra.table, f"{extra.table} rows", parse_extra_files(spark, extra), key, columns, key, extra.files)
    except BaseException:
        for side in staged:
            side.parsed.unpersist()
        raise
    return staged


def _release_side_tables(staging: Future[list[StagedSideTable]]) -> None:
    """Wait for the side files' staging to end and release the frames it cached (when it failed,
    it released them itself)."""
    try:
        sides = staging.result()
    except BaseException:
        return
    for side in sides:
        side.parsed.unpersist()


def _publish_side_tables(
    plan: planning.IngestPlan, wh: Warehouse, run_date: str, staged: list[StagedSideTable], report: IngestReport
) -> None:
    """Publish the staged side increments and fill in their report fields. A side file absent from
    this run's input leaves no partition for the date (a re-run without it keeps nothing stale)."""
    if plan.items is None:
        withdraw(wh.partition(ITEMS_INCREMENTS, run_date))
        log.warning("no items file in %s: ratings are kept, item titles unknown", plan.root)
    for missing in plan.missing_extras:
        withdraw(wh.partition(increments_of(missing.table), run_date))
    for side in staged:
        publish(side.partition, side.staged.rename)
        if side.table == ITEMS.name:
            report.item_files, report.item_input_rows, report.item_rows = side.files, side.input_rows, side.clean_rows
            report.item_rejects, report.item_rejects_by_reason = sum(side.by_reason.values()), side.by_reason
        else:
            report.extra_rows[side.table], report.extra_rejects_by_reason[side.table] = side.clean_rows, side.by_reason


def _record_scale(spark: SparkSession, plan: planning.IngestPlan, wh: Warehouse, run_date: str) -> tuple[float, float]:
    scale = plan.scale
    if scale.known:
        low, high = float(scale.min), float(scale.max)
        origin = "options" if plan.source == CSV_SOURCE else "layout"
    else:
        # The generic source without a stated scale: the observed range over all current ratings.
        row = increments.read_ratings(spark, wh.table(RATINGS)).agg(F.min("rating"), F.max("rating")).first()
        low, high, origin = float(row[0]), float(row[1]), "inferred"
    step = None if scale.step is None else float(scale.step)
    row = {
        "source": plan.source,
        "rating_min": low,
        "rating_max": high,
        "rating_step": step,
        "scale_origin": origin,
        "run_date": run_date,
    }
    _write_row(DATASETS, row, wh.table(DATASETS))
    return low, high


def ingest(spark: SparkSession, warehouse: str | Path, run_date: str, config: IngestConfig) -> IngestReport:
    """Ingest the configured source's files as the increment of `run_date`; returns the report."""
    started = time.perf_counter()
    plan = planning.plan_ingest(config.source, config.input_for(run_date), **config.layout_options())
    wh = Warehouse.open(warehouse)
    _check_same_source(wh, plan.source)
    # The night's files and the increments `ratings` is rebuilt from: what the Spark work grows with.
    inputs = [f.path for f in plan.ratings.files] + [wh.table(RATINGS_INCREMENTS)]
    with session_settings(spark, settings_for(*inputs)):
        return _ingest(spark, plan, wh, run_date, config, started)


def _ingest(
    spark: SparkSession,
    plan: planning.IngestPlan,
    wh: Warehouse,
    run_date: str,
    config: IngestConfig,
    started: float,
) -> IngestReport:
    # Staging copies of ingests that were killed: no other ingest is at work (the writer lock).
    shutil.rmtree(wh.root / STAGING, ignore_errors=True)
    staging = wh.root / STAGING / f"ratings-{run_date}-{uuid.uuid4().hex[:12]}"
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, staging, ignore_errors=True)
        # The side files are staged beside the ratings; nothing leaves this block while they are.
        side_pool = cleanup.enter_context(ThreadPoolExecutor(1, thread_name_prefix="cfrec-side-files"))
        side_staging = side_pool.submit(_stage_side_tables, spark, plan, wh, run_date, staging / "side")
        cleanup.callback(_release_side_tables, side_staging)
        parsed, input_rows = parse_rating_files(spark, plan)
        staged = stage_ratings(spark, parsed, staging)
        if staged.superseded is not None:
            cleanup.callback(staged.superseded.unpersist)
        _check_accounted("rating rows", input_rows, staged.clean_rows, staged.by_reason)
        if staged.clean_rows == 0:
            files = ", ".join(f.name for f in plan.ratings.files)
            raise CfrecError(
                f"no clean ratings in {files} ({input_rows} rows read; rejects by reason: {staged.by_reason})"
            )
        report = IngestReport(
            plan.source,
            [f.name for f in plan.ratings.files],
            input_rows,
            staged.clean_rows,
            sum(staged.by_reason.values()),
            staged.by_reason,
        )
        _write(staged.clean, wh.partition(RATINGS_INCREMENTS, run_date))
        sides = side_staging.result()
        _publish_side_tables(plan, wh, run_date, sides, report)
        rejects = _rejects(staged.rejects, plan.source, RATINGS.name)
        for side in sides:
            rejects = rejects.unionByName(_rejects(side.parsed, plan.source, side.table))
        files = max(1, -(-report.all_rejects // REJECTS_PER_FILE))
        _write(rejects, wh.partition(REJECTS, run_date), files=files)
        _rebuild_current_tables(spark, plan, wh, run_date, report)
        report.seconds = round(time.perf_counter() - started, 3)
        _write_row(INGEST_REPORT, asdict(report), wh.partition(INGEST_REPORT, run_date))
    log.info("ingest %s %s: %s", config.source, run_date, report)
    return report


def _rebuild_current_tables(
    spark: SparkSession, plan: planning.IngestPlan, wh: Warehouse, run_date: str, report: IngestReport
) -> None:
    """`ratings`, `items` and the side tables as of `run_date`, the id indices and the rating scale."""
    rebuild = increments.materialise_ratings(spark, wh, run_date)
    increments.materialise_items(spark, wh, run_date)
    for extra in [*plan.extras, *plan.missing_extras]:  # earlier nights may have had the file
        increments.materialise_latest(spark, wh, extra.table, list(extra.key), run_date)
    items = increments.read_items(spark, wh.table(ITEMS))
    this_run = increments.read_ratings(spark, wh.partition(RATINGS_INCREMENTS, run_date))
    report.ratings_on_unknown_items = this_run.join(items, "item_id", "left_anti").count()
    if report.ratings_on_unknown_items:
        log.warning("%d clean ratings are on items missing from the items table", report.ratings_on_unknown_items)
    # The indices hold every id of the table before tonight's merge: only tonight's rows can add one
    # (unless an index table has gone missing: then it is rebuilt from the whole table).
    indexed = all(wh.table(index).exists() for index in indices.INDEX_TABLES.values())
    new_rows = this_run if rebuild.merged and indexed else increments.read_ratings(spark, wh.table(RATINGS))
    index_summary = indices.update_indices(wh, new_rows)
    report.ratings_rows, report.superseded_earlier_rows = rebuild.rows, rebuild.increment_rows - rebuild.rows
    report.users, report.new_users = index_summary["user_index"]["ids"], index_summary["user_index"]["new_ids"]
    report.items, report.new_items = index_summary["item_index"]["ids"], index_summary["item_index"]["new_ids"]
    report.rating_min, report.rating_max = _record_scale(spark, plan, wh, run_date)
