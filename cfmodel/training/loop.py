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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cfmodel.errors import CfrecError
from cfmodel.evaluation.holdout import predict, recommended_items
from cfmodel.evaluation.metrics import RANKING_K, ranking_metrics
from cfmodel.training.config import TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.losses import make_loss
from cfmodel.training.models import CollabModel
from cfmodel.training.optim import FUSED_ADAMW, make_optimizer, one_cycle
from cfmodel.training.packed import PackedDotSteps

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int | None  # the epoch of the best validation metric
    stopped_early: bool
    batch_losses: list[float]  # one per step, for the loss curve
    seconds: float
    # The epoch whose weights the model holds: the best one where early stopping restored it, the
    # last one otherwise (no patience, or no validation). A refit trains for this many epochs.
    kept_epoch: int


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


# From this many parameters on, the dot model's steps update only the rows a batch touches (lazy
# AdamW): a dense step over every row of tables this size costs more than the batch's own work.
# Smaller models take torch's exact dense AdamW.
ROW_UPDATES_PARAMS = 1_000_000

# Below this many parameters a training step is a few hundred microseconds of small kernels, and
# spreading them over threads costs more than it saves (much more on a busy machine).
SINGLE_THREAD_PARAMS = 4_000_000


@contextlib.contextmanager
def cpu_threads(model: nn.Module, device: torch.device) -> Iterator[None]:
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

    def __init__(
        self, model: CollabModel, train: Interactions, valid: Interactions, config: TrainConfig, device: torch.device
    ) -> None:
        self.train, self.valid, self.device = train, valid, device
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
    def __call__(self, model: CollabModel, loss_fn: Callable) -> dict:
        model.eval()
        model.encode_users(self.train)
        out = {"valid_loss": self.loss(model, loss_fn)}
        if self.rating:
            predicted = predict(model, self.valid.users, self.valid.items, self.device)
            err = predicted - self.valid.ratings
            out.update(valid_rmse=float(np.sqrt(np.mean(err**2))), valid_mae=float(np.mean(np.abs(err))))
        else:
            recommended = recommended_items(
                model.list_scores, self.users, self.seen, RANKING_K, model.n_items, self.never, self.device
            )
            metrics = ranking_metrics(recommended, self.relevant, RANKING_K, model.n_items)
            out.update({f"valid_{k}": v for k, v in metrics.items() if k != "users"})
        return out

    def loss(self, model: CollabModel, loss_fn: Callable, bs: int = 1 << 16) -> float:
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


@dataclass(frozen=True)
class DataParallel:
    """One process's part in data-parallel training.

    Every process holds the whole training set and walks the same shuffled batches (same seed),
    taking from each the rows of the users that fall to it (user index modulo `world`): a user's
    rows stay together, as the ranking objectives need, and every process makes the same number of
    steps. Each process's loss is weighted by its share of the batch, so the gradients averaged over
    the processes (`wrap`, e.g. DistributedDataParallel) are those of the whole batch's mean loss.
    """

    rank: int
    world: int
    wrap: Callable[[nn.Module], nn.Module]

    def take(self, batch: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(this process's rows of `batch`, the weight of their mean loss)."""
        mine = batch[users[batch] % self.world == self.rank]
        if len(mine) == 0:  # it still takes part in the step, with no weight
            return batch[:1], 0.0
        return mine, len(mine) * self.world / len(batch)


class _Objective(nn.Module):
    """The training objective as a module: a wrapper that works through `forward`
    (DistributedDataParallel) then sees the whole step, including the ranking objectives, which
    compute users' vectors and scores without calling the model's own forward."""

    def __init__(self, model: CollabModel, loss_fn: Callable) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, users, items, ratings)


def fit(
    model: CollabModel,
    train: Interactions,
    valid: Interactions | None,
    config: TrainConfig,
    device: torch.device,
    progress: bool | None = None,
    parallel: DataParallel | None = None,
) -> FitResult:
    """Train `model` in place on `train`, validating on `valid` after each epoch (after the last
    only, without patience: nothing reads the others).

    `parallel`: this process's part in data-parallel training (validation and early stopping run
    whole in every process, on identical weights, so all make the same decisions).

    With `config.patience`, training stops once the watched validation metric has not improved for
    that many epochs, and the weights of the best epoch are restored. `progress`: a per-epoch
    progress bar (None: only when stderr is a terminal).
    """
    config.check()
    with cpu_threads(model, device):
        return _fit(model, train, valid, config, device, progress, parallel)


@dataclass
class _Steps:
    """What every training step needs: the data on the device, the batches, optimiser and objective."""

    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # users, items, ratings
    bounds: list[int]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    model: CollabModel
    loss_fn: Callable
    objective: nn.Module  # the loss as a module, wrapped for data-parallel training
    parallel: DataParallel | None
    autocast: torch.autocast
    generator: torch.Generator
    # Embeddings whose autograd gradients come sparse during the steps, stepped row by row.
    sparse_tables: tuple[nn.Embedding, ...] = ()
    packed: PackedDotSteps | None = None  # the dot model: gradients by hand, AdamW on one packed table

    @classmethod
    def prepare(
        cls,
        model: CollabModel,
        data: Interactions,
        config: TrainConfig,
        device: torch.device,
        loss_fn: Callable,
        generator: torch.Generator,
        parallel: DataParallel | None,
    ) -> _Steps:
        """The data on the device, fastai's one-cycle AdamW, bfloat16 autocast on CUDA."""
        tensors = tuple(torch.as_tensor(a, device=device) for a in (data.users, data.items, data.ratings))
        optimizer = make_optimizer(model, config, device)
        bounds = batch_bounds(len(data), config.bs)
        scheduler = one_cycle(optimizer, config.lr, config.epochs * (len(bounds) - 1))
        mixed = device.type == "cuda" and config.mixed_precision
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=mixed)
        objective = _Objective(model, loss_fn)
        if parallel is not None:
            objective = parallel.wrap(objective)
        trains_packed = not mixed and parallel is None and getattr(loss_fn, "trains_packed", lambda m: False)(model)
        large = sum(p.numel() for p in model.parameters()) >= ROW_UPDATES_PARAMS
        packed = PackedDotSteps(model, tensors, config, bounds, lazy=large) if trains_packed and FUSED_ADAMW else None
        # Other models of that size take their tables' gradients from autograd as sparse rows: a
        # dense AdamW step over, say, the nn's 135M embedding weights at MovieLens-25M's shape costs
        # about a second per batch on a CPU.
        sparse = large and packed is None and not mixed and parallel is None
        sparse_tables = tuple(m for m in model.modules() if isinstance(m, nn.Embedding)) if sparse else ()
        return cls(
            tensors,
            bounds,
            optimizer,
            scheduler,
            model,
            loss_fn,
            objective,
            parallel,
            autocast,
            generator,
            sparse_tables,
            packed,
        )

    def epoch(self, bar: tqdm) -> np.ndarray:
        """One pass over the shuffled rows; each step's loss, read from the device once at the end."""
        u, i, r = self.tensors
        order = self.loss_fn.order(u, self.generator)
        if self.packed is not None:
            losses = self.packed.epoch(order, bar)
            self.packed.unpack()
            return losses
        losses = torch.empty(len(self.bounds) - 1, device=r.device)
        for table in self.sparse_tables:
            table.sparse = True
        try:
            self._steps(order, losses, bar)
        finally:
            for table in self.sparse_tables:
                table.sparse = False
        return losses.cpu().numpy()

    def _steps(self, order: torch.Tensor, losses: torch.Tensor, bar: tqdm) -> None:
        u, i, r = self.tensors
        for step in range(len(self.bounds) - 1):
            batch = order[self.bounds[step] : self.bounds[step + 1]]
            weight = 1.0
            if self.parallel is not None:
                batch, weight = self.parallel.take(batch, u)
            with self.autocast:
                loss = self.objective(u[batch], i[batch], r[batch])
            self.optimizer.zero_grad(set_to_none=True)
            (loss * weight if self.parallel is not None else loss).backward()
            if self.sparse_tables:
                self.optimizer.step_rows(self._take_row_gradients())
            self.optimizer.step()
            self.scheduler.step()
            losses[step] = loss.detach()
            bar.update()

    def _take_row_gradients(self) -> dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The tables' sparse gradients as (distinct rows, their gradients), taken off the tables so
        that the dense step leaves them alone. A table also used whole (a full softmax over the
        catalog) has a dense gradient and stays with the dense step."""
        taken = {}
        for table in self.sparse_tables:
            grad = table.weight.grad
            if grad is not None and grad.is_sparse:
                grad = grad.coalesce()
                taken[table.weight] = (grad.indices()[0], grad.values())
                table.weight.grad = None
        return taken


class _EarlyStopping:
    """Tracks the watched validation metric: the best epoch and its weights, and when to stop."""

    def __init__(self, validator: Validator | None, patience: int | None, epochs: int) -> None:
        self.validator, self.patience, self.epochs = validator, patience, epochs
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.stale = 0

    def stop_after(self, model: CollabModel, record: dict) -> bool:
        if self.validator is None:
            return False
        if self.validator.monitor not in record:  # an epoch that was not validated
            return False
        epoch, value = record["epoch"], record[self.validator.monitor]
        if self.validator.improved(value, self.best_value):
            self.best_value, self.best_epoch, self.stale = value, epoch, 0
            if self.patience and epoch < self.epochs:
                self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.stale += 1
        return bool(self.patience) and self.stale >= self.patience

    def restore_best(self, model: CollabModel, last_epoch: int) -> int:
        """The best epoch's weights back in `model` where patience asks for them; returns the epoch
        whose weights the model now holds."""
        if not self.patience or self.best_epoch is None:
            return last_epoch
        if self.best_epoch != last_epoch:
            model.load_state_dict(self.best_state)
            log.info(
                "restored the weights of epoch %d (best %s %.4f)",
                self.best_epoch,
                self.validator.monitor,
                self.best_value,
            )
        return self.best_epoch


def _fit(
    model: CollabModel,
    train: Interactions,
    valid: Interactions | None,
    config: TrainConfig,
    device: torch.device,
    progress: bool | None,
    parallel: DataParallel | None,
) -> FitResult:
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
    validator = Validator(model, train, valid, config, device) if valid is not None and len(valid) else None
    steps = _Steps.prepare(model, data, config, device, loss_fn, generator, parallel)
    bounds = steps.bounds
    show = sys.stderr.isatty() if progress is None else progress
    stopping = _EarlyStopping(validator, config.patience, config.epochs)
    history, batch_losses, stopped_early = [], [], False
    sizes = np.diff(bounds)
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        bar = tqdm(
            total=len(sizes),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not show,
            leave=True,
            mininterval=0.5,
            file=sys.stderr,
        )
        step_losses = steps.epoch(bar)
        batch_losses += step_losses.tolist()
        record = {"epoch": epoch, "train_loss": float(np.dot(step_losses, sizes) / sizes.sum())}
        # Without early stopping nothing reads an earlier epoch's validation: only the last is measured
        # (on MovieLens 100k it was 40% of the ranking model's training).
        if validator is not None and (config.patience or epoch == config.epochs):
            record.update(validator(model, loss_fn))  # full precision
        record["seconds"] = time.perf_counter() - epoch_started
        history.append(record)
        shown = ("train_loss", "valid_loss", validator.monitor if validator else "")
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in shown})
        bar.close()
        log.info(
            "epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch")
        )
        if stopping.stop_after(model, record):
            stopped_early = epoch < config.epochs
            break
    kept_epoch = stopping.restore_best(model, history[-1]["epoch"])
    model.eval()
    model.encode_users(train)
    model.fit_closed_form(train)
    return FitResult(
        history, stopping.best_epoch, stopped_early, batch_losses, time.perf_counter() - started, kept_epoch
    )
