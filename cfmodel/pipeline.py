"""The scheduled pipeline's steps as plain functions keyed on the run date, called by the DAGs.

Each step's result depends only on its run date and what earlier dates left in the warehouse, so a
backfill over past dates, or re-running a date, reproduces the same tables: the warm start and
the model gate look at the latest model promoted *before* the run date, not at whatever is
current now, and a run for an old date never moves the current model back in time.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from cfmodel.errors import CfrecError

log = logging.getLogger(__name__)

VERSION = re.compile(r"^(?P<model>[a-z]+)-(?P<date>\d{4}-\d{2}-\d{2})(?P<suffix>.*)$")


def resolve_input(input_path: str, run_date: str) -> str:
    """`/data/in/{ds}` -> `/data/in/2026-11-23`: each night's files can land in their own folder."""
    return input_path.replace("{ds}", run_date)


def input_ready(source: str, input_path: str, run_date: str) -> bool:
    """Whether the night's files are there and readable as `source` (the sensor's test)."""
    from cfmodel.ingest.planning import plan_ingest

    try:
        plan_ingest(source, resolve_input(input_path, run_date))
    except CfrecError as exc:
        log.info("waiting for input: %s", exc)
        return False
    return True


def version_date(version: str) -> str | None:
    match = VERSION.match(version)
    return match["date"] if match else None


def promoted_before(models_dir: Path, run_date: str, model_type: str | None = None) -> str | None:
    """The latest version promoted by the gate of a date earlier than `run_date`."""
    from cfmodel.registry import registry as runs

    best = None
    for version in runs.versions(models_dir):
        date = version_date(version)
        if date is None or date >= run_date or (model_type and not version.startswith(f"{model_type}-")):
            continue
        if runs.read_run(models_dir, version)["promotion"].get("promoted") and (
            best is None or date >= version_date(best)
        ):
            best = version
    return best


def train_candidate(
    warehouse: str,
    run_date: str,
    options: dict,
    warm_start: bool = True,
    device: str = "auto",
    version_suffix: str = "",
) -> dict:
    import torch

    from cfmodel.training.loop import TrainConfig
    from cfmodel.training.trainer import train
    from cfmodel.warehouse.store import Warehouse

    if device == "auto" and not torch.cuda.is_available():
        log.warning("no CUDA device on this worker: training on the CPU")
    config = TrainConfig(**{k: v for k, v in options.items() if v is not None})
    models = Warehouse.open(warehouse).models
    previous = promoted_before(models, run_date, config.model) if warm_start else None
    trained = train(warehouse, run_date, config, device=device, warm_start_from=previous, version_suffix=version_suffix)
    return {
        "version": trained.version,
        "device": trained.config["device"],
        "warm_start_from": previous,
        "metrics": {k: v for k, v in trained.metrics.get("valid", {}).get("model", {}).items()},
    }


def gate(warehouse: str, run_date: str, version: str, tolerance: float) -> dict:
    """Promote `version` if it is not worse than the model promoted before `run_date`; returns the
    decision, whose `score_with` is the version this date's recommendations use."""
    from cfmodel.registry import registry as runs
    from cfmodel.registry.gate import promote
    from cfmodel.warehouse.store import Warehouse

    models = Warehouse.open(warehouse).models
    baseline = promoted_before(models, run_date)
    current = runs.current_version(models)
    newest = current is None or (version_date(current) or "") <= run_date
    decision = promote(models, version, tolerance=tolerance, against=baseline, move_current=newest)
    decision["score_with"] = version if decision["promoted"] else (baseline or version)
    if not decision["promoted"] and baseline is None:
        raise CfrecError(f"model {version} failed the gate and there is no earlier model to fall back to")
    if not newest:
        log.info("run date %s is older than the current model %s: CURRENT left as it is", run_date, current)
    return decision
