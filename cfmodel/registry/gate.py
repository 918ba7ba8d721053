"""The model gate: a newly trained model becomes current only if it is not worse than the model it replaces.

Both models are measured on the same hold-out (`cfmodel.registry.compare`: the ratings the
candidate held out of the night's data), beside the most-popular list, by a validation metric
(NDCG@10 when both report it, the lists being what is published, else RMSE, unless told
otherwise). The candidate is promoted when its value is finite, better than the most-popular
list's (for a list metric), and within the tolerance (relative: 0.01 = 1%) of the other model's, in
the metric's direction; otherwise `CURRENT` stays as it was. Every decision, with its reason and
the three values, is recorded beside the candidate (`promotion.json`), from which the `model_runs`
table reports it.

`gate_for_date` is the gate of the DAGs and of `cfrec train`/`cfrec run`: the candidate of a date is
judged against the model the gate kept last as of that date (for the latest date: the current
model, whichever DAG trained it), and a run for an old date never moves `CURRENT` back in time.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cfmodel.config import GateConfig
from cfmodel.errors import CfrecError
from cfmodel.registry.registry import POPULARITY_LISTS, ModelRegistry, split_metrics, version_date

log = logging.getLogger(__name__)

DEFAULT_SPLIT = "valid"
# Tried in order when no metric is named: the first one both models report decides.
# The list metric first: the lists are what is published.
GATE_METRICS = ("ndcg@10", "rmse")
LOWER_IS_BETTER = ("rmse", "mae")


def lower_is_better(metric: str) -> bool:
    return metric.split("@")[0] in LOWER_IS_BETTER


def within_tolerance(metric: str, candidate: float, current: float, tolerance: float) -> bool:
    """True when `candidate` is no worse than `current` by more than `tolerance` x |current|."""
    slack = tolerance * abs(current)
    return candidate <= current + slack if lower_is_better(metric) else candidate >= current - slack


@dataclass
class Verdict:
    promoted: bool
    reason: str
    metric: str | None
    split: str
    candidate_value: float | None
    current_value: float | None
    popularity_value: float | None  # the most-popular list on the same hold-out


def _gate_values(model_metrics: dict, split: str) -> dict[str, float]:
    return split_metrics(model_metrics).get(split, {}).get("model", {})


def decide(
    candidate_metrics: dict,
    current_metrics: dict | None,
    tolerance: float = GateConfig.gate_tolerance,
    metric: str | None = None,
    split: str = DEFAULT_SPLIT,
    popularity: dict | None = None,
) -> Verdict:
    """The gate's verdict on two metrics.json contents (`current_metrics` None: nothing to judge
    against). `popularity`: the most-popular list's metrics on the candidate's hold-out; a candidate
    whose list metric is not better than it is refused."""
    if tolerance < 0:
        raise CfrecError(f"gate tolerance must be >= 0, got {tolerance}")
    cand = _gate_values(candidate_metrics, split)
    curr = _gate_values(current_metrics or {}, split)
    if metric is None:
        metric = next((m for m in GATE_METRICS if m in cand and m in curr), None)
        if metric is None:
            metric = next((m for m in GATE_METRICS if m in cand), None)

    popular = (popularity or {}).get(metric) if metric else None

    def verdict(promoted: bool, reason: str) -> Verdict:
        return Verdict(promoted, reason, metric, split, cand.get(metric), curr.get(metric), popular)

    if metric is None or metric not in cand:
        # Non-finite values are left out of the metrics: a diverged model has nothing to be judged by.
        return verdict(False, f"candidate has no finite {split} {metric or ' or '.join(GATE_METRICS)} to judge it by")
    if popular is not None and not lower_is_better(metric) and cand[metric] <= popular:
        return verdict(
            False, f"{split} {metric} {cand[metric]:.4f} is not better than the most-popular list's {popular:.4f}"
        )
    if current_metrics is None:
        return verdict(True, "no model to judge against")
    if metric not in curr:
        return verdict(True, f"current model has no {split} {metric}; promoted without comparison")
    better = "lower" if lower_is_better(metric) else "higher"
    values = f"{split} {metric} {cand[metric]:.4f}"
    if within_tolerance(metric, cand[metric], curr[metric], tolerance):
        return verdict(True, f"{values} vs current {curr[metric]:.4f} ({better} is better, tolerance {tolerance:.1%})")
    return verdict(
        False, f"{values} is worse than current {curr[metric]:.4f} by more than {tolerance:.1%} ({better} is better)"
    )


def _has_finite_metrics(metrics: dict) -> bool:
    """Whether the candidate recorded any finite validation metric (a diverged one did not)."""
    return bool(_gate_values(metrics, DEFAULT_SPLIT))


@dataclass
class GateDecision(Verdict):
    """What the gate decided on a candidate, and why; recorded as the candidate's promotion.json."""

    version: str
    previous: str | None  # the version it was judged against
    current: str | None  # what CURRENT names afterwards
    tolerance: float
    decided_at: str
    score_with: str | None = None  # the version the night's recommendations use (nightly gate)
    holdout_ratings: int | None = None  # how many held-out ratings both were measured on

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GateDecision:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def promote(
    registry: ModelRegistry,
    version: str,
    against: str | None,
    config: GateConfig | None = None,
    move_current: bool = True,
    warehouse: str | Path | None = None,
) -> GateDecision:
    """Gate `version` against the version `against` (None: nothing to judge against, so it passes)
    and record why. Given the `warehouse`, both are measured on the same hold-out of its ratings;
    without it, by the metrics each recorded. With `move_current=False` a promotion is recorded but
    CURRENT is left alone (a backfill must not move it back in time)."""
    config = config or GateConfig()
    registry.require(version)
    if against is not None:
        registry.require(against)
    candidate_metrics = registry.run(version).metrics
    previous_metrics = registry.run(against).metrics if against else None
    popularity = split_metrics(candidate_metrics).get(DEFAULT_SPLIT, {}).get("popularity")
    holdout_ratings = None
    if against is not None and warehouse is not None and _has_finite_metrics(candidate_metrics):
        from cfmodel.registry.compare import measure_on_same_holdout

        same = measure_on_same_holdout(warehouse, registry, version, against)
        candidate_metrics, previous_metrics = same.as_metrics()
        popularity, holdout_ratings = same.popularity, same.ratings
    verdict = decide(
        candidate_metrics, previous_metrics, config.gate_tolerance, config.gate_metric, popularity=popularity
    )
    if holdout_ratings is not None:
        verdict.reason += f"; both measured on the same {holdout_ratings} held-out ratings"
    if verdict.promoted and move_current:
        registry.set_current(version)
    decision = GateDecision(
        **asdict(verdict),
        version=version,
        previous=against,
        current=registry.current(),
        tolerance=config.gate_tolerance,
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        holdout_ratings=holdout_ratings,
    )
    registry.record_promotion(version, asdict(decision))
    return decision


def gate_for_date(warehouse: str | Path, run_date: str, version: str, config: GateConfig) -> GateDecision:
    """Judge `version` against the model kept last as of `run_date`; move CURRENT only when the date
    is not older than the current model's. `score_with` is the candidate when promoted, else the
    model it was judged against, else (a first night's refused candidate) the most-popular lists."""
    from cfmodel.warehouse import Warehouse

    registry = ModelRegistry(Warehouse.open(warehouse).models)
    baseline = registry.promoted_as_of(run_date, exclude=version)
    current = registry.current()
    newest = current is None or (version_date(current) or "") <= run_date
    decision = promote(registry, version, baseline, config, move_current=newest, warehouse=warehouse)
    decision.score_with = version if decision.promoted else baseline
    if decision.score_with is None:
        decision.score_with = POPULARITY_LISTS
        log.warning(
            "model %s failed the gate and there is no earlier model: tonight's lists are the most-popular list",
            version,
        )
    if not newest:
        log.info("run date %s is older than the current model %s: CURRENT left as it is", run_date, current)
    return decision
