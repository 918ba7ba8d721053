"""Warm start: begin tonight's training from the previous model's vectors.

Rows are matched by id, not by position, so this is right whatever the two models' indices are;
with ingest's stable `user_index`/`item_index` tables the rows simply line up. Users and items the
previous model knew get its vectors and biases; new ones keep their fresh initialisation. For the
nn model the layers are copied too (same architecture required).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from cfmodel.errors import CfrecError
from cfmodel.training.ids import IdIndex
from cfmodel.training.models import CollabModel

if TYPE_CHECKING:
    from cfmodel.registry.artifact import ModelArtifact

log = logging.getLogger(__name__)


def _copy_rows(target: torch.Tensor, source: torch.Tensor, target_rows: np.ndarray, source_rows: np.ndarray) -> None:
    with torch.no_grad():
        target[torch.as_tensor(target_rows)] = source.detach().to(target.dtype)[torch.as_tensor(source_rows)]


def warm_start(model: CollabModel, users: IdIndex, items: IdIndex, previous: ModelArtifact) -> dict:
    """Copy `previous`'s rows for known ids (and nn layers) into `model`; returns what was copied."""
    if previous.model_type != model.model_type:
        raise CfrecError(
            f"cannot warm-start a {model.model_type} model from {previous.version}, a {previous.model_type} model"
        )
    # What the model solves in closed form after training starts from nothing.
    old = {k: v for k, v in previous.model.state_dict().items() if k not in previous.model.closed_form_state}
    new = {k: v for k, v in model.state_dict().items() if k not in model.closed_form_state}
    table_names = {f"{t}.weight" for t in (*model.user_tables, *model.item_tables)}
    for name, tensor in new.items():
        have = tuple(old[name].shape) if name in old else None
        # Tables may differ in rows (ids come and go), never in width; layers must match exactly.
        fits = have is not None and (
            have[1:] == tuple(tensor.shape[1:]) if name in table_names else have == tuple(tensor.shape)
        )
        if not fits:
            raise CfrecError(
                f"cannot warm-start from {previous.version}: its '{name}' has shape {have}, "
                f"this model needs {tuple(tensor.shape)}"
            )
    report = {"from": previous.version}
    for side, index, old_index, tables in (
        ("users", users, previous.users, model.user_tables),
        ("items", items, previous.items, model.item_tables),
    ):
        source_rows = old_index.encode(index.ids)
        known = np.flatnonzero(source_rows >= 0)
        for table in tables:
            _copy_rows(getattr(model, table).weight, old[f"{table}.weight"], known, source_rows[known])
        report[f"{side}_copied"] = int(len(known))
        report[f"{side}_new"] = int(len(index) - len(known))
    layers = {k: v for k, v in old.items() if k not in table_names}
    if layers:
        model.load_state_dict(layers, strict=False)
    log.info("warm start from %s: %s", previous.version, report)
    return report
