"""Two models measured on the same hold-out: the ratings the candidate held out of the night's data.

Each model's metrics.json holds its metrics on its own hold-out, drawn from its own night's data, so
two nights' numbers are not comparable. The gate therefore measures the candidate and the model it
would replace again, on the candidate's validation ratings whose user and item both models know,
each as it was fitted without that night's hold-out (`ModelArtifact.validated_model`: a published
model refitted on every rating has seen it).
The random split is keyed by the ids (`cfmodel.training.splits`): with the same seed and share, no
earlier model trained on those ratings either. Under a time split or other split settings the
earlier model may have seen some of them, which favours it: the gate then errs toward keeping what
is current.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfmodel.evaluation.holdout import holdout_metrics
from cfmodel.registry.artifact import ModelArtifact
from cfmodel.registry.registry import ModelRegistry
from cfmodel.training.config import TrainConfig
from cfmodel.training.interactions import Interactions


@dataclass
class SameHoldout:
    candidate: dict[str, float]  # holdout_metrics' "model" part, for each model
    other: dict[str, float]
    ratings: int  # held-out ratings both models were measured on
    popularity: dict[str, float] | None = None  # the most-popular list on the same ratings

    def as_metrics(self) -> tuple[dict, dict]:
        """Both as metrics.json's nested "valid" split, the shape the gate decides on."""
        return {"valid": {"model": self.candidate}}, {"valid": {"model": self.other}}


def _split_config(candidate: ModelArtifact) -> TrainConfig:
    trained = candidate.config.train
    keys = ("valid_pct", "seed", "split", "max_rank_users")
    return TrainConfig.for_model(trained.get("model", candidate.model_type), **{k: trained.get(k) for k in keys})


def _in_model(part: Interactions, users: np.ndarray, items: np.ndarray) -> Interactions:
    """`part` (indices of the night's data) in a model's own indices, given where each of the night's
    users and items is in the model (`users`, `items`; -1 where it does not know the id)."""
    return Interactions(users[part.users], items[part.items], part.ratings, part.timestamps)


def _known(part: Interactions) -> Interactions:
    return part.subset(np.flatnonzero((part.users >= 0) & (part.items >= 0)))


def measure_on_same_holdout(
    warehouse: str | Path, registry: ModelRegistry, version: str, other_version: str
) -> SameHoldout:
    """`version` and `other_version` measured on the ratings `version` held out of the warehouse's data."""
    from cfmodel.training.trainer import TrainingData
    from cfmodel.warehouse import Warehouse

    candidate, other = registry.load(version), registry.load(other_version)
    data = TrainingData.read(Warehouse.open(warehouse))
    config = _split_config(candidate)
    train_part, holdout = data.split(config)
    parts = {}
    for name, model in (("candidate", candidate), ("other", other)):
        users, items = model.users.encode(data.users.ids), model.items.encode(data.items.ids)
        parts[name] = (_in_model(train_part, users, items), _in_model(holdout, users, items))
    both = np.ones(len(holdout), bool)
    for _, held in parts.values():
        both &= (held.users >= 0) & (held.items >= 0)
    rows = np.flatnonzero(both)
    measured = {
        name: holdout_metrics(
            model.validated_model,
            _known(parts[name][0]),
            parts[name][1].subset(rows),
            len(model.items),
            max_users=config.max_rank_users,
            seed=config.seed,
        )
        for name, model in (("candidate", candidate), ("other", other))
    }
    return SameHoldout(
        measured["candidate"]["model"], measured["other"]["model"], len(rows), measured["candidate"]["popularity"]
    )
