"""The ingest task: raw source files -> clean `ratings` and `items` tables, `rejects`, a report."""

from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.storagelevel import StorageLevel

from cfmodel import sources
from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, publish

log = logging.getLogger(__name__)

REJECT_COLUMNS = ["source", "table", "source_file", "line_number", "raw", "reason"]

REPORT_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType()),
        T.StructField("input_rows", T.LongType()),
        T.StructField("clean_rows", T.LongType()),
        T.StructField("rejected_rows", T.LongType()),
        T.StructField("rejects_by_reason", T.MapType(T.StringType(), T.LongType())),
        T.StructField("item_rows", T.LongType()),
        T.StructField("item_rejects", T.LongType()),
        T.StructField("ratings_on_unknown_items", T.LongType()),
    ]
)


def _rejects(parsed: DataFrame, source: str, table: str) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull()).select(
        F.lit(source).alias("source"), F.lit(table).alias("table"), *REJECT_COLUMNS[2:]
    )


def _write_parquet(df: DataFrame, path: Path, partitions: int | None = None) -> None:
    if partitions:
        df = df.coalesce(partitions)
    publish(path, lambda tmp: df.write.mode("overwrite").parquet(str(tmp)))


def ingest(spark: SparkSession, source: str, input_dir: str | Path, warehouse: str | Path, run_date: str) -> dict:
    layout = sources.get_layout(source)
    root = sources.check_input(layout, input_dir)
    wh = Warehouse.open(warehouse)

    ratings_parsed = sources.parse_ratings(
        sources.read_lines(spark, root / layout.ratings_file, layout.encoding),
        layout.ratings_sep,
        layout.rating_min,
        layout.rating_max,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    items_parsed = sources.parse_movielens_items(
        sources.read_lines(spark, root / layout.items_file, layout.encoding),
        layout.items_sep,
        sources.read_genre_names(root),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_reason = {
            (row["reason"] or "clean"): row["count"]
            for row in ratings_parsed.groupBy("reason").count().collect()
        }
        clean_rows = by_reason.pop("clean", 0)
        input_rows = ratings_parsed.count()
        rejected_rows = sum(by_reason.values())
        if input_rows != clean_rows + rejected_rows:
            raise CfrecError(
                f"ingest lost rows: {input_rows} input != {clean_rows} clean + {rejected_rows} rejected"
            )
        if clean_rows == 0:
            raise CfrecError(f"no clean ratings in {root / layout.ratings_file} ({input_rows} lines read)")

        ratings = ratings_parsed.where(F.col("reason").isNull()).select(
            "user_id", "item_id", F.col("rating").cast("float").alias("rating"), "timestamp"
        )
        items = items_parsed.where(F.col("reason").isNull()).select("item_id", "title", "year", "genres")
        item_rows = items.count()
        item_rejects = items_parsed.count() - item_rows
        unknown_items = ratings.join(items, "item_id", "left_anti").count()
        if unknown_items:
            log.warning("%d clean ratings are on items missing from %s", unknown_items, layout.items_file)

        _write_parquet(ratings, wh.table("ratings"))
        _write_parquet(items, wh.table("items"), partitions=1)
        rejects = _rejects(ratings_parsed, source, "ratings").unionByName(_rejects(items_parsed, source, "items"))
        _write_parquet(rejects, wh.partition("rejects", run_date), partitions=1)

        report = {
            "source": source,
            "input_rows": input_rows,
            "clean_rows": clean_rows,
            "rejected_rows": rejected_rows,
            "rejects_by_reason": by_reason,
            "item_rows": item_rows,
            "item_rejects": item_rejects,
            "ratings_on_unknown_items": unknown_items,
        }
        _write_parquet(spark.createDataFrame([report], REPORT_SCHEMA), wh.partition("ingest_report", run_date), 1)
        dataset = spark.createDataFrame(
            [(source, layout.rating_min, layout.rating_max, run_date)],
            "source string, rating_min double, rating_max double, run_date string",
        )
        _write_parquet(dataset, wh.table("datasets"), partitions=1)
    finally:
        ratings_parsed.unpersist()
        items_parsed.unpersist()
    log.info("ingest %s: %s", source, report)
    return report
