"""Nightly increments and the current tables built from them.

Each ingest stores its clean rows under `ratings_increments/run_date=D/` (and
`items_increments/run_date=D/`), replacing that date's partition when re-run. The current
`ratings` and `items` tables are then rebuilt as the deduplicated union of every increment and
published atomically, so re-running a date never duplicates and yesterday's rows stay until a
newer rating of the same (user, item) supersedes them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cfmodel.warehouse import Warehouse, publish, withdraw
from cfmodel.warehouse.schemas import ITEMS, RATINGS, RATINGS_INCREMENTS, increments_of


def partitions(wh: Warehouse, table: str) -> list[Path]:
    """Published run_date partitions of a table, oldest first (temporary folders are hidden)."""
    root = wh.table(table)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("run_date=*") if p.is_dir())


def read_ratings(spark: SparkSession, path: Path) -> DataFrame:
    """A ratings table or its increments (with their run_date), without a job to infer the schema."""
    return spark.read.schema(RATINGS.ddl).parquet(str(path))


def read_items(spark: SparkSession, path: Path) -> DataFrame:
    return spark.read.schema(ITEMS.ddl).parquet(str(path))


def _copy_partition(partition: Path) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        shutil.copytree(partition, tmp)

    return write


def latest_per_key(rows: DataFrame, keys: list[str], newest_first: list) -> DataFrame:
    """One row per key: the first by `newest_first`."""
    order = Window.partitionBy(*keys).orderBy(*newest_first)
    return rows.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1).drop("_rank")


def as_of(parts: list[Path], run_date: str | None) -> list[Path]:
    """The partitions of run dates up to `run_date`: re-running an old date rebuilds the table as it
    was then, so its training and scoring reproduce the first run's."""
    return [p for p in parts if run_date is None or p.name.split("=", 1)[1] <= run_date]


def _up_to(rows: DataFrame, run_date: str | None) -> DataFrame:
    return rows if run_date is None else rows.where(F.col("run_date").cast("string") <= run_date)


def materialise_ratings(spark: SparkSession, wh: Warehouse, run_date: str | None = None) -> tuple[int, int]:
    """Rebuild `ratings` from every increment up to `run_date`: per (user, item), the latest rating
    by timestamp, then by run date. Returns the rows of the table and the rows over the increments."""
    parts = as_of(partitions(wh, RATINGS_INCREMENTS.name), run_date)
    if len(parts) == 1:
        # A single increment is already deduplicated: copying its files skips a shuffle.
        publish(wh.table(RATINGS), _copy_partition(parts[0]))
        rows = read_ratings(spark, wh.table(RATINGS)).count()
        return rows, rows
    increments = _up_to(read_ratings(spark, wh.table(RATINGS_INCREMENTS)), run_date)
    current = latest_per_key(
        increments,
        ["user_id", "item_id"],
        [F.col("timestamp").desc_nulls_last(), F.col("run_date").desc()],
    ).select(*RATINGS.column_names)
    # Reading the increments while the new table is written beside the old one is safe:
    # publish only swaps folders once the write has finished.
    publish(wh.table(RATINGS), lambda tmp: current.write.parquet(str(tmp)))
    return read_ratings(spark, wh.table(RATINGS)).count(), increments.count()


def materialise_latest(
    spark: SparkSession,
    wh: Warehouse,
    table: str,
    keys: list[str],
    run_date: str | None = None,
    schema: str | None = None,
) -> None:
    """Rebuild `table` from its increments up to `run_date`: per key, the latest run's row. Without
    increments, the table is empty when `schema` is given, and absent otherwise."""
    parts = as_of(partitions(wh, increments_of(table)), run_date)
    if len(parts) == 1:
        publish(wh.table(table), _copy_partition(parts[0]))
        return
    if not parts:
        if schema is None:
            withdraw(wh.table(table))
            return
        current = spark.createDataFrame([], schema)
    else:
        reader = spark.read if schema is None else spark.read.schema(schema)
        rows = _up_to(reader.parquet(str(wh.table(increments_of(table)))), run_date)
        columns = [c for c in rows.columns if c != "run_date"]
        current = latest_per_key(rows, keys, [F.col("run_date").desc()]).select(*columns)
    publish(wh.table(table), lambda tmp: current.coalesce(1).write.parquet(str(tmp)))


def materialise_items(spark: SparkSession, wh: Warehouse, run_date: str | None = None) -> None:
    """Rebuild `items` from every items increment up to `run_date`: per item id, the latest run's row."""
    materialise_latest(spark, wh, ITEMS.name, ["item_id"], run_date, ITEMS.ddl)
