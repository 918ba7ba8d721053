"""The train task on small warehouses written with pandas."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from support import planted_ratings, write_warehouse

from cfmodel.errors import CfrecError
from cfmodel.registry.registry import ModelRegistry
from cfmodel.training.config import TrainConfig
from cfmodel.training.models import MODEL_TYPES
from cfmodel.training.trainer import train

RANKING_KEYS = {"precision@10", "recall@10", "ndcg@10", "map@10", "coverage@10"}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_train_saves_a_versioned_artifact_with_holdout_metrics(tmp_path, model_type):
    wh = write_warehouse(tmp_path / "wh")
    trained = train(wh, "2026-02-01", TrainConfig.for_model(model_type, epochs=3), device="cpu")
    assert trained.version == f"{model_type}-2026-02-01"
    folder = wh / "models" / trained.version
    assert {p.name for p in folder.iterdir()} >= {
        "model.pt",
        "config.json",
        "metrics.json",
        "loss_curve.png",
        "users.parquet",
        "items.parquet",
        "_SUCCESS",
    }
    assert (folder / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (wh / "models" / "CURRENT").exists()  # promotion decides that

    metrics = json.loads((folder / "metrics.json").read_text())
    valid = metrics["valid"]
    assert RANKING_KEYS <= set(valid["model"]) and RANKING_KEYS <= set(valid["popularity"])
    rating_keys = {"rmse", "mae"}
    if model_type == "rank":
        assert not rating_keys & set(valid["model"]) and "valid_rmse" not in metrics
    else:
        assert rating_keys <= set(valid["model"]) and metrics["valid_rmse"] == valid["model"]["rmse"]
    assert valid["model"]["users"] == valid["popularity"]["users"] > 0
    assert len(metrics["history"]) == metrics["epochs_run"] <= 3 and metrics["train_seconds"] > 0

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == model_type and config["n_users"] == 90 and config["n_items"] == 60
    assert config["train"]["model"] == model_type and config["data"]["ratings"] == 1800
    assert config["data"]["train"] + config["data"]["valid"] == 1800 and config["data"]["ids_from"] == [
        "ratings",
        "ratings",
    ]
    assert ("y_range" in config) == (model_type != "rank")
    loaded = ModelRegistry(wh / "models").load(trained.version)
    with torch.no_grad():
        assert torch.equal(loaded.model.score_all(torch.arange(5)), trained.model.score_all(torch.arange(5)))


def test_dot_model_learns_the_planted_tastes(tmp_path):
    wh = write_warehouse(tmp_path / "wh")
    trained = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=10, lr=3e-2, wd=0.01), device="cpu")
    valid = trained.metrics["valid"]
    assert valid["model"]["rmse"] < 1.0  # ratings are 1-2 or 4-5: guessing the mean gives ~1.6
    # What it would recommend: the best-predicted items of each user belong to the user's group.
    with torch.no_grad():
        best = trained.model.score_all(torch.arange(90)).topk(10, dim=1).indices.numpy()
    user_group = np.array([int(u[1:]) % 3 for u in trained.users.ids])
    item_group = np.array([int(i[1:]) % 3 for i in trained.items.ids])
    assert (item_group[best] == user_group[:, None]).mean() > 0.9


def test_time_split_holds_out_the_latest_ratings(tmp_path):
    wh = write_warehouse(tmp_path / "wh")
    trained = train(
        wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1, split="time", valid_pct=0.25), device="cpu"
    )
    assert trained.config.data["valid"] == 90 * 5  # 25% of each user's 20 ratings


def test_a_time_split_without_timestamps_is_refused_not_guessed(tmp_path):
    """goodbooks records no time: its ratings land with null timestamps."""
    ratings = planted_ratings()
    ratings["timestamp"] = pd.array([None] * len(ratings), dtype="Int64")
    ratings.loc[:9, "timestamp"] = 5  # a few with a time do not make a time split possible
    wh = write_warehouse(tmp_path / "wh", ratings)
    with pytest.raises(CfrecError, match=r"needs a timestamp on every rating, and 1790 of 1800 have none"):
        train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1, split="time"), device="cpu")
    assert train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1), device="cpu").version  # random: fine


def test_y_range_is_an_option_and_defaults_to_the_scale_with_headroom(tmp_path):
    wh = write_warehouse(tmp_path / "wh")
    default = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1), device="cpu")
    assert default.config.y_range == [0.0, 5.5]  # 1-5 stars
    chosen = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1, y_range="1 5"), device="cpu")
    assert chosen.config.y_range == [1.0, 5.0] and chosen.config.train["y_range"] == [1.0, 5.0]
    for bad, message in (("5 1", "LO < HI"), ("1", "two numbers"), ("a b", "two numbers")):
        with pytest.raises(CfrecError, match=message):
            TrainConfig.for_model("dot", y_range=bad)


def test_published_ratings_are_clipped_to_the_scale():
    from cfmodel.training.models import build_model, clipped

    rating = build_model("dot", n_users=1, n_items=3, n_factors=2, y_range=(0.0, 5.5))
    ranking = build_model("rank", n_users=1, n_items=3, n_factors=2)
    shown = np.array([[5.4, 3.0, 0.2]])
    assert clipped(rating, shown, (1.0, 5.0)).tolist() == [[5.0, 3.0, 1.0]]
    assert clipped(ranking, shown, (1.0, 5.0)).tolist() == shown.tolist()  # ranking scores are not ratings


def test_stable_index_tables_decide_the_rows(tmp_path):
    wh = write_warehouse(tmp_path / "wh", index_tables=True)
    trained = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1), device="cpu")
    users = pd.read_parquet(wh / "user_index")
    assert list(trained.users.ids) == list(users.sort_values("index")["id"])
    assert trained.config.data["ids_from"] == ["user_index", "item_index"]


def test_ids_missing_from_the_index_tables_are_an_error(tmp_path):
    wh = write_warehouse(tmp_path / "wh", index_tables=True)
    index = pd.read_parquet(wh / "item_index")
    index[index["id"] != "i7"].assign(index=lambda f: np.arange(len(f))).to_parquet(
        wh / "item_index" / "part-0.parquet"
    )
    with pytest.raises(CfrecError, match="1 item_ids of the ratings table are missing from item_index"):
        train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1), device="cpu")


def test_empty_or_missing_ratings_are_clear_errors(tmp_path):
    with pytest.raises(CfrecError, match="table 'ratings' not found"):
        train(tmp_path / "nothing", "2026-02-01", TrainConfig())
    wh = write_warehouse(tmp_path / "wh")
    empty = pd.read_parquet(wh / "ratings").iloc[:0]
    empty.to_parquet(wh / "ratings" / "part-0.parquet")
    with pytest.raises(CfrecError, match="is empty"):
        train(wh, "2026-02-01", TrainConfig())


def test_version_suffix_names_another_schedules_model(tmp_path):
    wh = write_warehouse(tmp_path / "wh")
    trained = train(wh, "2026-02-01", TrainConfig.for_model("rank", epochs=1), device="cpu", version_suffix="-full")
    assert trained.version == "rank-2026-02-01-full" and (wh / "models" / "rank-2026-02-01-full" / "_SUCCESS").exists()
    with pytest.raises(CfrecError, match="version suffix may hold only"):
        train(wh, "2026-02-01", TrainConfig(), version_suffix="/../x")


def test_a_diverged_model_is_refused_and_nothing_is_saved(tmp_path, capsys):
    from cfmodel.cli import main

    wh = write_warehouse(tmp_path / "wh")
    good = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1), device="cpu")
    ModelRegistry(wh / "models").set_current(good.version)
    before = sorted(p.name for p in (wh / "models").iterdir())
    weights = (wh / "models" / good.version / "model.pt").read_bytes()
    argv = ["train", "--warehouse", str(wh), "--model", "dot", "--run-date", "2026-02-01", "--lr", "1e9"]
    code = main([*argv, "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "training dot-2026-02-01.2 diverged: non-finite weights" in err and "nothing was saved" in err
    assert sorted(p.name for p in (wh / "models").iterdir()) == before
    assert (wh / "models" / good.version / "model.pt").read_bytes() == weights  # the current model is intact
    assert ModelRegistry(wh / "models").current() == good.version


def test_retraining_a_date_makes_a_new_version_and_leaves_the_current_one_intact(tmp_path):
    wh = write_warehouse(tmp_path / "wh")
    registry = ModelRegistry(wh / "models")
    first = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1), device="cpu")
    registry.set_current(first.version)
    files = {p.name: p.read_bytes() for p in (wh / "models" / first.version).iterdir()}
    second = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1, lr=0.5), device="cpu")
    third = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1), device="cpu")
    assert (first.version, second.version, third.version) == ("dot-2026-02-01", "dot-2026-02-01.2", "dot-2026-02-01.3")
    assert {p.name: p.read_bytes() for p in (wh / "models" / first.version).iterdir()} == files
    assert registry.current() == first.version and registry.load().version == first.version


def held_out_pair(prefix: str, item: str, seed: int = 42, valid_pct: float = 0.2) -> str:
    """A user id whose (user, item) rating the default split holds out."""
    from cfmodel.training.splits import id_keys, random_split

    for n in range(1000):
        user = f"{prefix}{n}"
        _, valid = random_split(id_keys([user]), id_keys([item]), valid_pct, seed)
        if len(valid):
            return user
    raise AssertionError("no held-out pair found")


def test_rows_whose_every_rating_was_held_out_are_recorded_as_untrained(tmp_path):
    ratings = planted_ratings()
    lonely = held_out_pair("lonely", "i0")  # one rating, held out: never trained
    ratings.loc[len(ratings)] = [lonely, "i0", 5.0, 1]
    wh = write_warehouse(tmp_path / "wh", ratings)
    trained = train(wh, "2026-02-01", TrainConfig.for_model("dot", epochs=1, refit=False), device="cpu")
    loaded = ModelRegistry(wh / "models").load(trained.version)
    assert not loaded.trained_users[loaded.users.encode([lonely])[0]]
    assert loaded.trained_users.sum() == 90 and loaded.trained_items.all()
    assert np.array_equal(loaded.trained_users, trained.trained_users)
    assert loaded.holdout_model is None and loaded.validated_model is loaded.model


def test_the_published_model_is_refitted_on_every_rating_and_the_validated_one_kept(tmp_path):
    ratings = planted_ratings()
    lonely = held_out_pair("lonely", "i0")  # one rating, held out
    ratings.loc[len(ratings)] = [lonely, "i0", 5.0, 1]
    wh = write_warehouse(tmp_path / "wh", ratings)
    config = TrainConfig.for_model("rank", epochs=3, patience=0)
    trained = train(wh, "2026-02-01", config, device="cpu")
    loaded = ModelRegistry(wh / "models").load(trained.version)
    assert loaded.trained_users.all() and loaded.trained_items.all()
    assert loaded.holdout_model is not None and loaded.holdout_model.rater is not None
    published, validated = loaded.model.state_dict(), loaded.holdout_model.state_dict()
    assert published.keys() == validated.keys()
    assert not torch.equal(published["i_weight.weight"], validated["i_weight.weight"])
    assert not torch.equal(published["rater.u_bias.weight"], validated["rater.u_bias.weight"])
    # The recorded metrics are the validated model's, on the hold-out it never saw.
    from cfmodel.evaluation.holdout import holdout_metrics
    from cfmodel.training.trainer import TrainingData
    from cfmodel.warehouse import Warehouse

    data = TrainingData.read(Warehouse.open(wh))
    train_part, valid_part = data.split(config)
    again = holdout_metrics(loaded.validated_model, train_part, valid_part, len(data.items), seed=config.seed)
    assert again["model"]["ndcg@10"] == pytest.approx(loaded.metrics["valid"]["model"]["ndcg@10"])
    assert loaded.metrics["valid"]["rating_model"]["epochs"] >= 1


def test_a_ranking_model_is_trained_with_a_rating_model_beside_it(tmp_path):
    wh = write_warehouse(tmp_path / "wh")
    trained = train(wh, "2026-02-01", TrainConfig.for_model("rank", epochs=2), device="cpu")
    loaded = ModelRegistry(wh / "models").load(trained.version)
    assert loaded.model.rater is not None and loaded.model.rater.model_type == "dot"
    rating = loaded.metrics["valid"]["rating_model"]
    assert 0 < rating["mae"] <= rating["rmse"] < 2.0  # planted 1-5 ratings: far better than guessing
    assert "rmse" not in loaded.metrics["valid"]["model"]  # the gate judges the list, not the ratings
    users, items = torch.tensor([0, 1]), torch.tensor([[0, 1], [2, 3]])
    assert loaded.model.predicted_ratings(users, items).shape == (2, 2)

    alone = train(wh, "2026-02-01", TrainConfig.for_model("rank", epochs=1, rating_model="none"), device="cpu")
    assert alone.model.rater is None and "rating_model" not in alone.metrics["valid"]


def test_the_ranking_model_publishes_a_vector_for_every_user_with_a_rating(tmp_path):
    """A user whose every rating fell in the hold-out gets a vector from those ratings; the metrics
    are still measured with the hold-out hidden from every user's vector."""
    ratings = planted_ratings()
    lonely = held_out_pair("lonely", "i0")
    ratings.loc[len(ratings)] = [lonely, "i0", 5.0, 1]
    wh = write_warehouse(tmp_path / "wh", ratings)
    config = TrainConfig.for_model("rank", epochs=2, rating_model="none", refit=False)
    trained = train(wh, "2026-02-01", config, device="cpu")
    loaded = ModelRegistry(wh / "models").load(trained.version)
    row = loaded.users.encode([lonely])[0]
    assert loaded.trained_users.all()
    context = loaded.model.c_weight.weight[loaded.items.encode(["i0"])[0]]
    torch.testing.assert_close(loaded.model.u_weight.weight[row], context)  # its one item, over sqrt(1)

    learned = train(
        wh,
        "2026-02-01",
        TrainConfig.for_model("rank", epochs=2, rating_model="none", history_dropout="none", refit=False),
        device="cpu",
    )
    assert not learned.trained_users[row] and learned.trained_users.sum() == 90
