"""The training loop: fastai's one-cycle AdamW recipe over tensors that live on the device.

The whole training set sits on the device as index and rating tensors; an epoch is a shuffled
permutation of row indices sliced into batches, so there is no DataLoader and no per-sample
Python. Nothing in the loop waits on the device (losses are collected into a device buffer and
read once per epoch), so on CUDA the steps queue up back to back.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cfmodel.errors import CfrecError
from cfmodel.evaluation.metrics import RANKING_K, predict, ranking_metrics, top_k_scored
from cfmodel.training.interactions import Interactions
from cfmodel.training.losses import make_loss
from cfmodel.training.models import check_model_type

log = logging.getLogger(__name__)

# Per model type, the settings a field left at None takes. They were chosen on held-out parts of
# MovieLens 100k (a random fifth of u1.base, and ua), then checked on u1.test (README, "Models").
MODEL_DEFAULTS = {
    "dot": dict(n_factors=50, epochs=6, lr=7e-3, wd=0.5, bias_wd=0.01, bs=256),
    "nn": dict(n_factors=None, epochs=5, lr=5e-3, wd=0.5, bias_wd=0.5, bs=256),
    "rank": dict(n_factors=64, epochs=6, lr=1e-2, wd=0.1, bias_wd=0.1, bs=512),
}


@dataclass
class TrainConfig:
    """Training options; a field left at None takes its model type's default (MODEL_DEFAULTS)."""

    model: str = "dot"
    n_factors: int | None = None  # embedding width (nn: both widths; None = fastai's emb_sz_rule)
    epochs: int | None = None
    lr: float | None = None  # peak learning rate of the one-cycle schedule
    wd: float | None = None  # AdamW decoupled weight decay of embeddings and layers
    bias_wd: float | None = None  # decay of the per-user and per-item biases
    bs: int | None = None
    valid_pct: float = 0.2
    split: str = "random"  # or "time": each user's latest ratings are the hold-out
    seed: int = 42
    patience: int | None = 2  # epochs without improvement before stopping; None = never stop early
    layers: tuple[int, ...] = (50,)  # nn hidden layers (fastai's tutorial uses 100,50)
    ps: float = 0.0  # nn dropout after each hidden layer
    embed_p: float = 0.1  # nn dropout on the embeddings
    use_bn: bool = True  # nn batch norm
    loss: str = "softmax"  # rank: softmax or bpr
    n_negatives: int = 4096  # rank softmax: sampled items per batch; the whole catalog when smaller
    min_rating: float | None = None  # rank: only ratings at or above count as positives
    weight_by_rating: bool = False  # rank: weight each positive by its rating
    max_rank_users: int | None = 10_000  # validation ranking metrics on at most this many users
    mixed_precision: bool = True  # bfloat16 autocast on CUDA (never on CPU)

    def __post_init__(self):
        check_model_type(self.model)
        self.layers = tuple(int(n) for n in self.layers)
        for name, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    @classmethod
    def for_model(cls, model: str = "dot", **overrides) -> TrainConfig:
        """The model's defaults, with every override that is not None applied."""
        return cls(model=model, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def check(self) -> None:
        for name in ("epochs", "bs"):
            if getattr(self, name) < 1:
                raise CfrecError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise CfrecError(f"lr must be positive, got {self.lr}")
        if self.wd < 0 or self.bias_wd < 0:
            raise CfrecError(f"weight decay must be >= 0, got wd={self.wd}, bias_wd={self.bias_wd}")
        if self.n_factors is not None and self.n_factors < 1:
            raise CfrecError(f"n_factors must be at least 1, got {self.n_factors}")
        if self.patience is not None and self.patience < 1:
            raise CfrecError(f"patience must be at least 1 (or None), got {self.patience}")


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int | None
    stopped_early: bool
    batch_losses: list[float]  # one per step, for the loss curve
    seconds: float


def resolve_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise CfrecError(f"unknown device '{requested}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise CfrecError(f"unsupported device '{requested}' (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CfrecError(f"device '{requested}' requested but CUDA is not available on this machine")
    return device


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """fastai's fit_one_cycle defaults: div 25, final div 1e5, 25% warm-up, momentum 0.95->0.85->0.95."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=max(total_steps, 1),
        pct_start=0.25,
        div_factor=25.0,
        final_div_factor=1e5,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with fastai's betas and eps; per-user and per-item biases get their own decay."""
    bias_names = {f"{name}.weight" for name in model.bias_tables}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if n not in bias_names], "weight_decay": config.wd},
        {"params": [p for n, p in params if n in bias_names], "weight_decay": config.bias_wd},
    ]
    groups = [g for g in groups if g["params"]]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), eps=1e-5, fused=fused)


# Below this many parameters a training step is a few hundred microseconds of small kernels, and
# spreading them over threads costs more than it saves (much more on a busy machine).
SINGLE_THREAD_PARAMS = 4_000_000


@contextlib.contextmanager
def cpu_threads(model: nn.Module, device: torch.device):
    """Train small models on one CPU thread; leave larger ones (and CUDA) to torch's default."""
    previous = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SINGLE_THREAD_PARAMS
    if device.type == "cpu" and small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Validator:
    """Per-epoch validation: loss, and the metric early stopping watches.

    Rating models: rmse and mae of the held-out ratings. The ranking model: ranking metrics of the
    held-out items (top 10 among items the user did not rate in train and someone rated in train).
    """

    def __init__(self, model: nn.Module, train: Interactions, valid: Interactions, config: TrainConfig, device) -> None:
        self.valid, self.device = valid, device
        self.rating = model.predicts_ratings
        self.monitor = "valid_rmse" if self.rating else f"valid_ndcg@{RANKING_K}"
        self.lower_is_better = self.rating
        self.tensors = [torch.as_tensor(a, device=device) for a in (valid.users, valid.items, valid.ratings)]
        if not self.rating:
            users = np.unique(valid.users)
            if config.max_rank_users is not None and len(users) > config.max_rank_users:
                users = np.sort(np.random.default_rng(config.seed).choice(users, config.max_rank_users, replace=False))
            n_users = model.n_users
            self.users = users
            self.seen = train.by_user(n_users)
            indptr, items = valid.by_user(n_users)
            self.relevant = [items[indptr[u] : indptr[u + 1]] for u in users]
            self.never = np.flatnonzero(train.item_counts(model.n_items) == 0)

    @torch.no_grad()
    def __call__(self, model: nn.Module, loss_fn) -> dict:
        model.eval()
        out = {"valid_loss": self.loss(model, loss_fn)}
        if self.rating:
            predicted = predict(model, self.valid.users, self.valid.items, self.device)
            err = predicted - self.valid.ratings
            out.update(valid_rmse=float(np.sqrt(np.mean(err**2))), valid_mae=float(np.mean(np.abs(err))))
        else:
            recommended = top_k_scored(
                model.score_all, self.users, self.seen, RANKING_K, model.n_items, self.never, self.device
            )
            metrics = ranking_metrics(recommended, self.relevant, RANKING_K, model.n_items)
            out.update({f"valid_{k}": v for k, v in metrics.items() if k != "users"})
        return out

    def loss(self, model: nn.Module, loss_fn, bs: int = 1 << 16) -> float:
        """The training objective on the held-out ratings, averaged over rows."""
        u, i, r = self.tensors
        total = sum(
            float(loss_fn(model, u[s : s + bs], i[s : s + bs], r[s : s + bs])) * len(r[s : s + bs])
            for s in range(0, len(r), bs)
        )
        return total / max(len(r), 1)

    def improved(self, value: float, best: float | None) -> bool:
        return best is None or (value < best if self.lower_is_better else value > best)


def batch_bounds(n_rows: int, bs: int) -> list[int]:
    """Start of each batch, then `n_rows`; a last batch of one row joins the one before it (batch
    norm cannot train on a single row)."""
    bounds = [*range(0, n_rows, bs), n_rows]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return bounds


def fit(
    model: nn.Module,
    train: Interactions,
    valid: Interactions | None,
    config: TrainConfig,
    device: torch.device,
    progress: bool | None = None,
    train_module: nn.Module | None = None,
) -> FitResult:
    """Train `model` in place on `train`, validating on `valid` after each epoch.

    `train_module`: what the loss calls for training steps instead of `model` itself, such as a
    DistributedDataParallel wrapper of it (validation and early stopping still use `model`).

    With `config.patience`, training stops once the watched validation metric has not improved for
    that many epochs, and the weights of the best epoch are restored. `progress`: a per-epoch
    progress bar (None: only when stderr is a terminal).
    """
    config.check()
    with cpu_threads(model, device):
        return _fit(model, train, valid, config, device, progress, train_module or model)


def _fit(model, train, valid, config, device, progress, train_module) -> FitResult:
    # torch imports its compiler stack when the first optimizer of a process is built (about a
    # second, once per process); the clock starts after that so `seconds` measures training alone.
    model.to(device)
    make_optimizer(model, config, device)
    started = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(config.seed)
    loss_fn = make_loss(model, config, train, device, generator)
    data = loss_fn.prepare(train)
    if len(data) == 0:
        raise CfrecError("no training ratings")
    u, i, r = (torch.as_tensor(a, device=device) for a in (data.users, data.items, data.ratings))
    validator = Validator(model, train, valid, config, device) if valid is not None and len(valid) else None

    optimizer = make_optimizer(model, config, device)
    bounds = batch_bounds(len(r), config.bs)
    steps_per_epoch = len(bounds) - 1
    scheduler = one_cycle(optimizer, config.lr, config.epochs * steps_per_epoch)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and config.mixed_precision)
    show = sys.stderr.isatty() if progress is None else progress

    history, batch_losses = [], []
    best_value, best_epoch, best_state, stale = None, None, None, 0
    stopped_early = False
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = torch.randperm(len(r), generator=generator, device=device)
        losses = torch.empty(steps_per_epoch, device=device)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not show,
            leave=True,
            mininterval=0.5,
            file=sys.stderr,
        )
        for step in range(steps_per_epoch):
            batch = order[bounds[step] : bounds[step + 1]]
            with autocast:
                loss = loss_fn(train_module, u[batch], i[batch], r[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses[step] = loss.detach()
            bar.update()
        step_losses = losses.cpu().numpy()
        batch_losses += step_losses.tolist()
        sizes = np.diff(bounds)
        record = {"epoch": epoch, "train_loss": float(np.dot(step_losses, sizes) / sizes.sum())}
        if validator is not None:
            record.update(validator(model, loss_fn))  # full precision
        record["seconds"] = time.perf_counter() - epoch_started
        history.append(record)
        shown = ("train_loss", "valid_loss", validator.monitor if validator else "")
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in shown})
        bar.close()
        log.info(
            "epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch")
        )
        if validator is None:
            continue
        value = record[validator.monitor]
        if validator.improved(value, best_value):
            best_value, best_epoch, stale = value, epoch, 0
            if config.patience is not None and epoch < config.epochs:
                best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if config.patience is not None and stale >= config.patience:
                stopped_early = epoch < config.epochs
                break
    if config.patience is not None and best_epoch is not None and best_epoch != history[-1]["epoch"]:
        model.load_state_dict(best_state)
        log.info("restored the weights of epoch %d (best %s %.4f)", best_epoch, validator.monitor, best_value)
    model.eval()
    return FitResult(history, best_epoch, stopped_early, batch_losses, time.perf_counter() - started)


def model_for(config: TrainConfig, n_users: int, n_items: int, y_range: tuple[float, float] | None) -> nn.Module:
    """A freshly initialised model of `config.model` (seeded by `config.seed`) for these sizes."""
    from cfmodel.training.models import build_model

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
    return build_model("rank", n_users=n_users, n_items=n_items, n_factors=config.n_factors)
