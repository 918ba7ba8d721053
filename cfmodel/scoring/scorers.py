"""How a trained model turns a block of user indices into a [users, items] block of scores.

Two ways, chosen per model: a model with `score_all(users)` scores itself (the neural and ranking
models), and the dot model is scored from its factors, u . i + b_u + b_i, as one matrix product.
Either way the block is ranked on these scores and `report` turns the winners' scores into what
the recommendations table shows.
"""

from __future__ import annotations

import numpy as np
import torch

from cfmodel.scoring.topk import sigmoid_range

# Scores held at once per block: 32M float32 = 128 MB, whatever the catalog size.
DEFAULT_PAIRS_PER_BLOCK = 32 * 1024 * 1024


class FactorScorer:
    """The dot model from its numpy factors; ranks on logits, reports predicted ratings.

    A user's bias shifts all of that user's logits equally, so blocks rank on u . i + b_i (one
    fused matrix product and add) and the bias joins only the N winners before the sigmoid.
    """

    def __init__(
        self, user_vectors, user_bias, item_vectors, item_bias, y_range, pairs_per_block=DEFAULT_PAIRS_PER_BLOCK
    ) -> None:
        self.user_vectors = torch.as_tensor(np.ascontiguousarray(user_vectors, np.float32))
        self.user_bias = np.ascontiguousarray(user_bias, np.float32)
        self.item_vectors = torch.as_tensor(np.ascontiguousarray(item_vectors, np.float32))
        self.item_bias = torch.as_tensor(np.ascontiguousarray(item_bias, np.float32))
        self.y_range = tuple(float(v) for v in y_range)
        self.pairs_per_block = int(pairs_per_block)

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    def scores(self, users: np.ndarray) -> torch.Tensor:
        return torch.addmm(self.item_bias, self.user_vectors[torch.as_tensor(users)], self.item_vectors.T)

    def report(self, users: np.ndarray, best: np.ndarray) -> np.ndarray:
        return sigmoid_range(best + self.user_bias[users][:, None], *self.y_range).astype(np.float32)


class ModuleScorer:
    """Any model with `score_all(users: LongTensor) -> FloatTensor [users, n_items]`."""

    def __init__(self, module: torch.nn.Module, n_items: int, pairs_per_block: int | None = None) -> None:
        self.module = module.cpu().eval()
        self._n_items = int(n_items)
        # A model whose per-pair cost is more than one float (hidden layers) says how many pairs
        # it can score at once; others get the default.
        self.pairs_per_block = int(pairs_per_block or getattr(module, "score_pairs_per_block", DEFAULT_PAIRS_PER_BLOCK))

    @property
    def n_items(self) -> int:
        return self._n_items

    def scores(self, users: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            block = self.module.score_all(torch.as_tensor(np.asarray(users), dtype=torch.long))
        if tuple(block.shape) != (len(users), self.n_items):
            raise ValueError(f"score_all returned shape {tuple(block.shape)}, expected ({len(users)}, {self.n_items})")
        return block

    def report(self, users: np.ndarray, best: np.ndarray) -> np.ndarray:
        return np.asarray(best, np.float32)


def scorer_for(model) -> FactorScorer | ModuleScorer:
    """The scorer for a loaded `artifact.ModelArtifact`.

    The dot model goes through its factors even though it has `score_all`: the ranking is the
    same (the sigmoid is monotonic), but applying the sigmoid to the N winners instead of every
    pair makes scoring about three times faster. Every other model scores itself.
    """
    module = model.model
    is_dot = getattr(module, "model_type", "dot") == "dot" and "y_range" in model.config
    if is_dot or not callable(getattr(module, "score_all", None)):
        return FactorScorer(**model.factors(), y_range=model.config["y_range"])
    return ModuleScorer(module, len(model.items))


def users_per_block(scorer) -> int:
    return max(1, scorer.pairs_per_block // max(scorer.n_items, 1))
