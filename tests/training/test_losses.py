import numpy as np
import torch
import torch.nn.functional as F

from cfmodel.training.config import TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.losses import BprLoss, RatingLoss, SoftmaxLoss, make_loss
from cfmodel.training.models import EmbeddingDotBias, EmbeddingDotRank


def rank_model(n_users=5, n_items=8):
    torch.manual_seed(0)
    model = EmbeddingDotRank(n_users, n_items, n_factors=4)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def test_full_softmax_is_cross_entropy_over_the_catalog():
    model = rank_model()
    users, items = torch.tensor([0, 1, 4]), torch.tensor([7, 2, 2])
    loss = SoftmaxLoss(8, n_negatives=8, item_counts=torch.ones(8))
    assert loss.full
    expected = F.cross_entropy(model.score_all(users), items)
    torch.testing.assert_close(loss(model, users, items, torch.ones(3)), expected)


def test_sampled_softmax_masks_accidental_hits_and_approaches_the_full_loss():
    model = rank_model(n_items=50)
    users, items = torch.arange(5), torch.tensor([0, 1, 2, 3, 4])
    generator = torch.Generator().manual_seed(0)
    sampled = SoftmaxLoss(50, n_negatives=49, item_counts=torch.ones(50), generator=generator)
    assert not sampled.full
    values = torch.stack([sampled(model, users, items, torch.ones(5)) for _ in range(300)])
    assert torch.isfinite(values).all()
    full = F.cross_entropy(model.score_all(users), items)
    # With uniform sampling and the logQ correction the sampled loss estimates the full one.
    assert abs(values.mean().item() - full.item()) < 0.25 * full.item()


def test_weight_by_rating_weights_each_positive():
    model = rank_model()
    users, items = torch.tensor([0, 1]), torch.tensor([3, 4])
    per_row = F.cross_entropy(model.score_all(users), items, reduction="none")
    weighted = SoftmaxLoss(8, 0, torch.ones(8), weight_by_rating=True)
    ratings = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(weighted(model, users, items, ratings), (per_row * ratings).sum() / 4)


def test_bpr_is_log_sigmoid_of_the_margin_against_a_drawn_item():
    model = rank_model()
    generator = torch.Generator().manual_seed(5)
    bpr = BprLoss(8, None, False, generator)
    users, items = torch.tensor([0, 2]), torch.tensor([1, 6])
    negatives = torch.randint(0, 8, items.shape, generator=torch.Generator().manual_seed(5))
    expected = -F.logsigmoid(model(users, items) - model(users, negatives)).mean()
    torch.testing.assert_close(bpr(model, users, items, torch.ones(2)), expected)


def test_min_rating_keeps_only_positives():
    data = Interactions(np.array([0, 0, 1]), np.array([1, 2, 3]), np.array([2.0, 4.0, 5.0]))
    loss = SoftmaxLoss(8, 0, torch.ones(8), min_rating=4.0)
    assert loss.prepare(data).items.tolist() == [2, 3]


def test_rating_models_get_mean_squared_error():
    model = EmbeddingDotBias(3, 3, 2)
    loss = make_loss(model, TrainConfig(), Interactions([0], [0], [3.0]), torch.device("cpu"), torch.Generator())
    assert isinstance(loss, RatingLoss)
    users, items, ratings = torch.tensor([0, 1]), torch.tensor([2, 0]), torch.tensor([1.0, 5.0])
    torch.testing.assert_close(loss(model, users, items, ratings), ((model(users, items) - ratings) ** 2).mean())


def test_a_users_rows_share_one_softmax_and_give_each_rows_cross_entropy():
    model = rank_model()
    users, items = torch.tensor([3, 0, 3, 3]), torch.tensor([1, 5, 6, 1])
    loss = SoftmaxLoss(8, n_negatives=0, item_counts=torch.ones(8))
    expected = F.cross_entropy(model.score_all(users), items)
    torch.testing.assert_close(loss(model, users, items, torch.ones(4)), expected)


def test_an_epoch_keeps_each_users_rows_together_in_a_new_user_order():
    users = torch.tensor([2, 0, 1, 2, 0, 1, 1, 3])
    loss = SoftmaxLoss(8, 0, torch.ones(8))
    orders = [loss.order(users, torch.Generator().manual_seed(seed)) for seed in range(4)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(len(users)))
        in_order = users[order].tolist()
        runs = [u for n, u in enumerate(in_order) if n == 0 or in_order[n - 1] != u]
        assert sorted(runs) == [0, 1, 2, 3]  # each user appears in one run
    assert len({tuple(users[o].tolist()) for o in orders}) > 1


def history_model(n_users=4, n_items=6, dropout=0.5):
    torch.manual_seed(0)
    model = EmbeddingDotRank(n_users, n_items, n_factors=3, history_dropout=dropout)
    with torch.no_grad():
        model.c_weight.weight.normal_()
    return model


def test_a_history_models_user_vector_is_its_items_context_over_the_root_of_their_count():
    model = history_model().eval()
    history = Interactions(np.array([0, 0, 0, 2]), np.array([1, 4, 5, 2]), np.ones(4))
    model.encode_users(history)
    context = model.c_weight.weight.detach()
    torch.testing.assert_close(model.u_weight.weight[0], (context[1] + context[4] + context[5]) / 3**0.5)
    torch.testing.assert_close(model.u_weight.weight[2], context[2])
    assert not model.u_weight.weight[[1, 3]].any()  # no rating, no vector
    assert not model.u_weight.weight.requires_grad and model.c_weight.weight.requires_grad


def test_history_dropout_hides_items_only_while_training():
    model = history_model(n_users=1, n_items=200, dropout=0.8)
    history = tuple(torch.as_tensor(a) for a in Interactions(np.zeros(200), np.arange(200), np.ones(200)).by_user(1))
    users = torch.tensor([0])
    whole = model.eval().user_vectors(users, history)
    thinned = [model.train().user_vectors(users, history) for _ in range(3)]
    assert not any(torch.allclose(whole, t) for t in thinned)
    assert not torch.allclose(thinned[0], thinned[1])
    torch.testing.assert_close(model.eval().user_vectors(users, history), whole)


def test_a_thinned_history_is_the_kept_items_context_scaled_as_dropout_scales():
    """Training gathers only the kept items; the vector is that of every item weighted 0 (hidden) or
    1 / (1 - p) (kept), over the root of the weights' sum; a user whose items are all hidden gets zeros."""
    model = history_model(n_users=3, n_items=30, dropout=0.6).train()
    counts = [12, 25, 1]
    data = Interactions(np.repeat([0, 1, 2], counts), np.concatenate([np.arange(c) for c in counts]), np.ones(38))
    history = tuple(torch.as_tensor(a) for a in data.by_user(3))
    users = torch.tensor([2, 0, 1])
    torch.manual_seed(7)
    vectors = model.user_vectors(users, history)
    torch.manual_seed(7)
    hidden = torch.rand(38) < 0.6  # the rows in the order the users are asked for: 1 + 12 + 25
    weights = (~hidden).float() / 0.4
    context = model.c_weight.weight[torch.cat([torch.arange(c) for c in (1, 12, 25)])].detach()
    parts = torch.tensor([0, 1, 13, 38])
    for n in range(3):
        w, c = weights[parts[n] : parts[n + 1]], context[parts[n] : parts[n + 1]]
        expected = (w[:, None] * c).sum(0) / w.sum().clamp(min=1).sqrt()
        torch.testing.assert_close(vectors[n], expected)
    assert hidden[0] and hidden[1:13].any() and not hidden[1:13].all()  # user 2 has nothing left


def test_only_the_dot_model_itself_trains_on_a_packed_table():
    objective = RatingLoss()
    assert objective.trains_packed(EmbeddingDotBias(6, 9, n_factors=4))
    # A wrapper (DDP) or another model trains through autograd.
    assert not objective.trains_packed(torch.nn.Sequential(EmbeddingDotBias(6, 9, n_factors=4)))
    assert not objective.trains_packed(rank_model())


def test_sampled_softmax_per_user_equals_the_per_row_cross_entropy_with_hits_masked():
    """Summing each user's negatives once gives, row by row, the cross-entropy of the positive
    against the sampled negatives (logQ-corrected) with its accidental hits removed."""
    model = rank_model(n_users=4, n_items=12)
    users, items = torch.tensor([0, 0, 0, 2, 3, 3]), torch.tensor([1, 5, 5, 7, 0, 11])
    counts = torch.arange(1.0, 13.0)
    sampled = SoftmaxLoss(12, n_negatives=9, item_counts=counts, generator=torch.Generator().manual_seed(3))
    loss = sampled(model, users, items, torch.ones(6))
    negatives = torch.multinomial(sampled.sampling, 9, replacement=True, generator=torch.Generator().manual_seed(3))
    assert torch.isin(items, negatives).any()  # the case in question: some positives were also drawn
    scores = model.score_all(users) - sampled.log_expected
    positive = scores.gather(1, items[:, None])
    negative = scores[:, negatives].masked_fill(negatives[None, :] == items[:, None], float("-inf"))
    expected = -F.log_softmax(torch.cat([positive, negative], dim=1), dim=1)[:, 0].mean()
    torch.testing.assert_close(loss, expected)
