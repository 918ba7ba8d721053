"""The training loop: fastai's one-cycle AdamW recipe over tensors that live on the device.

The whole training set sits on the device as three tensors; an epoch is a shuffled permutation of
row indices sliced into batches, so there is no DataLoader and no per-sample Python.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from cfmodel.errors import CfrecError

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    n_factors: int = 50
    epochs: int = 5
    lr: float = 5e-3
    wd: float = 0.1
    bs: int = 256
    valid_pct: float = 0.2
    seed: int = 42

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise CfrecError(f"unknown device '{requested}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CfrecError(f"device '{requested}' requested but CUDA is not available on this machine")
    return device


def split_validation(n_rows: int, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random hold-out of `valid_pct` of the rows, reproducible from `seed` (fastai's RandomSplitter)."""
    if not 0.0 <= valid_pct < 1.0:
        raise CfrecError(f"valid_pct must be in [0, 1), got {valid_pct}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_valid = int(round(n_rows * valid_pct))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


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


@torch.no_grad()
def evaluate(model: nn.Module, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, bs: int = 65536) -> dict:
    if len(ratings) == 0:
        return {}
    model.eval()
    preds = torch.cat([model(users[i : i + bs], items[i : i + bs]) for i in range(0, len(ratings), bs)])
    err = preds.float() - ratings.float()
    return {"rmse": float(err.pow(2).mean().sqrt()), "mae": float(err.abs().mean())}


def fit(
    model: nn.Module,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    config: TrainConfig,
    device: torch.device,
) -> list[dict]:
    """Train `model` in place on (users, items, ratings) index arrays; return per-epoch history."""
    torch.manual_seed(config.seed)
    train_rows, valid_rows = split_validation(len(ratings), config.valid_pct, config.seed)
    model.to(device)
    u = torch.as_tensor(users, dtype=torch.long, device=device)
    i = torch.as_tensor(items, dtype=torch.long, device=device)
    r = torch.as_tensor(ratings, dtype=torch.float32, device=device)
    t_rows = torch.as_tensor(train_rows, device=device)
    v_rows = torch.as_tensor(valid_rows, device=device)
    u_valid, i_valid, r_valid = u[v_rows], i[v_rows], r[v_rows]

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.wd, betas=(0.9, 0.99), eps=1e-5)
    steps_per_epoch = math.ceil(len(train_rows) / config.bs)
    scheduler = one_cycle(optimizer, config.lr, config.epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    loss_fn = nn.MSELoss()
    history = []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        model.train()
        order = t_rows[torch.randperm(len(t_rows), generator=generator, device=device)]
        total = torch.zeros((), device=device)
        for start in range(0, len(order), config.bs):
            batch = order[start : start + config.bs]
            loss = loss_fn(model(u[batch], i[batch]), r[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach() * len(batch)
        record = {"epoch": epoch + 1, "train_loss": float(total) / max(len(order), 1)}
        valid = evaluate(model, u_valid, i_valid, r_valid)
        record.update({f"valid_{k}": v for k, v in valid.items()})
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        log.info("epoch %s", record)
    return history
