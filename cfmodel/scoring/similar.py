"""Item-to-item similarity: each item's top-K neighbours by cosine of the model's item vectors.

Items are spread over Spark partitions; each partition multiplies its block of unit vectors with
all of them (broadcast) and keeps the K best, never the item itself. Same code on `local[*]`
and on a cluster, and no [items x items] matrix ever exists in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from cfmodel.scoring.topk import top_k
from cfmodel.training.models import PAIRS_PER_BLOCK
from cfmodel.warehouse.schemas import SIMILAR_ITEMS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# What executors produce; the model version is added to every row afterwards.
NEIGHBOURS = SIMILAR_ITEMS.without("model_version")


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; an all-zero row stays zero (similar to nothing, cosine 0)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def most_similar(unit: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row index in `items`: the k most cosine-similar other rows, best first.

    Returns (neighbours, cosines) as `topk.top_k` does ([len(items), min(k, n - 1)]
    useful columns; -1/NaN pads when the catalog is smaller than k + 1).
    """
    items = np.asarray(items, np.int64)
    block = torch.as_tensor(unit[items]) @ torch.as_tensor(unit).T
    neighbours, cosines = top_k(block, k, np.arange(len(items)), items)
    return neighbours, cosines


def similar_items(
    spark: SparkSession,
    item_ids: np.ndarray,
    vectors: np.ndarray,
    k: int,
    titles: np.ndarray | None = None,
) -> DataFrame:
    """-> (item_id, rank, similar_item_id, similarity, similar_title): K rows per item (fewer only
    when the catalog has K items or fewer)."""
    item_ids = np.asarray(item_ids, dtype=object)
    titles = np.full(len(item_ids), None, dtype=object) if titles is None else np.asarray(titles, dtype=object)
    payload = spark.sparkContext.broadcast({"unit": unit_vectors(vectors), "ids": item_ids, "titles": titles, "k": k})
    block = max(1, PAIRS_PER_BLOCK // max(len(item_ids), 1))
    partitions = max(1, min(spark.sparkContext.defaultParallelism * 2, len(item_ids) // 256 + 1))

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        p = payload.value
        for batch in batches:
            rows = batch.column("id").to_numpy()
            for start in range(0, len(rows), block):
                index = rows[start : start + block]
                neighbours, cosines = most_similar(p["unit"], index, p["k"])
                found = neighbours >= 0
                picked = neighbours[found]
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(np.repeat(p["ids"][index], found.sum(axis=1)), pa.string()),
                        pa.array(
                            np.broadcast_to(np.arange(1, neighbours.shape[1] + 1, dtype=np.int32), neighbours.shape)[
                                found
                            ]
                        ),
                        pa.array(p["ids"][picked], pa.string()),
                        pa.array(cosines[found]),
                        pa.array(p["titles"][picked], pa.string()),
                    ],
                    schema=NEIGHBOURS.arrow,
                )

    return spark.range(0, len(item_ids), numPartitions=partitions).mapInArrow(score_partition, NEIGHBOURS.ddl)
