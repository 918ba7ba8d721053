"""What scoring reads of the ratings table: each item's number of ratings, and each user's rated
items as catalog positions (`gather_rated`, or `gather_rated_files` from the table's Parquet
files), the input of every scoring task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from cfmodel.errors import CfrecError

# Rows of ratings one gathering task holds at once (a few hundred MB of ids in its Python worker).
RATINGS_PER_GATHER_TASK = 4_000_000
RATED = "user_id string, rated array<int>"
RATED_BYTES = "user_id string, rated binary"
RATINGS_IDS = pa.schema([("user_id", pa.string()), ("item_id", pa.string())])
RATED_BATCH_USERS = 4096


def item_counts(ratings: DataFrame) -> pd.DataFrame:
    """ratings -> pandas (item_id, ratings): one row per item, small enough for the driver."""
    return ratings.groupBy("item_id").count().withColumnRenamed("count", "ratings").toPandas()


def gather_rated(spark: SparkSession, ratings: DataFrame, catalog_ids: np.ndarray, rows: int) -> DataFrame:
    """ratings (user_id, item_id) -> (user_id, rated): each user's items as catalog indices.

    Spark only moves each user's rows to one task; the task groups them with Arrow (a hash of the
    user ids, one sort) and looks the items up in the catalog once. Grouping string keys in the
    JVM (`collect_list`) costs twice as much: its aggregation sorts the keys."""
    tasks = _gather_tasks(spark, rows)
    catalog = spark.sparkContext.broadcast(catalog_ids)

    def gather_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        # Cast: a frame's ids may be declared non-null, or be numbers.
        ratings = pa.Table.from_batches(batches).cast(RATINGS_IDS) if batches else RATINGS_IDS.empty_table()
        yield from users_rated_items(ratings, catalog.value)

    return ratings.repartition(tasks, "user_id").mapInArrow(gather_task, RATED)


def _gather_tasks(spark: SparkSession, rows: int) -> int:
    return max(int(spark.conf.get("spark.sql.shuffle.partitions")), -(-rows // RATINGS_PER_GATHER_TASK))


def gather_rated_files(spark: SparkSession, files: list[Path], catalog_ids: np.ndarray) -> DataFrame:
    """`gather_rated` of a table's Parquet files (user_id, item_id columns), read by the Python
    workers themselves: a warehouse lies where every executor reads and writes it.

    Handing 25M rows of two strings from Spark's scan to Python costs more than the rest of the
    gathering together, so each task reads one row group with pyarrow and groups it by user; one
    shuffle then brings each user's lists (a user may have rows in many row groups) to one task,
    which joins them."""
    footers = {str(path): pq.ParquetFile(path).metadata for path in files}
    pieces = [(path, group) for path, footer in footers.items() for group in range(footer.num_row_groups)]
    tasks = _gather_tasks(spark, sum(footer.num_rows for footer in footers.values()))
    catalog = spark.sparkContext.broadcast(catalog_ids)

    def read_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for path, group in zip(batch.column("path").to_pylist(), batch.column("row_group").to_pylist()):
                chunks = pq.ParquetFile(path).iter_batches(
                    RATINGS_PER_GATHER_TASK, row_groups=[group], columns=RATINGS_IDS.names
                )
                for chunk in chunks:
                    for part in users_rated_items(pa.Table.from_batches([chunk]).cast(RATINGS_IDS), catalog.value):
                        yield _as_bytes(part)

    def join_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = [batch for batch in batches if batch.num_rows]
        if not batches:
            return
        parts = pa.Table.from_batches(batches).combine_chunks()
        lists = parts.column("rated").chunk(0)
        offsets = np.frombuffer(lists.buffers()[1], np.int32)[lists.offset : lists.offset + len(lists) + 1] // 4
        items = np.frombuffer(lists.buffers()[2], np.int32)[offsets[0] : offsets[-1]]
        owners = np.repeat(np.arange(len(lists)), np.diff(offsets))
        yield from _grouped_by_user(parts.column("user_id").chunk(0).take(pa.array(owners)), pa.array(items))

    # Between the two steps the lists travel as bytes: Spark copies an array<int> element by element.
    listed = spark.createDataFrame(pieces, "path string, row_group int").repartition(max(1, len(pieces)))
    partial = listed.mapInArrow(read_task, RATED_BYTES)
    return partial.repartition(tasks, "user_id").mapInArrow(join_task, RATED)


def _as_bytes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """(user_id, rated list<int32>) -> (user_id, rated binary): each list's int32 values as bytes."""
    rated = batch.column("rated")
    offsets = rated.offsets.to_numpy()
    values = rated.flatten().to_numpy().astype(np.int32, copy=False)
    lengths = pa.py_buffer(((offsets - offsets[0]) * 4).astype(np.int32))
    packed = pa.BinaryArray.from_buffers(pa.binary(), len(rated), [None, lengths, pa.py_buffer(values)])
    return pa.RecordBatch.from_arrays([batch.column("user_id"), packed], names=["user_id", "rated"])


def users_rated_items(ratings: pa.Table, catalog_ids: np.ndarray) -> Iterator[pa.RecordBatch]:
    """(user_id, item_id) rows -> (user_id, rated) batches, one row per user, items as their
    positions in `catalog_ids`. Every item must be in the catalog."""
    if ratings.num_rows == 0:
        return
    users = ratings.column("user_id").combine_chunks()
    if users.null_count:
        raise CfrecError("the ratings hold a rating without a user_id")
    items = pc.index_in(ratings.column("item_id").combine_chunks(), value_set=pa.array(catalog_ids, pa.string()))
    if items.null_count:
        missing = ratings.column("item_id").filter(items.is_null())[0]
        raise CfrecError(f"item '{missing}' of the ratings is not in the scoring catalog")
    yield from _grouped_by_user(users, items)


def _grouped_by_user(users: pa.Array, items: pa.Array) -> Iterator[pa.RecordBatch]:
    """One (user_id, rated) row per user, its items (int32) as a list (Arrow's hash grouping: a
    third of the time of encoding and sorting the ids)."""
    pairs = pa.table({"user_id": users, "rated": items})
    grouped = pairs.group_by("user_id", use_threads=False).aggregate([("rated", "list")])
    table = pa.table({"user_id": grouped.column("user_id"), "rated": grouped.column("rated_list")})
    yield from table.combine_chunks().to_batches(max_chunksize=RATED_BATCH_USERS)


def counted(rated: DataFrame, catalog_size: int) -> tuple[np.ndarray, int]:
    """Of gathered (user_id, rated) rows: each catalog item's number of ratings, and the number of
    users. One pass over `rated` (persist it first); each task sends back one array."""

    def count_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        per_item, users = np.zeros(catalog_size, np.int64), 0
        for batch in batches:
            per_item += np.bincount(batch.column("rated").flatten().to_numpy(), minlength=catalog_size)
            users += batch.num_rows
        yield pa.RecordBatch.from_arrays(
            [pa.array([per_item.tobytes()], pa.binary()), pa.array([users], pa.int64())], names=["items", "users"]
        )

    per_item, users = np.zeros(catalog_size, np.int64), 0
    for row in rated.mapInArrow(count_task, "items binary, users long").collect():
        per_item += np.frombuffer(row["items"], np.int64)
        users += row["users"]
    return per_item, users
