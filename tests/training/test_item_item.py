import numpy as np
import pytest
import torch

from cfmodel.errors import CfrecError
from cfmodel.scoring.recommend import model_top_n
from cfmodel.scoring.topk import top_k
from cfmodel.training import models
from cfmodel.training.config import TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.item_item import ease_weights, item_gram
from cfmodel.training.models import build_model, model_for


def _ratings(n_users=40, n_items=30, n=400, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    return Interactions(rng.integers(0, n_users, n), rng.integers(0, n_items, n), rng.integers(1, 6, n))


def _binary(data: Interactions, n_users: int, n_items: int) -> np.ndarray:
    x = np.zeros((n_users, n_items))
    x[data.users, data.items] = 1.0
    return x


def test_ease_weights_are_the_closed_form_on_the_binary_matrix():
    data = _ratings()
    x = _binary(data, 40, 30)
    gram = item_gram(data.users, data.items, 40, 30)
    np.testing.assert_array_equal(gram.numpy(), x.T @ x)  # repeated pairs count once
    p = np.linalg.inv(x.T @ x + 7.0 * np.eye(30))
    expected = np.eye(30) - p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    got = ease_weights(gram, 7.0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.diagonal(got).any()


def test_item_gram_in_chunks_of_users_is_the_whole_product(monkeypatch):
    from cfmodel.training import item_item

    data = _ratings(n_users=50, n_items=20, n=600, seed=3)
    whole = item_gram(data.users, data.items, 50, 20)
    monkeypatch.setattr(item_item, "GRAM_CELLS_PER_CHUNK", 20 * 7)  # seven users at a time
    np.testing.assert_array_equal(item_gram(data.users, data.items, 50, 20).numpy(), whole.numpy())


def _fitted_rank(data: Interactions, n_users=40, n_items=30, weight=0.25) -> models.EmbeddingDotRank:
    torch.manual_seed(0)
    model = build_model(
        "rank", n_users=n_users, n_items=n_items, n_factors=8, history_dropout=0.5, item_item=weight, item_item_l2=5.0
    )
    with torch.no_grad():
        for table in (model.i_weight, model.c_weight, model.i_bias):
            table.weight.normal_()
    model.eval()
    model.encode_users(data)
    model.fit_closed_form(data)
    return model


def test_the_ranking_models_lists_add_the_item_item_term_of_each_users_rated_items():
    data = _ratings()
    model = _fitted_rank(data)
    x = _binary(data, 40, 30)
    b = ease_weights(torch.as_tensor(x.T @ x, dtype=torch.float32), 5.0).numpy()
    np.testing.assert_allclose(model.item_item_weights.numpy(), b, atol=1e-5)
    with torch.no_grad():
        vectors = model.ranking_scores(torch.arange(40)).numpy()
    term = x @ b
    users = np.unique(data.users)
    # The term's weight: `item_item` times the spread of the vectors' scores, over the term's spread.
    scale = float(model.item_item_scale)
    assert scale == pytest.approx(0.25 * vectors[users].std(ddof=1) / term[users].std(ddof=1), rel=1e-4)

    indptr, items = data.by_user(40)
    rows = np.repeat(np.arange(40), np.diff(indptr))
    expected = vectors + scale * term
    with torch.no_grad():
        got = model.list_scores(torch.arange(40), rows, items).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert model.ranking_factors() is None  # not a plain dot product: no screened scoring

    # What scoring publishes: the best unrated items by those scores.
    listed, _ = model_top_n(model, np.arange(40), rows, items, 5)
    brute, _ = top_k(torch.as_tensor(expected), 5, rows, items)
    np.testing.assert_array_equal(listed, brute)
    assert not any(set(listed[u]) & set(items[indptr[u] : indptr[u + 1]]) for u in range(40))


def test_the_item_item_term_is_saved_with_the_model_and_rebuilt_from_its_hparams():
    data = _ratings()
    model = _fitted_rank(data)
    again = build_model("rank", **{k: v for k, v in model.hparams().items()})
    again.load_state_dict(model.state_dict())
    indptr, items = data.by_user(40)
    rows = np.repeat(np.arange(40), np.diff(indptr))
    with torch.no_grad():
        np.testing.assert_array_equal(
            again.eval().list_scores(torch.arange(40), rows, items).numpy(),
            model.list_scores(torch.arange(40), rows, items).numpy(),
        )


def test_a_rated_items_support_includes_its_share_of_the_item_item_term():
    data = _ratings()
    model = _fitted_rank(data)
    rated, listed = torch.tensor([[3, 7, 11]]), torch.tensor([[1, 2]])
    with torch.no_grad():
        got = model.support(rated, listed, torch.tensor([3]))[0]
        vectors = model.c_weight.weight[rated[0]] @ model.i_weight.weight[listed[0]].T / np.sqrt(3)
        term = model.item_item_weights[rated[0]][:, listed[0]] * model.item_item_scale
    np.testing.assert_allclose(got.numpy(), (vectors + term).numpy(), rtol=1e-5, atol=1e-6)


def test_the_item_item_term_is_left_out_beyond_its_catalog_limit_and_when_switched_off(monkeypatch):
    config = TrainConfig.for_model("rank")
    assert config.item_item > 0
    assert model_for(config, 10, 50, None).item_item == config.item_item
    monkeypatch.setattr(models, "ITEM_ITEM_MAX_ITEMS", 49)
    too_wide = model_for(config, 10, 50, None)
    assert too_wide.item_item == 0 and "item_item" not in too_wide.hparams()
    assert too_wide.ranking_factors() is not None
    off = model_for(TrainConfig.for_model("rank", item_item=0), 10, 30, None)
    assert not any("item_item" in name for name, _ in off.named_buffers())
    with pytest.raises(CfrecError, match="item-item term needs a weight >= 0"):
        TrainConfig.for_model("rank", item_item=-0.1).check()
    with pytest.raises(CfrecError, match="an L2 weight > 0"):
        TrainConfig.for_model("rank", item_item_l2=0).check()


def test_the_term_is_left_out_of_the_lists_until_it_is_fitted():
    data = _ratings()
    model = model_for(TrainConfig.for_model("rank", n_factors=4), 40, 30, None)
    users = torch.arange(40)
    rows, cols = data.users, data.items
    assert torch.equal(model.list_scores(users, rows, cols), model.ranking_scores(users))
    model.fit_closed_form(data)
    assert float(model.item_item_scale) > 0
    assert not torch.allclose(model.list_scores(users, rows, cols), model.ranking_scores(users))
