"""The bfloat16 screen gives exactly the float32 lists, near-ties included."""

import numpy as np
import pytest
import torch

import cfmodel.scoring.screen as screen
from cfmodel.scoring.recommend import model_top_n
from cfmodel.scoring.topk import top_k
from cfmodel.training.config import TrainConfig
from cfmodel.training.models import model_for

N_USERS, N_ITEMS = 80, 600


def dot_model(model_type="dot", seed=0):
    config = TrainConfig.for_model(model_type, n_factors=16, history_dropout="none", item_item=0)
    model = model_for(config, N_USERS, N_ITEMS, (0.0, 5.5))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model.eval()


def ratings(seed=0, most=120):
    rng = np.random.default_rng(seed)
    rated = [rng.choice(N_ITEMS, size=rng.integers(0, most), replace=False) for _ in range(N_USERS)]
    rows = np.repeat(np.arange(N_USERS), [len(r) for r in rated])
    return rows, np.concatenate(rated).astype(np.int64)


@pytest.fixture(params=[16, 2], ids=["one-pass-top-k", "chunked-top-k"])
def rescored(request, monkeypatch):
    """How many users each call scored again over every item; every test runs with the screen's
    top-k in one pass (600 items are too few for chunks of 16) and in chunks of 2."""
    monkeypatch.setattr(screen, "CHUNK", request.param)
    counts = []

    def counting_top_k(scores, *args, **kwargs):
        counts.append(len(scores))
        return top_k(scores, *args, **kwargs)

    monkeypatch.setattr(screen, "top_k", counting_top_k)
    return counts


def exact(model, users, k, rows, cols, masked=None):
    with torch.inference_mode():
        return top_k(model.ranking_scores(torch.as_tensor(users)), k, rows, cols, masked)


@pytest.mark.parametrize("model_type", ["dot", "rank"])
def test_screened_lists_are_the_float32_lists(model_type, rescored):
    model = dot_model(model_type)
    users = np.arange(N_USERS)
    rows, cols = ratings()
    masked = np.array([5, 17, 300])
    assert model.ranking_factors() is not None
    items, values = screen.screened_top_k(model, torch.as_tensor(users), 10, rows, cols, masked)
    want_items, want_values = exact(model, users, 10, rows, cols, masked)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_allclose(values, want_values, rtol=1e-5, atol=1e-6)
    assert not set(zip(rows, cols)) & {(u, i) for u in users for i in items[u]}
    assert not set(masked) & set(items.ravel())
    # The screen decided most lists by itself: the exactness is not the fallback's doing.
    assert sum(rescored) < N_USERS // 4


def test_near_ties_at_the_kth_place_are_scored_again_and_stay_exact(rescored):
    model = dot_model()
    with torch.no_grad():
        # 100 items nearly alike lead every list: bfloat16 cannot order them.
        lead = model.i_weight.weight[0] * 3
        model.i_weight.weight[:100] = lead + 1e-5 * torch.randn(100, 16, generator=torch.Generator().manual_seed(1))
        model.u_weight.weight.copy_(lead / lead.norm() + 0.01 * torch.randn(N_USERS, 16))
        model.i_bias.weight[:100] = 1.0
    users = np.arange(N_USERS)
    rows, cols = ratings(most=20)
    items, values = screen.screened_top_k(model, torch.as_tensor(users), 10, rows, cols)
    want_items, want_values = exact(model, users, 10, rows, cols)
    assert sum(rescored) == N_USERS
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_allclose(values, want_values, rtol=1e-6)


def test_users_with_fewer_items_left_than_the_screen_get_padded_exact_lists(rescored):
    model = dot_model()
    users = np.arange(3)
    masked = np.arange(N_ITEMS - 30)  # 30 items left, fewer than the 64 screened
    rows, cols = np.array([0] * 25 + [1] * 2), np.arange(N_ITEMS - 30, N_ITEMS - 3)
    items, values = screen.screened_top_k(model, torch.as_tensor(users), 10, rows, cols, masked)
    want_items, want_values = exact(model, users, 10, rows, cols, masked)
    np.testing.assert_array_equal(items, want_items)
    assert list(items[0, 5:]) == [-1] * 5 and np.isnan(values[0, 5:]).all()
    np.testing.assert_allclose(values, want_values, rtol=1e-6)


def test_nan_scores_are_refused_as_without_the_screen():
    model = dot_model()
    with torch.no_grad():
        model.u_weight.weight[2, 0] = torch.nan
    with pytest.raises(ValueError, match="NaN"):
        screen.screened_top_k(model, torch.arange(4), 10, np.empty(0, np.int64), np.empty(0, np.int64))


def test_recommendations_take_the_screen_where_it_pays(monkeypatch, rescored):
    model = dot_model()
    users = np.arange(N_USERS)
    rows, cols = ratings(seed=3)
    monkeypatch.setattr(screen, "bfloat16_is_fast", lambda device: False)
    assert not screen.screens(model, 10)
    plain = model_top_n(model, users, rows, cols, 10)
    monkeypatch.setattr(screen, "bfloat16_is_fast", lambda device: True)
    assert screen.screens(model, 10)
    calls = []
    original = screen.screened_top_k
    monkeypatch.setattr(
        "cfmodel.scoring.recommend.screened_top_k", lambda *a, **kw: calls.append(1) or original(*a, **kw)
    )
    screened = model_top_n(model, users, rows, cols, 10)
    assert calls
    np.testing.assert_array_equal(screened[0], plain[0])
    np.testing.assert_allclose(screened[1], plain[1], rtol=1e-5)
    # Not for a list too wide for the catalog to gain, nor for a model with no dot product (or more).
    assert not screen.screens(model, N_ITEMS // 4)
    assert not screen.screens(model_for(TrainConfig.for_model("nn"), 5, N_ITEMS, (0.0, 5.5)), 10)
    assert not screen.screens(model_for(TrainConfig.for_model("rank"), 5, N_ITEMS, None), 10)


def test_chunked_top_k_finds_the_best_values_and_columns_holding_them():
    generator = torch.Generator().manual_seed(3)
    # bfloat16 rounding makes many ties; -inf cells as the mask leaves them; a row with fewer
    # finite scores than k.
    scores = torch.randn(50, 16 * 400, generator=generator).bfloat16()
    scores[torch.rand(scores.shape, generator=generator) < 0.3] = -torch.inf
    scores[7, 40:] = -torch.inf
    values, columns = screen.chunked_top_k(scores, 64)
    want_values, _ = torch.topk(scores, 64, dim=1)
    assert torch.equal(values, want_values)
    assert torch.equal(scores.gather(1, columns), values)
    assert all(len(set(row.tolist())) == 64 for row in columns)
