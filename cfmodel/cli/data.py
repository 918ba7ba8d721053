"""Commands that bring data in: synth, fetch, ingest, quality."""

from __future__ import annotations

import argparse

from cfmodel import options
from cfmodel.config import IngestConfig, Night, QualityConfig


def add_night(p: argparse.ArgumentParser) -> None:
    options.add_arguments(p, Night)


def add_warehouse(p: argparse.ArgumentParser) -> None:
    options.add_arguments(p, Night, only=("warehouse",))


def night_of(args: argparse.Namespace) -> Night:
    return options.from_namespace(Night, args)


def add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    options.add_arguments(p, IngestConfig, only=("source", "input_path"))
    options.add_arguments(
        p.add_argument_group("input files (any source)"), IngestConfig, only=("ratings_file", "items_file", "encoding")
    )
    csv_only = tuple(
        o.name
        for o in options.options(IngestConfig)
        if o.name not in ("source", "input_path", "ratings_file", "items_file", "encoding")
    )
    options.add_arguments(p.add_argument_group("generic files (--source csv)"), IngestConfig, only=csv_only)


def ingest_config(args: argparse.Namespace) -> IngestConfig:
    return options.from_namespace(IngestConfig, args)


def cmd_synth(args: argparse.Namespace) -> dict:
    from cfmodel.datasets.synth import SynthSpec, generate

    return generate(
        args.dest, SynthSpec(n_users=args.users, n_items=args.items, n_ratings=args.ratings, seed=args.seed)
    )


def cmd_fetch(args: argparse.Namespace) -> dict:
    from cfmodel.datasets.fetch import Limits, fetch

    limits = Limits(args.max_seconds, args.max_bytes, args.max_unpacked_bytes)
    return fetch(args.name, args.dest, base_url=args.base_url, retries=args.retries, limits=limits)


def check_input(night: Night, config: IngestConfig) -> None:
    """Bad input and an unwritable warehouse fail here, before a JVM starts."""
    from cfmodel.ingest.planning import plan_ingest
    from cfmodel.warehouse import Warehouse

    plan_ingest(config.source, config.input_for(night.run_date), **config.layout_options())
    Warehouse.open(night.warehouse)


def cmd_ingest(args: argparse.Namespace) -> object:
    from cfmodel import pipeline
    from cfmodel.spark import get_spark

    night, config = night_of(args), ingest_config(args)
    check_input(night, config)
    return pipeline.ingest(get_spark("cfrec-ingest", inputs=pipeline.spark_inputs(night, config)), night, config)


def cmd_quality(args: argparse.Namespace) -> object:
    from cfmodel import pipeline

    return pipeline.quality(night_of(args), options.from_namespace(QualityConfig, args))


def add_synth(sub: argparse._SubParsersAction) -> None:
    from cfmodel.datasets.synth import SynthSpec

    spec = SynthSpec()

    p = sub.add_parser(
        "synth",
        help="write a synthetic MovieLens-100k-shaped data set",
        description="Write a synthetic data set with planted latent structure in the movielens-100k layout.",
    )
    p.add_argument("--dest", required=True, metavar="DIR", help="folder to write u.data, u.item and u.genre into")
    p.add_argument("--users", type=int, default=spec.n_users, help=f"number of users (default {spec.n_users})")
    p.add_argument("--items", type=int, default=spec.n_items, help=f"number of items (default {spec.n_items})")
    p.add_argument("--ratings", type=int, default=spec.n_ratings, help=f"number of ratings (default {spec.n_ratings})")
    p.add_argument("--seed", type=int, default=spec.seed, help=f"random seed (default {spec.seed})")
    p.set_defaults(func=cmd_synth)


def add_fetch(sub: argparse._SubParsersAction) -> None:
    from cfmodel.datasets.fetch import DATASETS, Limits

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
    limits = Limits()
    p.add_argument(
        "--max-seconds",
        type=float,
        default=limits.seconds_per_file,
        help=f"give up on a file after this long, all attempts together (default {limits.seconds_per_file:g})",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=limits.max_bytes,
        help=f"give up on a file larger than this (default {limits.max_bytes})",
    )
    p.add_argument(
        "--max-unpacked-bytes",
        type=int,
        default=limits.max_unpacked_bytes,
        help=f"refuse an archive that unpacks to more than this, or to more than {limits.max_ratio:g} "
        f"times its size (default {limits.max_unpacked_bytes})",
    )
    p.set_defaults(func=cmd_fetch)


def add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="parse raw rating files into Parquet tables (Spark)",
        description="Parse a source's rating and item files into the warehouse's ratings, items, "
        "rejects and ingest_report tables.",
    )
    add_ingest_arguments(p)
    add_night(p)
    p.set_defaults(func=cmd_ingest)


def add_quality(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quality",
        help="data-quality gate on a night's ingest (fails on too many rejects)",
        description="Check the ingest report of RUN_DATE: fail when the fraction of rejected rows "
        "(blank lines and superseded duplicates aside) exceeds a threshold, or when the "
        "clean row count dropped sharply against the previous run.",
    )
    add_night(p)
    options.add_arguments(p, QualityConfig)
    p.set_defaults(func=cmd_quality)


def register(sub: argparse._SubParsersAction) -> None:
    add_synth(sub)
    add_fetch(sub)
    add_ingest(sub)
    add_quality(sub)
