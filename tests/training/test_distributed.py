"""Data-parallel training (DDP, gloo) in two CPU processes reaches the quality of one process,
launched by torchrun or by Spark's TorchDistributor."""

import json
import subprocess
import sys
from dataclasses import asdict

import pytest
from support import write_warehouse

from cfmodel import options, pipeline
from cfmodel.cli import main
from cfmodel.config import Night, TrainRun
from cfmodel.training.config import TrainConfig

pytestmark = pytest.mark.slow

METRICS = {"dot": ("rmse", 0.01, lambda v: v < 0.95), "rank": ("ndcg@10", 0.015, lambda v: v > 0.25)}


def common_options(wh, model: str) -> list[str]:
    # A rating model's lists fall below popularity on MovieLens: its gate judges the ratings.
    metric = METRICS[model][0]
    return ["--warehouse", str(wh), "--model", model, "--seed", "7", "--warm-start", "none", "--gate-metric", metric]


@pytest.fixture(scope="module")
def one_process(ml100k, tmp_path_factory):
    """model -> (warehouse, the report of its training in one process), each trained once."""
    import pandas as pd

    ratings = pd.read_csv(
        ml100k / "u.data",
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": float, "timestamp": int},
    )
    wh = write_warehouse(tmp_path_factory.mktemp("ddp") / "wh", ratings)
    reports = {}

    def report(model: str) -> tuple:
        if model not in reports:
            args = ["train", *common_options(wh, model), "--run-date", "2026-01-01", "--version-suffix", "single"]
            completed = subprocess.run([sys.executable, "-m", "cfmodel.cli", *args], capture_output=True, text=True)
            assert completed.returncode == 0, completed.stderr[-3000:]
            reports[model] = json.loads(completed.stdout)
        return wh, reports[model]

    return report


def check_matches_one_process(trained: dict, single: dict, wh, model: str, version: str) -> None:
    metric, tolerance, floor = METRICS[model]
    assert trained["version"] == version and trained["warm_start_from"] is None
    assert (wh / "models" / version / "_SUCCESS").exists()
    single_value, ddp_value = single["train"]["metrics"][metric], trained["metrics"][metric]
    assert abs(ddp_value - single_value) < tolerance, (ddp_value, single_value)
    assert floor(ddp_value), ddp_value


def test_two_process_ddp_under_torchrun_by_hand_matches_one_process(one_process):
    wh, single = one_process("dot")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "cfmodel.training.distributed",
            *common_options(wh, "dot"),
            "--run-date",
            "2026-01-02",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads(result.stdout.strip().splitlines()[-1])
    assert ddp["processes"] == 2 and ddp["gate"]["version"] == "dot-2026-01-02"
    check_matches_one_process(ddp["train"], single, wh, "dot", "dot-2026-01-02")


def test_the_train_task_trains_data_parallel_from_its_params(one_process):
    """What the DAG's train task does with the params {"nproc": 2}: the step's configs from the
    params, then `pipeline.train`, which starts two processes under torchrun and returns rank 0's
    result. No warm start ("none", a None that must reach the processes as such, although a model
    promoted the day before is there to start from)."""
    wh, single = one_process("rank")
    params = {"model": "rank", "seed": 7, "warm_start": "none", "nproc": 2, "launcher": "torchrun"}
    run = options.from_mapping(TrainRun, params)
    trained = pipeline.train(Night(str(wh), "2026-01-02"), options.from_mapping(TrainConfig, params), run)
    check_matches_one_process(asdict(trained), single, wh, "rank", "rank-2026-01-02")
    assert not (wh / "models" / "rank-2026-01-02" / "promotion.json").exists()  # the gate is the next task


def test_two_process_ddp_launched_by_spark_matches_one_process(one_process, spark, capsys):
    """`cfrec train --nproc 2 --launcher spark`: two barrier tasks of the session's Spark, each running
    torchrun for its own node, train the ranking model as one process does."""
    wh, single = one_process("rank")
    capsys.readouterr()
    argv = ["train", *common_options(wh, "rank"), "--run-date", "2026-01-03", "--nproc", "2", "--launcher", "spark"]
    assert main(argv) == 0
    ddp = json.loads(capsys.readouterr().out)
    assert ddp["processes"] == 2 and ddp["gate"]["version"] == "rank-2026-01-03"
    check_matches_one_process(ddp["train"], single, wh, "rank", "rank-2026-01-03")


def test_more_processes_than_spark_slots_is_refused_in_one_line(one_process, spark, capsys):
    wh, _ = one_process("rank")
    slots = spark.sparkContext.defaultParallelism
    argv = ["train", *common_options(wh, "rank"), "--run-date", "2026-01-04", "--nproc", str(slots + 1)]
    assert main([*argv, "--launcher", "spark"]) == 2
    err = capsys.readouterr().err.strip()
    needs = slots + 1
    assert err == f"cfrec train: error: nproc {needs} needs {needs} Spark task slots at once; the cluster has {slots}"
    assert not (wh / "models" / "rank-2026-01-04").exists()


def test_a_failed_data_parallel_training_says_why_in_one_line(tmp_path, capsys):
    argv = ["train", "--warehouse", str(tmp_path), "--run-date", "2026-01-05", "--nproc", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"cfrec train: error: distributed training failed: table 'ratings' not found in warehouse {tmp_path}; "
        "run 'cfrec ingest' first"
    )
