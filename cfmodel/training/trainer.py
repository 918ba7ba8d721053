"""The train task: the warehouse's `ratings` table -> a versioned model artifact.

Ids map to indices through ingest's stable `user_index`/`item_index` tables when they exist (so a
warm start lines up row for row), otherwise through indices built from the ratings. A part of the
ratings is held out (random or each user's latest), the model is fitted on the rest, and the
artifact records the model's and the most-popular baseline's metrics on that hold-out. Setting
models/CURRENT is not this task's business (see cfmodel.registry.gate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch

from cfmodel.errors import CfrecError
from cfmodel.evaluation.metrics import holdout_metrics
from cfmodel.registry import artifact
from cfmodel.reporting import plots
from cfmodel.training.ids import IdIndex
from cfmodel.training.interactions import Interactions
from cfmodel.training.loop import FitResult, TrainConfig, fit, model_for, resolve_device
from cfmodel.training.models import default_y_range
from cfmodel.training.splits import split
from cfmodel.training.warmstart import previous_model, warm_start
from cfmodel.warehouse.store import Warehouse

log = logging.getLogger(__name__)

INDEX_TABLES = {"user_id": "user_index", "item_id": "item_index"}


def rating_scale(wh: Warehouse, ratings: pd.DataFrame) -> tuple[float, float]:
    """The scale ingest recorded for the source; the observed range if none was recorded."""
    datasets = wh.table("datasets")
    if datasets.exists():
        row = pd.read_parquet(datasets).iloc[0]
        if pd.notna(row["rating_min"]) and pd.notna(row["rating_max"]):
            return float(row["rating_min"]), float(row["rating_max"])
    return float(ratings["rating"].min()), float(ratings["rating"].max())


def read_ratings(wh: Warehouse) -> pd.DataFrame:
    path = wh.require("ratings")
    available = set(pq.ParquetDataset(path).schema.names)
    columns = ["user_id", "item_id", "rating"] + (["timestamp"] if "timestamp" in available else [])
    ratings = pd.read_parquet(path, columns=columns)
    if ratings.empty:
        raise CfrecError(f"the ratings table in {wh.root} is empty")
    return ratings


def id_index(wh: Warehouse, ratings: pd.DataFrame, column: str) -> tuple[IdIndex, str]:
    """(index, where it came from): ingest's stable index table, or one built from the ratings."""
    table = wh.table(INDEX_TABLES[column])
    if not table.exists():
        return IdIndex.from_values(ratings[column]), "ratings"
    try:
        index = IdIndex.from_frame(pd.read_parquet(table, columns=["id", "index"]))
    except ValueError as exc:
        raise CfrecError(f"table {INDEX_TABLES[column]} in {wh.root} is not usable: {exc}") from None
    codes = index.encode(ratings[column])
    missing = pd.unique(ratings[column][codes < 0])
    if len(missing):
        raise CfrecError(
            f"{len(missing)} {column}s of the ratings table are missing from {INDEX_TABLES[column]} "
            f"(e.g. '{missing[0]}'); re-run ingest"
        )
    # Ids are appended in ingest order: a re-run of an older date sees ids that only later dates
    # added at the end. Leaving them out keeps the model exactly as that date first built it.
    used = int(codes.max()) + 1 if len(codes) else 0
    return (IdIndex(index.ids[:used]) if used < len(index) else index), INDEX_TABLES[column]


def train(
    warehouse: str | Path,
    run_date: str,
    config: TrainConfig | None = None,
    device: str = "auto",
    y_range: tuple[float, float] | None = None,
    warm_start_from: artifact.ModelArtifact | str | None = None,
    progress: bool | None = None,
    version_suffix: str = "",
    fitter: Callable[..., FitResult] = fit,
    save: bool = True,
) -> artifact.ModelArtifact:
    """Fit `config.model` on the warehouse's ratings and save it as models/<model>-<run_date><suffix>.

    `warm_start_from`: a previous artifact, a version, or "current" (the current model when it is
    of the same type, else a fresh start). `version_suffix` tells apart models of the same type
    and date trained on another schedule (e.g. "-weekly"). `fitter` replaces the training loop
    (cfmodel.training.distributed passes its data-parallel one); `save=False` skips writing the artifact
    (every rank but the first). Returns the trained artifact.
    """
    config = config or TrainConfig()
    config.check()
    if version_suffix and not all(c.isalnum() or c in "-_." for c in version_suffix):
        raise CfrecError(f"version suffix may hold only letters, digits, '-', '_' and '.', got '{version_suffix}'")
    version = f"{config.model}-{run_date}{version_suffix}"
    wh = Warehouse.open(warehouse)
    dev = resolve_device(device)
    ratings = read_ratings(wh)
    users, user_source = id_index(wh, ratings, "user_id")
    items, item_source = id_index(wh, ratings, "item_id")
    data = Interactions(
        users.encode(ratings["user_id"]),
        items.encode(ratings["item_id"]),
        ratings["rating"].to_numpy(),
        ratings["timestamp"].to_numpy() if "timestamp" in ratings else None,
    )
    train_part, valid_part = split(data, config.valid_pct, config.seed, config.split)
    scale = rating_scale(wh, ratings)
    y_range = tuple(y_range or default_y_range(*scale))
    model = model_for(config, len(users), len(items), y_range)

    previous = previous_model(wh.models, warm_start_from, config.model)
    warm = warm_start(model, users, items, previous) if previous is not None else None
    result = fitter(model, train_part, valid_part, config, dev, progress)
    valid = holdout_metrics(
        model, train_part, valid_part, len(items), device=dev, max_users=config.max_rank_users, seed=config.seed
    )
    model.cpu().eval()

    final = result.history[-1] if result.history else {}
    hparams = model.hparams()
    trained = artifact.ModelArtifact(
        version=version,
        model=model,
        users=users,
        items=items,
        config={
            "model_type": config.model,
            "hparams": hparams,
            "n_users": len(users),
            "n_items": len(items),
            "n_factors": hparams.get("n_factors"),
            **({"y_range": list(y_range)} if model.predicts_ratings else {}),
            "rating_scale": list(scale),
            "train": config.as_dict(),
            "device": str(dev),
            "torch": torch.__version__,
            "run_date": run_date,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": {
                "ratings": len(data),
                "train": len(train_part),
                "valid": len(valid_part),
                "users": len(users),
                "items": len(items),
                "ids_from": [user_source, item_source],
            },
            "warm_start": warm,
        },
        metrics={
            "valid": valid,
            **{f"valid_{k}": valid["model"].get(k) for k in ("rmse", "mae") if k in valid["model"]},
            "train_loss": final.get("train_loss"),
            "train_seconds": result.seconds,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "history": result.history,
        },
        attachments={"loss_curve.png": plots.loss_curve_png(result.batch_losses, result.history, version)},
    )
    if save:
        artifact.save(trained, wh.models)
    log.info(
        "trained %s on %s in %.1fs: %s",
        version,
        dev,
        result.seconds,
        {k: round(v, 4) for k, v in valid["model"].items() if isinstance(v, float)},
    )
    return trained
