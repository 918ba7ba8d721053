import json

import numpy as np
import pytest
import torch
from support import rating_interactions, write_warehouse

from cfmodel.cli import main
from cfmodel.errors import CfrecError
from cfmodel.training.config import TrainConfig
from cfmodel.training.lr_find import lr_find, suggest, valley
from cfmodel.training.models import model_for


def test_valley_picks_a_rate_inside_the_longest_descent():
    lrs = np.logspace(-6, 0, 61)
    losses = np.r_[np.linspace(2.0, 0.5, 41), np.linspace(0.6, 3.0, 20)]  # falls until 1e-2, then climbs
    chosen = valley(lrs, losses)
    # fastai: run of 41 falling points ending at 40, start = 40 - 41 = -1, section = 41 / 3,
    # index = -1 + int(13.67) + int(6.83) = 18
    assert chosen == pytest.approx(lrs[18])
    s = suggest(lrs, losses)
    assert s["minimum"] == pytest.approx(lrs[40] / 10)
    assert 1e-6 < s["steep"] < 1e-2


def test_lr_find_sweeps_stops_on_divergence_and_leaves_the_model_alone():
    data = rating_interactions(n=4000)
    config = TrainConfig.for_model("dot", n_factors=8, bs=64)
    model = model_for(config, 200, 150, (0.0, 5.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = lr_find(model, data, config, torch.device("cpu"), start_lr=1e-6, end_lr=1e3, num_it=100)
    assert 10 <= len(found.lrs) <= 100
    ratios = np.diff(np.log(found.lrs))
    assert np.allclose(ratios, ratios[0])  # geometric growth
    assert 1e-6 <= found.suggested <= 1e3 and set(found.suggestions) == {"valley", "minimum", "steep"}
    assert min(found.losses) < found.losses[0]  # it found a rate that learns
    assert found.png()[:8] == b"\x89PNG\r\n\x1a\n"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_lr_find_checks_its_arguments():
    config = TrainConfig()
    model = model_for(config, 3, 3, (0.0, 5.5))
    with pytest.raises(CfrecError, match="start_lr < end_lr"):
        lr_find(
            model,
            rating_interactions(n_users=3, n_items=3, n=50),
            config,
            torch.device("cpu"),
            start_lr=1.0,
            end_lr=0.1,
        )


def test_lr_find_command_writes_the_plot(tmp_path, capsys):
    wh = write_warehouse(tmp_path / "wh")
    plot = tmp_path / "plots" / "lr.png"
    assert main(["lr-find", "--warehouse", str(wh), "--model", "rank", "--plot", str(plot), "--num-it", "60"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "rank" and report["plot"] == str(plot) and plot.read_bytes()[:4] == b"\x89PNG"
    assert report["suggested_lr"] == report["suggestions"]["valley"] > 0
