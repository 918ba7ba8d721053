import numpy as np
import pytest
import torch

from cfmodel.errors import CfrecError
from cfmodel.models import EmbeddingDotBias, default_y_range
from cfmodel.training import TrainConfig, fit, one_cycle, resolve_device, split_validation


def test_forward_shapes_and_gradients():
    model = EmbeddingDotBias(n_users=7, n_items=11, n_factors=5, y_range=(0.0, 5.5))
    users, items = torch.tensor([0, 3, 6]), torch.tensor([10, 0, 4])
    out = model(users, items)
    assert out.shape == (3,)
    out.sum().backward()
    assert model.u_weight.weight.grad.shape == (7, 5)
    touched = model.u_weight.weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched == [0, 3, 6]


def test_predictions_stay_inside_y_range_even_for_extreme_weights():
    model = EmbeddingDotBias(3, 3, n_factors=4, y_range=(1.0, 5.0))
    with torch.no_grad():
        model.u_weight.weight.fill_(10.0)
        model.i_weight.weight[0].fill_(10.0)
        model.i_weight.weight[1].fill_(-10.0)
    out = model(torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]))
    assert torch.all(out >= 1.0) and torch.all(out <= 5.0)
    assert out[0] > 4.99 and out[1] < 1.01


def test_default_y_range_matches_fastai_for_five_stars():
    assert default_y_range(1.0, 5.0) == (0.0, 5.5)
    low, high = default_y_range(0.0, 10.0)
    assert low == 0.0 and high > 10.0


def test_split_validation_is_reproducible_disjoint_and_complete():
    train, valid = split_validation(1000, 0.2, seed=7)
    again_train, again_valid = split_validation(1000, 0.2, seed=7)
    assert len(valid) == 200 and len(train) == 800
    assert np.array_equal(valid, again_valid) and np.array_equal(train, again_train)
    assert not set(train) & set(valid)
    assert sorted([*train, *valid]) == list(range(1000))
    assert not np.array_equal(valid, split_validation(1000, 0.2, seed=8)[1])


def test_one_cycle_warms_up_then_anneals():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-2)
    scheduler = one_cycle(optimizer, 1e-2, total_steps=100)
    lrs, betas = [], []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        betas.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        scheduler.step()
    peak = int(np.argmax(lrs))
    assert 20 <= peak <= 30
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert lrs[peak] == pytest.approx(1e-2, rel=1e-3)
    assert lrs[-1] < 1e-5
    assert betas[0] == pytest.approx(0.95) and betas[peak] == pytest.approx(0.85, abs=1e-3)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CfrecError):
        resolve_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(CfrecError, match="CUDA is not available"):
            resolve_device("cuda")


def test_fit_learns_planted_structure():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 200, 150, 3
    uv, iv = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    users = rng.integers(0, n_users, 20000)
    items = rng.integers(0, n_items, 20000)
    ratings = np.clip(3.0 + 0.8 * np.einsum("ij,ij->i", uv[users], iv[items]) + rng.normal(0, 0.3, 20000), 1, 5)
    model = EmbeddingDotBias(n_users, n_items, n_factors=8, y_range=(0.0, 5.5))
    config = TrainConfig(n_factors=8, epochs=8, lr=2e-2, wd=0.01, bs=256, valid_pct=0.2, seed=1)
    history = fit(model, users, items, ratings, config, torch.device("cpu"))
    assert [h["epoch"] for h in history] == list(range(1, 9))
    _, valid = split_validation(len(ratings), 0.2, 1)
    baseline = float(np.sqrt(np.mean((ratings[valid] - ratings.mean()) ** 2)))
    assert history[-1]["valid_rmse"] < 0.6 * baseline
    assert history[-1]["train_loss"] < history[0]["train_loss"]
