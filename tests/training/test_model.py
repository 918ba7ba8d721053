import pickle

import pytest
import torch

from cfmodel.errors import CfrecError
from cfmodel.training.config import TrainConfig
from cfmodel.training.models import (
    MODEL_TYPES,
    CollabModel,
    EmbeddingDotBias,
    EmbeddingDotRank,
    build_model,
    default_y_range,
    emb_sz_rule,
    model_for,
)
from cfmodel.training.neural import EmbeddingNN

N_USERS, N_ITEMS = 7, 11


def make(model_type: str, **overrides):
    return model_for(TrainConfig.for_model(model_type, **overrides), N_USERS, N_ITEMS, (0.0, 5.5))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_forward_backward_shapes_and_only_batch_rows_get_gradients(model_type):
    model = make(model_type, history_dropout="none")  # user rows learned, not computed
    assert model.model_type == model_type
    users, items = torch.tensor([0, 3, 6]), torch.tensor([10, 0, 4])
    out = model(users, items)
    assert out.shape == (3,)
    out.sum().backward()
    assert model.u_weight.weight.grad.shape == model.u_weight.weight.shape
    touched = model.u_weight.weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched == [0, 3, 6]
    touched_items = model.i_weight.weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched_items == [0, 4, 10]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_score_all_matches_forward_on_every_pair(model_type):
    model = make(model_type, layers=(8, 4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        # Scoring folds each BatchNorm's running statistics into the next layer: make them matter.
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.2, 3.0)
        users = torch.tensor([5, 0, 2])
        block = model.score_all(users)
        assert block.shape == (3, N_ITEMS) and block.dtype == torch.float32
        pairs = model(users.repeat_interleave(N_ITEMS), torch.arange(N_ITEMS).repeat(3)).view(3, N_ITEMS)
    torch.testing.assert_close(block, pairs, rtol=1e-5, atol=1e-5)


def test_nn_without_batchnorm_scores_as_forward():
    model = EmbeddingNN(N_USERS, N_ITEMS, layers=(8, 4, 3), use_bn=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        users = torch.tensor([1, 3])
        pairs = model(users.repeat_interleave(N_ITEMS), torch.arange(N_ITEMS).repeat(2)).view(2, N_ITEMS)
        torch.testing.assert_close(model.score_all(users), pairs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pairs_per_chunk", [N_ITEMS * 2, 4], ids=["two-users", "part-of-a-user"])
def test_nn_score_all_in_chunks_equals_one_pass(monkeypatch, pairs_per_chunk):
    import cfmodel.training.neural as neural

    model = make("nn").eval()
    users = torch.arange(N_USERS)
    with torch.no_grad():
        monkeypatch.setattr(neural, "NN_PAIRS_PER_CHUNK", N_ITEMS * N_USERS)
        whole = model.score_all(users)
        monkeypatch.setattr(neural, "NN_PAIRS_PER_CHUNK", pairs_per_chunk)
        chunked = model.score_all(users)
    torch.testing.assert_close(whole, chunked)


def test_nn_scoring_follows_new_weights_and_ships_without_its_cache():
    model = make("nn").eval()
    users = torch.arange(N_USERS)
    other = make("nn", seed=1).eval()
    with torch.no_grad():
        first = model.score_all(users)
        assert "_scoring_cache" in model.__dict__  # item parts kept for the next block of users
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model.score_all(users), other.score_all(users))
        model.hidden[0][2].running_mean.add_(1.0)  # a buffer alone changes the folded layers
        moved = model.score_all(users)
    assert not torch.allclose(moved, other.score_all(users))
    assert not torch.allclose(first, moved)
    shipped = pickle.loads(pickle.dumps(model))
    assert "_scoring_cache" not in shipped.__dict__
    with torch.no_grad():
        torch.testing.assert_close(shipped.score_all(users), moved)


@pytest.mark.parametrize(
    "model",
    [
        EmbeddingDotBias(3, 3, n_factors=4, y_range=(1.0, 5.0)),
        EmbeddingNN(3, 3, layers=(4,), y_range=(1.0, 5.0)),
    ],
)
def test_rating_predictions_stay_inside_y_range_even_for_extreme_weights(model):
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 50)
        out = model(torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 2]))
        everything = model.score_all(torch.arange(3))
    assert torch.all(out >= 1.0) and torch.all(out <= 5.0)
    assert torch.all(everything >= 1.0) and torch.all(everything <= 5.0)


def test_dot_y_range_reaches_both_ends():
    model = EmbeddingDotBias(3, 3, n_factors=4, y_range=(1.0, 5.0))
    with torch.no_grad():
        model.u_weight.weight.fill_(10.0)
        model.i_weight.weight[0].fill_(10.0)
        model.i_weight.weight[1].fill_(-10.0)
    out = model(torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert out[0] > 4.99 and out[1] < 1.01


def test_default_y_range_matches_fastai_for_five_stars():
    assert default_y_range(1.0, 5.0) == (0.0, 5.5)
    assert default_y_range(0.5, 5.0) == (0.0, 5.5625)
    low, high = default_y_range(0.0, 10.0)
    assert low == 0.0 and high == 11.25


def test_embedding_size_rule_is_fastais():
    assert emb_sz_rule(943) == 74 and emb_sz_rule(1682) == 102
    assert emb_sz_rule(2) == 2
    assert emb_sz_rule(10_000_000) == 600
    model = EmbeddingNN(943, 1682)
    assert (model.user_size, model.item_size) == (74, 102)
    assert model.hidden[0][0].in_features == 176 and model.layer_sizes == [100, 50]


def test_nn_follows_fastais_block_layout():
    model = EmbeddingNN(10, 20, layers=(8, 4), ps=[0.1, 0.2], embed_p=0.05)
    first, second = model.hidden
    assert [type(m).__name__ for m in first] == ["Linear", "ReLU", "BatchNorm1d", "Dropout"]
    assert first[0].bias is None and first[3].p == 0.1 and second[3].p == 0.2
    assert model.emb_drop.p == 0.05 and model.out.out_features == 1
    no_bn = EmbeddingNN(10, 20, layers=(8,), use_bn=False)
    assert [type(m).__name__ for m in no_bn.hidden[0]] == ["Linear", "ReLU"] and no_bn.hidden[0][0].bias is not None


def test_nn_rejects_mismatched_dropout():
    with pytest.raises(CfrecError, match="one value per layer"):
        EmbeddingNN(10, 20, layers=(8, 4), ps=[0.1])


def test_rank_model_has_no_user_bias_and_ranks_by_logits():
    model = EmbeddingDotRank(4, 6, n_factors=3)
    assert not hasattr(model, "u_bias") and not model.predicts_ratings
    with torch.no_grad():
        model.i_bias.weight[:, 0] = torch.arange(6, dtype=torch.float32)
        model.u_weight.weight.zero_()
        order = model.score_all(torch.tensor([1])).argsort(descending=True)[0].tolist()
    assert order == [5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_hparams_rebuild_the_same_architecture(model_type):
    model = make(model_type)
    rebuilt = build_model(model_type, **model.hparams())
    rebuilt.load_state_dict(model.state_dict())
    assert type(rebuilt) is type(model)


def test_unknown_model_type_is_a_clear_error():
    with pytest.raises(CfrecError, match="unknown model type 'svd'"):
        build_model("svd", n_users=1, n_items=1)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_factor_tables_shapes(model_type):
    tables = make(model_type).factor_tables()
    assert tables["user_vectors"].shape[0] == N_USERS and tables["item_vectors"].shape[0] == N_ITEMS
    assert tables["user_bias"].shape == (N_USERS,) and tables["item_bias"].shape == (N_ITEMS,)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_ranks_as_it_scores(model_type):
    """Scoring ranks a block on `ranking_scores` and shows `shown_scores` of the winners: that must be
    the order and the values of `score_all`."""
    model = make(model_type).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        users = torch.arange(N_USERS)
        ranked = model.ranking_scores(users)
        full = model.score_all(users)
        assert isinstance(model, CollabModel)
        # Ranked order never puts a lower score above a higher one (the sigmoid may tie scores).
        order = ranked.argsort(dim=1, descending=True)
        assert (full.gather(1, order).diff(dim=1) <= 0).all()
        best, index = ranked.topk(3, dim=1)
        torch.testing.assert_close(model.shown_scores(users, best), full.gather(1, index))


def test_a_model_must_implement_the_interface():
    class Half(CollabModel):
        def hparams(self):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        Half()
