"""Data-parallel training with torch.distributed: one process per GPU (or per CPU worker).

Launch with torchrun (`cfrec train --nproc N` does it for you):

    torchrun --standalone --nproc_per_node N -m cfmodel.training.distributed --warehouse DIR [train options]

or on the Spark cluster's executors through Spark's TorchDistributor (`cfrec train --nproc N
--launcher spark`, `train_on_spark`).

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
import sys
from dataclasses import asdict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cfmodel.errors import CfrecError
from cfmodel.training.config import TrainConfig
from cfmodel.training.interactions import Interactions
from cfmodel.training.loop import DataParallel, FitResult, fit
from cfmodel.training.models import CollabModel


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


def train_in_process_group(argv: list[str]) -> dict | None:
    """`cfrec train ARGV` as one process of a torchrun launch (torchrun's environment names the
    process group); rank 0 saves the model, gates it and returns the report, the others None."""
    from cfmodel import options, pipeline
    from cfmodel.cli.main import build_parser
    from cfmodel.config import GateConfig, Night, TrainRun

    args = build_parser().parse_args(["train", *argv])
    night, config = options.from_namespace(Night, args), options.from_namespace(TrainConfig, args)
    run = options.from_namespace(TrainRun, args)
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
        decision = pipeline.gate(night, candidate.version, options.from_namespace(GateConfig, args))
        report = {"train": asdict(candidate), "gate": asdict(decision), "processes": dist.get_world_size()}
        return json.loads(json.dumps(report, default=str))  # plain JSON values, as printed
    finally:
        dist.destroy_process_group()


def train_on_spark(argv: list[str], processes: int) -> dict:
    """`cfrec train ARGV` in `processes` processes launched by Spark's TorchDistributor: one barrier
    task per process on the cluster's executors, each running torchrun for its own node, so the
    training lands where Spark has room for it. GPUs are used where Spark gives tasks GPUs
    (spark.task.resource.gpu.amount). Rank 0's report comes back to the caller."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from cfmodel.spark import get_spark

    spark = get_spark("cfrec-train")
    slots = spark.sparkContext.defaultParallelism
    if processes > slots:
        raise CfrecError(f"--nproc {processes} needs {processes} Spark task slots at once; the cluster has {slots}")
    gpus = float(spark.conf.get("spark.task.resource.gpu.amount", "0") or 0)
    distributor = TorchDistributor(num_processes=processes, local_mode=False, use_gpu=gpus >= 1)
    try:
        return distributor.run(train_in_process_group, argv)
    except Exception as error:  # the barrier job's error holds the tasks' output: keep its gist
        lines = [line for line in str(error).splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else repr(error))
        raise CfrecError(f"distributed training on Spark failed: {cause.strip()}") from None


def main(argv: list[str] | None = None) -> int:
    report = train_in_process_group(sys.argv[1:] if argv is None else argv)
    if report is not None:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
