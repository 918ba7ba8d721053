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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cfmodel.warehouse import Warehouse, publish, withdraw
from cfmodel.warehouse.schemas import ITEMS, RATINGS, RATINGS_INCREMENTS, increments_of
from cfmodel.warehouse.store import parquet_files

# In the ratings table: the run dates of the increments it holds, for the nightly merge to check.
BUILT_FROM = "_built_from.json"
# Past this many files (about one per night merged in), the next ingest rebuilds, compacting them.
MAX_FILES = 200
# A night of more ratings than this is rebuilt with Spark instead of merged on the driver.
MAX_MERGED_ROWS = 5_000_000
# The ratings columns whose Parquet statistics a merged file keeps.
NUMERIC_COLUMNS = ["rating", "timestamp"]
# Those a merged file dictionary-encodes: epoch seconds are nearly all distinct, so a dictionary for
# them is built only to be dropped at its size limit (a 5.3M-row file: 0.40 s to write without it
# against 0.48 s, and 3% smaller).
DICTIONARY_COLUMNS = ["user_id", "item_id", "rating"]


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
    return [p for p in parts if run_date is None or _date_of(p) <= run_date]


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
    if wanted and wanted == parts and _built_from(table) == dates[:-1] and len(parquet_files(table)) < MAX_FILES:
        if _merge_night(table, wanted[-1], dates):
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


def _merge_night(table: Path, night: Path, dates: list[str]) -> bool:
    """Publish `table` + the `night` increment, newest rating per (user, item), rewriting only the
    files that hold a rating the night supersedes; the others are hard-linked into the new version.

    Runs on the driver with Arrow, one pass over the table's files (in parallel): only the rows of
    tonight's users are matched against tonight's pairs, several times faster than a Spark join
    over the same files. False (nothing written) for a night of more than MAX_MERGED_ROWS rows,
    which a Spark rebuild handles better."""
    tonight = pq.read_table(parquet_files(night), columns=["user_id", "item_id", "timestamp"])
    if tonight.num_rows > MAX_MERGED_ROWS:
        return False
    tonight = tonight.rename_columns(["user_id", "item_id", "_new_ts"])
    users = pc.unique(tonight["user_id"])

    def merge_file(source: Path, target: Path) -> pa.Table:
        """Write `source` to `target` without the ratings tonight supersedes; returns tonight's
        pairs that this file's older ratings keep (a later timestamp)."""
        # Ids read as dictionaries: tonight's users are found by their codes, and only their rows'
        # ids become strings, about half the time of reading every row's. The whole file is read
        # once: most files of a large table hold some rating a night supersedes.
        rows = pq.read_table(source, read_dictionary=["user_id", "item_id"])
        positions = pc.indices_nonzero(pc.is_in(rows["user_id"], value_set=users))
        ours = rows.take(positions)
        pairs = pa.table(
            {
                "user_id": ours["user_id"].cast(pa.string()),
                "item_id": ours["item_id"].cast(pa.string()),
                "timestamp": ours["timestamp"],
                "_position": positions,
            }
        )
        clashes = pairs.join(tonight, ["user_id", "item_id"], join_type="inner")
        old_ts, new_ts = clashes["timestamp"], clashes["_new_ts"]
        # The rebuild's order: latest timestamp first, none last, then the later run date (tonight).
        # Kleene logic: an old rating without a timestamp loses whatever tonight's comparison gives.
        later = pc.and_kleene(pc.is_valid(new_ts), pc.greater_equal(new_ts, old_ts))
        night_wins = pc.or_kleene(pc.is_null(old_ts), later)
        _copy_without_rows(rows, source, target, clashes.filter(night_wins)["_position"].to_numpy())
        return clashes.filter(pc.invert(night_wins)).select(["user_id", "item_id"])

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            kept_old = list(pool.map(lambda file: merge_file(file, tmp / file.name), parquet_files(table)))
        night_losers = pa.concat_tables(kept_old) if kept_old else None
        for file in parquet_files(night):
            _copy_without(file, tmp / f"part-{_date_of(night)}-{file.name.removeprefix('part-')}", night_losers)
        _record(tmp, dates)

    publish(table, write)
    return True


def _copy_without(source: Path, target: Path, dropped: pa.Table | None) -> None:
    """`source` as `target` without the rows whose (user_id, item_id) is in `dropped`: a hard link
    when nothing is dropped (versions of a table share the files they have in common)."""
    if dropped is None or not dropped.num_rows:
        _link(source, target)
        return
    rows = pq.read_table(source)
    kept = rows.join(dropped, ["user_id", "item_id"], join_type="left anti")
    pq.write_table(kept.select(rows.column_names).cast(rows.schema), target)


def _copy_without_rows(rows: pa.Table, source: Path, target: Path, positions: np.ndarray) -> None:
    """`source` (read as `rows`) as `target` without the rows at `positions`: a hard link when
    there are none.

    The ids stay Parquet dictionaries from the read to the write, so the writer reuses them instead
    of hashing every id again; the file then records no Arrow schema, so that readers see plain
    strings as in every other file of the table. The ids get no min/max statistics: over unsorted
    ids they would span the whole range and skip nothing, and computing them took a third of the
    write. The file is read once for the match and the copy."""
    if not len(positions):
        _link(source, target)
        return
    keep = np.ones(rows.num_rows, dtype=bool)
    keep[positions] = False
    pq.write_table(
        rows.filter(keep),
        target,
        store_schema=False,
        write_statistics=NUMERIC_COLUMNS,
        use_dictionary=DICTIONARY_COLUMNS,
    )


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)


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


def _parquet_rows(folder: Path) -> int:
    """Rows of a table or partition, from the Parquet footers alone."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(folder))


def _date_of(partition: Path) -> str:
    return partition.name.split("=", 1)[1]


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
