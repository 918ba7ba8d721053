"""The analytics tables beside the recommendations: what the model learned and how good it was.

    similar_items/            each item's top-K neighbours by cosine of the scoring model's item vectors
    item_factors/             item vectors and biases of the scoring model
    user_factors/             user vectors and biases of the scoring model
    metrics/run_date=D/       held-out metrics of every model trained for D, beside the popularity baseline
    model_runs/               one row per trained model version: type, params, data, device, time, gate

The first three describe the model scoring uses (models/CURRENT unless told otherwise) and are
replaced whole; `metrics` keeps one partition per night so quality can be followed over time;
`model_runs` is rebuilt from the models folder. Every table is published atomically.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cfmodel.errors import CfrecError
from cfmodel.registry import artifact
from cfmodel.registry import registry as runs
from cfmodel.scoring.similar import similar_items
from cfmodel.warehouse.store import Warehouse, publish

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DEFAULT_SIMILAR_K = 20

FACTORS_SCHEMA = {
    kind: pa.schema(
        [
            (f"{kind}_id", pa.string()),
            ("factors", pa.list_(pa.float32())),
            ("bias", pa.float32()),
            ("model_version", pa.string()),
        ]
    )
    for kind in ("user", "item")
}
METRICS_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("model_type", pa.string()),
        ("split", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("popularity", pa.float64()),
        ("evaluated_users", pa.int64()),
    ]
)
# Counts the evaluation reports beside its metrics: context, not quality, so not rows of their own.
EVALUATION_COUNTS = ("users", "unseen_rows")
MODEL_RUNS_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("model_type", pa.string()),
        ("run_date", pa.date32()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("params", pa.string()),
        ("data_ratings", pa.int64()),
        ("data_train", pa.int64()),
        ("data_valid", pa.int64()),
        ("data_users", pa.int64()),
        ("data_items", pa.int64()),
        ("device", pa.string()),
        ("train_seconds", pa.float64()),
        ("gate_metric", pa.string()),
        ("gate_value", pa.float64()),
        ("promoted", pa.bool_()),
        ("promotion_reason", pa.string()),
        ("compared_with", pa.string()),
        ("is_current", pa.bool_()),
    ]
)
# config.json keys that have a column of their own; everything else goes into `params` as JSON.
RUN_COLUMNS_FROM_CONFIG = ("model_type", "run_date", "created_at", "data", "device", "n_users", "n_items")


def write_arrow(table: pa.Table):
    """A `publish` writer for a small table built on the driver: one Parquet file."""

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        pq.write_table(table, tmp / "part-00000.parquet")

    return write


def factor_tables(model: artifact.ModelArtifact) -> dict[str, pa.Table]:
    """user_factors and item_factors rows of a model with vectors and biases; none for a model without."""
    try:
        factors = model.factors()
    except (AttributeError, NotImplementedError) as exc:
        log.warning("model %s exposes no factors (%s): no factor tables or similar items", model.version, exc)
        return {}
    out = {}
    for kind, ids in (("user", model.users.ids), ("item", model.items.ids)):
        vectors = np.asarray(factors[f"{kind}_vectors"], np.float32)
        bias = factors.get(f"{kind}_bias")
        bias = np.zeros(len(vectors), np.float32) if bias is None else np.asarray(bias, np.float32)
        out[f"{kind}_factors"] = pa.Table.from_arrays(
            [
                pa.array(ids.astype(str), pa.string()),
                pa.FixedSizeListArray.from_arrays(vectors.ravel(), vectors.shape[1]).cast(pa.list_(pa.float32())),
                pa.array(bias),
                pa.array(np.full(len(ids), model.version, dtype=object), pa.string()),
            ],
            schema=FACTORS_SCHEMA[kind],
        )
    return out


def _run_date(config: dict) -> str | None:
    return config.get("run_date") or (config.get("created_at") or "")[:10] or None


def metric_rows(models_dir: Path, run_date: str, version: str | None = None) -> pa.Table:
    """One row per (model trained for `run_date`, split, metric), with the baseline's value beside it.

    `version` is included whatever date its config names.
    """
    rows = []
    for name in runs.versions(models_dir):
        run = runs.read_run(models_dir, name)
        if _run_date(run["config"]) != run_date and name != version:
            continue
        for split, values in runs.split_metrics(run["metrics"]).items():
            users = values["model"].get("users")
            for metric, value in sorted(values["model"].items()):
                if metric in EVALUATION_COUNTS:
                    continue
                rows.append(
                    {
                        "model_version": name,
                        "model_type": run["config"].get("model_type"),
                        "split": split,
                        "metric": metric,
                        "value": value,
                        "popularity": values[runs.BASELINE].get(metric),
                        "evaluated_users": int(users) if users is not None else None,
                    }
                )
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


def publish_metrics(warehouse: str | Path, run_date: str, version: str | None = None) -> dict:
    """Write metrics/run_date=RUN_DATE/ for the models trained for that date (and `version`).

    Needs no Spark: the DAG calls it right after training, before the gate. Returns the row count,
    the versions written and, per version, the held-out metrics of the model and the baseline.
    """
    wh = Warehouse.open(warehouse)
    if version is not None and not (wh.models / version / "_SUCCESS").is_file():
        raise CfrecError(f"model version '{version}' not found (or incomplete) in {wh.models}")
    table = metric_rows(wh.models, run_date, version)
    if table.num_rows:
        publish(wh.partition("metrics", run_date), write_arrow(table))
    else:
        log.warning("no model with metrics was trained for %s: no metrics partition written", run_date)
    rows = table.to_pylist()
    versions = sorted({r["model_version"] for r in rows})
    return {
        "run_date": run_date,
        "rows": len(rows),
        "versions": versions,
        "metrics": {
            v: {
                f"{r['split']}/{r['metric']}": {"model": r["value"], "popularity": r["popularity"]}
                for r in rows
                if r["model_version"] == v
            }
            for v in versions
        },
    }


def recommendations_summary(warehouse: str | Path, run_date: str) -> dict:
    """Counts of a published recommendations partition, read with pyarrow (no Spark): rows, users,
    users by source, model versions. Raises if the partition was never published."""
    wh = Warehouse.open(warehouse, create=False)
    partition = wh.partition("recommendations", run_date)
    if not (partition / "_SUCCESS").is_file():
        raise CfrecError(f"no published recommendations for {run_date} in {wh.root}")
    recs = pq.read_table(partition, columns=["user_id", "source", "model_version"]).to_pandas()
    users = recs.groupby("source")["user_id"].nunique()
    return {
        "run_date": run_date,
        "rows": int(len(recs)),
        "users": int(recs["user_id"].nunique()),
        "users_by_source": {str(k): int(v) for k, v in users.items()},
        "model_versions": sorted(recs["model_version"].unique().tolist()),
        "path": str(partition),
    }


def _timestamp(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def model_run_rows(models_dir: Path) -> pa.Table:
    current = runs.current_version(models_dir)
    rows = []
    for version in runs.versions(models_dir):
        run = runs.read_run(models_dir, version)
        config, promotion, data = run["config"], run["promotion"], run["config"].get("data") or {}
        params = {k: v for k, v in config.items() if k not in RUN_COLUMNS_FROM_CONFIG}
        day = _run_date(config)
        rows.append(
            {
                "model_version": version,
                "model_type": config.get("model_type"),
                "run_date": date.fromisoformat(day) if day else None,
                "created_at": _timestamp(config.get("created_at")),
                "params": json.dumps(params, sort_keys=True),
                "data_ratings": data.get("ratings"),
                "data_train": data.get("train"),
                "data_valid": data.get("valid"),
                "data_users": data.get("users"),
                "data_items": data.get("items"),
                "device": config.get("device"),
                "train_seconds": run["metrics"].get("train_seconds"),
                "gate_metric": promotion.get("metric"),
                "gate_value": promotion.get("candidate_value"),
                # A model that never went through the gate (trained before it existed) is
                # promoted exactly when it is the current one.
                "promoted": promotion["promoted"] if "promoted" in promotion else version == current,
                "promotion_reason": promotion.get("reason"),
                "compared_with": promotion.get("previous"),
                "is_current": version == current,
            }
        )
    return pa.Table.from_pylist(rows, schema=MODEL_RUNS_SCHEMA)


def item_titles(wh: Warehouse, item_ids: np.ndarray) -> np.ndarray:
    titles = np.full(len(item_ids), None, dtype=object)
    if wh.table("items").exists():
        items = pd.read_parquet(wh.table("items"), columns=["item_id", "title"]).drop_duplicates("item_id")
        found = pd.Index(items["item_id"]).get_indexer(pd.Index(item_ids.astype(str)))
        titles[found >= 0] = items["title"].to_numpy(dtype=object)[found[found >= 0]]
    return titles


def publish_tables(
    spark: SparkSession,
    warehouse: str | Path,
    run_date: str,
    model_version: str | None = None,
    similar_k: int = DEFAULT_SIMILAR_K,
) -> dict:
    """Write similar_items, item_factors, user_factors, metrics/run_date=RUN_DATE and model_runs."""
    from pyspark.sql import functions as F

    wh = Warehouse.open(warehouse)
    model = artifact.load(wh.models, model_version)
    report: dict = {"model_version": model.version}

    factors = factor_tables(model)
    for name, table in factors.items():
        publish(wh.table(name), write_arrow(table))
        report[name] = table.num_rows
    if factors:
        item_ids = model.items.ids
        vectors = np.asarray(model.factors()["item_vectors"], np.float32)
        similar = similar_items(spark, item_ids, vectors, similar_k, item_titles(wh, item_ids))
        with_version = similar.withColumn("model_version", F.lit(model.version))
        publish(wh.table("similar_items"), lambda tmp: with_version.coalesce(4).write.parquet(str(tmp)))
        report["similar_items"] = spark.read.parquet(str(wh.table("similar_items"))).count()

    report["metrics"] = publish_metrics(wh.root, run_date)["rows"]

    model_runs = model_run_rows(wh.models)
    publish(wh.table("model_runs"), write_arrow(model_runs))
    report["model_runs"] = model_runs.num_rows
    log.info("tables: %s", report)
    return report
