"""The analytics tables beside the recommendations: what the scoring model learned, and every model run.

    similar_items/            each item's top-K neighbours by cosine of the scoring model's item vectors
    item_factors/             item vectors and biases of the scoring model
    user_factors/             user vectors and biases of the scoring model
    metrics/run_date=D/       held-out metrics of every model trained for D (`cfmodel.reporting.metrics`)
    model_runs/               one row per trained model version: type, params, data, device, time, gate
    reports/run_date=D/       the night's HTML run report, written last as it reads the others
                              (`cfmodel.reporting.report`)

The first three describe the model scoring uses (models/CURRENT unless told otherwise) and are
replaced whole; `model_runs` is rebuilt from the registry. Every table is published atomically.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from cfmodel.config import TablesConfig
from cfmodel.registry.artifact import ArtifactConfig, ModelArtifact
from cfmodel.registry.registry import POPULARITY_LISTS, ModelRegistry
from cfmodel.reporting.metrics import publish_metrics
from cfmodel.reporting.report import write_report
from cfmodel.scoring.similar import similar_items
from cfmodel.warehouse import Warehouse, is_published, publish, write_arrow
from cfmodel.warehouse.schemas import ITEM_FACTORS, MODEL_RUNS, RECOMMENDATIONS, SIMILAR_ITEMS, USER_FACTORS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# config.json keys that have a column of their own; everything else goes into `params` as JSON.
RUN_COLUMNS_FROM_CONFIG = ("model_type", "run_date", "created_at", "data", "device", "n_users", "n_items")


def factor_tables(model: ModelArtifact) -> dict[str, pa.Table]:
    """user_factors and item_factors rows of a model: its vectors and biases."""
    factors = model.factors()
    out = {}
    for table, kind, ids in ((USER_FACTORS, "user", model.users.ids), (ITEM_FACTORS, "item", model.items.ids)):
        vectors = np.asarray(factors[f"{kind}_vectors"], np.float32)
        out[table.name] = pa.Table.from_arrays(
            [
                pa.array(ids.astype(str), pa.string()),
                pa.FixedSizeListArray.from_arrays(vectors.ravel(), vectors.shape[1]).cast(pa.list_(pa.float32())),
                pa.array(np.asarray(factors[f"{kind}_bias"], np.float32)),
                pa.array(np.full(len(ids), model.version, dtype=object), pa.string()),
            ],
            schema=table.arrow,
        )
    return out


def _timestamp(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _run_row(registry: ModelRegistry, version: str, current: str | None) -> dict:
    run = registry.run(version)
    config: ArtifactConfig = run.config
    promotion, data = run.promotion, config.data or {}
    params = {k: v for k, v in config.to_dict().items() if k not in RUN_COLUMNS_FROM_CONFIG}
    return {
        "model_version": version,
        "model_type": config.model_type,
        "run_date": date.fromisoformat(config.day) if config.day else None,
        "created_at": _timestamp(config.created_at),
        "params": json.dumps(params, sort_keys=True),
        "data_ratings": data.get("ratings"),
        "data_train": data.get("train"),
        "data_valid": data.get("valid"),
        "data_users": data.get("users"),
        "data_items": data.get("items"),
        "device": config.device,
        "train_seconds": run.metrics.get("train_seconds"),
        "gate_metric": promotion.get("metric"),
        "gate_value": promotion.get("candidate_value"),
        "compared_value": promotion.get("current_value"),
        "popularity_value": promotion.get("popularity_value"),
        # A model that never went through the gate is promoted exactly when it is the current one.
        "promoted": promotion["promoted"] if "promoted" in promotion else version == current,
        "promotion_reason": promotion.get("reason"),
        "compared_with": promotion.get("previous"),
        "is_current": version == current,
    }


def model_run_rows(registry: ModelRegistry) -> pa.Table:
    current = registry.current()
    rows = [_run_row(registry, version, current) for version in registry.versions()]
    return pa.Table.from_pylist(rows, schema=MODEL_RUNS.arrow)


@dataclass
class TablesReport:
    model_version: str
    user_factors: int
    item_factors: int
    similar_items: int
    metrics: int
    model_runs: int
    report: str | None = None  # the night's run report, where the night has recommendations


def night_report(wh: Warehouse, run_date: str) -> str | None:
    """The run report of a night with recommendations; tables published before scoring get none."""
    if not is_published(wh.partition(RECOMMENDATIONS, run_date)):
        log.warning("no recommendations for %s yet: no run report", run_date)
        return None
    return str(write_report(wh.root, run_date))


def _runs_and_metrics(wh: Warehouse, registry: ModelRegistry, run_date: str) -> TablesReport:
    """A night without a usable model: no factors or neighbours to publish, only what was tried."""
    model_runs = model_run_rows(registry)
    publish(wh.table(MODEL_RUNS), write_arrow(model_runs))
    metrics = publish_metrics(wh.root, run_date).rows
    report = TablesReport(POPULARITY_LISTS, 0, 0, 0, metrics, model_runs.num_rows, night_report(wh, run_date))
    log.info("tables (no model to publish): %s", report)
    return report


def publish_tables(
    spark: SparkSession,
    warehouse: str | Path,
    run_date: str,
    model_version: str | None = None,
    similar_k: int = TablesConfig.similar_k,
) -> TablesReport:
    """Write similar_items, item_factors, user_factors, metrics/run_date=RUN_DATE, model_runs and the
    night's run report."""
    from pyspark.sql import functions as F

    wh = Warehouse.open(warehouse)
    registry = ModelRegistry(wh.models)
    if model_version == POPULARITY_LISTS:
        return _runs_and_metrics(wh, registry, run_date)
    model = registry.load(model_version)
    factors = factor_tables(model)
    for name, table in factors.items():
        publish(wh.table(name), write_arrow(table))
    # Items without a trained vector neither have neighbours nor are one.
    trained = np.ones(len(model.items), bool) if model.trained_items is None else model.trained_items
    item_ids, vectors = model.items.ids[trained], model.factors()["item_vectors"][trained]
    similar = similar_items(spark, item_ids, vectors, similar_k, wh.titles(item_ids))
    with_version = similar.withColumn("model_version", F.lit(model.version))
    publish(wh.table(SIMILAR_ITEMS), lambda tmp: with_version.coalesce(4).write.parquet(str(tmp)))
    model_runs = model_run_rows(registry)
    publish(wh.table(MODEL_RUNS), write_arrow(model_runs))
    report = TablesReport(
        model_version=model.version,
        user_factors=factors[USER_FACTORS.name].num_rows,
        item_factors=factors[ITEM_FACTORS.name].num_rows,
        similar_items=spark.read.parquet(str(wh.table(SIMILAR_ITEMS))).count(),
        metrics=publish_metrics(wh.root, run_date).rows,
        model_runs=model_runs.num_rows,
        report=night_report(wh, run_date),
    )
    log.info("tables: %s", report)
    return report
