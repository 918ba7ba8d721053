"""The gate measures both models on the same held-out ratings, which neither trained on."""

import numpy as np
from support import planted_ratings, write_warehouse

from cfmodel import pipeline
from cfmodel.config import GateConfig, Night, TrainRun
from cfmodel.registry.compare import measure_on_same_holdout
from cfmodel.registry.registry import ModelRegistry
from cfmodel.training.config import TrainConfig
from cfmodel.training.trainer import TrainingData
from cfmodel.warehouse import Warehouse


def train(wh, day, **overrides):
    config = TrainConfig.for_model("dot", **{"epochs": 10, "lr": 3e-2, "wd": 0.01, **overrides})
    return pipeline.train(Night(str(wh), day), config, TrainRun(device="cpu", warm_start=None)).version


def test_two_nights_models_are_measured_on_the_same_ratings_neither_trained_on(tmp_path):
    ratings = planted_ratings()
    wh = write_warehouse(tmp_path / "wh", ratings.iloc[: len(ratings) * 3 // 4])
    yesterday = train(wh, "2026-01-01")
    assert pipeline.gate(Night(str(wh), "2026-01-01"), yesterday, GateConfig(gate_metric="rmse")).promoted
    write_warehouse(wh, ratings)  # the next night: more ratings, new users
    tonight = train(wh, "2026-01-02", epochs=1, lr=1e-4)  # barely trained
    registry = ModelRegistry(wh / "models")

    same = measure_on_same_holdout(wh, registry, tonight, yesterday)
    # Tonight's hold-out: what both were measured on; yesterday's model trained on none of it.
    data = TrainingData.read(Warehouse.open(wh))
    _, holdout = data.split(TrainConfig.for_model("dot"))
    yesterday_model = registry.load(yesterday)
    held_pairs = set(zip(data.users.ids[holdout.users], data.items.ids[holdout.items]))
    old = ratings.iloc[: len(ratings) * 3 // 4]
    old_data_pairs = set(zip(old["user_id"].astype(str), old["item_id"].astype(str)))
    assert held_pairs & old_data_pairs  # some of tonight's hold-out existed yesterday...
    n_trained = yesterday_model.config.data["train"]
    assert n_trained == len(old) - len(held_pairs & old_data_pairs)  # ...and was held out then too
    assert 0 < same.ratings <= len(holdout)
    assert same.candidate["rmse"] > same.other["rmse"]  # the barely trained model is worse

    decision = pipeline.gate(Night(str(wh), "2026-01-02"), tonight, GateConfig(gate_metric="rmse"))
    assert not decision.promoted and decision.previous == yesterday and decision.score_with == yesterday
    assert decision.holdout_ratings == same.ratings and "same" in decision.reason
    assert np.isclose(decision.candidate_value, same.candidate["rmse"])
    assert np.isclose(decision.current_value, same.other["rmse"])
