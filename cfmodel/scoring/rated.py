"""What scoring reads of the ratings table: each item's number of ratings, and each user's rated
items as catalog positions (`gather_rated`), the input of every scoring task."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession

from cfmodel.errors import CfrecError

# Rows of ratings one gathering task holds at once (a few hundred MB of ids in its Python worker).
RATINGS_PER_GATHER_TASK = 4_000_000
RATED = "user_id string, rated array<int>"
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
    tasks = max(int(spark.conf.get("spark.sql.shuffle.partitions")), -(-rows // RATINGS_PER_GATHER_TASK))
    catalog = spark.sparkContext.broadcast(catalog_ids)

    def gather_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        # Cast: a frame's ids may be declared non-null, or be numbers.
        ratings = pa.Table.from_batches(batches).cast(RATINGS_IDS) if batches else RATINGS_IDS.empty_table()
        yield from users_rated_items(ratings, catalog.value)

    return ratings.repartition(tasks, "user_id").mapInArrow(gather_task, RATED)


def users_rated_items(ratings: pa.Table, catalog_ids: np.ndarray) -> Iterator[pa.RecordBatch]:
    """(user_id, item_id) rows -> (user_id, rated) batches, one row per user, items as their
    positions in `catalog_ids`. Every item must be in the catalog."""
    if ratings.num_rows == 0:
        return
    users = ratings.column("user_id").combine_chunks().dictionary_encode()
    if users.null_count:
        raise CfrecError("the ratings hold a rating without a user_id")
    items = pc.index_in(ratings.column("item_id"), value_set=pa.array(catalog_ids, pa.string()))
    if items.null_count:
        missing = ratings.column("item_id").filter(items.is_null())[0]
        raise CfrecError(f"item '{missing}' of the ratings is not in the scoring catalog")
    codes = users.indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    per_user = np.bincount(codes, minlength=len(users.dictionary))
    offsets = np.zeros(len(per_user) + 1, np.int32)
    np.cumsum(per_user, out=offsets[1:])
    rated = pa.ListArray.from_arrays(pa.array(offsets), pa.array(items.to_numpy()[order]))
    for start in range(0, len(per_user), RATED_BATCH_USERS):
        part = [users.dictionary.slice(start, RATED_BATCH_USERS), rated.slice(start, RATED_BATCH_USERS)]
        yield pa.RecordBatch.from_arrays(part, names=["user_id", "rated"])


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
