"""Superseded duplicates: of rows sharing a key, the newest stays clean and the others become
`duplicate_superseded` rejects.

Rating files rarely hold duplicates, so their work is shaped around the clean majority
(`superseded_rows`): a 64-bit hash of the key is counted (one long column sorted on the driver, or
shuffled in Spark for very large nights: never the rows), and only rows whose hash occurs more
than once are ranked exactly with a window over the real key.
A hash collision can only add rows to that exact check, never mark a row wrongly. The result is
the (source_file, line_number) of each superseded row, usually empty or small. Item and side files
are small: `resolve` ranks all their rows at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

SUPERSEDED = "duplicate_superseded"
ROW_ID = ["source_file", "line_number"]
RATING_KEY = ["user_id", "item_id"]
# Repeated key hashes up to this many (8 bytes each) are broadcast to the join with the rows.
BROADCAST_HASHES = 2_000_000
# Up to this many clean rows, their key hashes are sorted on the driver (8 bytes each, about three
# copies at the peak): about 2 s less than Spark's shuffle and sort at 5M rows. Beyond, in Spark.
DRIVER_HASH_ROWS = 50_000_000


def ratings_newest_first() -> list[Column]:
    """The latest rating wins: by timestamp (none counts as oldest), then file order, then line."""
    return [F.col("timestamp").desc_nulls_last(), F.col("source_file").desc(), F.col("line_number").desc()]


def file_order_newest_first() -> list[Column]:
    return [F.col("source_file").desc(), F.col("line_number").desc()]


def superseded_rows(
    rows: DataFrame, key: list[str], newest_first: list[Column], clean_rows: int, scratch: Path
) -> tuple[DataFrame | None, int]:
    """(source_file, line_number) of the `clean_rows` clean rows (`reason` null) that a newer row
    with the same key supersedes, cached (release with `unpersist()`), or None when there are none;
    and how many. `scratch` is a path the caller removes afterwards.

    Runs a job at once: the repeated hashes are settled first so that, in the usual case of none,
    the rows are never shuffled for a join, and when there are few the join broadcasts them.
    """
    clean = rows.where(F.col("reason").isNull())
    key_hash = F.xxhash64(*key).alias("_key_hash")
    if clean_rows <= DRIVER_HASH_ROWS:
        hashes = np.sort(clean.select(key_hash).toArrow().column(0).to_numpy())
        found = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
        del hashes
        if len(found) == 0:
            return None, 0
        # Back to Spark through a file: creating a frame from driver data costs seconds per million.
        pq.write_table(pa.table({"_key_hash": found}), scratch)
        repeated, n_repeated = rows.sparkSession.read.parquet(str(scratch)), len(found)
    else:
        # A window count over the hash sorts 64-bit values (radix sort) and runs about 1.5x faster
        # than a hash aggregation, which gains nothing from partial aggregation on unique keys.
        occurrences = F.count(F.lit(1)).over(Window.partitionBy("_key_hash"))
        repeated = (
            clean.select(key_hash).withColumn("_n", occurrences).where(F.col("_n") > 1).select("_key_hash").distinct()
        ).cache()
        n_repeated = repeated.count()
    try:
        if n_repeated == 0:
            return None, 0
        hashes = F.broadcast(repeated) if n_repeated <= BROADCAST_HASHES else repeated
        suspects = clean.withColumn("_key_hash", key_hash).join(hashes, "_key_hash", "left_semi")
        rank = F.row_number().over(Window.partitionBy(*key).orderBy(*newest_first))
        superseded = suspects.withColumn("_rank", rank).where(F.col("_rank") > 1).select(*ROW_ID).cache()
        return superseded, superseded.count()
    finally:
        repeated.unpersist()


def resolve(rows: DataFrame, key: list[str], newest_first: list[Column]) -> tuple[DataFrame, dict[str | None, int]]:
    """`rows` with every superseded duplicate marked, cached (release with `unpersist()`), and its
    rows counted by reason (None: clean), which fills the cache. For small inputs such as item
    files, ranked directly in one job; the ratings ingest applies `superseded_rows` to its staged
    rows."""
    clean = F.col("reason").isNull()
    rank = F.row_number().over(Window.partitionBy(clean, *key).orderBy(*newest_first))
    reason = F.when(clean & (rank > 1), F.lit(SUPERSEDED)).otherwise(F.col("reason"))
    resolved = rows.select(*[reason.alias(c) if c == "reason" else F.col(c) for c in rows.columns]).cache()
    counts = {row["reason"]: row["count"] for row in resolved.groupBy("reason").count().collect()}
    return resolved, counts
