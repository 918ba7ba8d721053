"""Nightly increments and the current tables built from them.

Each ingest stores its clean rows under `ratings_increments/run_date=D/` (and
`items_increments/run_date=D/`), replacing that date's partition when re-run. The current
`ratings` and `items` tables are then the deduplicated union of every increment, published
atomically, so re-running a date never duplicates and yesterday's rows stay until a newer rating
of the same (user, item) supersedes them. A night's `ratings` merges only tonight's rows into
yesterday's table; other runs (a re-run, a backfill of an earlier date) rebuild it whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cfmodel.warehouse import Warehouse, publish, withdraw
from cfmodel.warehouse.schemas import ITEMS, RATINGS, RATINGS_INCREMENTS, increments_of

# In the ratings table: the run dates of the increments it holds, for the nightly merge to check.
BUILT_FROM = "_built_from.json"
# Past this many files (about one per night merged in), the next ingest rebuilds, compacting them.
MAX_FILES = 200
# A night re-rating more pairs than this is rebuilt with Spark instead of merged on the driver.
MAX_CLASHES = 1_000_000


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


@dataclass
class RatingsRebuild:
    rows: int  # of the table now
    increment_rows: int  # over the increments it was built from
    merged: bool  # only tonight's rows were merged in: every other row of the table was there before


def materialise_ratings(spark: SparkSession, wh: Warehouse, run_date: str | None = None) -> RatingsRebuild:
    """Make `ratings` the increments up to `run_date`: per (user, item), the latest rating by
    timestamp, then by run date.

    When `run_date` is the newest increment and the table holds exactly the ones before it (the
    nightly case), tonight's rows are merged into it (`_merge_night`): the night's cost grows with
    the night, not with the history. Otherwise, and once the table has MAX_FILES files, it is
    rebuilt from every increment, which also compacts it."""
    parts = partitions(wh, RATINGS_INCREMENTS.name)
    wanted = as_of(parts, run_date)
    dates = [_date_of(p) for p in wanted]
    increment_rows = sum(_parquet_rows(p) for p in wanted)
    table = wh.table(RATINGS)
    if wanted and wanted == parts and _built_from(table) == dates[:-1] and len(_files(table)) < MAX_FILES:
        if _merge_night(spark, table, wanted[-1], dates):
            return RatingsRebuild(_parquet_rows(table), increment_rows, merged=True)
    if len(wanted) == 1:
        # A single increment is already deduplicated: copying its files skips a shuffle.
        publish(table, _with_record(_copy_partition(wanted[0]), dates))
        return RatingsRebuild(_parquet_rows(table), increment_rows, merged=False)
    increments = _up_to(read_ratings(spark, wh.table(RATINGS_INCREMENTS)), run_date)
    current = latest_per_key(
        increments,
        ["user_id", "item_id"],
        [F.col("timestamp").desc_nulls_last(), F.col("run_date").desc()],
    ).select(*RATINGS.column_names)
    # Reading the increments while the new table is written beside the old one is safe:
    # publish only swaps folders once the write has finished.
    publish(table, _with_record(lambda tmp: current.write.parquet(str(tmp)), dates))
    return RatingsRebuild(_parquet_rows(table), increment_rows, merged=False)


def _merge_night(spark: SparkSession, table: Path, night: Path, dates: list[str]) -> bool:
    """Publish `table` + the `night` increment, newest rating per (user, item), rewriting only the
    files that hold a rating the night supersedes; the others are hard-linked into the new version.
    False (nothing written) when the night re-rates more than MAX_CLASHES pairs: a full rebuild
    does that better."""
    old = read_ratings(spark, table).select(
        "user_id", "item_id", F.col("timestamp").alias("_old_ts"), F.input_file_name().alias("_file")
    )
    tonight = read_ratings(spark, night).select("user_id", "item_id", F.col("timestamp").alias("_new_ts"))
    clashes = old.join(tonight, ["user_id", "item_id"])
    # Order of the rebuild: timestamp descending, none last, then the newer run date (tonight's).
    night_wins = F.col("_old_ts").isNull() | (F.col("_new_ts").isNotNull() & (F.col("_new_ts") >= F.col("_old_ts")))
    rows = clashes.select("user_id", "item_id", "_file", night_wins.alias("_night_wins")).limit(MAX_CLASHES + 1)
    found = rows.collect()
    if len(found) > MAX_CLASHES:
        return False
    losers_by_file: dict[str, set[tuple[str, str]]] = {}
    night_losers = set()
    for row in found:
        if row["_night_wins"]:
            losers_by_file.setdefault(_file_name(row["_file"]), set()).add((row["user_id"], row["item_id"]))
        else:
            night_losers.add((row["user_id"], row["item_id"]))

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for file in _files(table):
            _copy_without(file, tmp / file.name, losers_by_file.get(file.name, set()))
        for file in _files(night):
            _copy_without(file, tmp / f"part-{_date_of(night)}-{file.name.removeprefix('part-')}", night_losers)
        _record(tmp, dates)

    publish(table, write)
    return True


def _copy_without(source: Path, target: Path, dropped: set[tuple[str, str]]) -> None:
    """`source` as `target` without the rows whose (user_id, item_id) is in `dropped`: a hard link
    when nothing is dropped (versions of a table share the files they have in common)."""
    if not dropped:
        try:
            os.link(source, target)
        except OSError:  # another file system, or no hard links there
            shutil.copy2(source, target)
        return
    rows = pq.read_table(source)
    keys = pc.binary_join_element_wise(rows["user_id"], rows["item_id"], "\x00")
    gone = pa.array(sorted(f"{user}\x00{item}" for user, item in dropped))
    pq.write_table(rows.filter(pc.invert(pc.is_in(keys, value_set=gone))), target)


def _record(folder: Path, dates: list[str]) -> None:
    (folder / BUILT_FROM).write_text(json.dumps({"run_dates": dates}))


def _with_record(write: Callable[[Path], None], dates: list[str]) -> Callable[[Path], None]:
    def write_and_record(tmp: Path) -> None:
        write(tmp)
        _record(tmp, dates)

    return write_and_record


def _built_from(table: Path) -> list[str] | None:
    """The run dates of the increments the table was last built from; None when not recorded."""
    try:
        return json.loads((table / BUILT_FROM).read_text())["run_dates"]
    except (OSError, ValueError, KeyError):
        return None


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("*.parquet") if not f.name.startswith((".", "_"))) if folder.is_dir() else []


def _parquet_rows(folder: Path) -> int:
    """Rows of a table or partition, from the Parquet footers alone."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in _files(folder))


def _date_of(partition: Path) -> str:
    return partition.name.split("=", 1)[1]


def _file_name(uri: str) -> str:
    """input_file_name()'s URI -> the file's name (unique within the table's one folder)."""
    return Path(unquote(urlparse(uri).path)).name


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
