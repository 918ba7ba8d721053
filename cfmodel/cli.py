"""The `cfrec` command line. Spark and torch are imported only by the commands that use them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date, datetime, timezone

from cfmodel.errors import CfrecError

DEFAULT_TOP_N = 10


def run_date_arg(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"run date must be YYYY-MM-DD, got '{text}'") from None


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def add_run_date(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-date", type=run_date_arg, default=today(),
                   help="logical date of this run, YYYY-MM-DD; names the output partitions (default: today, UTC)")


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="layout of the input files: movielens-100k")
    p.add_argument("--input", required=True, metavar="DIR", help="folder holding the source's files (e.g. u.data, u.item)")


def add_warehouse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", required=True, metavar="DIR", help="root folder of the Parquet tables and models")


def add_train_args(p: argparse.ArgumentParser) -> None:
    from cfmodel.training import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("model and training")
    g.add_argument("--n-factors", type=int, default=d.n_factors, help=f"embedding size (default {d.n_factors})")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the training set (default {d.epochs})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate of the one-cycle schedule (default {d.lr})")
    g.add_argument("--wd", type=float, default=d.wd, help=f"AdamW decoupled weight decay (default {d.wd})")
    g.add_argument("--bs", type=int, default=d.bs, help=f"batch size (default {d.bs})")
    g.add_argument("--valid-pct", type=float, default=d.valid_pct,
                   help=f"fraction of ratings held out for validation (default {d.valid_pct})")
    g.add_argument("--seed", type=int, default=d.seed, help=f"seed for the split, init and shuffling (default {d.seed})")
    g.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")


def add_top_n(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-n", type=int, default=DEFAULT_TOP_N, help=f"recommendations per user (default {DEFAULT_TOP_N})")


def train_config(args: argparse.Namespace):
    from cfmodel.training import TrainConfig

    return TrainConfig(n_factors=args.n_factors, epochs=args.epochs, lr=args.lr, wd=args.wd,
                       bs=args.bs, valid_pct=args.valid_pct, seed=args.seed)


def check_top_n(n: int) -> None:
    if n < 1:
        raise CfrecError(f"--top-n must be at least 1, got {n}")


def cmd_synth(args) -> dict:
    from cfmodel.synth import SynthSpec, generate

    return generate(args.dest, SynthSpec(n_users=args.users, n_items=args.items, n_ratings=args.ratings, seed=args.seed))


def cmd_ingest(args) -> dict:
    from cfmodel import sources
    from cfmodel.ingest import ingest
    from cfmodel.spark import get_spark
    from cfmodel.warehouse import Warehouse

    sources.check_input(sources.get_layout(args.source), args.input)
    Warehouse.open(args.warehouse)
    return ingest(get_spark("cfrec-ingest"), args.source, args.input, args.warehouse, args.run_date)


def cmd_train(args) -> dict:
    from cfmodel.train import train

    from cfmodel.promotion import promote
    from cfmodel.warehouse import Warehouse

    trained = train(args.warehouse, args.run_date, train_config(args), device=args.device)
    return {"model_version": trained.version, "device": trained.config["device"],
            **{k: v for k, v in trained.metrics.items() if k != "history"},
            "promotion": promote(Warehouse.open(args.warehouse).models, trained)}


def cmd_score(args) -> dict:
    from cfmodel import artifact
    from cfmodel.score import score
    from cfmodel.spark import get_spark
    from cfmodel.warehouse import Warehouse

    check_top_n(args.top_n)
    wh = Warehouse.open(args.warehouse)
    wh.require("ratings")
    if args.model_version is None:
        artifact.current_version(wh.models)
    return score(get_spark("cfrec-score"), args.warehouse, args.run_date, args.top_n, args.model_version)


def cmd_run(args) -> dict:
    check_top_n(args.top_n)
    report = {"ingest": cmd_ingest(args), "train": cmd_train(args)}
    args.model_version = report["train"]["model_version"]
    report["score"] = cmd_score(args)
    return report


def cmd_demo(args) -> dict:
    from cfmodel.demo import run_demo

    return run_demo(args.workdir, users=args.users, items=args.items, ratings=args.ratings, top_n=args.top_n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfrec",
        description="Nightly collaborative-filtering recommendations: Spark ingest, PyTorch training, Parquet top-N tables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic MovieLens-100k-shaped data set",
                       description="Write a synthetic data set with planted latent structure in the movielens-100k layout.")
    p.add_argument("--dest", required=True, metavar="DIR", help="folder to write u.data, u.item and u.genre into")
    p.add_argument("--users", type=int, default=943, help="number of users (default 943)")
    p.add_argument("--items", type=int, default=1682, help="number of items (default 1682)")
    p.add_argument("--ratings", type=int, default=100_000, help="number of ratings (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="parse raw rating files into Parquet tables (Spark)",
                       description="Parse a source's rating and item files into the warehouse's ratings, items, "
                                   "rejects and ingest_report tables.")
    add_source_args(p)
    add_warehouse(p)
    add_run_date(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("train", help="fit the embedding model on the ratings table (PyTorch)",
                       description="Fit the dot-product model with biases on the warehouse's ratings and save a "
                                   "versioned artifact under WAREHOUSE/models, marked current.")
    add_warehouse(p)
    add_run_date(p)
    add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="write every user's top-N unrated items (Spark)",
                       description="Score every user against every item with the current model and write "
                                   "WAREHOUSE/recommendations/run_date=RUN_DATE/.")
    add_warehouse(p)
    add_run_date(p)
    add_top_n(p)
    p.add_argument("--model-version", default=None, help="model version to score with (default: the current one)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("run", help="ingest, train and score in one process, without Airflow",
                       description="Run ingest, train and score in one process on local Spark.")
    add_source_args(p)
    add_warehouse(p)
    add_run_date(p)
    add_top_n(p)
    add_train_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="synthesize data and run the nightly Airflow DAG on it, in-process",
                       description="Generate a synthetic data set, run the cfrec_nightly DAG with dag.test() "
                                   "(SQLite metadata, local Spark) and print a few recommendations.")
    p.add_argument("--workdir", default="demo", metavar="DIR", help="folder for the data, warehouse and Airflow home (default ./demo)")
    p.add_argument("--users", type=int, default=943, help="synthetic users (default 943)")
    p.add_argument("--items", type=int, default=1682, help="synthetic items (default 1682)")
    p.add_argument("--ratings", type=int, default=100_000, help="synthetic ratings (default 100000)")
    add_top_n(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("cfmodel").setLevel(logging.INFO)
    try:
        result = args.func(args)
    except CfrecError as exc:
        print(f"cfrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
