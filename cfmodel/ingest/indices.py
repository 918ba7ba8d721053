"""Stable integer indices for user and item ids: `user_index` and `item_index` (id string, index bigint).

Indices are contiguous from 0. A later ingest keeps every existing assignment and appends ids it
has not seen, in sorted order, after the current maximum, the same rule as `IdIndex.extended`, so a
model trained yesterday can be warm-started on tonight's data: row i of its embedding tables
still belongs to the same user or item.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, publish
from cfmodel.warehouse.schemas import ITEM_INDEX, USER_INDEX

INDEX_TABLES = {"user_id": USER_INDEX, "item_id": ITEM_INDEX}


def check_index(index: DataFrame, name: str) -> int:
    """Number of ids in a stored index; raises if it is not a bijection onto 0..n-1."""
    row = index.agg(
        F.count(F.lit(1)).alias("n"),
        F.countDistinct("id").alias("ids"),
        F.countDistinct("index").alias("indices"),
        F.min("index").alias("low"),
        F.max("index").alias("high"),
        F.count_if(F.col("id").isNull() | F.col("index").isNull()).alias("nulls"),
    ).first()
    n = row["n"]
    if n and (row["ids"] != n or row["indices"] != n or row["low"] != 0 or row["high"] != n - 1 or row["nulls"]):
        raise CfrecError(
            f"table {name} is not a contiguous index from 0: {n} rows, {row['ids']} distinct ids, "
            f"{row['indices']} distinct indices from {row['low']} to {row['high']}"
        )
    return n


def _numbered(ids: DataFrame, start: int) -> DataFrame:
    """Distinct `ids` numbered start, start+1, ... in sorted id order, cached (release with
    `unpersist()`).

    A global sort leaves the ids range-partitioned, each partition in order, and
    `monotonically_increasing_id` numbers the rows within a partition (the partition number sits
    above bit 33); a small job counts each partition's ids, which turns those numbers into
    contiguous indices without funnelling every id through one task.
    """
    ordered = ids.orderBy("id").select("id", F.monotonically_increasing_id().alias("_ordinal")).cache()
    partition = F.shiftright(F.col("_ordinal"), 33)
    sizes = ordered.groupBy(partition.alias("part")).agg(F.count(F.lit(1)).alias("n")).collect()
    offsets, seen = [], start
    for row in sorted(sizes, key=lambda r: r["part"]):
        offsets += [F.lit(row["part"]), F.lit(seen - (row["part"] << 33))]
        seen += row["n"]
    index = F.col("_ordinal") + F.element_at(F.create_map(*offsets), partition) if offsets else F.col("_ordinal")
    numbered = ordered.select("id", index.cast("long").alias("index")).cache()
    numbered.count()
    ordered.unpersist()
    return numbered


def update_indices(spark: SparkSession, wh: Warehouse, ratings: DataFrame) -> dict[str, dict[str, int]]:
    """Extend `user_index` and `item_index` with the ids of `ratings` that they lack, numbered after
    the current maximum in sorted id order; returns each table's size and number of new ids."""
    summary = {}
    for column, table in INDEX_TABLES.items():
        path = wh.table(table)
        if path.exists():
            existing = spark.read.schema(table.ddl).parquet(str(path))
        else:
            existing = spark.createDataFrame([], table.ddl)
        before = check_index(existing, table.name) if path.exists() else 0
        ids = ratings.select(F.col(column).alias("id")).where(F.col("id").isNotNull()).distinct()
        new = _numbered(ids.join(existing.select("id"), "id", "left_anti"), before)
        try:
            n_new = new.count()
            if n_new or not path.exists():
                extended = existing.select("id", "index").unionByName(new)
                one_file = extended.coalesce(1).sortWithinPartitions("index")
                publish(path, lambda tmp, df=one_file: df.write.parquet(str(tmp)))
        finally:
            new.unpersist()
        summary[table.name] = {"ids": before + n_new, "new_ids": n_new}
    return summary
