"""The embedding models: one interface, `CollabModel`, and three PyTorch modules that implement it.

    dot   fastai's EmbeddingDotBias: rating = sigmoid_range(u . i + b_u + b_i, *y_range)
    nn    fastai's EmbeddingNN: [u, i] through an MLP (Linear, ReLU, BatchNorm, Dropout blocks),
          in `cfmodel.training.neural`
    rank  the dot architecture without the y-range, trained to rank: score = u . i + b_i

Scoring, evaluation, warm start and fold-in see only the interface: which embedding tables hold
per-user and per-item rows, how to score a block of users against every item, and how to turn the
scores of the items kept into what the recommendations table shows.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cfmodel.errors import CfrecError
from cfmodel.training.config import ITEM_ITEM_MAX_ITEMS, MODEL_TYPES, TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.item_item import ease_weights, item_gram

log = logging.getLogger(__name__)

# Scores held at once when a block of users is ranked: 32M float32 = 128 MB, whatever the catalog size.
PAIRS_PER_BLOCK = 32 * 1024 * 1024
# Users whose scores set the weight of the ranking model's item-item term against its vectors' scores.
ITEM_ITEM_SCALE_USERS = 2048


def sigmoid_range(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.sigmoid(x) * (high - low) + low


def default_y_range(rating_min: float, rating_max: float) -> tuple[float, float]:
    """fastai's habit of a little headroom above the top rating: 1-5 stars -> (0, 5.5)."""
    return (min(0.0, rating_min), rating_max + (rating_max - rating_min) / 8)


def clipped(model: CollabModel, shown: np.ndarray, scale: tuple[float, float] | None) -> np.ndarray:
    """A rating model's predictions within the source's scale: its y-range has room above the top
    (fastai's habit), but a published rating never says more than the top of the scale."""
    if not model.predicts_ratings or scale is None:
        return shown
    return np.clip(shown, scale[0], scale[1])


def emb_sz_rule(n_categories: int) -> int:
    """fastai's embedding-size rule of thumb."""
    return min(600, round(1.6 * n_categories**0.56))


def embedding_table(n: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.trunc_normal_(emb.weight, std=0.01)  # fastai's init for collab embeddings
    return emb


def scratch_buffer(
    buffers: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], like: torch.Tensor
) -> torch.Tensor:
    """A `shape` view of the buffer `name`, grown when too small."""
    size = math.prod(shape)
    if name not in buffers or buffers[name].numel() < size:
        buffers[name] = like.new_empty(size)
    return buffers[name][:size].view(shape)


class CollabModel(nn.Module, ABC):
    """What every model is: a `u_weight` and an `i_weight` embedding whose rows are the users and
    items, plus whatever the model adds.

    `user_tables` / `item_tables` name the embeddings with one row per user / item (warm start and
    fold-in copy or refit those rows); `bias_tables` those that get the bias weight decay.
    """

    model_type: ClassVar[str]
    predicts_ratings: ClassVar[bool]  # trained on squared error; False: trained to rank
    user_tables: ClassVar[tuple[str, ...]]
    item_tables: ClassVar[tuple[str, ...]]
    bias_tables: ClassVar[tuple[str, ...]]
    pairs_per_block: ClassVar[int] = PAIRS_PER_BLOCK  # how many (user, item) scores to hold at once

    u_weight: nn.Embedding
    i_weight: nn.Embedding

    @property
    def n_users(self) -> int:
        return self.u_weight.num_embeddings

    @property
    def n_items(self) -> int:
        return self.i_weight.num_embeddings

    @property
    def device(self) -> torch.device:
        return self.i_weight.weight.device

    @abstractmethod
    def hparams(self) -> dict:
        """The keyword arguments that rebuild this model (stored in the artifact's config.json)."""

    @abstractmethod
    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """One score per (user, item) pair."""

    @abstractmethod
    def ranking_scores(self, users: torch.Tensor) -> torch.Tensor:
        """[len(users), n_items] scores that order each user's items as `score_all` does."""

    def shown_scores(self, users: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """`ranking_scores` of some of each user's items ([len(users), k]) -> the scores to show."""
        return scores

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """[len(users), n_items]: the predicted rating (rating models) or ranking score of every item."""
        return self.shown_scores(users, self.ranking_scores(users))

    def list_scores(self, users: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        """[len(users), n_items] scores that order the users' lists, given the items each user rated
        (cells `rows`, `cols`: position in `users`, item index; items beyond the catalog ignored).
        `ranking_scores` for models whose scores depend on the user's row alone."""
        return self.ranking_scores(users)

    def fit_closed_form(self, train: Interactions) -> None:
        """Fit what the model solves in closed form from its training ratings, once its trained
        weights are final and its user rows encoded; nothing for most models."""

    def once_per_weights(self, name: str, compute: Callable[[], Any]) -> Any:
        """`compute()` without autograd, kept until a parameter or buffer changes (in-place updates
        bump a tensor's version)."""
        key = tuple(t._version for t in (*self.parameters(), *self.buffers()))
        cache = self.__dict__.setdefault("_scoring_cache", {})
        if name not in cache or cache[name][0] != key:
            with torch.no_grad():
                cache[name] = (key, compute())
        return cache[name][1]

    def __getstate__(self) -> dict:
        # Pickled to Spark executors: they rebuild what they need from the weights.
        state = dict(self.__dict__)
        state.pop("_scoring_cache", None)
        return state

    def ranking_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(user vectors [n_users, d], item vectors [n_items, d], item bias [n_items]) whose
        `u . v + b` is `ranking_scores`, for models that rank by a dot product; None otherwise."""
        return None

    def candidate_items(self, users: torch.Tensor, count: int) -> torch.Tensor | None:
        """[len(users), count] items worth scoring for each user, for models too costly to score
        every item; None (the default): score every item."""
        return None

    def candidate_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`ranking_scores` of some items per user ([len(users), c] -> [len(users), c])."""
        return self.ranking_scores(users).gather(1, items)

    def support(self, rated: torch.Tensor, listed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[users, h, k]: how much each of a user's rated items (`rated` [users, h], the first
        `lengths` of each row real) speaks for each item listed for the user (`listed` [users, k]);
        here the cosine similarity of their vectors."""
        unit = self.once_per_weights("unit item vectors", lambda: nn.functional.normalize(self.i_weight.weight, dim=1))
        # An embedding lookup gathers rows several times faster than indexing with a 2-D tensor.
        lookup = nn.functional.embedding
        return torch.bmm(lookup(rated, unit), lookup(listed, unit).transpose(1, 2))

    @abstractmethod
    def factor_tables(self) -> dict[str, torch.Tensor]:
        """user_vectors, user_bias, item_vectors, item_bias: the factor tables' rows."""

    encodes_history: ClassVar[bool] = False  # user rows are computed from the items rated, not learned
    closed_form_state: tuple[str, ...] = ()  # buffers `fit_closed_form` fills (warm start leaves them)

    def encode_users(self, history: Interactions) -> None:
        """Write each user's row from the user's ratings in `history` (models whose user vectors are
        computed from what the user rated); a no-op for models that learn them."""

    def predicted_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """The rating each user would give each item ([len(users), k] items), None when this model
        cannot say (a ranking model without a rating model beside it)."""
        if not self.predicts_ratings:
            return None
        return self(users.repeat_interleave(items.shape[1]), items.reshape(-1)).reshape(items.shape)


class DotProductRanker(CollabModel):
    """A model that orders a user's items by u . i + b_i of its `u_weight`, `i_weight` and `i_bias`
    tables, which scoring may compute in blocks of its own (`ranking_factors`)."""

    i_bias: nn.Embedding

    def ranking_scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.vector_scores(self.u_weight(users))

    def vector_scores(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """[len(user_vectors), n_items]: u . i + b_i of these vectors against every item."""
        return torch.addmm(self.i_bias.weight[:, 0], user_vectors, self.i_weight.weight.T)

    def ranking_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.u_weight.weight, self.i_weight.weight, self.i_bias.weight[:, 0]


class EmbeddingDotBias(DotProductRanker):
    """fastai's `EmbeddingDotBias`: rating = sigmoid_range(u . i + b_u + b_i, *y_range).

    Ranked by u . i + b_i alone: the user's bias and the sigmoid do not change the order of a
    user's items, so they are applied only to the items kept (`shown_scores`)."""

    model_type = "dot"
    predicts_ratings = True
    user_tables = ("u_weight", "u_bias")
    item_tables = ("i_weight", "i_bias")
    bias_tables = ("u_bias", "i_bias")

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50, y_range: Sequence[float] = (0.0, 5.5)) -> None:
        super().__init__()
        self.n_factors = int(n_factors)
        self.y_range = tuple(float(v) for v in y_range)
        self.u_weight = embedding_table(n_users, n_factors)
        self.i_weight = embedding_table(n_items, n_factors)
        self.u_bias = embedding_table(n_users, 1)
        self.i_bias = embedding_table(n_items, 1)

    def hparams(self) -> dict:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_factors": self.n_factors,
            "y_range": list(self.y_range),
        }

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.u_weight(users) * self.i_weight(items)).sum(dim=1)
        logits = dot + self.u_bias(users).squeeze(1) + self.i_bias(items).squeeze(1)
        return sigmoid_range(logits, *self.y_range)

    def shown_scores(self, users: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return sigmoid_range(scores + self.u_bias(users), *self.y_range)

    def factor_tables(self) -> dict[str, torch.Tensor]:
        return {
            "user_vectors": self.u_weight.weight,
            "user_bias": self.u_bias.weight[:, 0],
            "item_vectors": self.i_weight.weight,
            "item_bias": self.i_bias.weight[:, 0],
        }


class EmbeddingDotRank(DotProductRanker):
    """The dot architecture trained for top-N: score = u . i + b_i, no y-range.

    A user bias would not change any user's ranking, so there is none; scores are logits of a
    softmax over the catalog, comparable within a user only.

    With `history_dropout` set (the default for new models), a user's vector is not learned per
    user but computed from the items the user rated: the sum of their context vectors (`c_weight`)
    over the square root of their count. Training hides that share of each user's items from the
    sum at every step, so the model learns to predict the items it cannot see (a denoising
    auto-encoder, as Mult-DAE). `encode_users` then writes every user's vector into `u_weight`
    from all of the user's ratings, so every user with a rating has one, whatever the split.

    With `item_item` > 0, the scores also get a closed-form item-item term (EASE,
    `cfmodel.training.item_item`) fitted on the same ratings once the vectors are trained: the
    user's rated items' rows of B, weighted so that the term's spread is `item_item` times the
    spread of the vectors' scores. Its lists then need the user's rated items (`list_scores`).
    """

    model_type = "rank"
    predicts_ratings = False
    user_tables = ("u_weight",)
    item_tables = ("i_weight", "i_bias")
    bias_tables = ("i_bias",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int = 64,
        rating: dict | None = None,
        history_dropout: float | None = None,
        item_item: float = 0.0,
        item_item_l2: float = 500.0,
    ) -> None:
        super().__init__()
        self.n_factors = int(n_factors)
        self.item_item, self.item_item_l2 = float(item_item), float(item_item_l2)
        if self.item_item:
            # Filled by `fit_closed_form`: B, and the term's weight in the units of the scores.
            self.register_buffer("item_item_weights", torch.zeros(n_items, n_items))
            self.register_buffer("item_item_scale", torch.zeros(()))
            self.closed_form_state = ("item_item_weights", "item_item_scale")
        self.u_weight = embedding_table(n_users, n_factors)
        self.i_weight = embedding_table(n_items, n_factors)
        self.i_bias = embedding_table(n_items, 1)
        self.history_dropout = None if history_dropout is None else float(history_dropout)
        if self.history_dropout is not None:
            if not 0.0 <= self.history_dropout < 1.0:
                raise CfrecError(f"history dropout must be in [0, 1), got {self.history_dropout}")
            self.c_weight = embedding_table(n_items, n_factors)
            self.item_tables = ("i_weight", "i_bias", "c_weight")
            self.u_weight.weight.requires_grad_(False)  # computed from the history, never a gradient
        # A rating model trained on the same ratings, for the ratings shown beside the list.
        self.rater = build_model(**rating) if rating else None

    @property
    def encodes_history(self) -> bool:
        return self.history_dropout is not None

    def hparams(self) -> dict:
        out = {"n_users": self.n_users, "n_items": self.n_items, "n_factors": self.n_factors}
        if self.encodes_history:
            out["history_dropout"] = self.history_dropout
        if self.item_item:
            out |= {"item_item": self.item_item, "item_item_l2": self.item_item_l2}
        if self.rater is not None:
            out["rating"] = {"model_type": self.rater.model_type, **self.rater.hparams()}
        return out

    def predicted_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        return None if self.rater is None else self.rater.predicted_ratings(users, items)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.pair_scores(self.u_weight(users), items)

    def pair_scores(self, user_vectors: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """One score per row: user_vectors[r] against items[r]."""
        return (user_vectors * self.i_weight(items)).sum(dim=1) + self.i_bias(items).squeeze(1)

    def item_logits(self, user_vectors: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every user vector against `items` (all items when None): [users, items]."""
        if items is None:
            return self.vector_scores(user_vectors)
        return torch.addmm(self.i_bias(items)[:, 0], user_vectors, self.i_weight(items).T)

    def user_vectors(self, users: torch.Tensor, history: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The vectors of `users`: learned rows, or computed from `history` (indptr, items: every
        user's rated items, CSR), hiding `history_dropout` of them while training."""
        if not self.encodes_history:
            return self.u_weight(users)
        indptr, items = history
        starts, lengths = indptr[users], indptr[users + 1] - indptr[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        first = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
        positions = first + torch.arange(len(rows), device=users.device)
        scale = 1.0
        if self.training and self.history_dropout:
            # Only the items kept are gathered (a fifth at the default 0.8), each counted as dropout
            # scales, in the count too, so that a whole history and a thinned one give vectors of the
            # same expected size.
            kept = torch.rand(len(rows), device=users.device) >= self.history_dropout
            rows, positions = rows[kept], positions[kept]
            scale = 1.0 / (1.0 - self.history_dropout)
        counts = torch.bincount(rows, minlength=len(users)).to(self.c_weight.weight.dtype) * scale
        context = self.c_weight(items[positions])
        sums = torch.zeros(len(users), self.n_factors, device=users.device, dtype=context.dtype)
        return sums.index_add_(0, rows, context) * (scale / counts.clamp(min=scale).sqrt()[:, None])

    @torch.no_grad()
    def encode_users(self, history: Interactions, chunk: int = 1 << 16) -> None:
        if not self.encodes_history:
            return
        was_training = self.training
        self.eval()
        device = self.u_weight.weight.device
        indptr, items = (torch.as_tensor(a, device=device) for a in history.by_user(self.n_users))
        for start in range(0, self.n_users, chunk):
            users = torch.arange(start, min(start + chunk, self.n_users), device=device)
            self.u_weight.weight[users] = self.user_vectors(users, (indptr, items))
        self.train(was_training)

    def ranking_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        return None if self.item_item else super().ranking_factors()

    def list_scores(self, users: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        scores = self.ranking_scores(users)
        if not self.item_item or not self.item_item_scale:  # no term, or not fitted yet (validation)
            return scores
        history = self._history_matrix(len(users), rows, cols)
        return torch.sparse.addmm(scores, history, self.item_item_weights, alpha=float(self.item_item_scale))

    def _history_matrix(self, n_rows: int, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        """The binary [n_rows, n_items] matrix of these cells (sparse), items beyond the catalog left out."""
        rows, cols = (torch.as_tensor(a, dtype=torch.long, device=self.device) for a in (rows, cols))
        known = cols < self.n_items
        index = torch.stack([rows[known], cols[known]])
        values = torch.ones(index.shape[1], dtype=self.item_item_weights.dtype, device=self.device)
        history = torch.sparse_coo_tensor(index, values, (n_rows, self.n_items), check_invariants=False).coalesce()
        history.values().clamp_(max=1.0)  # an item listed twice in a history counts once
        return history

    @torch.no_grad()
    def fit_closed_form(self, train: Interactions) -> None:
        if not self.item_item:
            return
        gram = item_gram(train.users, train.items, self.n_users, self.n_items).to(self.device)
        self.item_item_weights.copy_(ease_weights(gram, self.item_item_l2))
        users = np.unique(train.users)
        if len(users) == 0:
            return
        users = users[:: max(1, -(-len(users) // ITEM_ITEM_SCALE_USERS))]
        sampled = train.subset(np.flatnonzero(np.isin(train.users, users)))
        history = self._history_matrix(len(users), np.searchsorted(users, sampled.users), sampled.items)
        vectors = self.ranking_scores(torch.as_tensor(users, device=self.device))
        term = torch.sparse.mm(history, self.item_item_weights)
        self.item_item_scale.fill_(self.item_item * float(vectors.std()) / max(float(term.std()), 1e-12))

    def support(self, rated: torch.Tensor, listed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """With a user vector computed from the history, a rated item's exact share of each
        listed item's score (up to the user's constant 1 / sqrt(count) when nothing is added to
        it); plus its share of the item-item term."""
        if not self.encodes_history and not self.item_item:
            return super().support(rated, listed, lengths)
        vectors = None
        if self.encodes_history:
            vectors = torch.bmm(self.c_weight(rated), self.i_weight(listed).transpose(1, 2))
        if not self.item_item:
            return vectors
        term = self.item_item_weights[rated[:, :, None], listed[:, None, :]] * self.item_item_scale
        if vectors is None:  # learned user vectors: only the term's share is the rated item's own
            return term
        return term + vectors / lengths.clamp(min=1).to(vectors.dtype).sqrt()[:, None, None]

    def factor_tables(self) -> dict[str, torch.Tensor]:
        return {
            "user_vectors": self.u_weight.weight,
            "user_bias": torch.zeros(self.n_users),
            "item_vectors": self.i_weight.weight,
            "item_bias": self.i_bias.weight[:, 0],
        }


def build_model(model_type: str, **hparams) -> CollabModel:
    """A fresh model of `model_type` from its hyper-parameters (as `hparams()` returns them)."""
    from cfmodel.training.neural import EmbeddingNN  # it builds on this module

    classes: dict[str, type[CollabModel]] = {
        cls.model_type: cls for cls in (EmbeddingDotBias, EmbeddingNN, EmbeddingDotRank)
    }
    if model_type not in classes:
        raise CfrecError(f"unknown model type '{model_type}' (known: {', '.join(MODEL_TYPES)})")
    return classes[model_type](**hparams)


def model_for(config: TrainConfig, n_users: int, n_items: int, y_range: tuple[float, float] | None) -> CollabModel:
    """A freshly initialised model of `config.model` (seeded by `config.seed`) for these sizes."""
    torch.manual_seed(config.seed)
    if config.model == "dot":
        return build_model("dot", n_users=n_users, n_items=n_items, n_factors=config.n_factors, y_range=y_range)
    if config.model == "nn":
        return build_model(
            "nn",
            n_users=n_users,
            n_items=n_items,
            user_size=config.n_factors,
            item_size=config.n_factors,
            layers=config.layers,
            ps=config.ps,
            embed_p=config.embed_p,
            use_bn=config.use_bn,
            y_range=y_range,
        )
    item_item = config.item_item if n_items <= ITEM_ITEM_MAX_ITEMS else 0.0
    if config.item_item and not item_item:
        log.info("no item-item term: the catalog has %d items, more than %d", n_items, ITEM_ITEM_MAX_ITEMS)
    return build_model(
        "rank",
        n_users=n_users,
        n_items=n_items,
        n_factors=config.n_factors,
        history_dropout=config.history_dropout,
        item_item=item_item,
        item_item_l2=config.item_item_l2,
    )
