"""The `metrics` table: one partition per night, a row per (model trained that night, split, metric)
with the most-popular list's value on the same split beside it, so quality can be followed over time.

Needs no Spark: the DAG calls it right after training, before the gate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cfmodel.registry.registry import BASELINE, ModelRegistry, split_metrics
from cfmodel.warehouse import Warehouse, publish, write_arrow
from cfmodel.warehouse.schemas import METRICS

log = logging.getLogger(__name__)

# Counts the evaluation reports beside its metrics: context, not quality, so not rows of their own.
EVALUATION_COUNTS = ("users", "unseen_rows")


def metric_rows(registry: ModelRegistry, run_date: str, version: str | None = None) -> pa.Table:
    """One row per (model trained for `run_date`, split, metric), with the baseline's value beside it.

    `version` is included whatever date its config names.
    """
    rows = []
    for name in registry.versions():
        run = registry.run(name)
        if run.config.day != run_date and name != version:
            continue
        for split, values in split_metrics(run.metrics).items():
            users = values["model"].get("users")
            for metric, value in sorted(values["model"].items()):
                if metric in EVALUATION_COUNTS:
                    continue
                rows.append(
                    {
                        "model_version": name,
                        "model_type": run.config.model_type,
                        "split": split,
                        "metric": metric,
                        "value": value,
                        "popularity": values[BASELINE].get(metric),
                        "evaluated_users": int(users) if users is not None else None,
                    }
                )
    return pa.Table.from_pylist(rows, schema=METRICS.arrow)


@dataclass
class MetricsReport:
    run_date: str
    rows: int
    versions: list[str]
    metrics: dict[str, dict[str, dict[str, float | None]]]  # version -> "split/metric" -> model, popularity


def publish_metrics(warehouse: str | Path, run_date: str, version: str | None = None) -> MetricsReport:
    """Write metrics/run_date=RUN_DATE/ for the models trained for that date (and `version`)."""
    wh = Warehouse.open(warehouse)
    registry = ModelRegistry(wh.models)
    if version is not None:
        registry.require(version)
    table = metric_rows(registry, run_date, version)
    if table.num_rows:
        publish(wh.partition(METRICS, run_date), write_arrow(table))
    else:
        log.warning("no model with metrics was trained for %s: no metrics partition written", run_date)
    rows = table.to_pylist()
    versions = sorted({r["model_version"] for r in rows})
    metrics = {
        v: {
            f"{r['split']}/{r['metric']}": {"model": r["value"], "popularity": r["popularity"]}
            for r in rows
            if r["model_version"] == v
        }
        for v in versions
    }
    return MetricsReport(run_date, len(rows), versions, metrics)
