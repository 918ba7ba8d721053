"""Versioned model artifacts: weights, id mappings, config and metrics in one folder.

models/<version>/model.pt         state_dict
models/<version>/config.json      model type and hyper-parameters, y_range, training options,
                                  device, data snapshot, warm start
models/<version>/metrics.json     hold-out metrics of the model and the popularity baseline,
                                  per-epoch history
models/<version>/loss_curve.png   training and validation loss
models/<version>/users.parquet    id -> index
models/<version>/items.parquet
models/CURRENT                    the version scoring uses by default
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cfmodel.errors import CfrecError
from cfmodel.training.ids import IdIndex
from cfmodel.training.models import model_from_config
from cfmodel.warehouse.store import publish


@dataclass
class ModelArtifact:
    version: str
    model: nn.Module
    users: IdIndex
    items: IdIndex
    config: dict
    metrics: dict
    attachments: dict[str, bytes] = field(default_factory=dict)  # extra files, e.g. loss_curve.png

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", getattr(self.model, "model_type", "dot"))

    def factors(self) -> dict[str, np.ndarray]:
        """user_vectors, user_bias, item_vectors, item_bias as float32 numpy arrays.

        dot: its vectors and biases (score = u . i + b_u + b_i through the y-range). rank: its
        vectors and item biases, zero user biases (score = u . i + b_i). nn: its user and item
        embeddings, which have different widths and are meant for similarity, not dot products,
        and zero biases.
        """
        return {k: v.detach().float().cpu().numpy() for k, v in self.model.factor_tables().items()}


def save(artifact: ModelArtifact, models_dir: Path) -> Path:
    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        torch.save({k: v.cpu() for k, v in artifact.model.state_dict().items()}, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(artifact.config, indent=2))
        (tmp / "metrics.json").write_text(json.dumps(artifact.metrics, indent=2))
        artifact.users.to_frame().to_parquet(tmp / "users.parquet", index=False)
        artifact.items.to_frame().to_parquet(tmp / "items.parquet", index=False)
        for name, content in artifact.attachments.items():
            (tmp / name).write_bytes(content)

    return publish(Path(models_dir) / artifact.version, write)


def set_current(models_dir: Path, version: str) -> None:
    tmp = models_dir / f".CURRENT.{os.getpid()}"
    tmp.write_text(version + "\n")
    os.replace(tmp, models_dir / "CURRENT")


def current_version(models_dir: Path) -> str:
    marker = models_dir / "CURRENT"
    if not marker.is_file():
        raise CfrecError(f"no trained model in {models_dir}; run 'cfrec train' first")
    return marker.read_text().strip()


def load(models_dir: Path, version: str | None = None) -> ModelArtifact:
    """A saved model of any type, rebuilt from its config.json, on CPU in eval mode."""
    models_dir = Path(models_dir)
    version = version or current_version(models_dir)
    folder = models_dir / version
    if not (folder / "_SUCCESS").is_file():
        raise CfrecError(f"model version '{version}' not found (or incomplete) in {models_dir}")
    config = json.loads((folder / "config.json").read_text())
    try:
        model = model_from_config(config)
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    except (KeyError, TypeError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:300]  # one line, as the CLI prints it
        raise CfrecError(f"model version '{version}' cannot be rebuilt from its config.json: {detail}") from None
    model.eval()
    return ModelArtifact(
        version=version,
        model=model,
        users=IdIndex.from_frame(pd.read_parquet(folder / "users.parquet")),
        items=IdIndex.from_frame(pd.read_parquet(folder / "items.parquet")),
        config=config,
        metrics=json.loads((folder / "metrics.json").read_text()),
    )
