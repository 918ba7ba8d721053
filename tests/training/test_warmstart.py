import pandas as pd
import pytest
import torch
from support import planted_ratings, write_warehouse

from cfmodel.errors import CfrecError
from cfmodel.registry.artifact import ArtifactConfig, ModelArtifact
from cfmodel.registry.registry import ModelRegistry
from cfmodel.training.config import TrainConfig
from cfmodel.training.ids import IdIndex
from cfmodel.training.models import model_for
from cfmodel.training.trainer import train
from cfmodel.training.warmstart import warm_start


def saved(tmp_path, model_type="dot", users=("a", "b", "c"), items=("x", "y"), version="dot-1", **overrides):
    model = model_for(
        TrainConfig.for_model(model_type, n_factors=3, layers=(4,), **overrides), len(users), len(items), (0.0, 5.5)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    config = ArtifactConfig(model_type=model_type, hparams=model.hparams())
    trained = ModelArtifact(version, model, IdIndex(users), IdIndex(items), config, {})
    ModelRegistry(tmp_path).save(trained)
    return trained


@pytest.mark.parametrize("model_type", ["dot", "nn", "rank"])
def test_warm_start_copies_known_rows_by_id_and_leaves_new_ones_fresh(tmp_path, model_type):
    old = saved(tmp_path, model_type)
    # New indices: a reordering plus a new user "d" and a new item "z".
    users, items = IdIndex(["c", "d", "a", "b"]), IdIndex(["z", "y", "x"])
    model = model_for(TrainConfig.for_model(model_type, n_factors=3, layers=(4,)), 4, 3, (0.0, 5.5))
    fresh_d = model.u_weight.weight[1].detach().clone()
    report = warm_start(model, users, items, old)
    assert report == {"from": "dot-1", "users_copied": 3, "users_new": 1, "items_copied": 2, "items_new": 1}
    for new_row, old_row in ((0, 2), (2, 0), (3, 1)):
        assert torch.equal(model.u_weight.weight[new_row], old.model.u_weight.weight[old_row])
    assert torch.equal(model.u_weight.weight[1], fresh_d)
    assert torch.equal(model.i_weight.weight[1], old.model.i_weight.weight[1])
    assert torch.equal(model.i_weight.weight[2], old.model.i_weight.weight[0])
    for table in (*model.user_tables, *model.item_tables):
        assert getattr(model, table).weight.shape[0] in (4, 3)
    if model_type == "nn":
        assert torch.equal(model.out.weight, old.model.out.weight)


def test_warm_start_refuses_another_type_or_size(tmp_path):
    old = saved(tmp_path, "dot")
    rank = model_for(TrainConfig.for_model("rank", n_factors=3), 3, 2, None)
    with pytest.raises(CfrecError, match="cannot warm-start a rank model from dot-1, a dot model"):
        warm_start(rank, old.users, old.items, old)
    wider = model_for(TrainConfig.for_model("dot", n_factors=5), 3, 2, (0.0, 5.5))
    with pytest.raises(CfrecError, match=r"its 'u_weight.weight' has shape \(3, 3\), this model needs \(3, 5\)"):
        warm_start(wider, old.users, old.items, old)


def test_previous_means_the_latest_model_of_the_same_type_promoted_before_the_date(tmp_path):
    registry = ModelRegistry(tmp_path)
    assert registry.promoted_before("2026-03-02", "dot") is None  # nothing promoted yet
    for version in ("dot-2026-03-01", "rank-2026-03-01", "dot-2026-03-02"):
        saved(tmp_path, version.split("-")[0], version=version)
        registry.record_promotion(version, {"promoted": True})
    assert registry.promoted_before("2026-03-02", "dot") == "dot-2026-03-01"
    assert registry.promoted_before("2026-03-03", "dot") == "dot-2026-03-02"
    assert registry.promoted_before("2026-03-02", "rank") == "rank-2026-03-01"
    assert registry.promoted_before("2026-03-02", "nn") is None
    with pytest.raises(CfrecError, match="not found"):
        registry.load("dot-0")


def test_nightly_retrain_warm_starts_from_yesterday(tmp_path):
    ratings = planted_ratings()
    wh = write_warehouse(tmp_path / "wh", ratings[ratings["user_id"] != "u5"])
    config = TrainConfig.for_model("dot", epochs=2)
    yesterday = train(wh, "2026-03-01", config, device="cpu")
    write_warehouse(tmp_path / "wh", ratings)  # tonight: user u5 appears
    tonight = train(wh, "2026-03-02", config, device="cpu", warm_start_from=yesterday.version)
    assert tonight.config.warm_start == {
        "from": "dot-2026-03-01",
        "users_copied": 89,
        "users_new": 1,
        "items_copied": 60,
        "items_new": 0,
    }
    cold = train(wh, "2026-03-03", config, device="cpu")
    assert cold.config.warm_start is None
    # Starting from trained vectors, the first epoch is already far better than a cold start's.
    assert tonight.metrics["history"][0]["train_loss"] < cold.metrics["history"][0]["train_loss"]
    assert pd.read_parquet(wh / "models" / tonight.version / "users.parquet")["id"].nunique() == 90
