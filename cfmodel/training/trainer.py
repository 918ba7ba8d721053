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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from cfmodel.errors import CfrecError
from cfmodel.evaluation.holdout import holdout_metrics
from cfmodel.registry.artifact import ArtifactConfig, ModelArtifact
from cfmodel.registry.registry import ModelRegistry
from cfmodel.reporting import plots
from cfmodel.training.config import TrainConfig
from cfmodel.training.ids import IdIndex
from cfmodel.training.interactions import Interactions
from cfmodel.training.loop import FitResult, fit, resolve_device
from cfmodel.training.models import CollabModel, default_y_range, model_for
from cfmodel.training.splits import id_keys, split
from cfmodel.training.warmstart import warm_start
from cfmodel.warehouse import Warehouse
from cfmodel.warehouse.schemas import DATASETS, ITEM_INDEX, RATINGS, USER_INDEX

log = logging.getLogger(__name__)

INDEX_TABLES = {"user_id": USER_INDEX.name, "item_id": ITEM_INDEX.name}


def rating_scale(wh: Warehouse, ratings: pd.DataFrame) -> tuple[float, float]:
    """The scale ingest recorded for the source; the observed range if none was recorded."""
    datasets = wh.table(DATASETS)
    if datasets.exists():
        row = pd.read_parquet(datasets).iloc[0]
        if pd.notna(row["rating_min"]) and pd.notna(row["rating_max"]):
            return float(row["rating_min"]), float(row["rating_max"])
    return float(ratings["rating"].min()), float(ratings["rating"].max())


def read_ratings(wh: Warehouse) -> pd.DataFrame:
    path = wh.require(RATINGS)
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


@dataclass
class TrainingData:
    """The warehouse's ratings as index arrays, with the id mappings and the rating scale."""

    users: IdIndex
    items: IdIndex
    ratings: Interactions
    scale: tuple[float, float]
    ids_from: list[str]  # where each mapping came from: an index table, or the ratings
    untimed: int = 0  # ratings without a timestamp (goodbooks has none)

    @classmethod
    def read(cls, wh: Warehouse) -> TrainingData:
        ratings = read_ratings(wh)
        users, user_source = id_index(wh, ratings, "user_id")
        items, item_source = id_index(wh, ratings, "item_id")
        untimed = int(ratings["timestamp"].isna().sum()) if "timestamp" in ratings else len(ratings)
        data = Interactions(
            users.encode(ratings["user_id"]),
            items.encode(ratings["item_id"]),
            ratings["rating"].to_numpy(),
            ratings["timestamp"].to_numpy() if not untimed else None,
        )
        return cls(users, items, data, rating_scale(wh, ratings), [user_source, item_source], untimed)

    def split(self, config: TrainConfig) -> tuple[Interactions, Interactions]:
        """(train, valid) of these ratings by `config`'s split: for the random split, the same
        ratings are held out on every night's data (keyed by the ids, not the row order). The time
        split needs a timestamp on every rating: it is refused rather than guessed."""
        if config.split == "time" and self.untimed:
            raise CfrecError(
                f"--split time needs a timestamp on every rating, and {self.untimed} of {len(self.ratings)} "
                "have none (goodbooks records no time): use --split random"
            )
        keys = (id_keys(self.users.ids), id_keys(self.items.ids))
        return split(self.ratings, config.valid_pct, config.seed, config.split, keys)

    def model_for(self, config: TrainConfig) -> CollabModel:
        """A fresh model of `config.model` for these ids, with the y-range of this rating scale."""
        y_range = config.y_range or default_y_range(*self.scale)
        return model_for(config, len(self.users), len(self.items), y_range)


def train(
    warehouse: str | Path,
    run_date: str,
    config: TrainConfig,
    device: str = "auto",
    warm_start_from: str | None = None,
    version_suffix: str = "",
    fitter: Callable[..., FitResult] = fit,
    save: bool = True,
    progress: bool | None = None,
    saving: Callable[[], AbstractContextManager] = nullcontext,
) -> ModelArtifact:
    """Fit `config.model` on the warehouse's ratings and save it as a new version,
    models/<model>-<run_date><suffix> (`.2`, `.3`, ... for later attempts at the same date).

    `warm_start_from`: a saved version whose rows start the known ids. `version_suffix` tells apart
    models of the same type and date trained on another schedule (e.g. "-full"). `fitter` replaces
    the training loop (`cfmodel.training.distributed` passes its data-parallel one); `save=False`
    skips writing the artifact (every rank but the first). `saving`: the context the version is named
    and saved in (the warehouse's writer lock, so that training itself holds no lock).
    """
    wh = Warehouse.open(warehouse)
    registry = ModelRegistry(wh.models)
    version = registry.new_version(config.model, run_date, version_suffix)
    dev = resolve_device(device)
    data = TrainingData.read(wh)
    train_part, valid_part = data.split(config)
    model = data.model_for(config)
    previous = registry.load(warm_start_from) if warm_start_from else None
    warm = warm_start(model, data.users, data.items, previous) if previous else None
    result = fitter(model, train_part, valid_part, config, dev, progress)
    check_finite(model, version)
    valid = holdout_metrics(
        model, train_part, valid_part, len(data.items), device=dev, max_users=config.max_rank_users, seed=config.seed
    )
    if config.model == "rank" and config.rating_model != "none":
        valid["rating_model"] = fit_rater(model, data, train_part, valid_part, config, dev, progress, version)
    validated, trained_on = model.cpu().eval(), train_part
    if config.refit and len(valid_part):
        model = refit(validated, data, config, result, valid, dev, progress, version, previous, fitter)
        trained_on = data.ratings
    # Published with every user's whole history, so that a user whose ratings all fell in the
    # hold-out still gets a vector of its own.
    model.encode_users(data.ratings)
    users_known = data.ratings if model.encodes_history else trained_on
    split_sizes = {"ratings": len(data.ratings), "train": len(train_part), "valid": len(valid_part)}
    trained = ModelArtifact(
        version=version,
        model=model,
        holdout_model=validated if model is not validated else None,
        users=data.users,
        items=data.items,
        config=_artifact_config(model, config, data, split_sizes, dev, run_date, warm),
        metrics=_artifact_metrics(valid, result),
        attachments={"loss_curve.png": plots.loss_curve_png(result.batch_losses, result.history, version)},
        trained_users=np.bincount(users_known.users, minlength=len(data.users)) > 0,
        trained_items=np.bincount(trained_on.items, minlength=len(data.items)) > 0,
    )
    if save:
        with saving():
            # Another attempt at the same date may have saved while this one trained.
            trained = replace(trained, version=registry.new_version(config.model, run_date, version_suffix))
            registry.save(trained)
    shown = {k: round(v, 4) for k, v in valid["model"].items() if isinstance(v, float)}
    log.info("trained %s on %s in %.1fs: %s", trained.version, dev, result.seconds, shown)
    return trained


def refit(
    validated: CollabModel,
    data: TrainingData,
    config: TrainConfig,
    result: FitResult,
    valid: dict,
    device: torch.device,
    progress: bool | None,
    version: str,
    previous: ModelArtifact | None,
    fitter: Callable[..., FitResult] = fit,
) -> CollabModel:
    """The model fitted afresh on every rating, hold-out included, for the epochs validation chose
    (and its rating model the same way): what is published. The validated model is kept beside it,
    as what the gate measures on the hold-out."""
    full = replace(config, epochs=result.kept_epoch or config.epochs)
    model = data.model_for(full)
    if previous is not None:
        warm_start(model, data.users, data.items, previous)
    log.info("refitting on all %d ratings for %d epochs", len(data.ratings), full.epochs)
    fitter(model, data.ratings, None, full, device, progress)
    check_finite(model, version)
    if "rating_model" in valid:
        rating = rater_config(config)
        rating = replace(rating, epochs=valid["rating_model"].get("epochs") or rating.epochs)
        model.rater = data.model_for(rating)
        fit(model.rater, data.ratings, None, rating, device, progress)
        check_finite(model.rater, version)
    return model.cpu().eval()


def rater_config(config: TrainConfig) -> TrainConfig:
    """The rating model beside a ranking model: its own defaults, the ranking model's split."""
    return TrainConfig.for_model(
        config.rating_model, valid_pct=config.valid_pct, split=config.split, seed=config.seed, y_range=config.y_range
    )


def fit_rater(
    model: CollabModel,
    data: TrainingData,
    train_part: Interactions,
    valid_part: Interactions,
    config: TrainConfig,
    device: torch.device,
    progress: bool | None,
    version: str,
) -> dict[str, float]:
    """Fit `config.rating_model` with its own defaults on the same split, as the ranking model's
    `rater` (the predicted ratings shown beside its lists); returns its hold-out RMSE and MAE and
    the epochs it kept."""
    rating_config = rater_config(config)
    rater = data.model_for(rating_config)
    fitted = fit(rater, train_part, valid_part, rating_config, device, progress)
    check_finite(rater, version)
    model.rater = rater
    # Only its rating errors matter here: its lists are never published, so rank one user, not all.
    measured = holdout_metrics(rater, train_part, valid_part, len(data.items), device=device, max_users=1)["model"]
    return {k: v for k, v in measured.items() if k in ("rmse", "mae")} | {"epochs": fitted.kept_epoch}


def check_finite(model: CollabModel, version: str) -> None:
    """A model whose weights went non-finite (a learning rate far too high, say) is never saved."""
    broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        raise CfrecError(
            f"training {version} diverged: non-finite weights in {', '.join(broken)}; "
            "nothing was saved (try a lower --lr)"
        )


def _artifact_config(
    model: CollabModel,
    config: TrainConfig,
    data: TrainingData,
    split_sizes: dict[str, int],
    device: torch.device,
    run_date: str,
    warm: dict | None,
) -> ArtifactConfig:
    hparams = model.hparams()
    return ArtifactConfig(
        model_type=config.model,
        hparams=hparams,
        n_users=len(data.users),
        n_items=len(data.items),
        n_factors=hparams.get("n_factors"),
        y_range=list(model.y_range) if model.predicts_ratings else None,
        rating_scale=list(data.scale),
        train=config.as_dict(),
        device=str(device),
        torch=torch.__version__,
        run_date=run_date,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        data={**split_sizes, "users": len(data.users), "items": len(data.items), "ids_from": data.ids_from},
        warm_start=warm,
    )


def _artifact_metrics(valid: dict, result: FitResult) -> dict:
    final = result.history[-1] if result.history else {}
    return {
        "valid": valid,
        **{f"valid_{k}": valid["model"].get(k) for k in ("rmse", "mae") if k in valid["model"]},
        "train_loss": final.get("train_loss"),
        "train_seconds": result.seconds,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "kept_epoch": result.kept_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history,
    }
