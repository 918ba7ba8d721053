import numpy as np
import pytest
import torch

from cfmodel import artifact
from cfmodel.errors import CfrecError
from cfmodel.ids import IdIndex
from cfmodel.models import EmbeddingDotBias


def make_artifact(version="dot-2026-01-01"):
    model = EmbeddingDotBias(3, 4, n_factors=2, y_range=(0.0, 5.5))
    with torch.no_grad():
        model.u_weight.weight.normal_()
        model.i_weight.weight.normal_()
    config = {"model_type": "dot", "n_users": 3, "n_items": 4, "n_factors": 2, "y_range": [0.0, 5.5]}
    return artifact.ModelArtifact(version, model, IdIndex(["u1", "u2", "u3"]), IdIndex(["a", "b", "c", "d"]),
                                  config, {"valid_rmse": 0.9})


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    saved = make_artifact()
    artifact.save(saved, tmp_path)
    artifact.set_current(tmp_path, saved.version)
    loaded = artifact.load(tmp_path)
    assert loaded.version == "dot-2026-01-01"
    assert list(loaded.items.ids) == ["a", "b", "c", "d"] and list(loaded.users.ids) == ["u1", "u2", "u3"]
    users, items = torch.tensor([0, 1, 2, 0]), torch.tensor([3, 2, 1, 0])
    with torch.no_grad():
        assert torch.equal(saved.model(users, items), loaded.model(users, items))
    for key, value in saved.factors().items():
        assert np.array_equal(value, loaded.factors()[key])
    assert loaded.metrics == {"valid_rmse": 0.9}


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CfrecError, match="no trained model"):
        artifact.load(tmp_path)
    with pytest.raises(CfrecError, match="not found"):
        artifact.load(tmp_path, "dot-1999-01-01")
