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
    from cfmodel.layouts import KNOWN_SOURCES

    p.add_argument("--source", required=True,
                   help=f"layout of the input files: {', '.join(KNOWN_SOURCES)} (README, 'Sources', describes each)")
    p.add_argument("--input", required=True, metavar="DIR", help="folder holding the source's files (e.g. u.data, u.item)")
    g = p.add_argument_group("input files (any source)")
    g.add_argument("--ratings-file", metavar="PATTERN",
                   help="ratings file name or glob inside --input, instead of the source's own (e.g. u1.base)")
    g.add_argument("--items-file", metavar="PATTERN", help="items file name or glob inside --input")
    g.add_argument("--encoding", help="text encoding of the files, utf-8 or latin-1 (default: the source's)")
    g = p.add_argument_group("generic files (--source csv)")
    g.add_argument("--format", choices=["csv", "parquet"], help="ratings file format (default: parquet for *.parquet, else csv)")
    g.add_argument("--sep", help="field separator, e.g. ',' or '\\t' (default ',')")
    g.add_argument("--no-header", dest="header", action="store_const", const=False,
                   help="the files have no header line: columns are then 0-based positions")
    g.add_argument("--user-col", help="user id column (default user_id)")
    g.add_argument("--item-col", help="item id column (default item_id)")
    g.add_argument("--rating-col", help="rating column (default rating)")
    g.add_argument("--timestamp-col", help="timestamp column, epoch seconds or ISO-8601 (default: none)")
    g.add_argument("--rating-min", type=float, help="lowest valid rating (default: inferred from the data)")
    g.add_argument("--rating-max", type=float, help="highest valid rating (default: inferred from the data)")
    g.add_argument("--rating-step", type=float, help="ratings must be rating-min plus a whole number of steps, e.g. 0.5")
    g.add_argument("--item-id-col", help="item id column of the items file (default item_id)")
    g.add_argument("--title-col", help="title column of the items file (default title)")
    g.add_argument("--genres-col", help="genres column of the items file, values separated by --genre-sep (default: none)")
    g.add_argument("--genre-sep", help="separator between genres (default '|')")


INGEST_OPTIONS = ("ratings_file", "items_file", "encoding", "format", "sep", "header", "user_col", "item_col",
                  "rating_col", "timestamp_col", "rating_min", "rating_max", "rating_step", "item_id_col",
                  "title_col", "genres_col", "genre_sep")


def ingest_options(args: argparse.Namespace) -> dict:
    """The ingest options given on the command line (the layout's defaults apply to the rest)."""
    return {k: getattr(args, k) for k in INGEST_OPTIONS if getattr(args, k, None) is not None}


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


def add_gate_args(p: argparse.ArgumentParser) -> None:
    from cfmodel.promotion import DEFAULT_TOLERANCE, GATE_METRICS

    g = p.add_argument_group("model gate")
    g.add_argument("--gate-tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="promote the new model only if its validation metric is no worse than the current "
                        f"model's by more than this fraction (default {DEFAULT_TOLERANCE} = 1%%)")
    g.add_argument("--gate-metric", default=None,
                   help=f"validation metric the gate compares (default: the first of {', '.join(GATE_METRICS)} both models report)")


def add_table_args(p: argparse.ArgumentParser, optional: bool = True) -> None:
    from cfmodel.tables import DEFAULT_SIMILAR_K

    g = p.add_argument_group("analytics tables")
    g.add_argument("--similar-k", type=int, default=DEFAULT_SIMILAR_K,
                   help=f"neighbours per item in the similar_items table (default {DEFAULT_SIMILAR_K})")
    if optional:
        g.add_argument("--no-tables", dest="tables", action="store_false",
                       help="write only the recommendations, not similar_items, factors, metrics and model_runs")


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
    from cfmodel.ingest import ingest
    from cfmodel.planning import plan_ingest
    from cfmodel.spark import get_spark
    from cfmodel.warehouse import Warehouse

    options = ingest_options(args)
    plan_ingest(args.source, args.input, **options)  # bad input fails here, before a JVM starts
    Warehouse.open(args.warehouse)
    return ingest(get_spark("cfrec-ingest"), args.source, args.input, args.warehouse, args.run_date, **options)


def cmd_quality(args) -> dict:
    from cfmodel.quality import check_quality

    return check_quality(args.warehouse, args.run_date, max_reject_fraction=args.max_reject_fraction,
                         max_drop_fraction=None if args.max_drop_fraction < 0 else args.max_drop_fraction)


def cmd_fetch(args) -> dict:
    from cfmodel.fetch import fetch

    return fetch(args.name, args.dest, base_url=args.base_url, retries=args.retries)


def cmd_train(args) -> dict:
    from cfmodel.train import train

    from cfmodel.promotion import promote
    from cfmodel.warehouse import Warehouse

    trained = train(args.warehouse, args.run_date, train_config(args), device=args.device)
    return {"model_version": trained.version, "device": trained.config["device"],
            **{k: v for k, v in trained.metrics.items() if k != "history"},
            "promotion": promote(Warehouse.open(args.warehouse).models, trained,
                                 tolerance=args.gate_tolerance, metric=args.gate_metric)}


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
    if args.similar_k < 1:
        raise CfrecError(f"--similar-k must be at least 1, got {args.similar_k}")
    spark = get_spark("cfrec-score")
    report = score(spark, args.warehouse, args.run_date, args.top_n, args.model_version)
    if args.tables:
        from cfmodel.tables import publish_tables

        report["tables"] = publish_tables(spark, args.warehouse, args.run_date, report["model_version"], args.similar_k)
    return report


def cmd_tables(args) -> dict:
    from cfmodel.spark import get_spark
    from cfmodel.tables import publish_tables

    if args.similar_k < 1:
        raise CfrecError(f"--similar-k must be at least 1, got {args.similar_k}")
    return publish_tables(get_spark("cfrec-tables"), args.warehouse, args.run_date, args.model_version, args.similar_k)


def cmd_sql(args) -> None:
    from cfmodel.sql import query, render

    import os

    text = render(query(args.warehouse, args.query), args.format)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `cfrec sql ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def cmd_run(args) -> dict:
    check_top_n(args.top_n)
    report = {"ingest": cmd_ingest(args), "train": cmd_train(args)}
    # Whatever the gate decided: the current model scores, the new one only if it was promoted.
    args.model_version = report["train"]["promotion"]["current"]
    report["score"] = cmd_score(args)
    return report


def cmd_demo(args) -> dict:
    from cfmodel.demo import run_demo

    return run_demo(args.workdir, users=args.users, items=args.items, ratings=args.ratings, top_n=args.top_n)


def cmd_airflow(args) -> dict:
    from cfmodel import airflow_server

    if args.action == "start":
        info = airflow_server.start(args.home, port=args.port, data_dir=args.data_dir)
        print(f"Airflow is up at {info['url']} (user {info['user']}, password {info['password']}); "
              f"log: {info['log']}. Stop it with 'make stop'.")
        return info
    return airflow_server.stop(args.home)


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

    from cfmodel.quality import DEFAULT_MAX_DROP_FRACTION, DEFAULT_MAX_REJECT_FRACTION

    p = sub.add_parser("quality", help="data-quality gate on a night's ingest (fails on too many rejects)",
                       description="Check the ingest report of RUN_DATE: fail when the fraction of rejected rows "
                                   "(blank lines and superseded duplicates aside) exceeds a threshold, or when the "
                                   "clean row count dropped sharply against the previous run.")
    add_warehouse(p)
    add_run_date(p)
    p.add_argument("--max-reject-fraction", type=float, default=DEFAULT_MAX_REJECT_FRACTION,
                   help=f"highest tolerated fraction of rejected rows (default {DEFAULT_MAX_REJECT_FRACTION})")
    p.add_argument("--max-drop-fraction", type=float, default=DEFAULT_MAX_DROP_FRACTION,
                   help="highest tolerated fall of clean rows against the previous run, as a fraction "
                        f"(default {DEFAULT_MAX_DROP_FRACTION}; negative disables the check)")
    p.set_defaults(func=cmd_quality)

    from cfmodel.fetch import DATASETS

    p = sub.add_parser("fetch", help="download a public rating data set (MovieLens, goodbooks-10k, MovieTweetings)",
                       description="Download a public data set from its official address, verify it, and unpack "
                                   "it under DEST; prints the folder and --source to ingest it with.")
    p.add_argument("name", choices=sorted(DATASETS), metavar="NAME", help=f"data set: {', '.join(sorted(DATASETS))}")
    p.add_argument("--dest", required=True, metavar="DIR", help="folder to download and unpack into")
    p.add_argument("--base-url", metavar="URL", help="fetch the same files from this mirror instead (files flat under URL)")
    p.add_argument("--retries", type=int, default=4, help="attempts per file on network or server errors (default 4)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("train", help="fit the embedding model on the ratings table (PyTorch)",
                       description="Fit the dot-product model with biases on the warehouse's ratings and save a "
                                   "versioned artifact under WAREHOUSE/models, marked current.")
    add_warehouse(p)
    add_run_date(p)
    add_train_args(p)
    add_gate_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="write every user's top-N unrated items (Spark)",
                       description="Score every user against every item with the current model and write "
                                   "WAREHOUSE/recommendations/run_date=RUN_DATE/ (users the model has no vector for "
                                   "get the most popular items), then the analytics tables (see 'cfrec tables').")
    add_warehouse(p)
    add_run_date(p)
    add_top_n(p)
    p.add_argument("--model-version", default=None, help="model version to score with (default: the current one)")
    add_table_args(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("tables", help="write the analytics tables: similar items, factors, metrics, model runs",
                       description="Write similar_items, item_factors and user_factors of the scoring model, "
                                   "metrics/run_date=RUN_DATE for the models trained that date, and model_runs.")
    add_warehouse(p)
    add_run_date(p)
    p.add_argument("--model-version", default=None,
                   help="model whose factors and neighbours to publish (default: the current one)")
    add_table_args(p, optional=False)
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("sql", help="run SQL over the warehouse tables with DuckDB (no cluster needed)",
                       description="Run one SQL statement with DuckDB over the warehouse: every table is a view "
                                   "of the same name (recommendations, items, ratings, metrics, model_runs, ...); "
                                   "run_date partitions come back as a DATE column.")
    p.add_argument("query", help='the SQL statement, e.g. "SELECT * FROM metrics ORDER BY run_date"')
    add_warehouse(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="output format (default: an aligned text table)")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("run", help="ingest, train and score in one process, without Airflow",
                       description="Run ingest, train and score in one process on local Spark.")
    add_source_args(p)
    add_warehouse(p)
    add_run_date(p)
    add_top_n(p)
    add_train_args(p)
    add_gate_args(p)
    add_table_args(p)
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

    p = sub.add_parser("airflow", help="start or stop a local Airflow server with the cfrec DAGs",
                       description="Start 'airflow standalone' on 127.0.0.1 in the background (SQLite, local "
                                   "Spark) with cfrec's DAGs, or stop it and every process it started.")
    p.add_argument("action", choices=["start", "stop"], help="start or stop the server")
    p.add_argument("--home", default=".airflow", metavar="DIR", help="AIRFLOW_HOME for the server (default ./.airflow)")
    p.add_argument("--port", type=int, default=8280, help="port of the web UI and API on 127.0.0.1 (default 8280)")
    p.add_argument("--data-dir", default="demo", metavar="DIR",
                   help="default input/warehouse root for DAG runs, unless CFREC_INPUT_PATH/CFREC_WAREHOUSE are set (default ./demo)")
    p.set_defaults(func=cmd_airflow)
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
