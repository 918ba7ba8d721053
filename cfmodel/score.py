"""The score task: every user's top-N unrated items, scored on Spark executors.

Users are spread over partitions; each partition scores its users against all items (the factors
are broadcast) with one matrix product per batch of users, inside `mapInPandas`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel import artifact
from cfmodel.ids import IdIndex
from cfmodel.ranking import top_n
from cfmodel.warehouse import Warehouse, publish

log = logging.getLogger(__name__)

RECS_SCHEMA = "user_id string, rank int, item_id string, score float"
# Users scored per matrix product: bounds the [users x items] score block to ~128 MB of float32.
SCORE_BLOCK_ELEMENTS = 32 * 1024 * 1024


def recommend(spark: SparkSession, ratings: DataFrame, model: artifact.ModelArtifact, n: int) -> DataFrame:
    """ratings (user_id, item_id, ...) -> (user_id, rank, item_id, score) for users the model knows."""
    payload = spark.sparkContext.broadcast(
        {
            "user_ids": model.users.ids,
            "item_ids": model.items.ids,
            "y_range": tuple(model.config["y_range"]),
            **model.factors(),
        }
    )

    def score_batches(batches):
        p = payload.value
        users, items = IdIndex(p["user_ids"]), IdIndex(p["item_ids"])
        block = max(1, SCORE_BLOCK_ELEMENTS // max(len(items), 1))
        for batch in batches:
            user_index = users.encode(batch["user_id"])
            batch = batch[user_index >= 0]
            user_index = user_index[user_index >= 0]
            for start in range(0, len(batch), block):
                rows = slice(start, start + block)
                exclude = [idx[idx >= 0] for idx in (items.encode(r) for r in batch["rated"].iloc[rows])]
                uidx = user_index[rows]
                top_items, scores = top_n(
                    p["user_vectors"][uidx], p["user_bias"][uidx], p["item_vectors"], p["item_bias"],
                    exclude, n, p["y_range"],
                )
                ranks = np.broadcast_to(np.arange(1, top_items.shape[1] + 1, dtype=np.int32), top_items.shape)
                keep = top_items >= 0
                yield pd.DataFrame(
                    {
                        "user_id": np.repeat(batch["user_id"].iloc[rows].to_numpy(), top_items.shape[1])[keep.ravel()],
                        "rank": ranks[keep],
                        "item_id": items.decode(top_items[keep]),
                        "score": scores[keep],
                    }
                )

    rated = ratings.groupBy("user_id").agg(F.collect_list("item_id").alias("rated"))
    return rated.mapInPandas(score_batches, RECS_SCHEMA)


def score(
    spark: SparkSession,
    warehouse: str | Path,
    run_date: str,
    top_n_items: int = 10,
    model_version: str | None = None,
) -> dict:
    wh = Warehouse.open(warehouse)
    model = artifact.load(wh.models, model_version)
    ratings = spark.read.parquet(str(wh.require("ratings"))).select("user_id", "item_id")
    recs = recommend(spark, ratings, model, top_n_items).withColumn("model_version", F.lit(model.version))
    target = wh.partition("recommendations", run_date)
    publish(target, lambda tmp: recs.write.mode("overwrite").parquet(str(tmp)))

    written = spark.read.parquet(str(target))
    summary = written.agg(F.count("*").alias("rows"), F.countDistinct("user_id").alias("users")).first()
    known_users = ratings.select("user_id").distinct().count()
    report = {
        "run_date": run_date,
        "model_version": model.version,
        "rows": summary["rows"],
        "users": summary["users"],
        "users_without_vector": known_users - summary["users"],
        "path": str(target),
    }
    if report["users_without_vector"]:
        log.warning("%d users have no model vector and got no recommendations", report["users_without_vector"])
    log.info("score: %s", report)
    return report
