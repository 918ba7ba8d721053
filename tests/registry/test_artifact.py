import json

import numpy as np
import pandas as pd
import pytest
import torch

from cfmodel.errors import CfrecError
from cfmodel.registry.artifact import CHECKSUMS, ArtifactConfig, ModelArtifact
from cfmodel.registry.registry import ModelRegistry
from cfmodel.training.config import TrainConfig
from cfmodel.training.ids import IdIndex
from cfmodel.training.models import MODEL_TYPES, model_for


def make_artifact(model_type="dot", version=None):
    model = model_for(TrainConfig.for_model(model_type, n_factors=2, layers=(4,)), 3, 4, (0.0, 5.5))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    config = ArtifactConfig(model_type=model_type, hparams=model.hparams(), run_date="2026-01-01")
    return ModelArtifact(
        version or f"{model_type}-2026-01-01",
        model.eval(),
        IdIndex(["u1", "u2", "u3"]),
        IdIndex(["a", "b", "c", "d"]),
        config,
        {"valid_rmse": 0.9},
        {"loss_curve.png": b"\x89PNG fake"},
    )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_save_load_round_trip_gives_identical_scores(tmp_path, model_type):
    saved = make_artifact(model_type)
    registry = ModelRegistry(tmp_path)
    registry.save(saved)
    registry.set_current(saved.version)
    loaded = registry.load()
    assert loaded.version == saved.version and loaded.model_type == model_type
    assert type(loaded.model) is type(saved.model) and not loaded.model.training
    assert list(loaded.items.ids) == ["a", "b", "c", "d"] and list(loaded.users.ids) == ["u1", "u2", "u3"]
    users = torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(saved.model.score_all(users), loaded.model.score_all(users))
    for key, value in saved.factors().items():
        assert value.dtype == np.float32 and np.array_equal(value, loaded.factors()[key])
    assert loaded.metrics == {"valid_rmse": 0.9} and loaded.config == saved.config
    assert registry.run(saved.version).config == saved.config and registry.versions() == [saved.version]
    assert (tmp_path / saved.version / "loss_curve.png").read_bytes() == b"\x89PNG fake"


def test_factors_of_the_dot_model_are_its_vectors_and_biases():
    trained = make_artifact("dot")
    f = trained.factors()
    m = trained.model
    assert np.array_equal(f["user_bias"], m.u_bias.weight[:, 0].detach().numpy())
    logits = f["user_vectors"] @ f["item_vectors"].T + f["user_bias"][:, None] + f["item_bias"][None, :]
    with torch.no_grad():
        expected = m.score_all(torch.arange(3)).numpy()
    assert np.allclose(1 / (1 + np.exp(-logits)) * 5.5, expected, atol=1e-5)


def test_nn_factors_are_embeddings_with_zero_biases():
    f = make_artifact("nn").factors()
    assert f["user_vectors"].shape == (3, 2) and not f["user_bias"].any() and not f["item_bias"].any()


def test_missing_or_broken_model_is_a_clear_error(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(CfrecError, match="no trained model"):
        registry.load()
    with pytest.raises(CfrecError, match="not found"):
        registry.load("dot-1999-01-01")
    with pytest.raises(CfrecError, match="not found"):
        registry.set_current("dot-1999-01-01")
    saved = make_artifact("dot")
    registry.save(saved)
    config = json.loads((tmp_path / saved.version / "config.json").read_text())
    config["hparams"]["n_factors"] = 7
    (tmp_path / saved.version / "config.json").write_text(json.dumps(config))
    with pytest.raises(CfrecError, match="cannot be loaded: config.json does not match the checksum it was saved with"):
        registry.load(saved.version)


def test_versions_never_lead_outside_the_registry(tmp_path):
    models = tmp_path / "wh" / "models"
    registry = ModelRegistry(models)
    registry.save(make_artifact("dot"))
    ModelRegistry(tmp_path / "elsewhere").save(make_artifact("dot", version="stolen"))
    for name in ("../../elsewhere/stolen", "/tmp/x", "..", ".hidden", "a/b"):
        with pytest.raises(CfrecError, match="is not a model version name"):
            registry.load(name)
    (models / "CURRENT").write_text("../../elsewhere/stolen\n")
    with pytest.raises(CfrecError, match="CURRENT holds '../../elsewhere/stolen', which is not a model version name"):
        registry.load()


def shuffle_users(folder):
    """id -> index rows permuted: a valid table that would silently mislabel every user."""
    users = pd.read_parquet(folder / "users.parquet")
    users.assign(id=users["id"].to_numpy()[::-1]).to_parquet(folder / "users.parquet", index=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "model.pt").write_bytes((f / "model.pt").read_bytes()[:100]), "cannot be loaded"),
        (lambda f: (f / "model.pt").write_bytes(b"\x80random bytes, not a checkpoint"), "cannot be loaded"),
        (lambda f: (f / "config.json").write_text("{not json"), "cannot be loaded: config.json does not match"),
        (lambda f: (f / CHECKSUMS).write_text("{not json"), "cannot be loaded: Expecting property name"),
        (shuffle_users, "cannot be loaded: users.parquet does not match the checksum"),
        (lambda f: (f / "users.parquet").unlink(), "cannot be loaded: .*users.parquet"),
        (lambda f: (f / "items.parquet").write_bytes(b"PAR1 not parquet"), "cannot be loaded"),
        (lambda f: (f / "metrics.json").unlink(), "cannot be loaded: .*metrics.json"),
    ],
)
def test_a_damaged_artifact_is_one_clear_error(tmp_path, damage, message):
    registry = ModelRegistry(tmp_path)
    saved = make_artifact("dot")
    registry.save(saved)
    damage(tmp_path / saved.version)
    with pytest.raises(CfrecError, match=message):
        registry.load(saved.version)


def test_a_version_is_never_rewritten(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = make_artifact("dot")
    registry.save(first)
    saved = {p.name: p.read_bytes() for p in (tmp_path / first.version).iterdir()}
    with pytest.raises(CfrecError, match="exists in .*; versions are never rewritten"):
        registry.save(make_artifact("dot"))
    assert {p.name: p.read_bytes() for p in (tmp_path / first.version).iterdir()} == saved
    assert registry.new_version("dot", "2026-01-01") == "dot-2026-01-01.2"
    assert registry.new_version("dot", "2026-01-02") == "dot-2026-01-02"
