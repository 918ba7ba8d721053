import numpy as np
import pytest
import torch
from support import choice_interactions, rating_interactions

from cfmodel.errors import CfrecError
from cfmodel.evaluation.holdout import holdout_metrics
from cfmodel.training.config import MODEL_DEFAULTS, TrainConfig
from cfmodel.training.loop import FitResult, cpu_threads, fit, resolve_device
from cfmodel.training.models import model_for
from cfmodel.training.optim import one_cycle
from cfmodel.training.splits import split


def test_one_cycle_warms_up_then_anneals_with_momentum_cycling():
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
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))  # rising
    assert all(a >= b for a, b in zip(lrs[peak:-1], lrs[peak + 1 :]))  # then falling
    assert betas[0] == pytest.approx(0.95) and betas[peak] == pytest.approx(0.85, abs=1e-3)
    assert betas[-1] == pytest.approx(0.95, abs=1e-3)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
def test_one_cycle_runs_any_small_number_of_steps(steps):
    """Torch's schedule divides by zero at exactly 4 steps (a 1-epoch night of 4 batches)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-2)
    scheduler = one_cycle(optimizer, 1e-2, total_steps=steps)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    assert 0 < optimizer.param_groups[0]["lr"] <= 1e-2


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CfrecError):
        resolve_device("tpu-please")
    with pytest.raises(CfrecError, match="unsupported device"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(CfrecError, match="CUDA is not available"):
            resolve_device("cuda")


def test_config_takes_each_models_defaults_and_keeps_overrides():
    assert TrainConfig().model == "rank" and TrainConfig().lr == MODEL_DEFAULTS["rank"]["lr"]
    assert TrainConfig().rating_model == "dot"
    rank = TrainConfig(model="rank")
    assert rank.n_factors == MODEL_DEFAULTS["rank"]["n_factors"] and rank.bs == MODEL_DEFAULTS["rank"]["bs"]
    tuned = TrainConfig.for_model("nn", lr=1e-3, epochs=None)
    assert tuned.lr == 1e-3 and tuned.epochs == MODEL_DEFAULTS["nn"]["epochs"] and tuned.n_factors is None
    with pytest.raises(CfrecError, match="unknown model type"):
        TrainConfig(model="svd")
    with pytest.raises(CfrecError, match="epochs must be at least 1"):
        TrainConfig(epochs=0).check()


def test_fit_learns_planted_structure():
    data = rating_interactions()
    train, valid = split(data, 0.2, seed=1)
    config = TrainConfig.for_model("dot", n_factors=8, epochs=8, lr=2e-2, wd=0.01, bs=256, seed=1)
    model = model_for(config, 200, 150, (0.0, 5.5))
    result = fit(model, train, valid, config, torch.device("cpu"), progress=False)
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    baseline = float(np.sqrt(np.mean((valid.ratings - train.ratings.mean()) ** 2)))
    assert result.history[-1]["valid_rmse"] < 0.6 * baseline
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert len(result.batch_losses) == 8 * int(np.ceil(len(train) / 256))
    assert {"valid_loss", "valid_rmse", "valid_mae", "seconds"} <= set(result.history[-1])


def test_fit_is_reproducible_from_the_seed():
    data = rating_interactions(n=3000)
    config = TrainConfig.for_model("dot", n_factors=4, epochs=2, seed=3)
    runs = []
    for _ in range(2):
        model = model_for(config, 200, 150, (0.0, 5.5))
        fit(model, data, None, config, torch.device("cpu"), progress=False)
        runs.append(model.u_weight.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_nn_learns_planted_structure():
    data = rating_interactions(n=15000)
    train, valid = split(data, 0.2, seed=0)
    config = TrainConfig.for_model("nn", epochs=6, lr=1e-2, wd=0.01, layers=(32,), seed=0)
    result = fit(model_for(config, 200, 150, (0.0, 5.5)), train, valid, config, torch.device("cpu"), progress=False)
    baseline = float(np.sqrt(np.mean((valid.ratings - train.ratings.mean()) ** 2)))
    assert result.history[-1]["valid_rmse"] < 0.85 * baseline


@pytest.mark.parametrize("loss, n_negatives", [("softmax", 4096), ("softmax", 40), ("bpr", 0)])
def test_rank_model_learns_who_rates_what_better_than_popularity(loss, n_negatives):
    data = choice_interactions()
    train, valid = split(data, 0.2, seed=0)
    config = TrainConfig.for_model(
        "rank", n_factors=16, epochs=10, lr=2e-2, bs=256, loss=loss, n_negatives=n_negatives, patience=0
    )
    model = model_for(config, 300, 120, None)
    result = fit(model, train, valid, config, torch.device("cpu"), progress=False)
    measured = holdout_metrics(model, train, valid, 120)
    assert measured["model"]["ndcg@10"] > measured["popularity"]["ndcg@10"] + 0.1
    assert result.history[-1]["valid_ndcg@10"] == pytest.approx(measured["model"]["ndcg@10"], abs=1e-9)


def test_rank_min_rating_filters_positives_and_errors_when_nothing_is_left():
    data = choice_interactions(n_users=20, per_user=5)
    config = TrainConfig.for_model("rank", min_rating=6.0, epochs=1)
    with pytest.raises(CfrecError, match="no rating is >= min_rating 6.0"):
        fit(model_for(config, 20, 120, None), data, None, config, torch.device("cpu"), progress=False)


def _fit_with_too_high_a_learning_rate(epochs: int, patience: int) -> tuple[float, FitResult]:
    """A learning rate far too high for tiny data: validation gets worse after the first epochs.
    Returns the fitted model's validation RMSE and the fit's result."""
    from cfmodel.evaluation.holdout import predict
    from cfmodel.evaluation.metrics import rmse

    data = rating_interactions(n_users=30, n_items=30, n=600, seed=2)
    train, valid = split(data, 0.3, seed=0)
    config = TrainConfig.for_model(
        "dot", n_factors=32, epochs=epochs, lr=0.3, wd=0.0, bias_wd=0.0, bs=16, patience=patience
    )
    model = model_for(config, 30, 30, (0.0, 5.5))
    result = fit(model, train, valid, config, torch.device("cpu"), progress=False)
    return rmse(predict(model, valid.users, valid.items), valid.ratings), result


def test_early_stopping_stops_and_restores_the_best_epoch():
    restored, result = _fit_with_too_high_a_learning_rate(epochs=30, patience=2)
    assert result.stopped_early and len(result.history) < 30
    best = min(result.history, key=lambda h: h["valid_rmse"])
    assert result.best_epoch == result.kept_epoch == best["epoch"]
    assert restored == pytest.approx(best["valid_rmse"], abs=1e-5)


def test_without_patience_the_whole_schedule_runs_and_the_last_epoch_is_kept():
    # The best validation epoch comes early (as early stopping shows), but without patience the model
    # keeps the last epoch's weights, and says so (a refit trains that many epochs). Only that epoch
    # is validated: nothing reads the others.
    _, stopped = _fit_with_too_high_a_learning_rate(epochs=8, patience=2)
    assert stopped.best_epoch < 8
    kept, result = _fit_with_too_high_a_learning_rate(epochs=8, patience=0)
    assert not result.stopped_early and len(result.history) == 8 and result.kept_epoch == result.best_epoch == 8
    assert [h["epoch"] for h in result.history if "valid_rmse" in h] == [8]
    assert kept == pytest.approx(result.history[-1]["valid_rmse"], abs=1e-5)


def test_small_models_train_on_one_thread_and_the_setting_is_restored():
    before = torch.get_num_threads()
    with cpu_threads(torch.nn.Linear(2, 2), torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_batches_cover_every_row_and_never_leave_a_single_row_for_batch_norm():
    from cfmodel.training.loop import batch_bounds

    assert batch_bounds(10, 4) == [0, 4, 8, 10]
    assert batch_bounds(9, 4) == [0, 4, 9]
    assert batch_bounds(1, 4) == [0, 1]
    data = rating_interactions(n=257)  # 256 + 1: the last row would be a batch of its own
    config = TrainConfig.for_model("nn", epochs=1, bs=256)
    result = fit(model_for(config, 200, 150, (0.0, 5.5)), data, None, config, torch.device("cpu"), progress=False)
    assert len(result.batch_losses) == 1


def test_data_parallel_shares_split_each_batch_by_user_and_weigh_to_the_whole_batch_gradient():
    """What data-parallel processes compute for one batch, averaged as DistributedDataParallel
    averages it, is the one-process gradient of that batch, for the ranking objective too."""
    from cfmodel.training.loop import DataParallel, _Objective
    from cfmodel.training.losses import SoftmaxLoss

    data = choice_interactions(n_users=40, n_items=30, per_user=6)
    config = TrainConfig(model="rank", n_factors=8, history_dropout=0.0)
    model = model_for(config, 40, 30, None)
    loss_fn = SoftmaxLoss(30, n_negatives=30, item_counts=torch.ones(30), n_users=40)
    loss_fn.prepare(data)
    users, items, ratings = (torch.as_tensor(a) for a in (data.users, data.items, data.ratings))
    batch = torch.arange(0, 101)
    objective = _Objective(model.train(), loss_fn)

    def gradients(rows: torch.Tensor, weight: float = 1.0) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=False)
        (objective(users[rows], items[rows], ratings[rows]) * weight).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    whole = gradients(batch)
    shares = [DataParallel(rank, 3, lambda m: m).take(batch, users) for rank in range(3)]
    taken = torch.cat([rows for rows, _ in shares])
    assert sorted(taken.tolist()) == batch.tolist()  # every row once, in one process
    for rows, _ in shares:
        assert len(set(users[rows].tolist()) & set(users[batch[~torch.isin(batch, rows)]].tolist())) == 0
    averaged = [sum(parts) / 3 for parts in zip(*(gradients(rows, weight) for rows, weight in shares))]
    for got, expected in zip(averaged, whole):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # A process with no user in the batch still steps, with no weight.
    rows, weight = DataParallel(1, 2, lambda m: m).take(torch.tensor([0, 1]), torch.tensor([4, 6]))
    assert weight == 0.0 and len(rows) == 1


@pytest.mark.parametrize("model_type", ["nn", "rank"])
def test_large_models_take_sparse_table_gradients_and_step_only_the_touched_rows(monkeypatch, model_type):
    """Above ROW_UPDATES_PARAMS (lowered here), autograd models' embedding gradients come as sparse
    rows and only those rows step: one step moves every weight as torch's dense AdamW does, later
    steps leave a row no rating touches where it was (dense AdamW decays it), and the tables are dense
    modules again once training ends."""
    import cfmodel.training.loop as loop

    data = rating_interactions(n_users=60, n_items=40, n=600)
    # Nobody is user 59 and nobody rated item 39.
    users, items = np.where(data.users == 59, 0, data.users), np.where(data.items == 39, 0, data.items)
    data = type(data)(users, items, data.ratings, data.timestamps)
    options = dict(n_factors=8, bs=len(data), valid_pct=0.0, patience=0, seed=3)
    if model_type == "nn":
        options.update(layers=(16,), ps=0.0, embed_p=0.0)
    else:
        options.update(n_negatives=8)

    y_range = (0.0, 5.5) if model_type == "nn" else None

    def trained(threshold: int, epochs: int, wd: float) -> torch.nn.Module:
        monkeypatch.setattr(loop, "ROW_UPDATES_PARAMS", threshold)
        config = TrainConfig.for_model(model_type, epochs=epochs, wd=wd, bias_wd=wd, **options)
        model = model_for(config, 60, 40, y_range)
        fit(model, data, None, config, torch.device("cpu"), progress=False)
        return model

    sparse, dense = trained(0, 1, 0.0), trained(10**12, 1, 0.0)
    for (name, ours), theirs in zip(sparse.state_dict().items(), dense.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=name)
    sparse, dense = trained(0, 3, 0.5), trained(10**12, 3, 0.5)
    initial = model_for(TrainConfig.for_model(model_type, **options), 60, 40, y_range)
    # The nn's row of user 59; the rank model's context vector of item 39 (it is in no one's history).
    table, row = ("u_weight", 59) if model_type == "nn" else ("c_weight", 39)
    assert torch.equal(getattr(sparse, table).weight[row], getattr(initial, table).weight[row])
    assert not torch.equal(getattr(dense, table).weight[row], getattr(initial, table).weight[row])
    assert not any(m.sparse for m in sparse.modules() if isinstance(m, torch.nn.Embedding))


@pytest.mark.parametrize("lazy", [False, True])
def test_the_dot_models_packed_steps_make_the_updates_of_autograd_and_torchs_adamw(monkeypatch, lazy):
    """The packed table's steps (fit's path for the dot model) against the same model trained through
    autograd and the optimiser: same weights, same per-step losses, over three epochs of the one-cycle
    schedule, with a last batch of another size and different decays for the vectors and biases.
    Above ROW_UPDATES_PARAMS (lowered here) both step only the rows a batch touched: the autograd path
    through sparse embedding gradients and `LeanAdamW.step_rows`."""
    import cfmodel.training.loop as loop
    from cfmodel.training.losses import RatingLoss

    if lazy:
        monkeypatch.setattr(loop, "ROW_UPDATES_PARAMS", 0)
    data = rating_interactions(n_users=50, n_items=40, n=1000)
    # Nobody is user 49 and nobody rated item 39: the lazy steps never move them.
    users, items = np.where(data.users == 49, 0, data.users), np.where(data.items == 39, 0, data.items)
    data = type(data)(users, items, data.ratings, data.timestamps)
    config = TrainConfig.for_model("dot", n_factors=6, epochs=3, bs=96, wd=0.4, bias_wd=0.05, lr=2e-2, patience=0)
    assert loop.batch_bounds(len(data), config.bs)[-2:] == [960, 1000]

    def trained(packed: bool) -> tuple[torch.nn.Module, FitResult]:
        if not packed:
            monkeypatch.setattr(RatingLoss, "trains_packed", staticmethod(lambda model: False))
        model = model_for(config, 50, 40, (0.0, 5.5))
        return model, fit(model, data, None, config, torch.device("cpu"), progress=False)

    (packed, packed_fit), (autograd, autograd_fit) = trained(True), trained(False)
    for (name, ours), theirs in zip(packed.state_dict().items(), autograd.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5, msg=name)
    np.testing.assert_allclose(packed_fit.batch_losses, autograd_fit.batch_losses, rtol=1e-4)
    initial = model_for(config, 50, 40, (0.0, 5.5))
    assert not torch.equal(packed.u_bias.weight, initial.u_bias.weight)  # it did train
    untouched = torch.equal(packed.u_weight.weight[49], initial.u_weight.weight[49])
    assert untouched == lazy and torch.equal(packed.i_bias.weight[39], initial.i_bias.weight[39]) == lazy
