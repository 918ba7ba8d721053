"""The GPU at MovieLens-25M shape, with the CPU beside: epochs, nightly training, all-users scoring.

    bash bench/gpu.sh                    # on a machine with CUDA: the whole table, CPU column from a recording
    python bench/bench_gpu.py --devices cpu --json cpu.json        # record the CPU column on this machine
    python bench/bench_gpu.py --devices cpu --ratings 200000 --users 8000 --items 3000   # a quick look anywhere

On planted ratings of MovieLens 25M's shape (bench_scale.py's generator: 162,541 users x 62,423
items, 25M ratings, taste groups and hidden factors, popular items rated more), on each device:
- `epoch MODEL`: one epoch of each model with its default settings (`fit`, no validation part);
- `top-10 MODEL`: every user's top 10, rated items excluded, with that epoch's model, by
  `model_top_n` over blocks of users: the routine each Spark scoring task runs (nn through its
  candidates, `--candidates`);
- `train MODEL`: the whole nightly train step (`pipeline.train`: hold-out, epochs with early
  stopping, refit on every rating, the ranking model's rating model, save) in a fresh process, with
  the hold-out quality it reached. On two CPU cores that takes tens of minutes per model, so by
  default it runs on the GPU only (`--train-on cpu,cuda` for both).
The CPU figures of another run (`--cpu-reference JSON`, e.g. recorded on the 2-core machine the
README describes) can stand beside a GPU-only run. Goals on one H100/H200-class GPU: a `dot` epoch
in at most 2 s, all users' top 10 in at most 10 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import (  # noqa: E402
    ML25M_ITEMS,
    ML25M_RATINGS,
    ML25M_USERS,
    planted_cells,
    ratings_frame,
    train_in_fresh_process,
    write_warehouse,
)

from cfmodel.scoring.recommend import model_top_n, users_per_block  # noqa: E402
from cfmodel.training.config import MODEL_TYPES, TrainConfig  # noqa: E402
from cfmodel.training.interactions import Interactions  # noqa: E402
from cfmodel.training.loop import fit, resolve_device  # noqa: E402
from cfmodel.training.models import model_for  # noqa: E402

GOALS = {"epoch dot": 2.0, "top-10 dot": 10.0, "top-10 rank": 10.0}  # seconds on one H100/H200-class GPU
TOP_N = 10


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0] if names else platform.machine()}, {torch.get_num_threads()} threads"


def synchronized(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def peak_gpu_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 2)


def all_users_top_n(model, indptr: np.ndarray, items: np.ndarray, candidates: int) -> np.ndarray:
    """Every user's top TOP_N (model indices), rated items excluded, block by block as scoring does."""
    block = users_per_block(model, TOP_N, candidates if model.model_type == "nn" else 0)
    listed = np.empty((model.n_users, TOP_N), np.int64)
    for start in range(0, model.n_users, block):
        stop = min(start + block, model.n_users)
        rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
        cols = items[indptr[start] : indptr[stop]]
        listed[start:stop], _ = model_top_n(model, np.arange(start, stop), rows, cols, TOP_N, None, candidates)
    return listed


def epoch_and_scoring(
    cells: tuple[np.ndarray, np.ndarray, np.ndarray], device: torch.device, models: list[str], candidates: int
) -> list[dict]:
    users, items, ratings = cells
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    data = Interactions(users, items, ratings)
    indptr = np.searchsorted(users, np.arange(n_users + 1))  # cells are sorted by user
    rows = []
    for name in models:
        config = TrainConfig.for_model(name, epochs=1, valid_pct=0.0)
        model = model_for(config, n_users, n_items, (0.0, 5.5)).to(device)
        peak_gpu_gb(device)
        result = fit(model, data, None, config, device, progress=False)
        rows.append(
            {
                "what": f"epoch {name}",
                "device": device.type,
                "seconds": round(result.seconds, 2),
                "per_second": f"{len(ratings) / result.seconds:,.0f} ratings",
                "peak_gpu_gb": peak_gpu_gb(device),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        model.eval()
        started = synchronized(device)
        all_users_top_n(model, indptr, items, candidates)
        seconds = synchronized(device) - started
        rows.append(
            {
                "what": f"top-{TOP_N} {name}",
                "device": device.type,
                "seconds": round(seconds, 2),
                "per_second": f"{n_users / seconds:,.0f} users",
                "peak_gpu_gb": peak_gpu_gb(device),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def nightly_training(warehouse: Path, device: torch.device, models: list[str]) -> list[dict]:
    rows = []
    for name in models:
        trained = train_in_fresh_process(str(warehouse), name, str(device))
        quality = {k: trained[k] for k in ("rmse", "ndcg@10", "popularity_ndcg@10") if k in trained}
        rows.append(
            {
                "what": f"train {name}",
                "device": device.type,
                "seconds": trained["train_step_seconds"],
                "per_second": f"{trained['epochs']} epochs, {trained['seconds_per_epoch']}s each",
                "peak_gpu_gb": trained["peak_gpu_gb"],
                "quality": ", ".join(f"{k} {v}" for k, v in quality.items()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def print_table(rows: list[dict], names: dict[str, str]) -> None:
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["what"]))
    table = frame.pivot_table(index="what", columns="device", values="seconds", aggfunc="first").reindex(order)
    print()
    for device, name in names.items():
        print(f"{device}: {name}")
    header = ["what", *(f"{d} s" for d in table.columns)]
    if {"cuda", "cpu"} <= set(table.columns):
        header.append("cpu / cuda")
    header.append("goal on the GPU")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for what, row in table.iterrows():
        cells = [what, *("-" if pd.isna(row[d]) else f"{row[d]:g}" for d in table.columns)]
        if {"cuda", "cpu"} <= set(table.columns):
            both = not (pd.isna(row["cpu"]) or pd.isna(row["cuda"]))
            cells.append(f"{row['cpu'] / row['cuda']:.0f}x" if both else "-")
        goal = GOALS.get(what)
        met = (
            ""
            if goal is None or "cuda" not in table.columns or pd.isna(row["cuda"])
            else (": met" if row["cuda"] <= goal else ": not met")
        )
        cells.append("-" if goal is None else f"<= {goal:g} s{met}")
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        if row.get("quality"):
            print(f"{row['what']} on {row['device']}: {row['quality']} on the hold-out; {row['per_second']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=ML25M_RATINGS, help="ratings drawn (default: ML-25M's)")
    parser.add_argument("--users", type=int, default=ML25M_USERS)
    parser.add_argument("--items", type=int, default=ML25M_ITEMS)
    parser.add_argument("--models", default=",".join(MODEL_TYPES), help="comma-separated (default dot,nn,rank)")
    parser.add_argument("--devices", default=None, help="comma-separated (default: cuda,cpu with CUDA, else cpu)")
    parser.add_argument("--train-on", default="cuda", help="devices for the whole train step (default cuda)")
    parser.add_argument("--candidates", type=int, default=1000, help="nn candidates per user (default 1000)")
    parser.add_argument("--cpu-reference", type=Path, help="JSON rows of an earlier run to show as the CPU column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    devices = args.devices.split(",") if args.devices else (["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"])
    devices = [resolve_device(d) for d in devices]
    models = args.models.split(",")
    started = time.perf_counter()
    cells = planted_cells(args.users, args.items, args.ratings, args.seed)
    print(f"{len(cells[0]):,} planted ratings drawn in {time.perf_counter() - started:.0f}s", flush=True)
    rows, names = [], {}
    if args.cpu_reference:
        recorded = json.loads(args.cpu_reference.read_text())
        rows += [r for r in recorded["rows"] if r["device"] == "cpu"]
        names["cpu"] = f"{recorded['names']['cpu']} (recorded: {args.cpu_reference.name})"
    workdir = Path(tempfile.mkdtemp(prefix="cfrec-bench-gpu-"))
    try:
        train_on = [d for d in devices if d.type in args.train_on.split(",")]
        if train_on:
            write_warehouse(workdir / "wh", ratings_frame(*cells))
        for device in devices:
            names[device.type] = device_name(device)
            rows = [r for r in rows if r["device"] != device.type]
            rows += epoch_and_scoring(cells, device, models, args.candidates)
            if device in train_on:
                rows += nightly_training(workdir / "wh", device, models)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, names)
    if args.json:
        args.json.write_text(json.dumps({"names": names, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
