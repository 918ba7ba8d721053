"""Versioned model artifacts: weights, id mappings, config and metrics in one folder.

    models/<version>/model.pt        state_dict
    models/<version>/config.json     model type, sizes, y_range, training options, data snapshot
    models/<version>/metrics.json    validation metrics and per-epoch history
    models/<version>/users.parquet   id -> index
    models/<version>/items.parquet
    models/CURRENT                   the version scoring uses by default
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfmodel.errors import CfrecError
from cfmodel.ids import IdIndex
from cfmodel.models import EmbeddingDotBias
from cfmodel.warehouse import publish


@dataclass
class ModelArtifact:
    version: str
    model: EmbeddingDotBias
    users: IdIndex
    items: IdIndex
    config: dict
    metrics: dict

    def factors(self) -> dict[str, np.ndarray]:
        """The learned vectors and biases as float32 numpy arrays, for scoring outside torch."""
        m = self.model
        grab = lambda emb: emb.weight.detach().float().cpu().numpy()  # noqa: E731
        return {
            "user_vectors": grab(m.u_weight),
            "user_bias": grab(m.u_bias)[:, 0],
            "item_vectors": grab(m.i_weight),
            "item_bias": grab(m.i_bias)[:, 0],
        }


def save(artifact: ModelArtifact, models_dir: Path) -> Path:
    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        torch.save({k: v.cpu() for k, v in artifact.model.state_dict().items()}, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(artifact.config, indent=2))
        (tmp / "metrics.json").write_text(json.dumps(artifact.metrics, indent=2))
        artifact.users.to_frame().to_parquet(tmp / "users.parquet", index=False)
        artifact.items.to_frame().to_parquet(tmp / "items.parquet", index=False)

    return publish(models_dir / artifact.version, write)


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
    version = version or current_version(models_dir)
    folder = models_dir / version
    if not (folder / "_SUCCESS").is_file():
        raise CfrecError(f"model version '{version}' not found (or incomplete) in {models_dir}")
    config = json.loads((folder / "config.json").read_text())
    model = EmbeddingDotBias(config["n_users"], config["n_items"], config["n_factors"], tuple(config["y_range"]))
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return ModelArtifact(
        version=version,
        model=model,
        users=IdIndex.from_frame(pd.read_parquet(folder / "users.parquet")),
        items=IdIndex.from_frame(pd.read_parquet(folder / "items.parquet")),
        config=config,
        metrics=json.loads((folder / "metrics.json").read_text()),
    )
