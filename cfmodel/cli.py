"""The `cfrec` command line. Spark and torch are imported only by the commands that use them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, date, datetime

from cfmodel.errors import CfrecError

DEFAULT_TOP_N = 10


def run_date_arg(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"run date must be YYYY-MM-DD, got '{text}'") from None


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def add_run_date(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run-date",
        type=run_date_arg,
        default=today(),
        help="logical date of this run, YYYY-MM-DD; names the output partitions (default: today, UTC)",
    )


def add_source_args(p: argparse.ArgumentParser) -> None:
    from cfmodel.ingest.layouts import KNOWN_SOURCES

    p.add_argument(
        "--source",
        required=True,
        help=f"layout of the input files: {', '.join(KNOWN_SOURCES)} (README, 'Sources', describes each)",
    )
    p.add_argument(
        "--input", required=True, metavar="DIR", help="folder holding the source's files (e.g. u.data, u.item)"
    )
    g = p.add_argument_group("input files (any source)")
    g.add_argument(
        "--ratings-file",
        metavar="PATTERN",
        help="ratings file name or glob inside --input, instead of the source's own (e.g. u1.base)",
    )
    g.add_argument("--items-file", metavar="PATTERN", help="items file name or glob inside --input")
    g.add_argument("--encoding", help="text encoding of the files, utf-8 or latin-1 (default: the source's)")
    g = p.add_argument_group("generic files (--source csv)")
    g.add_argument(
        "--format", choices=["csv", "parquet"], help="ratings file format (default: parquet for *.parquet, else csv)"
    )
    g.add_argument("--sep", help="field separator, e.g. ',' or '\\t' (default ',')")
    g.add_argument(
        "--no-header",
        dest="header",
        action="store_const",
        const=False,
        help="the files have no header line: columns are then 0-based positions",
    )
    g.add_argument("--user-col", help="user id column (default user_id)")
    g.add_argument("--item-col", help="item id column (default item_id)")
    g.add_argument("--rating-col", help="rating column (default rating)")
    g.add_argument("--timestamp-col", help="timestamp column, epoch seconds or ISO-8601 (default: none)")
    g.add_argument("--rating-min", type=float, help="lowest valid rating (default: inferred from the data)")
    g.add_argument("--rating-max", type=float, help="highest valid rating (default: inferred from the data)")
    g.add_argument(
        "--rating-step", type=float, help="ratings must be rating-min plus a whole number of steps, e.g. 0.5"
    )
    g.add_argument("--item-id-col", help="item id column of the items file (default item_id)")
    g.add_argument("--title-col", help="title column of the items file (default title)")
    g.add_argument(
        "--genres-col", help="genres column of the items file, values separated by --genre-sep (default: none)"
    )
    g.add_argument("--genre-sep", help="separator between genres (default '|')")


INGEST_OPTIONS = (
    "ratings_file",
    "items_file",
    "encoding",
    "format",
    "sep",
    "header",
    "user_col",
    "item_col",
    "rating_col",
    "timestamp_col",
    "rating_min",
    "rating_max",
    "rating_step",
    "item_id_col",
    "title_col",
    "genres_col",
    "genre_sep",
)


def ingest_options(args: argparse.Namespace) -> dict:
    """The ingest options given on the command line (the layout's defaults apply to the rest)."""
    return {k: getattr(args, k) for k in INGEST_OPTIONS if getattr(args, k, None) is not None}


def add_warehouse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", required=True, metavar="DIR", help="root folder of the Parquet tables and models")


def add_train_args(p: argparse.ArgumentParser, valid_pct: float | None = None, warm_start: bool = False) -> None:
    from cfmodel.training.loop import MODEL_DEFAULTS, TrainConfig
    from cfmodel.training.models import MODEL_TYPES

    d = TrainConfig()

    def per_model(name: str) -> str:
        return ", ".join(f"{m} {MODEL_DEFAULTS[m][name]}" for m in MODEL_TYPES)

    g = p.add_argument_group("model and training (defaults depend on --model)")
    g.add_argument(
        "--model",
        default="dot",
        choices=MODEL_TYPES,
        help="dot: fastai's EmbeddingDotBias; nn: fastai's EmbeddingNN; rank: the dot architecture "
        "trained for top-N lists (default dot)",
    )
    g.add_argument(
        "--n-factors",
        type=int,
        default=None,
        help=f"embedding size (default: {per_model('n_factors')}; None for nn = fastai's emb_sz_rule)",
    )
    g.add_argument(
        "--epochs", type=int, default=None, help=f"passes over the training set (default: {per_model('epochs')})"
    )
    g.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate of the one-cycle schedule (default: {per_model('lr')})",
    )
    g.add_argument("--wd", type=float, default=None, help=f"AdamW decoupled weight decay (default: {per_model('wd')})")
    g.add_argument(
        "--bias-wd",
        type=float,
        default=None,
        help=f"weight decay of the per-user and per-item biases (default: {per_model('bias_wd')})",
    )
    g.add_argument("--bs", type=int, default=None, help=f"batch size (default: {per_model('bs')})")
    vp = d.valid_pct if valid_pct is None else valid_pct
    g.add_argument(
        "--valid-pct", type=float, default=vp, help=f"fraction of ratings held out for validation (default {vp})"
    )
    g.add_argument(
        "--split",
        default=d.split,
        choices=("random", "time"),
        help="hold out a random part (random) or each user's latest ratings (time) (default random)",
    )
    g.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help=f"stop after this many epochs without a better validation metric and keep the best "
        f"epoch's weights (default {d.patience}; 0 = never stop early)",
    )
    g.add_argument(
        "--seed", type=int, default=d.seed, help=f"seed for the split, init and shuffling (default {d.seed})"
    )
    g.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    g.add_argument(
        "--layers",
        default=",".join(map(str, d.layers)),
        metavar="N,N,...",
        help=f"nn: hidden layer sizes (default {','.join(map(str, d.layers))})",
    )
    g.add_argument("--dropout", type=float, default=d.ps, help=f"nn: dropout after each hidden layer (default {d.ps})")
    g.add_argument(
        "--embed-dropout", type=float, default=d.embed_p, help=f"nn: dropout on the embeddings (default {d.embed_p})"
    )
    g.add_argument(
        "--loss", default=d.loss, choices=("softmax", "bpr"), help=f"rank: training objective (default {d.loss})"
    )
    g.add_argument(
        "--n-negatives",
        type=int,
        default=d.n_negatives,
        help=f"rank softmax: items sampled per batch; the whole catalog when it is smaller (default {d.n_negatives})",
    )
    g.add_argument(
        "--min-rating",
        type=float,
        default=None,
        help="rank: only ratings at or above this count as positives (default: every rating)",
    )
    g.add_argument("--weight-by-rating", action="store_true", help="rank: weight each positive by its rating")
    if warm_start:
        g.add_argument(
            "--warm-start",
            nargs="?",
            const="current",
            default=None,
            metavar="VERSION",
            help="start from a previous model's vectors for the ids it knew: the current model of the "
            "same type (no value) or VERSION (default: start fresh)",
        )


def add_top_n(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--top-n", type=int, default=DEFAULT_TOP_N, help=f"recommendations per user (default {DEFAULT_TOP_N})"
    )


def add_gate_args(p: argparse.ArgumentParser) -> None:
    from cfmodel.registry.gate import DEFAULT_TOLERANCE, GATE_METRICS

    g = p.add_argument_group("model gate")
    g.add_argument(
        "--gate-tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="promote the new model only if its validation metric is no worse than the current "
        f"model's by more than this fraction (default {DEFAULT_TOLERANCE} = 1%%)",
    )
    g.add_argument(
        "--gate-metric",
        default=None,
        help=f"validation metric the gate compares (default: the first of {', '.join(GATE_METRICS)} both models report)",
    )


def add_table_args(p: argparse.ArgumentParser, optional: bool = True) -> None:
    from cfmodel.reporting.tables import DEFAULT_SIMILAR_K

    g = p.add_argument_group("analytics tables")
    g.add_argument(
        "--similar-k",
        type=int,
        default=DEFAULT_SIMILAR_K,
        help=f"neighbours per item in the similar_items table (default {DEFAULT_SIMILAR_K})",
    )
    if optional:
        g.add_argument(
            "--no-tables",
            dest="tables",
            action="store_false",
            help="write only the recommendations, not similar_items, factors, metrics and model_runs",
        )


def train_config(args: argparse.Namespace):
    from cfmodel.training.loop import TrainConfig

    try:
        layers = tuple(int(n) for n in str(args.layers).split(",") if n.strip())
    except ValueError:
        raise CfrecError(f"--layers must be comma-separated sizes such as 100,50, got '{args.layers}'") from None
    config = TrainConfig.for_model(
        args.model,
        n_factors=args.n_factors,
        epochs=args.epochs,
        lr=args.lr,
        wd=args.wd,
        bias_wd=args.bias_wd,
        bs=args.bs,
        valid_pct=args.valid_pct,
        split=args.split,
        seed=args.seed,
        layers=layers,
        ps=args.dropout,
        embed_p=args.embed_dropout,
        loss=args.loss,
        n_negatives=args.n_negatives,
        min_rating=args.min_rating,
        weight_by_rating=args.weight_by_rating,
    )
    config.patience = args.patience or None  # 0 on the command line: never stop early
    config.check()
    return config


def check_top_n(n: int) -> None:
    if n < 1:
        raise CfrecError(f"--top-n must be at least 1, got {n}")


def cmd_synth(args) -> dict:
    from cfmodel.datasets.synth import SynthSpec, generate

    return generate(
        args.dest, SynthSpec(n_users=args.users, n_items=args.items, n_ratings=args.ratings, seed=args.seed)
    )


def cmd_ingest(args) -> dict:
    from cfmodel.ingest.job import ingest
    from cfmodel.ingest.planning import plan_ingest
    from cfmodel.spark import get_spark
    from cfmodel.warehouse.store import Warehouse

    options = ingest_options(args)
    plan_ingest(args.source, args.input, **options)  # bad input fails here, before a JVM starts
    Warehouse.open(args.warehouse)
    return ingest(get_spark("cfrec-ingest"), args.source, args.input, args.warehouse, args.run_date, **options)


def cmd_quality(args) -> dict:
    from cfmodel.ingest.quality import check_quality

    return check_quality(
        args.warehouse,
        args.run_date,
        max_reject_fraction=args.max_reject_fraction,
        max_drop_fraction=None if args.max_drop_fraction < 0 else args.max_drop_fraction,
    )


def cmd_fetch(args) -> dict:
    from cfmodel.datasets.fetch import fetch

    return fetch(args.name, args.dest, base_url=args.base_url, retries=args.retries)


def cmd_train(args) -> dict:
    from cfmodel.registry.gate import promote
    from cfmodel.training.trainer import train
    from cfmodel.warehouse.store import Warehouse

    if getattr(args, "nproc", 1) > 1:
        return train_distributed(args)
    trained = train(
        args.warehouse, args.run_date, train_config(args), device=args.device, warm_start_from=args.warm_start
    )
    return {
        "model_version": trained.version,
        "device": trained.config["device"],
        **{k: v for k, v in trained.metrics.items() if k != "history"},
        "promotion": promote(
            Warehouse.open(args.warehouse).models, trained, tolerance=args.gate_tolerance, metric=args.gate_metric
        ),
    }


def train_distributed(args) -> dict:
    """Relaunch this training under torchrun with one process per --nproc (DDP; gloo on CPU)."""
    import subprocess

    argv = [a for a in sys.argv[1:] if a != "train"]
    if "--nproc" in argv:
        del argv[argv.index("--nproc") : argv.index("--nproc") + 2]
    argv = [a for a in argv if not a.startswith("--nproc=")]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.nproc}",
        "-m",
        "cfmodel.training.distributed",
        *argv,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CfrecError(
            f"distributed training failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def cmd_score(args) -> dict:
    from cfmodel.registry import artifact
    from cfmodel.scoring.recommend import score
    from cfmodel.spark import get_spark
    from cfmodel.warehouse.store import Warehouse

    check_top_n(args.top_n)
    wh = Warehouse.open(args.warehouse)
    wh.require("ratings")
    if args.model_version is None:
        artifact.current_version(wh.models)
    return score(get_spark("cfrec-score"), args.warehouse, args.run_date, args.top_n, args.model_version)


def cmd_tables(args) -> dict:
    from cfmodel.reporting.tables import publish_tables
    from cfmodel.spark import get_spark

    if args.similar_k < 1:
        raise CfrecError(f"--similar-k must be at least 1, got {args.similar_k}")
    return publish_tables(get_spark("cfrec-tables"), args.warehouse, args.run_date, args.model_version, args.similar_k)


def cmd_sql(args) -> None:
    import os

    from cfmodel.warehouse.sql import query, render

    text = render(query(args.warehouse, args.query), args.format)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `cfrec sql ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def cmd_run(args) -> dict:
    check_top_n(args.top_n)
    if args.similar_k < 1:
        raise CfrecError(f"--similar-k must be at least 1, got {args.similar_k}")
    report = {"ingest": cmd_ingest(args), "train": cmd_train(args)}
    # Whatever the gate decided: the current model scores, the new one only if it was promoted.
    args.model_version = report["train"]["promotion"]["current"]
    report["score"] = cmd_score(args)
    if args.tables:
        report["tables"] = cmd_tables(args)
    return report


def cmd_demo(args) -> dict:
    from cfrec_airflow.demo import run_demo

    return run_demo(args.workdir, users=args.users, items=args.items, ratings=args.ratings, top_n=args.top_n)


def cmd_airflow(args) -> dict:
    from cfrec_airflow import server as airflow_server

    if args.action == "start":
        info = airflow_server.start(args.home, port=args.port, data_dir=args.data_dir)
        print(
            f"Airflow is up at {info['url']} (user {info['user']}, password {info['password']}); "
            f"log: {info['log']}. Stop it with 'make stop'."
        )
        return info
    return airflow_server.stop(args.home)


def cmd_evaluate(args) -> None:
    from cfmodel.evaluation.files import evaluate_files

    result = evaluate_files(args.source, args.train, args.test, train_config(args), device=args.device)
    print(json.dumps(result, default=str))


def cmd_lr_find(args) -> dict:
    from pathlib import Path

    from cfmodel.training.interactions import Interactions
    from cfmodel.training.loop import model_for, resolve_device
    from cfmodel.training.lr_find import lr_find
    from cfmodel.training.models import default_y_range
    from cfmodel.training.splits import split
    from cfmodel.training.trainer import id_index, rating_scale, read_ratings
    from cfmodel.warehouse.store import Warehouse

    config = train_config(args)
    wh = Warehouse.open(args.warehouse)
    ratings = read_ratings(wh)
    users, _ = id_index(wh, ratings, "user_id")
    items, _ = id_index(wh, ratings, "item_id")
    data = Interactions(
        users.encode(ratings["user_id"]),
        items.encode(ratings["item_id"]),
        ratings["rating"].to_numpy(),
        ratings["timestamp"].to_numpy() if "timestamp" in ratings else None,
    )
    train_part, _ = split(data, config.valid_pct, config.seed, config.split)
    model = model_for(config, len(users), len(items), default_y_range(*rating_scale(wh, ratings)))
    found = lr_find(model, train_part, config, resolve_device(args.device), args.start_lr, args.end_lr, args.num_it)
    plot = Path(args.plot).expanduser()
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot.write_bytes(found.png())
    return {
        "model": config.model,
        "suggested_lr": found.suggested,
        "suggestions": found.suggestions,
        "steps": len(found.lrs),
        "plot": str(plot),
    }


def cmd_fold_in(args) -> dict:
    from pathlib import Path

    from cfmodel.registry import artifact
    from cfmodel.scoring.foldin import fold_in, read_new_ratings, recommend
    from cfmodel.warehouse.store import Warehouse

    check_top_n(args.top_n)
    wh = Warehouse.open(args.warehouse)
    trained = artifact.load(wh.models, args.model_version)
    fold = fold_in(trained, read_new_ratings(args.ratings), l2=args.l2)
    recs = recommend(fold, trained, args.top_n)
    if wh.table("items").exists():
        import pandas as pd

        titles = pd.read_parquet(wh.table("items"), columns=["item_id", "title"]).drop_duplicates("item_id")
        recs = recs.merge(titles, on="item_id", how="left")
    report = {
        "model_version": trained.version,
        "users": len(fold.users),
        "skipped_users": fold.skipped_users,
        "rejects": fold.rejects.to_dict("records"),
    }
    if args.out:
        out = Path(args.out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        recs.to_parquet(out, index=False) if out.suffix == ".parquet" else recs.to_csv(out, index=False)
        report["written"] = str(out)
    else:
        report["recommendations"] = recs.to_dict("records")
    return report


def cmd_interpret(args) -> dict:
    from cfmodel.reporting.interpret import interpret

    return interpret(
        args.warehouse,
        args.model_version,
        args.out,
        n=args.n,
        popular=args.popular,
        plot_items=args.plot_items,
        similar_to=args.similar_to,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfrec",
        description="Nightly collaborative-filtering recommendations: Spark ingest, PyTorch training, Parquet top-N tables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write a synthetic MovieLens-100k-shaped data set",
        description="Write a synthetic data set with planted latent structure in the movielens-100k layout.",
    )
    p.add_argument("--dest", required=True, metavar="DIR", help="folder to write u.data, u.item and u.genre into")
    p.add_argument("--users", type=int, default=943, help="number of users (default 943)")
    p.add_argument("--items", type=int, default=1682, help="number of items (default 1682)")
    p.add_argument("--ratings", type=int, default=100_000, help="number of ratings (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "ingest",
        help="parse raw rating files into Parquet tables (Spark)",
        description="Parse a source's rating and item files into the warehouse's ratings, items, "
        "rejects and ingest_report tables.",
    )
    add_source_args(p)
    add_warehouse(p)
    add_run_date(p)
    p.set_defaults(func=cmd_ingest)

    from cfmodel.ingest.quality import DEFAULT_MAX_DROP_FRACTION, DEFAULT_MAX_REJECT_FRACTION

    p = sub.add_parser(
        "quality",
        help="data-quality gate on a night's ingest (fails on too many rejects)",
        description="Check the ingest report of RUN_DATE: fail when the fraction of rejected rows "
        "(blank lines and superseded duplicates aside) exceeds a threshold, or when the "
        "clean row count dropped sharply against the previous run.",
    )
    add_warehouse(p)
    add_run_date(p)
    p.add_argument(
        "--max-reject-fraction",
        type=float,
        default=DEFAULT_MAX_REJECT_FRACTION,
        help=f"highest tolerated fraction of rejected rows (default {DEFAULT_MAX_REJECT_FRACTION})",
    )
    p.add_argument(
        "--max-drop-fraction",
        type=float,
        default=DEFAULT_MAX_DROP_FRACTION,
        help="highest tolerated fall of clean rows against the previous run, as a fraction "
        f"(default {DEFAULT_MAX_DROP_FRACTION}; negative disables the check)",
    )
    p.set_defaults(func=cmd_quality)

    from cfmodel.datasets.fetch import DATASETS

    p = sub.add_parser(
        "fetch",
        help="download a public rating data set (MovieLens, goodbooks-10k, MovieTweetings)",
        description="Download a public data set from its official address, verify it, and unpack "
        "it under DEST; prints the folder and --source to ingest it with.",
    )
    p.add_argument("name", choices=sorted(DATASETS), metavar="NAME", help=f"data set: {', '.join(sorted(DATASETS))}")
    p.add_argument("--dest", required=True, metavar="DIR", help="folder to download and unpack into")
    p.add_argument(
        "--base-url", metavar="URL", help="fetch the same files from this mirror instead (files flat under URL)"
    )
    p.add_argument("--retries", type=int, default=4, help="attempts per file on network or server errors (default 4)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser(
        "train",
        help="fit an embedding model (dot, nn or rank) on the ratings table (PyTorch)",
        description="Fit a model (--model dot, nn or rank) on the warehouse's ratings, hold out a part "
        "for validation, and save a versioned artifact WAREHOUSE/models/MODEL-RUN_DATE with "
        "the hold-out metrics of the model and the most-popular baseline; the model gate "
        "then decides whether it becomes current.",
    )
    add_warehouse(p)
    add_run_date(p)
    add_train_args(p, warm_start=True)
    add_gate_args(p)
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train data-parallel in this many processes under torchrun (DDP; gloo on CPU, NCCL on GPUs); default 1",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "score",
        help="write every user's top-N unrated items (Spark)",
        description="Score every user against every item with the current model and write "
        "WAREHOUSE/recommendations/run_date=RUN_DATE/ (users the model has no vector for "
        "get the most popular items). 'cfrec tables' writes the analytics tables.",
    )
    add_warehouse(p)
    add_run_date(p)
    add_top_n(p)
    p.add_argument("--model-version", default=None, help="model version to score with (default: the current one)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "tables",
        help="write the analytics tables: similar items, factors, metrics, model runs",
        description="Write similar_items, item_factors and user_factors of the scoring model, "
        "metrics/run_date=RUN_DATE for the models trained that date, and model_runs.",
    )
    add_warehouse(p)
    add_run_date(p)
    p.add_argument(
        "--model-version", default=None, help="model whose factors and neighbours to publish (default: the current one)"
    )
    add_table_args(p, optional=False)
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser(
        "sql",
        help="run SQL over the warehouse tables with DuckDB (no cluster needed)",
        description="Run one SQL statement with DuckDB over the warehouse: every table is a view "
        "of the same name (recommendations, items, ratings, metrics, model_runs, ...); "
        "run_date partitions come back as a DATE column.",
    )
    p.add_argument("query", help='the SQL statement, e.g. "SELECT * FROM metrics ORDER BY run_date"')
    add_warehouse(p)
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="output format (default: an aligned text table)",
    )
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser(
        "run",
        help="ingest, train and score in one process, without Airflow",
        description="Run ingest, train (and the model gate), score with the current model and "
        "write the analytics tables, in one process on local Spark.",
    )
    add_source_args(p)
    add_warehouse(p)
    add_run_date(p)
    add_top_n(p)
    add_train_args(p, warm_start=True)
    add_gate_args(p)
    add_table_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="synthesize data and run the nightly Airflow DAG on it, in-process",
        description="Generate a synthetic data set, run the cfrec_nightly DAG with dag.test() "
        "(SQLite metadata, local Spark) and print a few recommendations.",
    )
    p.add_argument(
        "--workdir",
        default="demo",
        metavar="DIR",
        help="folder for the data, warehouse and Airflow home (default ./demo)",
    )
    p.add_argument("--users", type=int, default=943, help="synthetic users (default 943)")
    p.add_argument("--items", type=int, default=1682, help="synthetic items (default 1682)")
    p.add_argument("--ratings", type=int, default=100_000, help="synthetic ratings (default 100000)")
    add_top_n(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "airflow",
        help="start or stop a local Airflow server with the cfrec DAGs",
        description="Start 'airflow standalone' on 127.0.0.1 in the background (SQLite, local "
        "Spark) with cfrec's DAGs, or stop it and every process it started.",
    )
    p.add_argument("action", choices=["start", "stop"], help="start or stop the server")
    p.add_argument("--home", default=".airflow", metavar="DIR", help="AIRFLOW_HOME for the server (default ./.airflow)")
    p.add_argument("--port", type=int, default=8280, help="port of the web UI and API on 127.0.0.1 (default 8280)")
    p.add_argument(
        "--data-dir",
        default="demo",
        metavar="DIR",
        help="default input/warehouse root for DAG runs, unless CFREC_INPUT_PATH/CFREC_WAREHOUSE are set (default ./demo)",
    )
    p.set_defaults(func=cmd_airflow)

    p = sub.add_parser(
        "evaluate",
        help="train on one rating file, measure on another (rmse and top-10 metrics)",
        description="Fit a model on --train and print one JSON line of its metrics on --test: rmse and "
        "mae (rating models), precision, recall, NDCG, MAP and coverage at 10 (every user "
        "with a test rating; candidates = items the user did not rate in train), beside "
        "the most-popular baseline's.",
    )
    p.add_argument("--source", required=True, help="layout of the rating files, e.g. movielens-100k")
    p.add_argument("--train", required=True, metavar="FILE", help="ratings to train on, e.g. ml-100k/u1.base")
    p.add_argument("--test", required=True, metavar="FILE", help="ratings to measure on, e.g. ml-100k/u1.test")
    add_train_args(p, valid_pct=0.0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "lr-find",
        help="sweep the learning rate on the ratings table and plot loss against it",
        description="fastai's learning-rate finder on the warehouse's ratings (training part): "
        "writes the loss-vs-learning-rate plot and prints the suggested rate.",
    )
    add_warehouse(p)
    add_train_args(p)
    p.add_argument(
        "--plot", default="lr_find.png", metavar="PNG", help="where to write the plot (default ./lr_find.png)"
    )
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--num-it", type=int, default=100, help="batches in the sweep (default 100)")
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser(
        "fold-in",
        help="recommend to new users from a few of their ratings, without retraining",
        description="Fit a vector for each user in --ratings with the model's item vectors held "
        "fixed, and print (or write) their top-N items. Rows naming items the model does "
        "not know are listed as rejects with a reason.",
    )
    add_warehouse(p)
    p.add_argument("--ratings", required=True, metavar="FILE", help="CSV or TSV with a header: user_id,item_id,rating")
    p.add_argument("--model-version", default=None, help="model to use (default: the current one)")
    add_top_n(p)
    p.add_argument(
        "--l2",
        type=float,
        default=None,
        help="pull of each new vector towards zero (default: dot 0.05, nn 0.05, rank 0.2)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the recommendations here (.parquet or .csv) instead of printing them",
    )
    p.set_defaults(func=cmd_fold_in)

    p = sub.add_parser(
        "interpret",
        help="item biases, PCA of item vectors (PNG) and nearest items of a model",
        description="What a trained model learned: items liked or disliked beyond their raters' tastes "
        "(biases), the three main directions of the item vectors with a labelled scatter "
        "plot, and nearest items by cosine similarity.",
    )
    add_warehouse(p)
    p.add_argument("--model-version", default=None, help="model to read (default: the current one)")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="folder for item_pca.png (default WAREHOUSE/interpret/VERSION)"
    )
    p.add_argument("--n", type=int, default=15, help="items listed per end of each ranking (default 15)")
    p.add_argument("--popular", type=int, default=1000, help="consider the N most-rated items (default 1000)")
    p.add_argument("--plot-items", type=int, default=50, help="most-rated items labelled in the scatter (default 50)")
    p.add_argument(
        "--similar-to", nargs="*", default=None, metavar="ITEM_ID", help="list the nearest items of these items"
    )
    p.set_defaults(func=cmd_interpret)
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
