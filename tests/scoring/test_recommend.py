"""Scoring one Arrow batch the way an executor does, without Spark."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from cfmodel.errors import CfrecError
from cfmodel.scoring.popularity import Popularity
from cfmodel.scoring.recommend import ScoringContext, model_top_n, recommend_batch
from cfmodel.training.config import MODEL_TYPES, TrainConfig
from cfmodel.training.ids import IdIndex
from cfmodel.training.interactions import Interactions
from cfmodel.training.models import model_for


def random_model(model_type="dot", n_users=4, n_items=7, seed=0):
    model = model_for(TrainConfig.for_model(model_type, n_factors=3, layers=(4,)), n_users, n_items, (0.0, 5.5))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model.eval()


def context(model, n=3, trained_users=None, untrained_items=()):
    # Catalog: the model's 7 items, then "new", an item that appeared after training.
    catalog_ids = np.array([f"i{j}" for j in range(7)] + ["new"], dtype=object)
    counts = np.array([1, 2, 3, 4, 5, 6, 7, 100])
    return ScoringContext(
        model=model,
        users=IdIndex(["u0", "u1", "u2", "u3"]),
        trained_users=trained_users,
        untrained_items=np.asarray(untrained_items, np.int64),
        catalog_ids=catalog_ids,
        titles=np.array([f"Title {c}" for c in catalog_ids], dtype=object),
        popularity=Popularity.from_counts(counts, catalog_ids),
        n=n,
    )


def batch(rated: dict):
    return pa.RecordBatch.from_arrays(
        [pa.array(list(rated)), pa.array(list(rated.values()), pa.list_(pa.int32()))], names=["user_id", "rated"]
    )


def score_batch(ctx, rated):
    return pa.Table.from_batches(list(recommend_batch(ctx, batch(rated)))).to_pandas()


def test_known_users_get_model_lists_and_unknown_users_the_popular_list():
    model = random_model()
    ctx = context(model)
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
    assert list(recs.columns) == [
        "user_id",
        "rank",
        "item_id",
        "score",
        "predicted_rating",
        "source",
        "title",
        "because_item_id",
        "because_title",
    ]
    # A rating model's score is its predicted rating; the popular list predicts none.
    model_rows = recs[recs.source == "model"]
    assert (model_rows["predicted_rating"] == model_rows["score"]).all() and stranger["predicted_rating"].isna().all()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_type_lists_its_best_unrated_items_with_the_scores_of_score_all(model_type):
    model = random_model(model_type, seed=3)
    rated = {"u0": [3], "u1": [], "u2": [0, 6], "u3": [1, 2]}
    recs = score_batch(context(model), rated)
    with torch.no_grad():
        expected = model.score_all(torch.arange(4)).numpy()
    for user, seen in rated.items():
        row = expected[int(user[1])].copy()
        row[seen] = -np.inf
        best = np.argsort(-row, kind="stable")[:3]
        rows = recs[recs.user_id == user]
        assert rows["item_id"].tolist() == [f"i{j}" for j in best]
        np.testing.assert_allclose(rows["score"], row[best], rtol=1e-5)


def test_small_blocks_give_the_same_answer():
    model = random_model(seed=5)
    rated = {"u0": [1], "u1": [2], "u2": [], "u3": [4], "x": [], "y": [0]}
    whole = score_batch(context(model), rated)
    model.pairs_per_block = 7  # one user per block
    one_user_blocks = score_batch(context(model), rated)
    # The same lists; scores to the last bit only up to the matrix product's blocking (CPU-dependent).
    pd.testing.assert_frame_equal(
        whole.sort_values(["user_id", "rank"]).reset_index(drop=True),
        one_user_blocks.sort_values(["user_id", "rank"]).reset_index(drop=True),
        check_exact=False,
        rtol=1e-6,
    )


def test_nan_scores_are_refused():
    model = random_model()
    with torch.no_grad():
        model.i_weight.weight[2] = float("nan")
    with pytest.raises(ValueError, match="NaN scores"):
        score_batch(context(model), {"u0": []})


def test_rows_training_never_moved_order_no_list():
    """A user or item whose every rating was held out keeps its initial vector: the user gets the
    popular list, the item is in no model list."""
    model = random_model()
    expected = model.score_all(torch.arange(4)).detach().numpy()
    favourite = int(np.argmax(expected[0]))  # u0's best item, were it trained
    trained_users = np.array([True, False, True, True])
    ctx = context(model, trained_users=trained_users, untrained_items=[favourite])
    recs = score_batch(ctx, {"u0": [], "u1": []})
    u0 = recs[recs.user_id == "u0"]
    assert set(u0["source"]) == {"model"} and f"i{favourite}" not in set(u0["item_id"])
    assert u0["item_id"].tolist() == [f"i{j}" for j in np.argsort(-expected[0]) if j != favourite][:3]
    assert set(recs[recs.user_id == "u1"]["source"]) == {"popular"}


def test_a_ranking_model_orders_the_list_and_its_rating_model_fills_predicted_rating():
    from cfmodel.training.models import build_model

    ranker = random_model("rank", seed=5)
    lists_only = score_batch(context(ranker), {"u0": [1], "u1": []})
    assert lists_only["predicted_rating"].isna().all()  # no rating model: no predicted rating

    ranker.rater = random_model("dot", seed=6)
    ctx = context(ranker)
    ctx.scale = (1.0, 5.0)
    recs = score_batch(ctx, {"u0": [1], "u1": []})
    assert recs[["item_id", "score"]].equals(lists_only[["item_id", "score"]])  # the list is the ranker's
    with torch.no_grad():
        for user in ("u0", "u1"):
            rows = recs[recs.user_id == user]
            items = torch.as_tensor([int(i[1:]) for i in rows["item_id"]])
            expected = ranker.rater(torch.full_like(items, int(user[1])), items).numpy()
            np.testing.assert_allclose(rows["predicted_rating"], np.clip(expected, 1.0, 5.0), rtol=1e-5)
    assert recs["predicted_rating"].between(1.0, 5.0).all()
    # The pair rebuilds from its hyper-parameters, as an artifact is loaded.
    rebuilt = build_model("rank", **ranker.hparams())
    rebuilt.load_state_dict(ranker.state_dict())
    assert rebuilt.rater is not None and rebuilt.rater.model_type == "dot"


def test_each_listed_item_names_the_rated_item_that_most_supports_it():
    """Planted: the user rated i0 and i1; i0's context vector points at i5, i1's at i6, so the
    ranking model lists i5 and i6 because of i0 and i1 respectively."""
    model = model_for(TrainConfig.for_model("rank", n_factors=2, history_dropout=0.5), 4, 7, None).eval()
    with torch.no_grad():
        model.i_weight.weight.zero_()
        model.i_bias.weight.zero_()
        model.c_weight.weight.zero_()
        model.i_weight.weight[5] = torch.tensor([1.0, 0.0])
        model.i_weight.weight[6] = torch.tensor([0.0, 1.0])
        model.c_weight.weight[0] = torch.tensor([3.0, 0.0])
        model.c_weight.weight[1] = torch.tensor([0.0, 2.0])
    model.encode_users(Interactions(np.array([0, 0]), np.array([0, 1]), np.ones(2)))
    recs = score_batch(context(model, n=2), {"u0": [0, 1], "stranger": [0]})
    u0 = recs[recs.user_id == "u0"]
    assert u0["item_id"].tolist() == ["i5", "i6"]
    assert u0["because_item_id"].tolist() == ["i0", "i1"]
    assert u0["because_title"].tolist() == ["Title i0", "Title i1"]
    assert recs[recs.user_id == "stranger"]["because_item_id"].isna().all()  # a popular list says no why


def test_a_learned_vector_models_reason_is_the_rated_item_most_like_the_listed_one():
    model = random_model("dot", seed=4)
    with torch.no_grad():
        model.i_weight.weight[2] = model.i_weight.weight[6] * 3  # i2 points where i6 does
    rated = {"u1": [2, 3], "u2": []}
    recs = score_batch(context(model, n=6), rated)
    u1 = recs[recs.user_id == "u1"].set_index("item_id")
    assert u1.loc["i6", "because_item_id"] == "i2"
    assert set(u1["because_item_id"]) <= {"i2", "i3"}
    assert recs[recs.user_id == "u2"]["because_item_id"].isna().all()  # nothing rated, no reason


@pytest.mark.parametrize("model_type, history_dropout", [("rank", 0.5), ("rank", "none"), ("dot", None)])
def test_reasons_in_length_groups_match_a_plain_loop_over_each_users_history(model_type, history_dropout, monkeypatch):
    import cfmodel.scoring.because as because

    torch.manual_seed(1)
    options = {"history_dropout": history_dropout} if history_dropout is not None else {}
    model = model_for(TrainConfig.for_model(model_type, n_factors=4, **options), 30, 40, (0.0, 5.5)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 12, size=30)
    rows = np.repeat(np.arange(30), lengths)
    cols = np.concatenate([rng.choice(45, size=n, replace=False) for n in lengths])  # some beyond the model
    items = rng.integers(0, 40, size=(30, 5))
    items[3, 2:] = -1
    monkeypatch.setattr(because, "USERS_PER_GROUP", 4)
    got = because.because_items(model, rows, cols, items)
    for user in range(30):
        rated = cols[(rows == user) & (cols < 40)]
        for k, item in enumerate(items[user]):
            if item < 0 or len(rated) == 0:
                assert got[user, k] == -1
                continue
            with torch.no_grad():
                support = model.support(
                    torch.as_tensor(rated)[None], torch.tensor([[item]]), torch.tensor([len(rated)])
                )[0, :, 0]
            assert got[user, k] == rated[int(support.argmax())]


def _nn_with_users_in_groups(n_users=60, n_items=400, groups=6, seed=0):
    """An nn model whose users come in `groups` tight groups (users of a group share most of their
    taste), as trained users do, with a wide catalog."""
    model = model_for(TrainConfig.for_model("nn", n_factors=8, layers=(16, 8)), n_users, n_items, (0.0, 5.5))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
        centres = torch.randn(groups, model.u_weight.weight.shape[1], generator=generator) * 3
        noise = 0.05 * torch.randn(model.u_weight.weight.shape, generator=generator)
        model.u_weight.weight.copy_(centres[torch.arange(n_users) % groups] + noise)
    return model.eval()


def _lists(model, rated_per_user, candidates, n=10, masked=()):
    users = np.arange(model.n_users)
    rows = np.repeat(users, [len(r) for r in rated_per_user])
    cols = np.concatenate([np.asarray(r, np.int64) for r in rated_per_user])
    return model_top_n(model, users, rows, cols, n, np.asarray(masked, np.int64), candidates)


def test_nn_candidates_find_the_exact_lists_of_users_in_groups():
    model = _nn_with_users_in_groups()
    rng = np.random.default_rng(0)
    rated = [rng.choice(model.n_items, size=rng.integers(0, 30), replace=False) for _ in range(model.n_users)]
    exact_items, exact_scores = _lists(model, rated, candidates=0, masked=[3, 5])
    items, scores = _lists(model, rated, candidates=60, masked=[3, 5])

    # Only a fraction of the catalog is scored, yet the lists are the exact ones, with exact scores.
    assert 60 + 29 + 2 <= model.n_items // 4
    np.testing.assert_array_equal(items, exact_items)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5)
    for user, listed in enumerate(items):
        assert not set(listed) & (set(rated[user]) | {3, 5})


def test_nn_candidates_are_the_items_scored_and_wide_requests_score_every_item():
    model = _nn_with_users_in_groups(groups=40)
    users = torch.arange(model.n_users)
    picked = model.candidate_items(users, 50)
    assert picked.shape == (model.n_users, 50)
    items, _ = _lists(model, [[] for _ in range(model.n_users)], candidates=50)
    assert all(set(listed) <= set(cands.tolist()) for listed, cands in zip(items, picked))
    # Scores of candidates are the network's own.
    exact = model.ranking_scores(users).gather(1, picked)
    torch.testing.assert_close(model.candidate_scores(users, picked), exact, rtol=1e-5, atol=1e-5)
    # Asking for more than a quarter of the catalog scores it all: the exact lists.
    assert model.candidate_items(users, model.n_items // 4 + 1) is None
    wide, _ = _lists(model, [[] for _ in range(model.n_users)], candidates=model.n_items // 4 + 1)
    np.testing.assert_array_equal(wide, _lists(model, [[] for _ in range(model.n_users)], candidates=0)[0])


def test_candidates_change_nothing_for_models_that_score_every_item():
    model = random_model("dot", n_users=4, n_items=7)
    rated = [[0], [], [1, 2], [6]]
    np.testing.assert_array_equal(_lists(model, rated, 2, n=3)[0], _lists(model, rated, 0, n=3)[0])


def test_gathering_groups_every_users_items_as_catalog_positions(monkeypatch):
    """What each gathering task does with the rows Spark sent it: one row per user, holding the
    catalog positions of every item the user rated (duplicates and all), across output batches."""
    import cfmodel.scoring.rated as rated

    monkeypatch.setattr(rated, "RATED_BATCH_USERS", 2)
    rng = np.random.default_rng(0)
    catalog = np.array([f"i{j}" for j in range(9)], dtype=object)
    users = rng.choice([f"u{k}" for k in range(5)], 40)
    items = rng.choice(catalog, 40)
    chunks = [pa.table({"user_id": users[a:b], "item_id": items[a:b]}) for a, b in ((0, 13), (13, 40))]
    gathered = pa.Table.from_batches(list(rated.users_rated_items(pa.concat_tables(chunks), catalog)))

    assert gathered.num_rows == len(set(users)) and sorted(gathered["user_id"].to_pylist()) == sorted(set(users))
    for row in gathered.to_pylist():
        expected = sorted(int(item[1:]) for item in items[users == row["user_id"]])
        assert sorted(row["rated"]) == expected, row
    assert (
        list(rated.users_rated_items(pa.table({"user_id": [], "item_id": []}).cast(rated.RATINGS_IDS), catalog)) == []
    )
    with pytest.raises(CfrecError, match="a rating without a user_id"):
        list(rated.users_rated_items(pa.table({"user_id": ["u0", None], "item_id": ["i1", "i2"]}), catalog))
    with pytest.raises(CfrecError, match="item 'i99' of the ratings is not in the scoring catalog"):
        list(rated.users_rated_items(pa.table({"user_id": ["u0", "u1"], "item_id": ["i1", "i99"]}), catalog))
