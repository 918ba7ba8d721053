"""The `cfrec demo` and `cfrec airflow` commands, added to the `cfrec` command line through the
`cfrec.commands` entry point. Airflow is imported only when one of them runs."""

from __future__ import annotations

import argparse

from cfmodel.datasets.synth import SynthSpec


def cmd_demo(args: argparse.Namespace) -> dict:
    from cfmodel import options
    from cfmodel.config import ScoreConfig
    from cfrec_airflow.demo import run_demo

    scoring = options.from_namespace(ScoreConfig, args)
    return run_demo(args.workdir, users=args.users, items=args.items, ratings=args.ratings, scoring=scoring)


def cmd_airflow(args: argparse.Namespace) -> dict:
    from cfrec_airflow import server

    if args.action == "start":
        info = server.start(args.home, port=args.port, database=args.database, data_dir=args.data_dir)
        print(
            f"Airflow is up at {info['url']} (local: every user is an admin); logs in {info['logs']}. "
            "Stop it with 'make stop'."
        )
        return info
    return server.stop(args.home)


def register(sub: argparse._SubParsersAction) -> None:
    from cfmodel import options
    from cfmodel.config import ScoreConfig

    spec = SynthSpec()
    p = sub.add_parser(
        "demo",
        help="synthesize data and run the nightly Airflow DAG on it, in-process",
        description="Generate a synthetic data set, run the cfrec_nightly DAG with dag.test() "
        "(SQLite metadata, local Spark) and print a few recommendations. The DAG files "
        "come from $CFREC_DAGS_FOLDER (make demo sets it).",
    )
    p.add_argument(
        "--workdir",
        default="demo",
        metavar="DIR",
        help="folder for the data, warehouse and Airflow home (default ./demo)",
    )
    p.add_argument("--users", type=int, default=spec.n_users, help=f"synthetic users (default {spec.n_users})")
    p.add_argument("--items", type=int, default=spec.n_items, help=f"synthetic items (default {spec.n_items})")
    p.add_argument("--ratings", type=int, default=spec.n_ratings, help=f"synthetic ratings (default {spec.n_ratings})")
    options.add_arguments(p, ScoreConfig)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "airflow",
        help="start or stop a local Airflow server with the cfrec DAGs",
        description="Start Airflow's scheduler, dag-processor, triggerer and api-server on 127.0.0.1 in "
        "the background (LocalExecutor, local Spark) with cfrec's DAGs, over SQLite or --database, or "
        "stop every process it started.",
    )
    p.add_argument("action", choices=["start", "stop"], help="start or stop the server")
    p.add_argument("--home", default=".airflow", metavar="DIR", help="AIRFLOW_HOME for the server (default ./.airflow)")
    p.add_argument("--port", type=int, default=8280, help="port of the web UI and API on 127.0.0.1 (default 8280)")
    p.add_argument(
        "--data-dir",
        default="demo",
        metavar="DIR",
        help="default input/warehouse root for DAG runs, unless CFREC_INPUT_PATH/CFREC_WAREHOUSE are set "
        "(default ./demo)",
    )
    p.add_argument(
        "--database",
        default=None,
        metavar="URL",
        help="metadata database, e.g. postgresql+psycopg2://airflow@127.0.0.1:5432/airflow (default: SQLite in --home)",
    )
    p.set_defaults(func=cmd_airflow)
