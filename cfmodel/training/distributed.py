"""Data-parallel training with torch.distributed: one process per GPU (or per CPU worker).

`cfrec train --nproc N`, `cfrec run --nproc N` and the DAGs' `nproc` param launch it with torchrun
on the machine, or with `--launcher spark` (param `launcher`) on the Spark cluster's executors
through Spark's TorchDistributor (`train_data_parallel`). By hand, training and then gating:

    torchrun --standalone --nproc_per_node N -m cfmodel.training.distributed --warehouse DIR [train options]

Every process reads the same ratings, holds out the same validation rows and walks the same
shuffled batches; of each batch it trains on the rows of its own users (`loop.DataParallel`), so
every model, the ranking model included, trains as in one process with the batch's work split.
The objective is wrapped in DistributedDataParallel: each step's gradients are averaged over all
processes, weighted so that they are the whole batch's, and every process keeps identical weights.
Rank 0 saves the artifact. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cfmodel.config import GateConfig, Night, TrainRun
from cfmodel.errors import CfrecError
from cfmodel.training.config import TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.loop import DataParallel, FitResult, fit
from cfmodel.training.models import CollabModel

if TYPE_CHECKING:
    from cfmodel.pipeline import TrainResult

PICKLED = "--pickled-configs"
ERROR_FILE = "error"  # beside the pickled configs: error.RANK holds a process's one-line error


def ddp_fit(
    model: CollabModel,
    train: Interactions,
    valid: Interactions | None,
    config: TrainConfig,
    device: torch.device,
    progress: bool | None = None,
) -> FitResult:
    if not dist.is_initialized():
        raise CfrecError("distributed training needs a process group; launch it with torchrun")
    rank, world = dist.get_rank(), dist.get_world_size()
    model.to(device)
    device_ids = [device.index] if device.type == "cuda" else None
    parallel = DataParallel(rank, world, lambda objective: DistributedDataParallel(objective, device_ids=device_ids))
    return fit(model, train, valid, config, device, progress=bool(progress) and rank == 0, parallel=parallel)


def train_data_parallel(night: Night, model: TrainConfig, run: TrainRun) -> TrainResult:
    """`pipeline.train` in `run.nproc` processes started by `run.launcher`: torchrun on this machine,
    or Spark's TorchDistributor on the cluster's executors. Rank 0 saves the model; its result
    comes back."""
    from cfmodel.pipeline import TrainResult

    # The processes' working folder may not be this one (executors have their own).
    night = dataclasses.replace(night, warehouse=str(Path(night.warehouse).expanduser().resolve()))
    configs = (night, model, _one_process(run))
    if run.launcher == "spark":
        return TrainResult(**train_on_spark(configs, run.nproc))
    with tempfile.TemporaryDirectory(prefix="cfrec-ddp-") as scratch:
        # Pickled, not spelled as options: a None (e.g. no warm start) has no one spelling.
        payload = Path(scratch) / "configs.pickle"
        payload.write_bytes(pickle.dumps(configs))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={run.nproc}",
            "-m",
            "cfmodel.training.distributed",
            PICKLED,
            str(payload),
        ]
        returncode, stdout, stderr = _run_to_the_end(command)
        if returncode != 0:
            raise CfrecError(f"distributed training failed: {_failure(payload, stderr, returncode)}")
    return TrainResult(**json.loads(stdout.strip().splitlines()[-1])["train"])


def _one_process(run: TrainRun) -> TrainRun:
    """What each process of a data-parallel launch trains with: itself, one process, no launcher."""
    return dataclasses.replace(run, nproc=1, launcher="torchrun")


def _run_to_the_end(command: list[str]) -> tuple[int, str, str]:
    """Run torchrun; if this process is interrupted (a task's timeout, a kill), stop torchrun, which
    stops its workers: they run in sessions of their own and would otherwise train on unseen."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    return process.returncode, stdout, stderr


def _failure(payload: Path, stderr: str, returncode: int) -> str:
    """Why the processes failed: a process's own one-line error where one was recorded, else the
    last line of their output that names an error."""
    recorded = sorted(payload.parent.glob(f"{ERROR_FILE}.*"))
    if recorded:
        return recorded[0].read_text().strip()
    return _last_error_line(stderr) or f"exit code {returncode}"


def _last_error_line(output: str) -> str | None:
    """The last line of a failed process's output that names an error (a traceback's last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if "Error" in line), None)


def train_in_process_group(configs: tuple[Night, TrainConfig, TrainRun], gate: GateConfig | None = None) -> dict | None:
    """`pipeline.train` (then the gate, when given one) as one process of a torchrun launch
    (torchrun's environment names the process group); rank 0 saves the model and returns the
    report, the others None."""
    from cfmodel import pipeline

    night, config, run = configs
    cuda = torch.cuda.is_available() and run.device != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank = dist.get_rank()
        run = dataclasses.replace(run, device=f"cuda:{local_rank}" if cuda else "cpu")
        candidate = pipeline.train(night, config, run, fitter=ddp_fit, save=rank == 0, progress=False)
        if rank != 0:
            return None
        report: dict = {"train": asdict(candidate), "processes": dist.get_world_size()}
        if gate is not None:
            report["gate"] = asdict(pipeline.gate(night, candidate.version, gate))
        return json.loads(json.dumps(report, default=str))  # plain JSON values, as printed
    finally:
        dist.destroy_process_group()


def train_on_spark(configs: tuple[Night, TrainConfig, TrainRun], processes: int) -> dict:
    """`pipeline.train` in `processes` processes launched by Spark's TorchDistributor: one barrier
    task per process on the cluster's executors, each running torchrun for its own node, so the
    training lands where Spark has room for it. GPUs are used where Spark gives tasks GPUs
    (spark.task.resource.gpu.amount). Rank 0's result comes back to the caller."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from cfmodel.spark import get_spark

    spark = get_spark("cfrec-train")
    slots = spark.sparkContext.defaultParallelism
    if processes > slots:
        raise CfrecError(f"nproc {processes} needs {processes} Spark task slots at once; the cluster has {slots}")
    gpus = float(spark.conf.get("spark.task.resource.gpu.amount", "0") or 0)
    distributor = TorchDistributor(num_processes=processes, local_mode=False, use_gpu=gpus >= 1)
    try:
        return distributor.run(train_in_process_group, configs)["train"]
    except Exception as error:  # the barrier job's error holds the tasks' output: keep its gist
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        cause = _last_error_line(str(error)) or (lines[-1] if lines else repr(error))
        raise CfrecError(f"distributed training on Spark failed: {cause}") from None


def main(argv: list[str] | None = None) -> int:
    """Under torchrun: `cfrec train`'s options (trains, then gates), or PICKLED FILE (trains only)."""
    from cfmodel import options
    from cfmodel.cli.main import build_parser

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [PICKLED]:
        payload = Path(argv[1])
        try:
            report = train_in_process_group(pickle.loads(payload.read_bytes()))
        except CfrecError as error:  # one line for the launcher, not a traceback per process
            (payload.parent / f"{ERROR_FILE}.{os.environ.get('RANK', '0')}").write_text(str(error))
            return 2
    else:
        args = build_parser().parse_args(["train", *argv])
        configs = (
            options.from_namespace(Night, args),
            options.from_namespace(TrainConfig, args),
            _one_process(options.from_namespace(TrainRun, args)),
        )
        report = train_in_process_group(configs, options.from_namespace(GateConfig, args))
    if report is not None:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
