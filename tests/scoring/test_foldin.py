import json

import numpy as np
import pandas as pd
import pytest
import torch
from support import planted_choices, write_warehouse

from cfmodel.cli import main
from cfmodel.errors import CfrecError
from cfmodel.registry.registry import ModelRegistry
from cfmodel.scoring.foldin import fold_in, read_new_ratings, recommend
from cfmodel.training.config import TrainConfig
from cfmodel.training.trainer import train


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("foldin")
    wh = write_warehouse(root / "wh")
    choices = write_warehouse(root / "choices", planted_choices())
    models = {
        "dot": train(wh, "2026-04-01", TrainConfig.for_model("dot", epochs=10, lr=3e-2, wd=0.01), device="cpu"),
        "rank": train(choices, "2026-04-01", TrainConfig.for_model("rank", epochs=10, lr=3e-2), device="cpu"),
    }
    ModelRegistry(wh / "models").set_current(models["dot"].version)
    return wh, models


def new_user_ratings(user="newbie", liked_group=0, n=6):
    liked = [f"i{i}" for i in range(liked_group, 60, 3)][:n]
    disliked = [f"i{i}" for i in range((liked_group + 1) % 3, 60, 3)][:n]
    return pd.DataFrame({"user_id": user, "item_id": liked + disliked, "rating": ["5"] * n + ["1"] * n})


def group(item_ids):
    return np.array([int(i[1:]) % 3 for i in item_ids])


@pytest.mark.parametrize("model_type, liked_group", [("dot", 0), ("dot", 2), ("rank", 1)])
def test_a_new_user_gets_items_of_their_taste_without_retraining(trained_models, model_type, liked_group):
    _, models = trained_models
    trained = models[model_type]
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    ratings = new_user_ratings(liked_group=liked_group)
    if model_type == "rank":
        ratings = ratings[ratings["rating"] == "5"]  # what a user chooses to rate
    fold = fold_in(trained, ratings)
    recs = recommend(fold, trained, top_n=10)
    assert list(recs["user_id"].unique()) == ["newbie"] and recs["rank"].tolist() == list(range(1, 11))
    assert not set(recs["item_id"]) & set(ratings["item_id"])
    assert (group(recs["item_id"]) == liked_group).mean() >= 0.8
    assert (recs["score"].diff().dropna() <= 0).all()
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, before[key]), f"fold-in changed the trained model's {key}"


def test_folding_in_a_known_users_ratings_reproduces_the_model(trained_models):
    wh, models = trained_models
    trained = models["dot"]
    ratings = pd.read_parquet(wh / "ratings")
    mine = ratings[ratings["user_id"] == "u4"].assign(user_id="again", rating=lambda f: f["rating"].astype(str))
    fold = fold_in(trained, mine)
    with torch.no_grad():
        folded = fold.model.score_all(torch.tensor([0]))[0].numpy()
        original = trained.model.score_all(torch.as_tensor(trained.users.encode(["u4"])))[0].numpy()
    assert np.corrcoef(folded, original)[0, 1] > 0.9
    liked = group(trained.items.ids) == 4 % 3
    assert folded[liked].mean() - folded[~liked].mean() > 1.0


def test_unusable_rows_are_rejected_with_reasons_and_never_dropped(trained_models):
    _, models = trained_models
    ratings = pd.concat(
        [
            new_user_ratings(),
            pd.DataFrame(
                {
                    "user_id": ["newbie", "newbie", "newbie", "ghost", ""],
                    "item_id": ["i999", "i3", "i0", "i998", "i1"],
                    "rating": ["4", "lots", "2", "5", "3"],
                }
            ),
        ],
        ignore_index=True,
    )
    fold = fold_in(models["dot"], ratings)
    reasons = dict(zip(fold.rejects["item_id"], fold.rejects["reason"]))
    assert reasons == {
        "i999": "unknown_item",
        "i3": "rating_not_numeric",
        "i998": "unknown_item",
        "i1": "missing_user",
        "i0": "duplicate_superseded",
    }
    assert fold.skipped_users == ["ghost"] and list(fold.users.ids) == ["newbie"]
    assert len(fold.rejects) + sum(len(r) for r in fold.rated) == len(ratings)
    with pytest.raises(CfrecError, match="none of the given ratings is usable: 1 unknown_item"):
        fold_in(models["dot"], ratings[ratings["user_id"] == "ghost"])


def test_read_new_ratings_accepts_csv_and_tsv_and_needs_the_columns(tmp_path):
    (tmp_path / "a.csv").write_text("user_id,item_id,rating\nx,i1,5\n")
    (tmp_path / "b.tsv").write_text("user_id\titem_id\trating\textra\nx\ti1\t5\tz\n")
    (tmp_path / "c.csv").write_text("user,item,stars\nx,i1,5\n")
    assert read_new_ratings(tmp_path / "a.csv").to_dict("records") == [{"user_id": "x", "item_id": "i1", "rating": "5"}]
    assert list(read_new_ratings(tmp_path / "b.tsv").columns) == ["user_id", "item_id", "rating"]
    with pytest.raises(CfrecError, match="missing user_id, item_id, rating"):
        read_new_ratings(tmp_path / "c.csv")
    with pytest.raises(CfrecError, match="does not exist"):
        read_new_ratings(tmp_path / "none.csv")


def test_fold_in_command_prints_titled_recommendations_and_rejects(trained_models, tmp_path, capsys):
    wh, _ = trained_models
    path = tmp_path / "new.csv"
    pd.concat([new_user_ratings(), pd.DataFrame({"user_id": ["newbie"], "item_id": ["i999"], "rating": ["3"]})]).to_csv(
        path, index=False
    )
    assert main(["fold-in", "--warehouse", str(wh), "--ratings", str(path), "--top-n", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_version"] == "dot-2026-04-01" and report["users"] == 1
    assert [r["rank"] for r in report["recommendations"]] == [1, 2, 3, 4, 5]
    assert all(r["title"] == f"Title of {r['item_id']}" for r in report["recommendations"])
    assert report["rejects"] == [{"user_id": "newbie", "item_id": "i999", "rating": 3.0, "reason": "unknown_item"}]
    out = tmp_path / "recs.parquet"
    assert main(["fold-in", "--warehouse", str(wh), "--ratings", str(path), "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 10 and "written" in json.loads(capsys.readouterr().out)
    # Every item is scored exactly for a few users: a candidate shortlist would be ignored, so is refused.
    with pytest.raises(SystemExit) as refused:
        main(["fold-in", "--warehouse", str(wh), "--ratings", str(path), "--candidates", "50"])
    assert refused.value.code == 2 and "unrecognized arguments: --candidates 50" in capsys.readouterr().err
