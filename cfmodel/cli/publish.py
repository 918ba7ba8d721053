"""Commands that write and read what analysts see: score, tables, sql, and run (the whole night)."""

from __future__ import annotations

import argparse
import os
import sys

from cfmodel import options
from cfmodel.cli.data import add_ingest_arguments, add_night, add_warehouse, check_input, ingest_config, night_of
from cfmodel.cli.models import TRAIN_RUN_OPTIONS, add_train_arguments, train_config
from cfmodel.config import GateConfig, QualityConfig, ScoreConfig, TablesConfig, TrainRun


def cmd_score(args: argparse.Namespace) -> object:
    from cfmodel import pipeline
    from cfmodel.registry.registry import POPULARITY_LISTS, ModelRegistry
    from cfmodel.spark import get_spark
    from cfmodel.warehouse import Warehouse
    from cfmodel.warehouse.schemas import RATINGS

    night, config = night_of(args), options.from_namespace(ScoreConfig, args)
    wh = Warehouse.open(night.warehouse)
    wh.require(RATINGS)  # a missing table or model fails here, before a JVM starts
    registry = ModelRegistry(wh.models)
    if args.model_version != POPULARITY_LISTS:
        registry.require(args.model_version or registry.require_current())
    spark = get_spark("cfrec-score", inputs=pipeline.spark_inputs(night))
    return pipeline.score(spark, night, config, args.model_version)


def cmd_tables(args: argparse.Namespace) -> object:
    from cfmodel import pipeline
    from cfmodel.spark import get_spark

    night, config = night_of(args), options.from_namespace(TablesConfig, args)
    spark = get_spark("cfrec-tables", inputs=pipeline.spark_inputs(night))
    return pipeline.publish_tables(spark, night, config, args.model_version)


def cmd_sql(args: argparse.Namespace) -> None:
    from cfmodel.warehouse.sql import query, render

    text = render(query(args.warehouse, args.query), args.format)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `cfrec sql ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def cmd_run(args: argparse.Namespace) -> object:
    from cfmodel import pipeline
    from cfmodel.spark import get_spark

    night = night_of(args)
    config = pipeline.NightConfig(
        ingest=ingest_config(args),
        quality=options.from_namespace(QualityConfig, args),
        model=train_config(args),
        train=options.from_namespace(TrainRun, args),
        gate=options.from_namespace(GateConfig, args),
        score=options.from_namespace(ScoreConfig, args),
        tables=options.from_namespace(TablesConfig, args),
        publish_tables=args.tables,
    )
    check_input(night, config.ingest)
    return pipeline.run_night(get_spark("cfrec-run", inputs=pipeline.spark_inputs(night, config.ingest)), night, config)


def _add_model_version(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--model-version", default=None, help=f"{what} (default: the current one)")


def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="write every user's top-N unrated items (Spark)",
        description="Score every user against every item with the current model and write "
        "WAREHOUSE/recommendations/run_date=RUN_DATE/ (users the model has no vector for "
        "get the most popular items). 'cfrec tables' writes the analytics tables.",
    )
    add_night(p)
    options.add_arguments(p, ScoreConfig)
    _add_model_version(p, "model version to score with ('popular': the most-popular list for every user)")
    p.set_defaults(func=cmd_score)


def add_tables(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tables",
        help="write the analytics tables: similar items, factors, metrics, model runs, run report",
        description="Write similar_items, item_factors and user_factors of the scoring model, "
        "metrics/run_date=RUN_DATE for the models trained that date, model_runs, and the night's run "
        "report reports/run_date=RUN_DATE/index.html when the night has recommendations.",
    )
    add_night(p)
    _add_model_version(p, "model whose factors and neighbours to publish")
    options.add_arguments(p.add_argument_group("analytics tables"), TablesConfig)
    p.set_defaults(func=cmd_tables)


def add_sql(sub: argparse._SubParsersAction) -> None:
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


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the nightly DAG's steps in one process, without Airflow",
        description="Run ingest, the data-quality gate, training, the model gate, scoring and the "
        "analytics tables in one process on local Spark: the same steps, defaults and "
        "gate as the cfrec_nightly DAG.",
    )
    add_ingest_arguments(p)
    add_night(p)
    options.add_arguments(p.add_argument_group("data-quality gate"), QualityConfig)
    add_train_arguments(p, run_options=TRAIN_RUN_OPTIONS)
    options.add_arguments(p.add_argument_group("model gate"), GateConfig)
    options.add_arguments(p, ScoreConfig)
    tables = p.add_argument_group("analytics tables")
    options.add_arguments(tables, TablesConfig)
    tables.add_argument(
        "--no-tables",
        dest="tables",
        action="store_false",
        help="stop after the recommendations: no similar_items, factors, metrics, model_runs or run report",
    )
    p.set_defaults(func=cmd_run)


def register(sub: argparse._SubParsersAction) -> None:
    add_score(sub)
    add_tables(sub)
    add_sql(sub)
    add_run(sub)
