"""The embedding models: one interface, `CollabModel`, and three PyTorch modules that implement it.

    dot   fastai's EmbeddingDotBias: rating = sigmoid_range(u . i + b_u + b_i, *y_range)
    nn    fastai's EmbeddingNN: [u, i] through an MLP (Linear, ReLU, BatchNorm, Dropout blocks)
    rank  the dot architecture without the y-range, trained to rank: score = u . i + b_i

Scoring, evaluation, warm start and fold-in see only the interface: which embedding tables hold
per-user and per-item rows, how to score a block of users against every item, and how to turn the
scores of the items kept into what the recommendations table shows.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cfmodel.errors import CfrecError
from cfmodel.training.config import MODEL_TYPES, TrainConfig
from cfmodel.training.interactions import Interactions

# Scores held at once when a block of users is ranked: 32M float32 = 128 MB, whatever the catalog size.
PAIRS_PER_BLOCK = 32 * 1024 * 1024
# Pairs (user, item) pushed through the MLP at once by EmbeddingNN's scoring: [pairs x widest
# layer] activations that stay in the CPU's cache (4x faster than chunks of 256k pairs).
NN_PAIRS_PER_CHUNK = 1 << 14
# Scoring the nn model on a large catalog: users fall into this many groups, and each user's
# candidates are the best items at the centre of the user's group (`EmbeddingNN.candidate_items`).
NN_CLUSTERS, NN_CLUSTER_ROUNDS = 256, 10


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


def _embedding(n: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.trunc_normal_(emb.weight, std=0.01)  # fastai's init for collab embeddings
    return emb


def _scratch(buffers: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
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

    def support(self, rated: torch.Tensor, listed: torch.Tensor) -> torch.Tensor:
        """[users, h, k]: how much each of a user's rated items (`rated` [users, h]) speaks for each
        item listed for the user (`listed` [users, k]); here the cosine similarity of their vectors."""
        ours = nn.functional.normalize(self.i_weight(rated), dim=2)
        theirs = nn.functional.normalize(self.i_weight(listed), dim=2)
        return torch.bmm(ours, theirs.transpose(1, 2))

    @abstractmethod
    def factor_tables(self) -> dict[str, torch.Tensor]:
        """user_vectors, user_bias, item_vectors, item_bias: the factor tables' rows."""

    encodes_history: ClassVar[bool] = False  # user rows are computed from the items rated, not learned

    def encode_users(self, history: Interactions) -> None:
        """Write each user's row from the user's ratings in `history` (models whose user vectors are
        computed from what the user rated); a no-op for models that learn them."""

    def predicted_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """The rating each user would give each item ([len(users), k] items), None when this model
        cannot say (a ranking model without a rating model beside it)."""
        if not self.predicts_ratings:
            return None
        return self(users.repeat_interleave(items.shape[1]), items.reshape(-1)).reshape(items.shape)


class EmbeddingDotBias(CollabModel):
    """fastai's `EmbeddingDotBias`: rating = sigmoid_range(u . i + b_u + b_i, *y_range)."""

    model_type = "dot"
    predicts_ratings = True
    user_tables = ("u_weight", "u_bias")
    item_tables = ("i_weight", "i_bias")
    bias_tables = ("u_bias", "i_bias")

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50, y_range: Sequence[float] = (0.0, 5.5)) -> None:
        super().__init__()
        self.n_factors = int(n_factors)
        self.y_range = tuple(float(v) for v in y_range)
        self.u_weight = _embedding(n_users, n_factors)
        self.i_weight = _embedding(n_items, n_factors)
        self.u_bias = _embedding(n_users, 1)
        self.i_bias = _embedding(n_items, 1)

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

    def ranking_scores(self, users: torch.Tensor) -> torch.Tensor:
        """u . i + b_i: the user's bias and the sigmoid do not change the order of a user's items,
        so they are applied only to the items kept (`shown_scores`)."""
        return torch.addmm(self.i_bias.weight[:, 0], self.u_weight(users), self.i_weight.weight.T)

    def ranking_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.u_weight.weight, self.i_weight.weight, self.i_bias.weight[:, 0]

    def shown_scores(self, users: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return sigmoid_range(scores + self.u_bias(users), *self.y_range)

    def factor_tables(self) -> dict[str, torch.Tensor]:
        return {
            "user_vectors": self.u_weight.weight,
            "user_bias": self.u_bias.weight[:, 0],
            "item_vectors": self.i_weight.weight,
            "item_bias": self.i_bias.weight[:, 0],
        }


class EmbeddingNN(CollabModel):
    """fastai's `EmbeddingNN` (a TabularModel over the user and item embeddings).

    [u, i] -> embedding dropout -> per hidden layer: Linear (no bias when batch-normed), ReLU,
    BatchNorm1d, Dropout -> Linear to one output -> sigmoid_range. Embedding widths default to
    fastai's `emb_sz_rule`.
    """

    model_type = "nn"
    predicts_ratings = True
    user_tables = ("u_weight",)
    item_tables = ("i_weight",)
    bias_tables = ()
    pairs_per_block = 4 * NN_PAIRS_PER_CHUNK

    def __init__(
        self,
        n_users: int,
        n_items: int,
        user_size: int | None = None,
        item_size: int | None = None,
        layers: Sequence[int] = (100, 50),
        ps: float | Sequence[float] = 0.0,
        embed_p: float = 0.0,
        use_bn: bool = True,
        y_range: Sequence[float] = (0.0, 5.5),
    ) -> None:
        super().__init__()
        self.user_size = int(user_size or emb_sz_rule(n_users))
        self.item_size = int(item_size or emb_sz_rule(n_items))
        self.layer_sizes = [int(n) for n in layers]
        if not self.layer_sizes or min(self.layer_sizes) < 1:
            raise CfrecError(f"nn layers must be one or more positive sizes, got {list(layers)}")
        ps = [float(ps)] * len(self.layer_sizes) if isinstance(ps, (int, float)) else [float(p) for p in ps]
        if len(ps) != len(self.layer_sizes):
            raise CfrecError(f"nn dropout needs one value per layer ({len(self.layer_sizes)}), got {ps}")
        self.ps, self.embed_p, self.use_bn = ps, float(embed_p), bool(use_bn)
        self.y_range = tuple(float(v) for v in y_range)
        self.u_weight = _embedding(n_users, self.user_size)
        self.i_weight = _embedding(n_items, self.item_size)
        self.emb_drop = nn.Dropout(self.embed_p)
        blocks, width = [], self.user_size + self.item_size
        for size, p in zip(self.layer_sizes, ps):
            block = [nn.Linear(width, size, bias=not use_bn), nn.ReLU(inplace=True)]
            if use_bn:
                block.append(nn.BatchNorm1d(size))
            if p:
                block.append(nn.Dropout(p))
            blocks.append(nn.Sequential(*block))
            width = size
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Linear(width, 1)

    def hparams(self) -> dict:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "user_size": self.user_size,
            "item_size": self.item_size,
            "layers": self.layer_sizes,
            "ps": self.ps,
            "embed_p": self.embed_p,
            "use_bn": self.use_bn,
            "y_range": list(self.y_range),
        }

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = self.emb_drop(torch.cat([self.u_weight(users), self.i_weight(items)], dim=1))
        return sigmoid_range(self.out(self.hidden(x)).squeeze(-1), *self.y_range)

    def ranking_scores(self, users: torch.Tensor) -> torch.Tensor:
        """The network's output before the y-range sigmoid (which keeps the order; `shown_scores`
        applies it to the items kept) for `users` x every item, as the eval-mode network computes it.

        The first layer acts on [u, i], so it splits into W_u u + W_i i: each user and each item is
        projected once and a pair only adds the two. Each BatchNorm is folded into the Linear
        after it, so a pair costs one add and one small matrix product per further layer; pairs go
        through in cache-sized chunks. No gradients: these order lists, no loss is taken on them.
        """
        return self._every_item(self._user_parts(self.u_weight(users)))

    @torch.no_grad()
    def _every_item(self, user_part: torch.Tensor) -> torch.Tensor:
        """[users, width] first-layer user parts -> [users, n_items] outputs before the sigmoid."""
        item_part, layers = self._scoring_weights()
        out = torch.empty(len(user_part), self.n_items, dtype=user_part.dtype, device=user_part.device)
        items_step = min(self.n_items, NN_PAIRS_PER_CHUNK)
        users_step = max(1, NN_PAIRS_PER_CHUNK // max(self.n_items, 1))
        scratch: dict[str, torch.Tensor] = {}
        for u in range(0, len(user_part), users_step):
            users = user_part[u : u + users_step, None, :]
            for i in range(0, self.n_items, items_step):
                items = item_part[None, i : i + items_step, :]
                pairs = torch.add(users, items, out=_scratch(scratch, "pairs", (len(users), *items.shape[1:]), users))
                out[u : u + users_step, i : i + items_step] = self._rest(pairs, layers, scratch)
        return out

    @torch.no_grad()
    def candidate_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        user_part = self._user_parts(self.u_weight(users))
        item_part, layers = self._scoring_weights()
        out = torch.empty(items.shape, dtype=user_part.dtype, device=user_part.device)
        users_step = max(1, NN_PAIRS_PER_CHUNK // max(items.shape[1], 1))
        scratch: dict[str, torch.Tensor] = {}
        for u in range(0, len(users), users_step):
            pairs = item_part[items[u : u + users_step]].add_(user_part[u : u + users_step, None, :])
            out[u : u + users_step] = self._rest(pairs, layers, scratch)
        return out

    def candidate_items(self, users: torch.Tensor, count: int) -> torch.Tensor | None:
        """The `count` best items of the user's cluster: users are grouped (k-means, NN_CLUSTERS
        groups) by their first layer's projection, and each group's items ranked once by the
        network at the group's centre. None when `count` is not far below the catalog's size."""
        if count * 4 > self.n_items:
            return None
        assignment, order = self._clusters()
        return order[assignment[users], :count]

    def _user_parts(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors @ self.hidden[0][0].weight[:, : self.user_size].T

    def _item_parts(self) -> torch.Tensor:
        first = self.hidden[0][0]
        item_part = self.i_weight.weight @ first.weight[:, self.user_size :].T
        return item_part if first.bias is None else item_part + first.bias

    @staticmethod
    def _rest(pairs: torch.Tensor, folded: tuple, scratch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[..., width] first-layer pre-activations (overwritten) -> [...] outputs before the
        sigmoid. Activations go to `scratch` buffers reused chunk after chunk: allocating them
        anew costs the kernel more time than the products."""
        layers, w_out, b_out = folded
        x = pairs.reshape(-1, pairs.shape[-1]).relu_()
        for index, (weight, bias) in enumerate(layers):
            x = torch.addmm(bias, x, weight.T, out=_scratch(scratch, f"layer{index}", (len(x), len(weight)), x))
            x.relu_()
        return torch.addmv(b_out, x, w_out, out=_scratch(scratch, "out", (len(x),), x)).view(pairs.shape[:-1])

    def _scoring_weights(self) -> tuple[torch.Tensor, tuple]:
        """Every item's first-layer part and the folded further layers, once per set of weights
        (the item parts alone cost as much as scoring a few users)."""
        return self.once_per_weights("weights", lambda: (self._item_parts(), self._folded_layers()))

    def _clusters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(each user's cluster, each cluster's items best first), computed once per set of weights."""
        return self.once_per_weights("clusters", self._build_clusters)

    def _build_clusters(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_part = self._user_parts(self.u_weight.weight)
        generator = torch.Generator().manual_seed(0)
        k = min(NN_CLUSTERS, self.n_users)
        centres = user_part[torch.randperm(self.n_users, generator=generator)[:k].to(user_part.device)].clone()
        for _ in range(NN_CLUSTER_ROUNDS):
            assignment = torch.cat([torch.cdist(chunk, centres).argmin(1) for chunk in user_part.split(1 << 14)])
            sums = torch.zeros_like(centres).index_add_(0, assignment, user_part)
            counts = torch.bincount(assignment, minlength=k)
            filled = counts > 0
            centres[filled] = sums[filled] / counts[filled, None]
        return assignment, self._every_item(centres).argsort(dim=1, descending=True)

    def shown_scores(self, users: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return sigmoid_range(scores, *self.y_range)

    def _folded_layers(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """The eval-mode network after the first layer's ReLU: [(weight, bias)] of each further hidden
        Linear, then the output's (weight vector, bias), with each BatchNorm (an affine map
        s * x + t in eval mode) folded into the Linear that follows it: W (s x + t) = (W s) x + W t."""
        scale = shift = None

        def folded(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
            weight = linear.weight
            bias = linear.bias if linear.bias is not None else weight.new_zeros(weight.shape[0])
            if scale is None:
                return weight, bias
            return weight * scale, bias + weight @ shift

        layers = []
        for index, block in enumerate(self.hidden):
            if index:
                layers.append(folded(block[0]))
            norm = block[2] if self.use_bn else None
            if norm is None:
                scale = shift = None
            else:
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                shift = norm.bias - norm.running_mean * scale
        weight, bias = folded(self.out)
        return layers, weight[0], bias

    def factor_tables(self) -> dict[str, torch.Tensor]:
        """The user and item embeddings (of different widths: not meant for dot products) and zero
        biases: the network has no per-user or per-item bias."""
        return {
            "user_vectors": self.u_weight.weight,
            "user_bias": torch.zeros(self.n_users),
            "item_vectors": self.i_weight.weight,
            "item_bias": torch.zeros(self.n_items),
        }


class EmbeddingDotRank(CollabModel):
    """The dot architecture trained for top-N: score = u . i + b_i, no y-range.

    A user bias would not change any user's ranking, so there is none; scores are logits of a
    softmax over the catalog, comparable within a user only.

    With `history_dropout` set (the default for new models), a user's vector is not learned per
    user but computed from the items the user rated: the sum of their context vectors (`c_weight`)
    over the square root of their count. Training hides that share of each user's items from the
    sum at every step, so the model learns to predict the items it cannot see (a denoising
    auto-encoder, as Mult-DAE). `encode_users` then writes every user's vector into `u_weight`
    from all of the user's ratings, so every user with a rating has one, whatever the split.
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
    ) -> None:
        super().__init__()
        self.n_factors = int(n_factors)
        self.u_weight = _embedding(n_users, n_factors)
        self.i_weight = _embedding(n_items, n_factors)
        self.i_bias = _embedding(n_items, 1)
        self.history_dropout = None if history_dropout is None else float(history_dropout)
        if self.history_dropout is not None:
            if not 0.0 <= self.history_dropout < 1.0:
                raise CfrecError(f"history dropout must be in [0, 1), got {self.history_dropout}")
            self.c_weight = _embedding(n_items, n_factors)
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
            return torch.addmm(self.i_bias.weight[:, 0], user_vectors, self.i_weight.weight.T)
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
        kept = torch.ones(len(rows), device=users.device)
        if self.training and self.history_dropout:
            # Scaled as dropout scales, in the count too, so that a whole history and a thinned one
            # give vectors of the same expected size.
            kept = (torch.rand(len(rows), device=users.device) >= self.history_dropout) / (1 - self.history_dropout)
        counts = torch.zeros(len(users), device=users.device).index_add_(0, rows, kept)
        context = self.c_weight(items[positions]) * kept[:, None]
        sums = torch.zeros(len(users), self.n_factors, device=users.device, dtype=context.dtype)
        return sums.index_add_(0, rows, context) / counts.clamp(min=1).sqrt()[:, None]

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

    def ranking_scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.item_logits(self.u_weight(users))

    def ranking_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.u_weight.weight, self.i_weight.weight, self.i_bias.weight[:, 0]

    def support(self, rated: torch.Tensor, listed: torch.Tensor) -> torch.Tensor:
        """With a user vector computed from the history, a rated item's exact share of each
        listed item's score (up to the user's constant 1 / sqrt(count))."""
        if not self.encodes_history:
            return super().support(rated, listed)
        return torch.bmm(self.c_weight(rated), self.i_weight(listed).transpose(1, 2))

    def factor_tables(self) -> dict[str, torch.Tensor]:
        return {
            "user_vectors": self.u_weight.weight,
            "user_bias": torch.zeros(self.n_users),
            "item_vectors": self.i_weight.weight,
            "item_bias": self.i_bias.weight[:, 0],
        }


MODEL_CLASSES: dict[str, type[CollabModel]] = {
    cls.model_type: cls for cls in (EmbeddingDotBias, EmbeddingNN, EmbeddingDotRank)
}
assert tuple(MODEL_CLASSES) == MODEL_TYPES


def build_model(model_type: str, **hparams) -> CollabModel:
    """A fresh model of `model_type` from its hyper-parameters (as `hparams()` returns them)."""
    if model_type not in MODEL_CLASSES:
        raise CfrecError(f"unknown model type '{model_type}' (known: {', '.join(MODEL_TYPES)})")
    return MODEL_CLASSES[model_type](**hparams)


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
    return build_model(
        "rank", n_users=n_users, n_items=n_items, n_factors=config.n_factors, history_dropout=config.history_dropout
    )
