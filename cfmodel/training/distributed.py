"""Data-parallel training with torch.distributed: one process per GPU (or per CPU worker).

Launch with torchrun (`cfrec train --nproc N` does it for you):

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
import sys

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


def main(argv: list[str] | None = None) -> int:
    """`cfrec train` in each process of a torchrun launch; rank 0 saves the model and gates it."""
    from dataclasses import asdict

    from cfmodel import options, pipeline
    from cfmodel.cli.main import build_parser
    from cfmodel.config import GateConfig, Night, TrainRun

    args = build_parser().parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
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
        if rank == 0:
            decision = pipeline.gate(night, candidate.version, options.from_namespace(GateConfig, args))
            report = {"train": asdict(candidate), "gate": asdict(decision), "processes": dist.get_world_size()}
            print(json.dumps(report, default=str))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
