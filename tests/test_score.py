"""Scoring one Arrow batch the way an executor does, without Spark."""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch

from cfmodel.scoring.popularity import Popularity
from cfmodel.scoring.recommend import ScoringContext, recommend_batch
from cfmodel.scoring.scorers import FactorScorer, ModuleScorer, scorer_for
from cfmodel.training.ids import IdIndex
from cfmodel.training.models import EmbeddingDotBias, sigmoid_range


class DotWithScoreAll(EmbeddingDotBias):
    """The dot model with the `score_all` every model type offers."""

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        logits = self.u_weight(users) @ self.i_weight.weight.T + self.u_bias(users) + self.i_bias.weight.T
        return sigmoid_range(logits, *self.y_range)


def dot_model(n_users=4, n_items=7, seed=0):
    torch.manual_seed(seed)
    model = DotWithScoreAll(n_users, n_items, 3)
    for emb in (model.u_weight, model.i_weight, model.u_bias, model.i_bias):
        torch.nn.init.normal_(emb.weight)
    return model.eval()


def factors(model):
    grab = lambda emb: emb.weight.detach().numpy()  # noqa: E731
    return dict(
        user_vectors=grab(model.u_weight),
        user_bias=grab(model.u_bias)[:, 0],
        item_vectors=grab(model.i_weight),
        item_bias=grab(model.i_bias)[:, 0],
    )


def context(scorer, n=3):
    # Catalog: the model's 7 items, then "new", an item that appeared after training.
    catalog_ids = np.array([f"i{j}" for j in range(7)] + ["new"], dtype=object)
    counts = np.array([1, 2, 3, 4, 5, 6, 7, 100])
    return ScoringContext(
        scorer=scorer,
        users=IdIndex(["u0", "u1", "u2", "u3"]),
        catalog_ids=catalog_ids,
        titles=np.array([f"Title {c}" for c in catalog_ids], dtype=object),
        popularity=Popularity.from_counts(catalog_ids, counts),
        n=n,
    )


def batch(rated: dict):
    return pa.RecordBatch.from_arrays(
        [pa.array(list(rated)), pa.array(list(rated.values()), pa.list_(pa.int32()))], names=["user_id", "rated"]
    )


def score_batch(ctx, rated):
    return pa.Table.from_batches(list(recommend_batch(ctx, batch(rated)))).to_pandas()


def test_known_users_get_model_lists_and_unknown_users_the_popular_list():
    model = dot_model()
    ctx = context(FactorScorer(**factors(model), y_range=model.y_range))
    rated = {"u0": [0, 1], "stranger": [7, 6], "u2": [7], "u3": [0, 1, 2, 3, 4, 5]}
    recs = score_batch(ctx, rated)

    expected = model.score_all(torch.arange(4)).detach().numpy()
    for user in ("u0", "u2"):
        rows = recs[recs.user_id == user]
        allowed = [j for j in range(7) if j not in rated[user]]
        best = sorted(allowed, key=lambda j: -expected[int(user[1]), j])[:3]
        assert rows["item_id"].tolist() == [f"i{j}" for j in best]
        assert rows["rank"].tolist() == [1, 2, 3] and set(rows["source"]) == {"model"}
        np.testing.assert_allclose(rows["score"], expected[int(user[1]), best], rtol=1e-5)
        assert rows["title"].tolist() == [f"Title i{j}" for j in best]
    # u3 rated all but one of the model's items: the model can offer one, never the unseen "new"
    assert recs[recs.user_id == "u3"]["item_id"].tolist() == ["i6"]
    assert "new" not in set(recs[recs.source == "model"]["item_id"])

    stranger = recs[recs.user_id == "stranger"]
    assert stranger["item_id"].tolist() == ["i5", "i4", "i3"]  # by count, without what they rated
    assert stranger["score"].tolist() == [6.0, 5.0, 4.0] and set(stranger["source"]) == {"popular"}
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score", "source", "title"]


def test_models_with_score_all_rank_like_their_factors():
    model = dot_model(seed=3)
    rated = {"u0": [3], "u1": [], "u2": [0, 6], "u3": [1, 2]}
    via_module = score_batch(context(ModuleScorer(model, 7)), rated)
    via_factors = score_batch(context(FactorScorer(**factors(model), y_range=model.y_range)), rated)
    assert via_module[["user_id", "rank", "item_id"]].equals(via_factors[["user_id", "rank", "item_id"]])
    np.testing.assert_allclose(via_module["score"], via_factors["score"], rtol=1e-5)


def test_scorer_choice_and_small_blocks_give_the_same_answer():
    model = dot_model(seed=5)
    artifact = SimpleNamespace(
        model=model,
        items=IdIndex([f"i{j}" for j in range(7)]),
        config={"y_range": [0, 5.5]},
        factors=lambda: factors(model),
    )
    assert isinstance(scorer_for(artifact), FactorScorer)  # dot: same ranking, sigmoid on winners only
    other = dot_model(seed=5)
    other.model_type = "nn"
    assert isinstance(scorer_for(SimpleNamespace(**{**vars(artifact), "model": other})), ModuleScorer)

    rated = {"u0": [1], "u1": [2], "u2": [], "u3": [4], "x": [], "y": [0]}
    whole = score_batch(context(FactorScorer(**factors(model), y_range=(0, 5.5))), rated)
    one_user_blocks = score_batch(context(FactorScorer(**factors(model), y_range=(0, 5.5), pairs_per_block=7)), rated)
    assert (
        whole.sort_values(["user_id", "rank"])
        .reset_index(drop=True)
        .equals(one_user_blocks.sort_values(["user_id", "rank"]).reset_index(drop=True))
    )


def test_a_model_returning_the_wrong_shape_is_a_clear_error():
    class Broken(torch.nn.Module):
        def score_all(self, users):
            return torch.zeros(len(users), 3)

    with pytest.raises(ValueError, match=r"score_all returned shape \(2, 3\), expected \(2, 7\)"):
        ModuleScorer(Broken(), 7).scores(np.array([0, 1]))
