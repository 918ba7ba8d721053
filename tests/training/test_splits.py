import numpy as np
import pytest

from cfmodel.errors import CfrecError
from cfmodel.training.interactions import Interactions
from cfmodel.training.splits import id_keys, latest_split, random_split, split


def test_random_split_is_reproducible_disjoint_and_complete():
    users, items = np.arange(10_000) // 100, np.arange(10_000) % 100
    train, valid = random_split(users, items, 0.2, seed=7)
    again_train, again_valid = random_split(users, items, 0.2, seed=7)
    assert 1900 <= len(valid) <= 2100 and len(train) + len(valid) == 10_000
    assert np.array_equal(valid, again_valid) and np.array_equal(train, again_train)
    assert not set(train) & set(valid)
    assert sorted([*train, *valid]) == list(range(10_000))
    assert not np.array_equal(valid, random_split(users, items, 0.2, seed=8)[1])
    # No user or item is held out wholesale: the share is about the same for each.
    assert np.bincount(users[valid], minlength=100).max() <= 40
    assert np.bincount(items[valid], minlength=100).max() <= 40


def test_a_rating_held_out_one_night_is_held_out_every_night():
    """Keyed by the ids, not the row: new ratings, new users and reordered rows change nothing."""
    rng = np.random.default_rng(0)
    pairs = {(f"u{u}", f"i{i}") for u, i in rng.integers(0, 300, (3000, 2))}
    first = sorted(pairs)
    second = list(rng.permutation(first + [(f"new{u}", f"i{u}") for u in range(500)]))

    def held_out(rows):
        ids = np.array(rows, dtype=object)
        user_ids, users = np.unique(ids[:, 0], return_inverse=True)
        item_ids, items = np.unique(ids[:, 1], return_inverse=True)
        data = Interactions(users, items, np.ones(len(rows)))
        _, valid = split(data, 0.2, seed=3, keys=(id_keys(user_ids), id_keys(item_ids)))
        return {(user_ids[u], item_ids[i]) for u, i in zip(valid.users, valid.items)}

    first_valid, second_valid = held_out(first), held_out([tuple(r) for r in second])
    assert first_valid and first_valid == {pair for pair in second_valid if pair in pairs}


def test_latest_split_holds_out_each_users_latest_ratings():
    #            user 0: 5 ratings        user 1: 2     user 2: 1
    users = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    stamps = np.array([50, 10, 40, 20, 30, 7, 9, 1])
    train, valid = latest_split(users, stamps, 0.4)
    # user 0 keeps its 3 earliest (t=10,20,30), holds out t=40,50; user 1 holds out 1 of 2 (t=9);
    # user 2's only rating stays in train.
    assert valid.tolist() == [0, 2, 6]
    assert train.tolist() == [1, 3, 4, 5, 7]


def test_latest_split_breaks_time_ties_by_row_order():
    train, valid = latest_split(np.array([0, 0, 0]), np.array([5, 5, 5]), 0.34)
    assert valid.tolist() == [2] and train.tolist() == [0, 1]


def test_split_dispatches_and_checks():
    data = Interactions(np.arange(10) % 3, np.arange(10), np.ones(10), np.arange(10))
    train, valid = split(data, 0.3, seed=0, strategy="time")
    assert len(train) + len(valid) == 10
    assert all(data.timestamps[data.users == u].max() in valid.timestamps for u in range(3))
    with pytest.raises(CfrecError, match="needs rating timestamps"):
        split(Interactions(data.users, data.items, data.ratings), 0.2, 0, "time")
    with pytest.raises(CfrecError, match="unknown split"):
        split(data, 0.2, 0, "alphabetical")
    with pytest.raises(CfrecError, match=r"valid_pct must be in \[0, 1\)"):
        random_split(np.arange(10), np.arange(10), 1.0, 0)
