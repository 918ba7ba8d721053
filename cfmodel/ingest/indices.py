"""Stable integer indices for user and item ids: `user_index` and `item_index` (id string, index bigint).

Indices are contiguous from 0. A later ingest keeps every existing assignment and appends ids it
has not seen, in sorted order, after the current maximum, the same rule as `IdIndex.extended`, so a
model trained yesterday can be warm-started on tonight's data: row i of its embedding tables
still belongs to the same user or item.

An index has one row per user or item, which the driver holds easily (training reads it whole),
so it is checked, extended and written with Arrow on the driver; Spark only finds the distinct ids
of the new ratings, one job per column. Numbering in Spark took five jobs per table, most of a
small night's index work.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, publish
from cfmodel.warehouse.atomic import write_arrow
from cfmodel.warehouse.schemas import ITEM_INDEX, USER_INDEX

INDEX_TABLES = {"user_id": USER_INDEX, "item_id": ITEM_INDEX}


def check_index(index: pa.Table, name: str) -> int:
    """Number of ids in a stored index; raises if it is not a bijection onto 0..n-1."""
    n = index.num_rows
    if not n:
        return 0
    ids, indices = index["id"], index["index"]
    low, high = pc.min_max(indices).values()
    distinct_ids, distinct_indices = pc.count_distinct(ids).as_py(), pc.count_distinct(indices).as_py()
    nulls = ids.null_count + indices.null_count
    if distinct_ids != n or distinct_indices != n or low.as_py() != 0 or high.as_py() != n - 1 or nulls:
        raise CfrecError(
            f"table {name} is not a contiguous index from 0: {n} rows, {distinct_ids} distinct ids, "
            f"{distinct_indices} distinct indices from {low.as_py()} to {high.as_py()}"
        )
    return n


def numbered(known: pa.Table, ids: pa.Array, schema: pa.Schema) -> pa.Table:
    """`known` (ordered by index) extended with the `ids` it lacks, numbered after it in sorted
    id order (byte order of UTF-8, which is code point order, as Python sorts strings)."""
    new = pc.unique(ids.filter(pc.invert(pc.is_in(ids, value_set=known["id"]))))
    new = new.take(pc.sort_indices(new))
    start = known.num_rows
    added = pa.table({"id": new, "index": pa.array(range(start, start + len(new)), pa.int64())}, schema=schema)
    return pa.concat_tables([known.cast(schema), added])


def update_indices(wh: Warehouse, ratings: DataFrame) -> dict[str, dict[str, int]]:
    """Extend `user_index` and `item_index` with the ids of `ratings` that they lack, numbered after
    the current maximum in sorted id order; returns each table's size and number of new ids."""
    summary = {}
    for column, table in INDEX_TABLES.items():
        path = wh.table(table)
        schema = table.arrow
        known = pq.read_table(path, columns=schema.names) if path.exists() else schema.empty_table()
        before = check_index(known, table.name)
        known = known.take(pc.sort_indices(known["index"]))
        distinct = ratings.select(F.col(column).cast("string").alias("id")).where(F.col("id").isNotNull()).distinct()
        ids = distinct.toArrow()["id"].combine_chunks().cast(pa.string())
        extended = numbered(known, ids, schema)
        if extended.num_rows > before or not path.exists():
            publish(path, write_arrow(extended))
        summary[table.name] = {"ids": extended.num_rows, "new_ids": extended.num_rows - before}
    return summary
