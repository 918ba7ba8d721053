"""The train task: the warehouse's `ratings` table -> a versioned model artifact."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from cfmodel import artifact
from cfmodel.errors import CfrecError
from cfmodel.ids import IdIndex
from cfmodel.models import EmbeddingDotBias, default_y_range
from cfmodel.training import TrainConfig, fit, resolve_device
from cfmodel.warehouse import Warehouse

log = logging.getLogger(__name__)


def rating_scale(wh: Warehouse, ratings: pd.DataFrame) -> tuple[float, float]:
    """The scale ingest recorded for the source; the observed range if none was recorded."""
    datasets = wh.table("datasets")
    if datasets.exists():
        row = pd.read_parquet(datasets).iloc[0]
        return float(row["rating_min"]), float(row["rating_max"])
    return float(ratings["rating"].min()), float(ratings["rating"].max())


def train(
    warehouse: str | Path,
    run_date: str,
    config: TrainConfig | None = None,
    device: str = "auto",
    y_range: tuple[float, float] | None = None,
) -> artifact.ModelArtifact:
    config = config or TrainConfig()
    wh = Warehouse.open(warehouse)
    dev = resolve_device(device)
    ratings = pd.read_parquet(wh.require("ratings"), columns=["user_id", "item_id", "rating"])
    if ratings.empty:
        raise CfrecError(f"the ratings table in {wh.root} is empty")
    users = IdIndex.from_values(ratings["user_id"])
    items = IdIndex.from_values(ratings["item_id"])
    y_range = y_range or default_y_range(*rating_scale(wh, ratings))

    model = EmbeddingDotBias(len(users), len(items), config.n_factors, y_range)
    started = time.perf_counter()
    history = fit(
        model,
        users.encode(ratings["user_id"]),
        items.encode(ratings["item_id"]),
        ratings["rating"].to_numpy(),
        config,
        dev,
    )
    seconds = time.perf_counter() - started
    model.cpu().eval()

    final = history[-1] if history else {}
    trained = artifact.ModelArtifact(
        version=f"dot-{run_date}",
        model=model,
        users=users,
        items=items,
        config={
            "model_type": "dot",
            "n_users": len(users),
            "n_items": len(items),
            "n_factors": config.n_factors,
            "y_range": list(y_range),
            "train": config.as_dict(),
            "device": str(dev),
            "torch": torch.__version__,
            "run_date": run_date,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": {"ratings": len(ratings), "users": len(users), "items": len(items)},
        },
        metrics={
            "valid_rmse": final.get("valid_rmse"),
            "valid_mae": final.get("valid_mae"),
            "train_loss": final.get("train_loss"),
            "train_seconds": seconds,
            "history": history,
        },
    )
    artifact.save(trained, wh.models)
    log.info("trained %s on %s in %.1fs: %s", trained.version, dev, seconds, trained.metrics["valid_rmse"])
    return trained
