"""The model gate: a newly trained model becomes current only if it is not worse than the current one.

Each model is judged by its own validation metric (RMSE for rating models, NDCG@10 for ranking
models, unless told otherwise). The candidate is promoted when that metric is within `tolerance`
(relative: 0.01 = 1%) of the current model's, in the metric's direction; otherwise models/CURRENT
stays as it was and scoring keeps using the current model. Every decision, with its reason and
both values, is written to models/<candidate>/promotion.json, from which the `model_runs` table
reports it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cfmodel.errors import CfrecError
from cfmodel.registry import registry as runs

if TYPE_CHECKING:
    from cfmodel.registry import artifact

DEFAULT_TOLERANCE = 0.01
DEFAULT_SPLIT = "valid"
# Tried in order when no metric is named: the first one both models report decides.
GATE_METRICS = ("rmse", "ndcg@10")
LOWER_IS_BETTER = ("rmse", "mae")


def lower_is_better(metric: str) -> bool:
    return metric.split("@")[0] in LOWER_IS_BETTER


def within_tolerance(metric: str, candidate: float, current: float, tolerance: float) -> bool:
    """True when `candidate` is no worse than `current` by more than `tolerance` x |current|."""
    slack = tolerance * abs(current)
    return candidate <= current + slack if lower_is_better(metric) else candidate >= current - slack


def _gate_values(model_metrics: dict, split: str) -> dict[str, float]:
    return runs.split_metrics(model_metrics).get(split, {}).get("model", {})


def decide(
    candidate_metrics: dict,
    current_metrics: dict | None,
    tolerance: float = DEFAULT_TOLERANCE,
    metric: str | None = None,
    split: str = DEFAULT_SPLIT,
) -> dict:
    """The gate's verdict on two metrics.json contents: {"promoted", "metric", values, "reason"}."""
    if tolerance < 0:
        raise CfrecError(f"gate tolerance must be >= 0, got {tolerance}")
    cand = _gate_values(candidate_metrics, split)
    curr = _gate_values(current_metrics or {}, split)
    if metric is None:
        metric = next((m for m in GATE_METRICS if m in cand and m in curr), None)
        if metric is None:
            metric = next((m for m in GATE_METRICS if m in cand), None)
    verdict = {"metric": metric, "split": split, "candidate_value": cand.get(metric), "current_value": curr.get(metric)}
    if current_metrics is None:
        return {**verdict, "promoted": True, "reason": "no model to judge against"}
    if metric is None or metric not in cand:
        wanted = metric or " or ".join(GATE_METRICS)
        return {**verdict, "promoted": False, "reason": f"candidate has no {split} {wanted} to judge it by"}
    if metric not in curr:
        return {
            **verdict,
            "promoted": True,
            "reason": f"current model has no {split} {metric}; promoted without comparison",
        }
    better = "lower" if lower_is_better(metric) else "higher"
    if within_tolerance(metric, cand[metric], curr[metric], tolerance):
        reason = f"{split} {metric} {cand[metric]:.4f} vs current {curr[metric]:.4f} ({better} is better, tolerance {tolerance:.1%})"
        return {**verdict, "promoted": True, "reason": reason}
    reason = (
        f"{split} {metric} {cand[metric]:.4f} is worse than current {curr[metric]:.4f} by more than "
        f"{tolerance:.1%} ({better} is better)"
    )
    return {**verdict, "promoted": False, "reason": reason}


# `against` left out: judge against the model named in models/CURRENT.
CURRENT_MODEL = object()


def promote(
    models_dir: Path,
    candidate: artifact.ModelArtifact | str,
    tolerance: float = DEFAULT_TOLERANCE,
    metric: str | None = None,
    split: str = DEFAULT_SPLIT,
    against: str | None | object = CURRENT_MODEL,
    move_current: bool = True,
) -> dict:
    """Gate `candidate` (a trained artifact or its version) and record why.

    The candidate is judged against models/CURRENT, or against the version `against` names (None:
    there is nothing to judge against, so it passes), e.g. the model promoted before the run date
    when a past date is re-run. With `move_current=False` a promotion is recorded but
    models/CURRENT is left alone (a backfill must not move it back in time). Returns the
    decision; its "current" is the version models/CURRENT names afterwards.
    """
    models_dir = Path(models_dir)
    version = candidate if isinstance(candidate, str) else candidate.version
    if not (models_dir / version / "_SUCCESS").is_file():
        raise CfrecError(f"model version '{version}' not found (or incomplete) in {models_dir}")
    candidate_metrics = runs.read_run(models_dir, version)["metrics"]
    previous = runs.current_version(models_dir) if against is CURRENT_MODEL else against
    if previous is not None and not (models_dir / previous / "_SUCCESS").is_file():
        if against is not CURRENT_MODEL:
            raise CfrecError(f"model version '{previous}' to judge against not found (or incomplete) in {models_dir}")
        previous = None  # CURRENT names a model that is gone: nothing to defend
    if previous == version:
        # Retraining the same version replaced the current model's folder already: the old
        # weights and metrics are gone, so there is nothing left to compare with.
        verdict = {
            "promoted": True,
            "metric": metric,
            "reason": "retrained in place of the version it is judged against; nothing to compare with",
        }
    else:
        current_metrics = runs.read_run(models_dir, previous)["metrics"] if previous else None
        verdict = decide(candidate_metrics, current_metrics, tolerance, metric, split)
    if verdict["promoted"] and move_current:
        from cfmodel.registry import artifact

        artifact.set_current(models_dir, version)
    decision = {
        "version": version,
        "previous": previous,
        "current": runs.current_version(models_dir),
        "tolerance": tolerance,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **verdict,
    }
    runs.record_promotion(models_dir, version, decision)
    return decision
