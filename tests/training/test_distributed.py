"""Data-parallel training (DDP, gloo) in two CPU processes reaches the quality of one process."""

import json
import subprocess
import sys

import pytest
from support import write_warehouse

from cfmodel.cli import main

pytestmark = pytest.mark.slow


def test_two_process_ddp_matches_single_process(ml100k, tmp_path, capsys):
    import pandas as pd

    ratings = pd.read_csv(
        ml100k / "u.data",
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": float, "timestamp": int},
    )
    wh = write_warehouse(tmp_path / "wh", ratings)
    # A rating model's lists fall below popularity on MovieLens: this gate judges the ratings.
    common = ["--warehouse", str(wh), "--model", "dot", "--seed", "7", "--warm-start", "none", "--gate-metric", "rmse"]
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
    assert ddp["processes"] == 2 and ddp["train"]["version"] == "dot-2026-01-02"
    assert ddp["train"]["warm_start_from"] is None and ddp["gate"]["version"] == "dot-2026-01-02"
    assert (wh / "models" / "dot-2026-01-02" / "_SUCCESS").exists()
    single_rmse, ddp_rmse = single["train"]["metrics"]["rmse"], ddp["train"]["metrics"]["rmse"]
    assert abs(ddp_rmse - single_rmse) < 0.01, (ddp_rmse, single_rmse)
    assert ddp_rmse < 0.95
