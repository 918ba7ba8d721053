"""Data-parallel training (DDP, gloo) in two CPU processes reaches the quality of one process."""

import json
import subprocess
import sys

import pytest
from support import write_warehouse

from cfmodel.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "model, metric, tolerance, floor",
    [("dot", "rmse", 0.01, lambda v: v < 0.95), ("rank", "ndcg@10", 0.015, lambda v: v > 0.25)],
)
def test_two_process_ddp_matches_single_process(ml100k, tmp_path, capsys, model, metric, tolerance, floor):
    import pandas as pd

    ratings = pd.read_csv(
        ml100k / "u.data",
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": float, "timestamp": int},
    )
    wh = write_warehouse(tmp_path / "wh", ratings)
    # A rating model's lists fall below popularity on MovieLens: its gate judges the ratings.
    common = ["--warehouse", str(wh), "--model", model, "--seed", "7", "--warm-start", "none", "--gate-metric", metric]
    assert main(["train", *common, "--run-date", "2026-01-01"]) == 0
    single = json.loads(capsys.readouterr().out)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "cfmodel.training.distributed",
            *common,
            "--run-date",
            "2026-01-02",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads(result.stdout.strip().splitlines()[-1])
    version = f"{model}-2026-01-02"
    assert ddp["processes"] == 2 and ddp["train"]["version"] == version
    assert ddp["train"]["warm_start_from"] is None and ddp["gate"]["version"] == version
    assert (wh / "models" / version / "_SUCCESS").exists()
    single_value, ddp_value = single["train"]["metrics"][metric], ddp["train"]["metrics"][metric]
    assert abs(ddp_value - single_value) < tolerance, (ddp_value, single_value)
    assert floor(ddp_value), ddp_value
