"""PNG charts: the training loss curve, the learning-rate finder, the item PCA scatter.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend), so they work
on servers and inside Airflow workers without a display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def smooth(values: Sequence[float], beta: float = 0.98) -> np.ndarray:
    """fastai's debiased exponential moving average."""
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * float(v)
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def loss_curve_png(batch_losses: Sequence[float], history: Sequence[dict], title: str = "") -> bytes:
    """Smoothed training loss per step, and the validation loss at the end of each epoch."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    steps = np.arange(1, len(batch_losses) + 1)
    if len(batch_losses):
        ax.plot(steps, smooth(batch_losses), label="train (smoothed)")
    per_epoch = len(batch_losses) / max(len(history), 1)
    valid = [(h["epoch"] * per_epoch, h["valid_loss"]) for h in history if "valid_loss" in h]
    if valid:
        x, y = zip(*valid)
        ax.plot(x, y, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def lr_find_png(lrs: Sequence[float], losses: Sequence[float], suggestions: dict[str, float]) -> bytes:
    """Loss against learning rate (log scale), with the suggested rates marked."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    lrs_arr, losses_arr = np.asarray(lrs), np.asarray(losses)
    for (name, lr), marker in zip(suggestions.items(), "ovs^"):
        at = int(np.argmin(np.abs(np.log(lrs_arr) - np.log(lr))))
        ax.plot(lr, losses_arr[at], marker, markersize=8, label=f"{name}: {lr:.2e}")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def scatter_png(x: np.ndarray, y: np.ndarray, labels: Sequence[str], xlabel: str, ylabel: str, title: str) -> bytes:
    """Labelled points, e.g. items on two principal components of their vectors."""
    fig = Figure(figsize=(12, 12))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=12, alpha=0.6)
    for xi, yi, label in zip(x, y, labels):
        ax.text(xi, yi, str(label)[:40], fontsize=8, alpha=0.85)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)
