import json

import pytest

from cfmodel.config import GateConfig
from cfmodel.errors import CfrecError
from cfmodel.registry.gate import decide, gate_for_date, promote
from cfmodel.registry.registry import ModelRegistry, split_metrics


def nested(split="valid", **model):
    return {split: {"model": model, "popularity": {"precision@10": 0.05}}, "train_seconds": 1.0, "history": []}


def save_model(models_dir, version, metrics, model_type="dot"):
    folder = models_dir / version
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "run_date": version[-10:]}))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "_SUCCESS").touch()
    return version


def current(models_dir):
    return (models_dir / "CURRENT").read_text().strip()


@pytest.fixture(autouse=True)
def recorded_metrics(monkeypatch):
    """These tests are about which model the gate judges against and what it records: the measuring
    on a shared hold-out, which needs real models, is `tests/registry/test_compare.py`'s."""
    from cfmodel.registry import compare

    def as_recorded(warehouse, registry, version, other):
        mine, theirs = registry.run(version).metrics, registry.run(other).metrics
        return compare.SameHoldout(
            split_metrics(mine)["valid"]["model"], split_metrics(theirs).get("valid", {}).get("model", {}), 100
        )

    monkeypatch.setattr(compare, "measure_on_same_holdout", as_recorded)


def test_split_metrics_reads_flat_and_nested_shapes():
    flat = {"valid_rmse": 0.91, "valid_mae": 0.72, "train_loss": 0.5, "train_seconds": 1.2, "history": []}
    assert split_metrics(flat) == {"valid": {"model": {"rmse": 0.91, "mae": 0.72}, "popularity": {}}}
    both = {**nested(rmse=0.9, **{"ndcg@10": 0.2}), "test_rmse": 0.95, "valid_rmse": 0.1}
    parsed = split_metrics(both)
    assert parsed["valid"]["model"] == {"rmse": 0.9, "ndcg@10": 0.2}  # nested wins over a flat duplicate
    assert parsed["valid"]["popularity"] == {"precision@10": 0.05}
    assert parsed["test"]["model"] == {"rmse": 0.95}
    assert split_metrics({"valid_rmse": float("nan"), "valid_mae": None}) == {}


@pytest.mark.parametrize(
    "candidate, current_metrics, tolerance, promoted, metric",
    [
        ({"valid_rmse": 0.90}, {"valid_rmse": 0.92}, 0.0, True, "rmse"),
        ({"valid_rmse": 0.93}, {"valid_rmse": 0.92}, 0.02, True, "rmse"),  # 1.1% worse, within 2%
        ({"valid_rmse": 0.95}, {"valid_rmse": 0.92}, 0.02, False, "rmse"),  # 3.3% worse
        (nested(**{"ndcg@10": 0.19}), nested(**{"ndcg@10": 0.20}), 0.01, False, "ndcg@10"),  # higher is better
        (nested(**{"ndcg@10": 0.199}), nested(**{"ndcg@10": 0.20}), 0.01, True, "ndcg@10"),
        # a ranking model replacing a rating model: the first metric both report decides
        (nested(**{"ndcg@10": 0.25}), nested(rmse=0.9, **{"ndcg@10": 0.2}), 0.0, True, "ndcg@10"),
    ],
)
def test_gate_compares_in_the_metrics_direction(candidate, current_metrics, tolerance, promoted, metric):
    verdict = decide(candidate, current_metrics, tolerance)
    assert verdict.promoted is promoted and verdict.metric == metric
    assert verdict.metric in verdict.reason


def test_the_list_metric_decides_and_a_list_no_better_than_popularity_is_refused():
    candidate = nested(rmse=0.95, **{"ndcg@10": 0.30})
    current = nested(rmse=0.90, **{"ndcg@10": 0.25})
    assert decide(candidate, current).promoted  # worse RMSE, better lists: the lists are what is published
    popular = {"ndcg@10": 0.32, "precision@10": 0.3}
    for against in (current, None):  # nothing to compare with does not excuse it either
        verdict = decide(candidate, against, popularity=popular)
        assert not verdict.promoted and verdict.popularity_value == 0.32
        assert verdict.reason == "valid ndcg@10 0.3000 is not better than the most-popular list's 0.3200"
    assert decide(candidate, None, metric="rmse", popularity=popular).promoted  # popularity has no RMSE


def test_gate_without_comparable_metrics():
    assert decide({"valid_rmse": 0.9}, None).reason == "no model to judge against"
    verdict = decide({"history": []}, {"valid_rmse": 0.9})
    assert not verdict.promoted and "candidate has no finite valid ndcg@10 or rmse" in verdict.reason
    # A diverged first model is not promoted for want of anything to compare it with.
    for diverged in ({"valid_rmse": float("nan")}, {"valid": {"model": {"ndcg@10": float("inf")}}}, {}):
        first = decide(diverged, None)
        assert not first.promoted and "no finite valid" in first.reason
    verdict = decide({"valid_rmse": 0.9}, {"history": []})
    assert verdict.promoted and "promoted without comparison" in verdict.reason
    with pytest.raises(CfrecError, match="tolerance must be >= 0"):
        decide({"valid_rmse": 0.9}, {"valid_rmse": 0.9}, tolerance=-0.1)


def test_worse_model_is_not_promoted_and_the_reason_is_recorded(tmp_path):
    models = ModelRegistry(tmp_path / "models")
    first = save_model(models.root, "dot-2026-01-01", {"valid_rmse": 0.90, "valid_mae": 0.71})
    assert promote(models, first, against=None).promoted and current(models.root) == first

    worse = save_model(models.root, "dot-2026-01-02", {"valid_rmse": 0.99, "valid_mae": 0.80})
    decision = promote(models, worse, against=first, config=GateConfig(gate_tolerance=0.05))
    assert not decision.promoted and decision.current == first and current(models.root) == first
    recorded = json.loads((models.root / worse / "promotion.json").read_text())
    assert recorded["reason"] == decision.reason and "worse than current 0.9000 by more than 5.0%" in decision.reason
    assert (recorded["candidate_value"], recorded["current_value"], recorded["previous"]) == (0.99, 0.90, first)

    better = save_model(models.root, "dot-2026-01-03", {"valid_rmse": 0.89})
    decision = promote(models, better, against=first)
    assert decision.promoted and decision.previous == first and current(models.root) == better


def test_explicit_metric_and_missing_versions(tmp_path):
    models = ModelRegistry(tmp_path / "models")
    first = save_model(models.root, "dot-2026-01-01", {"valid_rmse": 0.90, "valid_mae": 0.70})
    second = save_model(models.root, "dot-2026-01-02", {"valid_rmse": 0.89, "valid_mae": 0.75})
    decision = promote(models, second, against=first, config=GateConfig(gate_metric="mae"))
    assert not decision.promoted and decision.metric == "mae"
    with pytest.raises(CfrecError, match="'dot-2099-01-01' not found"):
        promote(models, "dot-2099-01-01", against=None)
    with pytest.raises(CfrecError, match="'dot-1999-01-01' not found"):
        promote(models, second, against="dot-1999-01-01")


def test_the_nightly_gate_judges_against_the_model_promoted_before_the_date(tmp_path):
    wh = tmp_path / "wh"
    models = ModelRegistry(wh / "models")
    old = save_model(models.root, "dot-2026-01-01", {"valid_rmse": 0.90})
    assert gate_for_date(wh, "2026-01-01", old, GateConfig()).score_with == old  # nothing before it
    newest = save_model(models.root, "dot-2026-01-05", {"valid_rmse": 0.80})
    assert gate_for_date(wh, "2026-01-05", newest, GateConfig()).previous == old
    assert current(models.root) == newest
    # Re-running 2026-01-03 after 2026-01-05 ran: judged against what was promoted before it,
    # and CURRENT must not move back in time.
    backfill = save_model(models.root, "dot-2026-01-03", {"valid_rmse": 0.85})
    decision = gate_for_date(wh, "2026-01-03", backfill, GateConfig())
    assert decision.promoted and decision.previous == old and decision.current == newest
    assert decision.score_with == backfill and current(models.root) == newest
    assert models.run(backfill).promoted
    worse = save_model(models.root, "dot-2026-01-04", {"valid_rmse": 0.99})
    decision = gate_for_date(wh, "2026-01-04", worse, GateConfig())
    assert not decision.promoted and decision.score_with == backfill  # the night scores with the earlier model


def test_the_gate_judges_against_what_is_current_whichever_dag_trained_it(tmp_path):
    wh = tmp_path / "wh"
    models = ModelRegistry(wh / "models")
    yesterday = save_model(models.root, "dot-2026-01-01", {"valid_rmse": 1.40})
    gate_for_date(wh, "2026-01-01", yesterday, GateConfig())
    nightly = save_model(models.root, "dot-2026-01-02", {"valid_rmse": 1.249})
    assert gate_for_date(wh, "2026-01-02", nightly, GateConfig()).promoted
    # The same day's weekly retrain, 11% worse than the nightly model: judged against it, not yesterday's.
    weekly = save_model(models.root, "dot-2026-01-02-full", {"valid_rmse": 1.386})
    decision = gate_for_date(wh, "2026-01-02", weekly, GateConfig())
    assert not decision.promoted and decision.previous == nightly and current(models.root) == nightly
    # A second attempt at the same date is judged against the first one, on the same hold-out.
    retry = save_model(models.root, "dot-2026-01-02.2", {"valid_rmse": 9.9})
    decision = gate_for_date(wh, "2026-01-02", retry, GateConfig())
    assert not decision.promoted and decision.previous == nightly and decision.score_with == nightly


def test_a_first_night_whose_lists_lose_to_popularity_publishes_the_popular_lists(tmp_path):
    from cfmodel.registry.registry import POPULARITY_LISTS

    wh = tmp_path / "wh"
    models = ModelRegistry(wh / "models")
    metrics = {"valid": {"model": {"ndcg@10": 0.20}, "popularity": {"ndcg@10": 0.30}}}
    first = save_model(models.root, "rank-2026-01-01", metrics, model_type="rank")
    decision = gate_for_date(wh, "2026-01-01", first, GateConfig())
    assert not decision.promoted and decision.score_with == POPULARITY_LISTS
    assert "most-popular" in decision.reason
    assert not (models.root / "CURRENT").exists() and not models.run(first).promoted
