"""fastai's learning-rate finder: train briefly with an exponentially rising rate, watch the loss.

The rate grows from `start_lr` to `end_lr` over `num_it` batches (AdamW, fixed momentum, the
model's own objective) on a copy of the model, recording the smoothed loss, and stops early once
the loss exceeds four times its minimum. Suggestions follow fastai: `valley` (the default, the
middle of the longest descending run), `minimum` (a tenth of the rate at the lowest loss) and
`steep` (the steepest descent).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cfmodel.errors import CfrecError
from cfmodel.reporting.plots import lr_find_png
from cfmodel.training.config import TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.loop import cpu_threads, resolve_device
from cfmodel.training.losses import make_loss
from cfmodel.training.models import CollabModel


@dataclass
class LrFindResult:
    model: str  # the model type swept
    lrs: list[float]
    losses: list[float]  # smoothed, debiased
    suggestions: dict[str, float]

    @property
    def suggested(self) -> float:
        return self.suggestions["valley"]

    def png(self) -> bytes:
        return lr_find_png(self.lrs, self.losses, self.suggestions)


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The rate two thirds of the way down the longest run of decreasing loss (fastai's `valley`)."""
    n = len(losses)
    longest = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[end] < longest[i]:
                end, start = i, i - longest[i]
    section = (end - start) / 3
    return float(lrs[start + int(section) + int(section / 2)])


def suggest(lrs: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    n = len(losses)
    # fastai ignores the first tenth (the smoother is still warming up) and the last few points.
    lrs, losses = lrs[n // 10 : max(n // 10 + 2, n - 5)], losses[n // 10 : max(n // 10 + 2, n - 5)]
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return {
        "valley": valley(lrs, losses),
        "minimum": float(lrs[np.argmin(losses)] / 10),
        "steep": float(lrs[int(np.argmin(slopes))]),
    }


def lr_find(
    model: CollabModel,
    train: Interactions,
    config: TrainConfig,
    device: torch.device,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    beta: float = 0.98,
) -> LrFindResult:
    if not 0 < start_lr < end_lr:
        raise CfrecError(f"lr-find needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_it < 20:
        raise CfrecError(f"lr-find needs at least 20 iterations, got {num_it}")
    probe = copy.deepcopy(model).to(device).train()
    with cpu_threads(probe, device):
        generator = torch.Generator(device=device).manual_seed(config.seed)
        loss_fn = make_loss(probe, config, train, device, generator)
        data = loss_fn.prepare(train)
        u, i, r = (torch.as_tensor(a, device=device) for a in (data.users, data.items, data.ratings))
        optimizer = torch.optim.AdamW(
            probe.parameters(), lr=start_lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=config.wd
        )
        growth = (end_lr / start_lr) ** (1 / (num_it - 1))
        lrs, losses, avg, best = [], [], 0.0, math.inf
        order = torch.empty(0, dtype=torch.long, device=device)
        for step in range(num_it):
            if len(order) < config.bs:
                order = torch.cat([order, torch.randperm(len(r), generator=generator, device=device)])
            batch, order = order[: config.bs], order[config.bs :]
            lr = start_lr * growth**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = loss_fn(probe, u[batch], i[batch], r[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > 4 * best:
                break
    if len(losses) < 10:
        raise CfrecError(f"lr-find diverged after {len(losses)} steps; lower start_lr")
    return LrFindResult(model.model_type, lrs, losses, suggest(np.asarray(lrs), np.asarray(losses)))


def lr_find_on_warehouse(
    warehouse: str | Path,
    config: TrainConfig,
    device: str = "auto",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
) -> LrFindResult:
    """`lr_find` for a fresh `config.model` on the training part of the warehouse's ratings."""
    from cfmodel.training.trainer import TrainingData
    from cfmodel.warehouse import Warehouse

    data = TrainingData.read(Warehouse.open(warehouse))
    train_part, _ = data.split(config)
    return lr_find(data.model_for(config), train_part, config, resolve_device(device), start_lr, end_lr, num_it)
