"""Why an item is listed: the item from the user's own history that most supports it.

For each listed item, every item the user rated is weighed by the model's `support` (the exact
contribution of that rated item to the score for the ranking model that computes users from their
history; the similarity of the two items' vectors for the others), and the strongest one is named
in the recommendations' `because_item_id`.

Users are weighed in groups of similar history length, each group as one batched matrix product
of its [users, longest history, factors] rated vectors with its [users, factors, n] listed ones,
so the work is one multiply-add per (rated item, listed item, factor) and little padding.
"""

from __future__ import annotations

import numpy as np
import torch

from cfmodel.training.models import CollabModel

USERS_PER_GROUP = 64


def because_items(model: CollabModel, rows: np.ndarray, cols: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[users, n] model item indices: for each listed item (`items`, -1 = empty slot) the rated item
    (cells `rows`, `cols`, sorted by row: row of the block, model item index) that supports it most;
    -1 where the user rated nothing the model knows, or the slot is empty."""
    users, n = items.shape
    out = np.full(items.shape, -1, np.int64)
    known = cols < model.n_items
    rows, cols = rows[known], cols[known]
    if len(rows) == 0 or n == 0:
        return out
    counts = np.bincount(rows, minlength=users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    by_length = np.argsort(counts, kind="stable")
    by_length = by_length[counts[by_length] > 0]
    with torch.inference_mode():
        for first in range(0, len(by_length), USERS_PER_GROUP):
            group = by_length[first : first + USERS_PER_GROUP]
            longest = int(counts[group].max())
            offsets = np.arange(longest)
            present = offsets[None, :] < counts[group][:, None]
            rated = cols[np.where(present, starts[group][:, None] + offsets[None, :], 0)]
            listed = torch.as_tensor(np.maximum(items[group], 0))
            support = model.support(torch.as_tensor(rated), listed, torch.as_tensor(counts[group])).float()
            support[torch.as_tensor(~present)] = -torch.inf
            strongest = support.argmax(dim=1).numpy()  # [group, n]: position in the history
            out[group] = np.take_along_axis(rated, strongest, axis=1)
    out[items < 0] = -1
    return out
