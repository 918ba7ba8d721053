"""A trained model as the registry stores it: weights, id mappings, config and metrics in one folder.

<version>/model.pt         state_dict of the published model
<version>/holdout_model.pt state_dict of the same model fitted without the hold-out (when the
                           published one was refitted on every rating): what the gate measures
<version>/config.json      `ArtifactConfig`: model type and hyper-parameters, y-range, training
                           options, device, data snapshot, warm start
<version>/metrics.json     hold-out metrics of the model and the popularity baseline, per-epoch history
<version>/loss_curve.png   training and validation loss
<version>/users.parquet    id -> index
<version>/items.parquet
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cfmodel.errors import CfrecError
from cfmodel.training.ids import IdIndex
from cfmodel.training.models import CollabModel, build_model


@dataclass
class ArtifactConfig:
    """config.json: how to rebuild the model, and what it was trained on, where and how."""

    model_type: str = ""
    hparams: dict[str, Any] = field(default_factory=dict)  # the model's constructor arguments
    n_users: int = 0
    n_items: int = 0
    n_factors: int | None = None
    y_range: list[float] | None = None  # rating models only
    rating_scale: list[float] | None = None
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig.as_dict()
    device: str | None = None
    torch: str | None = None
    run_date: str | None = None
    created_at: str | None = None  # ISO-8601, UTC
    data: dict[str, Any] = field(default_factory=dict)  # sizes of the data snapshot and its split
    warm_start: dict[str, Any] | None = None  # what was copied from which version

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["y_range"] is None:
            del out["y_range"]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ArtifactConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def day(self) -> str | None:
        """The run date the model was trained for (its creation day for models that name none)."""
        return self.run_date or (self.created_at or "")[:10] or None


@dataclass
class ModelArtifact:
    version: str
    model: CollabModel
    users: IdIndex
    items: IdIndex
    config: ArtifactConfig
    metrics: dict
    attachments: dict[str, bytes] = field(default_factory=dict)  # extra files, e.g. loss_curve.png
    # Which rows training moved: a user or item whose every rating was held out keeps its initial
    # vector, which must never order a list (None: every row was trained).
    trained_users: np.ndarray | None = None
    trained_items: np.ndarray | None = None
    # The model fitted without the hold-out, when `model` was refitted on every rating: its
    # metrics are the ones recorded, and the gate measures it (None: `model` is that model).
    holdout_model: CollabModel | None = None

    @property
    def validated_model(self) -> CollabModel:
        """The model that never saw the hold-out: what a comparison on the hold-out may measure."""
        return self.holdout_model if self.holdout_model is not None else self.model

    @property
    def untrained_items(self) -> np.ndarray:
        """Item indices with no trained vector: masked out of every list and neighbour table."""
        if self.trained_items is None:
            return np.empty(0, np.int64)
        return np.flatnonzero(~self.trained_items)

    @property
    def model_type(self) -> str:
        return self.model.model_type

    def factors(self) -> dict[str, np.ndarray]:
        """user_vectors, user_bias, item_vectors, item_bias as float32 numpy arrays (see
        `CollabModel.factor_tables`)."""
        return {k: v.detach().float().cpu().numpy() for k, v in self.model.factor_tables().items()}


CHECKSUMS = "checksums.json"
HOLDOUT_MODEL = "holdout_model.pt"


def write_artifact(artifact: ModelArtifact, folder: Path) -> None:
    folder.mkdir(parents=True)
    torch.save({k: v.cpu() for k, v in artifact.model.state_dict().items()}, folder / "model.pt")
    if artifact.holdout_model is not None:
        state = {k: v.cpu() for k, v in artifact.holdout_model.state_dict().items()}
        torch.save(state, folder / HOLDOUT_MODEL)
    (folder / "config.json").write_text(json.dumps(artifact.config.to_dict(), indent=2))
    (folder / "metrics.json").write_text(json.dumps(artifact.metrics, indent=2))
    for name, ids, trained in (
        ("users", artifact.users, artifact.trained_users),
        ("items", artifact.items, artifact.trained_items),
    ):
        frame = ids.to_frame()
        if trained is not None:
            frame["trained"] = trained
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    for name, content in artifact.attachments.items():
        (folder / name).write_bytes(content)
    sums = {path.name: file_sha256(path) for path in sorted(folder.iterdir())}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=2))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksums(folder: Path) -> None:
    """Every file the artifact was saved with, unchanged; CfrecError naming the first that is not."""
    sums = json.loads((folder / CHECKSUMS).read_text())
    for name, expected in sums.items():
        if file_sha256(folder / name) != expected:
            raise CfrecError(f"{name} does not match the checksum it was saved with")


def read_artifact(folder: Path, version: str) -> ModelArtifact:
    """A saved model of any type, rebuilt from its config.json, on the CPU in eval mode. A damaged or
    incomplete artifact is a CfrecError naming the version and what is wrong with it."""
    try:
        verify_checksums(folder)
        config = ArtifactConfig.from_dict(json.loads((folder / "config.json").read_text()))
        model = build_model(config.model_type, **config.hparams)
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
        holdout_model = None
        if (folder / HOLDOUT_MODEL).exists():
            holdout_model = build_model(config.model_type, **config.hparams)
            holdout_model.load_state_dict(torch.load(folder / HOLDOUT_MODEL, map_location="cpu", weights_only=True))
            holdout_model.eval()
        user_frame, item_frame = (pd.read_parquet(folder / f"{name}.parquet") for name in ("users", "items"))
        users, items = IdIndex.from_frame(user_frame), IdIndex.from_frame(item_frame)
        trained_users, trained_items = (_trained(frame) for frame in (user_frame, item_frame))
        metrics = json.loads((folder / "metrics.json").read_text())
    # A damaged file fails in its reader's own way (JSON, torch's unpickler, Arrow, tensor shapes), and
    # any of them means the same here: this version cannot be used.
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]  # one line, as the CLI prints it
        raise CfrecError(f"model version '{version}' in {folder.parent} cannot be loaded: {detail}") from None
    if (len(users), len(items)) != (model.n_users, model.n_items):
        raise CfrecError(
            f"model version '{version}' is inconsistent: {len(users)} users and {len(items)} items "
            f"in its id files, {model.n_users} and {model.n_items} in model.pt"
        )
    model.eval()
    return ModelArtifact(
        version=version,
        model=model,
        users=users,
        items=items,
        config=config,
        metrics=metrics,
        trained_users=trained_users,
        trained_items=trained_items,
        holdout_model=holdout_model,
    )


def _trained(frame: pd.DataFrame) -> np.ndarray | None:
    """The `trained` flags in index order (None for artifacts saved before they were recorded)."""
    if "trained" not in frame:
        return None
    return frame.sort_values("index")["trained"].to_numpy(bool)
