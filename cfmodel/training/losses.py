"""Training objectives: squared error for the rating models, softmax or BPR for the ranking model.

The ranking objectives treat every rating (at or above `min_rating`) as a positive for its user
and every other item as a negative, so the model learns which items a user chooses to rate,
which is what a top-N list has to predict. With a catalog no larger than `n_negatives` the
softmax runs over all items; beyond that it samples `n_negatives` items per batch, shared by the
batch, with probability ~ popularity^0.75 and the logQ correction that keeps the sampled softmax
an unbiased estimate of the full one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfmodel.errors import CfrecError
from cfmodel.training.config import RANKING_LOSSES, TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.models import CollabModel, EmbeddingDotBias, EmbeddingDotRank

NEGATIVE_SAMPLING_POWER = 0.75


class RatingLoss:
    """Mean squared error between predicted and actual ratings."""

    def prepare(self, data: Interactions) -> Interactions:
        return data

    def order(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """An epoch's row order: a shuffle of all rows."""
        return torch.randperm(len(users), generator=generator, device=users.device)

    def __call__(
        self, model: nn.Module, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor
    ) -> torch.Tensor:
        return F.mse_loss(model(users, items).float(), ratings)

    @staticmethod
    def trains_packed(module: nn.Module) -> bool:
        """Whether `module` trains on a packed table with its gradients computed by hand
        (`cfmodel.training.packed`): the dot model itself, not a wrapper of it."""
        return type(module) is EmbeddingDotBias


class _RankingLoss:
    """What both ranking objectives share: the positives, each user's history on the device, and
    batches that keep a user's ratings together, so that a batch computes each user's vector and
    scores once for all of that user's positives (the softmax over the catalog is per user, not
    per rating)."""

    def __init__(
        self,
        n_items: int,
        min_rating: float | None,
        weight_by_rating: bool,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        n_users: int | None = None,
    ) -> None:
        self.n_items = n_items
        self.n_users = n_users
        self.min_rating = min_rating
        self.weight_by_rating = weight_by_rating
        self.generator = generator
        self.device = torch.device(device)
        self.history: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, data: Interactions) -> Interactions:
        """The positives: ratings at or above `min_rating` (all of them when None). Every rating
        of `data` is the users' history, what a model that encodes histories sees of them."""
        n_users = self.n_users or int(data.users.max(initial=-1)) + 1
        self.history = tuple(torch.as_tensor(a, device=self.device) for a in data.by_user(n_users))
        if self.min_rating is None:
            return data
        kept = data.subset(np.flatnonzero(data.ratings >= self.min_rating))
        if len(kept) == 0:
            raise CfrecError(f"no rating is >= min_rating {self.min_rating}: nothing to train the ranking model on")
        return kept

    def order(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """An epoch's row order: users in random order, each user's rows together."""
        rank = torch.randperm(int(users.max()) + 1, generator=generator, device=users.device)
        return torch.argsort(rank[users], stable=True)

    def _user_vectors(self, model: EmbeddingDotRank, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(one vector per distinct user of the batch, each row's position among them)."""
        distinct, inverse = torch.unique(users, return_inverse=True)
        return model.user_vectors(distinct, self.history), inverse

    def _mean(self, losses: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        if self.weight_by_rating:
            return (losses * ratings).sum() / ratings.sum()
        return losses.mean()


class SoftmaxLoss(_RankingLoss):
    """Cross-entropy of the rated item against the catalog (full, or sampled with logQ correction)."""

    def __init__(
        self,
        n_items: int,
        n_negatives: int,
        item_counts: torch.Tensor,
        min_rating: float | None = None,
        weight_by_rating: bool = False,
        generator: torch.Generator | None = None,
        n_users: int | None = None,
    ) -> None:
        super().__init__(n_items, min_rating, weight_by_rating, generator, item_counts.device, n_users)
        self.n_negatives = int(n_negatives)
        self.full = self.n_negatives <= 0 or self.n_negatives >= n_items
        if not self.full:
            weights = item_counts.double().clamp(min=1).pow(NEGATIVE_SAMPLING_POWER)
            self.sampling = (weights / weights.sum()).float()
            self.log_expected = torch.log(self.sampling * self.n_negatives)

    def __call__(
        self, model: EmbeddingDotRank, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor
    ) -> torch.Tensor:
        vectors, inverse = self._user_vectors(model, users)
        if self.full:
            log_probs = F.log_softmax(model.item_logits(vectors).float(), dim=1)
            return self._mean(-log_probs[inverse, items], ratings)
        negatives = torch.multinomial(self.sampling, self.n_negatives, replacement=True, generator=self.generator)
        positive = model.pair_scores(vectors[inverse], items).float() - self.log_expected[items]
        # The negatives' scores are the same for all of a user's rows: their sum of exponentials is
        # taken once per user ([users, negatives], not [rows, negatives]), shifted by the user's
        # largest score for stability.
        negative = model.item_logits(vectors, negatives).float() - self.log_expected[negatives]
        shift = negative.detach().max(dim=1).values
        totals = torch.exp(negative - shift[:, None]).sum(dim=1)[inverse]
        # Accidental hits, negatives that are the row's own positive, leave its sum: each scored
        # exactly as the positive is.
        hits = torch.bincount(negatives, minlength=self.n_items)[items]
        shift = shift[inverse]
        others = (totals - hits * torch.exp(positive - shift)).clamp(min=0)
        losses = torch.logaddexp(positive, shift + torch.log(others)) - positive
        return self._mean(losses, ratings)


class BprLoss(_RankingLoss):
    """Bayesian personalised ranking: log-sigmoid of (rated item - one uniformly drawn item)."""

    def __call__(
        self, model: EmbeddingDotRank, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor
    ) -> torch.Tensor:
        negatives = torch.randint(0, self.n_items, items.shape, device=items.device, generator=self.generator)
        vectors, inverse = self._user_vectors(model, users)
        vectors = vectors[inverse]
        margin = (model.pair_scores(vectors, items) - model.pair_scores(vectors, negatives)).float()
        return self._mean(-F.logsigmoid(margin), ratings)


def make_loss(
    model: CollabModel, config: TrainConfig, train: Interactions, device: torch.device, generator: torch.Generator
) -> RatingLoss | SoftmaxLoss | BprLoss:
    """The objective that trains `model` under `config`."""
    if model.predicts_ratings:
        return RatingLoss()
    if config.loss == "softmax":
        counts = torch.as_tensor(train.item_counts(model.n_items), device=device)
        return SoftmaxLoss(
            model.n_items,
            config.n_negatives,
            counts,
            config.min_rating,
            config.weight_by_rating,
            generator,
            model.n_users,
        )
    if config.loss == "bpr":
        return BprLoss(model.n_items, config.min_rating, config.weight_by_rating, generator, device, model.n_users)
    raise CfrecError(f"unknown ranking loss '{config.loss}' (use {' or '.join(RANKING_LOSSES)})")
