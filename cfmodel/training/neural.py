"""fastai's `EmbeddingNN` as a cfrec model, with the scoring that makes it usable on a large catalog:
the first layer split into a user part and an item part, BatchNorm folded into the next Linear,
cache-sized chunks of pairs, and candidates from k-means groups of users."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cfmodel.errors import CfrecError
from cfmodel.training.models import CollabModel, emb_sz_rule, embedding_table, scratch_buffer, sigmoid_range

# Pairs (user, item) pushed through the MLP at once by EmbeddingNN's scoring: [pairs x widest
# layer] activations that stay in the CPU's cache (4x faster than chunks of 256k pairs).
NN_PAIRS_PER_CHUNK = 1 << 14
# Scoring the nn model on a large catalog: users fall into this many groups, and each user's
# candidates are the best items at the centre of the user's group (`EmbeddingNN.candidate_items`).
NN_CLUSTERS, NN_CLUSTER_ROUNDS = 256, 10


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
        self.u_weight = embedding_table(n_users, self.user_size)
        self.i_weight = embedding_table(n_items, self.item_size)
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
                pairs = torch.add(
                    users, items, out=scratch_buffer(scratch, "pairs", (len(users), *items.shape[1:]), users)
                )
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
            x = torch.addmm(bias, x, weight.T, out=scratch_buffer(scratch, f"layer{index}", (len(x), len(weight)), x))
            x.relu_()
        return torch.addmv(b_out, x, w_out, out=scratch_buffer(scratch, "out", (len(x),), x)).view(pairs.shape[:-1])

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
