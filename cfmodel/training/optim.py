"""fastai's optimiser and schedule: AdamW with decoupled weight decay, one-cycle learning rate.

A training step of the small tables this project trains is a few hundred microseconds, and
torch's `Optimizer.step` spends about 100 of them in Python before its one fused kernel per
parameter group; `LeanAdamW` calls that kernel directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cfmodel.training.config import TrainConfig

# The fused AdamW kernel that torch's own fused step calls (present since torch 2.0).
FUSED_ADAMW = getattr(torch, "_fused_adamw_", None)
# fastai's AdamW settings; beta1 is the one-cycle schedule's momentum.
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-5


class LeanAdamW(torch.optim.AdamW):
    """torch's fused AdamW, same state and same updates, whose step calls the fused kernel directly.

    Anything the short path does not cover (a closure, sparse gradients, amsgrad, a torch without
    the kernel) goes through torch's own step.
    """

    def __init__(self, params: Iterable, **kwargs: Any) -> None:
        super().__init__(params, fused=True, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        if closure is not None or FUSED_ADAMW is None:
            return super().step(closure)
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group["differentiable"]:
                return super().step(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("AdamW does not support sparse gradients")
            states = [self._state_of(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            FUSED_ADAMW(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        return None

    @torch.no_grad()
    def step_rows(self, row_gradients: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """A lazy step for tables of which a step touches few rows: `row_gradients` maps a table
        to (its distinct touched rows, their gradients), and only those rows' weights and moments
        change. Untouched rows are neither moved nor decayed (as TensorFlow's LazyAdam); bias
        correction follows the optimiser's step count. A dense step over a table of 10M weights
        costs ~15 ms on a CPU core, this one a few hundred rows' worth."""
        self._opt_called = True  # what torch's schedulers check that a step came first
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param not in row_gradients:
                    continue
                rows, grads = row_gradients[param]
                state = self._state_of(param)
                state["step"] += 1
                weights, avg, avg_sq = param[rows], state["exp_avg"][rows], state["exp_avg_sq"][rows]
                FUSED_ADAMW(
                    [weights],
                    [grads],
                    [avg],
                    [avg_sq],
                    [],
                    [state["step"]],
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    amsgrad=False,
                    maximize=False,
                    grad_scale=None,
                    found_inf=None,
                )
                param[rows], state["exp_avg"][rows], state["exp_avg_sq"][rows] = weights, avg, avg_sq

    def _state_of(self, param: torch.Tensor) -> dict:
        """The parameter's AdamW state, created as torch's fused step creates it."""
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with fastai's betas and eps; per-user and per-item biases get their own decay."""
    bias_names = {f"{name}.weight" for name in model.bias_tables}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if n not in bias_names], "weight_decay": config.wd},
        {"params": [p for n, p in params if n in bias_names], "weight_decay": config.bias_wd},
    ]
    groups = [g for g in groups if g["params"]]
    # Fused (one kernel per parameter group) on the CPU too: several times faster for small tables.
    return LeanAdamW(groups, lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS)


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """fastai's fit_one_cycle defaults: div 25, final div 1e5, 25% warm-up, momentum 0.95->0.85->0.95."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        # With 4 steps or fewer torch's warm-up phase ends at step 0 or before, and 4 divides by zero;
        # a tiny night then stops short of the schedule's end, which is harmless.
        total_steps=max(total_steps, 5),
        pct_start=0.25,
        div_factor=25.0,
        final_div_factor=1e5,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )


def one_cycle_values(lr: float, total_steps: int) -> list[tuple[float, float]]:
    """(learning rate, beta1) of each of `total_steps` steps under `one_cycle`, for a training loop
    that steps its own optimiser."""
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr, betas=ADAM_BETAS)
    schedule = one_cycle(optimizer, lr, total_steps)
    optimizer._opt_called = True  # what torch's schedulers check that a step came first
    group, values = optimizer.param_groups[0], []
    for _ in range(total_steps):
        values.append((group["lr"], group["betas"][0]))
        schedule.step()
    return values
