import json

import numpy as np
import pytest
from support import write_warehouse

from cfmodel.cli import main
from cfmodel.errors import CfrecError
from cfmodel.registry.registry import ModelRegistry
from cfmodel.reporting.interpret import interpret, pca
from cfmodel.training.config import TrainConfig
from cfmodel.training.trainer import train


def test_pca_finds_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5
    vectors = np.outer(rng.normal(0, 5, 200), direction) + rng.normal(0, 0.1, (200, 3))
    coords, explained = pca(vectors, 3)
    assert coords.shape == (200, 3) and explained[0] > 0.99 and explained.sum() == pytest.approx(1.0)
    assert np.allclose(np.abs(coords[:, 0]), np.abs((vectors - vectors.mean(0)) @ direction), atol=0.05)
    assert np.allclose(pca(vectors, 3)[0], coords)  # same signs every time


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    wh = write_warehouse(tmp_path_factory.mktemp("interpret") / "wh")
    trained = train(wh, "2026-05-01", TrainConfig.for_model("dot", epochs=10, lr=3e-2, wd=0.01), device="cpu")
    ModelRegistry(wh / "models").set_current(trained.version)
    train(wh, "2026-05-01", TrainConfig.for_model("nn", epochs=2), device="cpu")
    return wh


def test_interpret_reports_biases_components_and_neighbours(warehouse, tmp_path):
    report = interpret(warehouse, out_dir=tmp_path, n=5, popular=60, plot_items=20, similar_to=["i0"])
    assert report["model_version"] == "dot-2026-05-01" and report["items_considered"] == 60
    low, high = report["item_bias"]["lowest"], report["item_bias"]["highest"]
    assert len(low) == len(high) == 5
    assert [r["bias"] for r in low] == sorted(r["bias"] for r in low)
    assert min(r["bias"] for r in high) > max(r["bias"] for r in low)
    assert all(r["title"] == f"Title of {r['item_id']}" for r in low + high)
    assert [c["component"] for c in report["pca"]] == [1, 2, 3]
    assert report["pca"][0]["explained_variance"] >= report["pca"][1]["explained_variance"]
    assert (tmp_path / "item_pca.png").read_bytes()[:4] == b"\x89PNG" and report["pca_plot"] == str(
        tmp_path / "item_pca.png"
    )
    # The planted groups are items i % 3: an item's nearest neighbours are from its own group.
    neighbours = report["similar"]["i0"]
    assert len(neighbours) == 5 and "i0" not in [r["item_id"] for r in neighbours]
    assert all(int(r["item_id"][1:]) % 3 == 0 for r in neighbours)
    assert all(a["cosine"] >= b["cosine"] for a, b in zip(neighbours, neighbours[1:]))


def test_interpret_nn_model_has_no_biases_but_still_components(warehouse, tmp_path):
    report = interpret(warehouse, "nn-2026-05-01", out_dir=tmp_path, popular=30)
    assert report["item_bias"] is None and len(report["pca"]) == 3


def test_unknown_item_is_a_clear_error(warehouse, tmp_path):
    with pytest.raises(CfrecError, match="item 'nope' is not known to model dot-2026-05-01"):
        interpret(warehouse, out_dir=tmp_path, similar_to=["nope"])


def test_interpret_command_defaults_to_the_warehouse(warehouse, capsys):
    assert main(["interpret", "--warehouse", str(warehouse), "--n", "3", "--similar-to", "i1", "i2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["similar"]) == {"i1", "i2"}
    assert report["pca_plot"] == str(warehouse / "interpret" / "dot-2026-05-01" / "item_pca.png")
    assert (warehouse / "interpret" / "dot-2026-05-01" / "item_pca.png").exists()
