"""Commands for the analysts' side: the catalog (`catalog sync`), the SQL endpoint (`sql-server`) and
the run report (`report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cfmodel.cli.data import add_warehouse


def _root(args: argparse.Namespace) -> Path:
    from cfmodel.warehouse import Warehouse

    return Warehouse.open(args.warehouse, create=False).root


def cmd_catalog_sync(args: argparse.Namespace) -> object:
    from cfmodel.warehouse.catalog import Metastore, sync_now

    metastore = Metastore.parse(args.metastore, args.database) if args.metastore else None
    return sync_now(_root(args), metastore)


def cmd_sql_server(args: argparse.Namespace) -> object:
    from cfmodel.warehouse import sql_server

    root = _root(args)
    if args.action == "start":
        started = sql_server.start(root, args.host, args.port, args.metastore_port, args.writable)
        print(f"JDBC URL: {started.jdbc_url}  (beeline -u '{started.jdbc_url}')", flush=True)
        return started
    if args.action == "stop":
        return sql_server.stop(root)
    return sql_server.status(root)


def cmd_report(args: argparse.Namespace) -> object:
    from cfmodel.reporting.report import write_report

    path = write_report(_root(args), args.run_date)
    print(f"report: {path}", flush=True)
    return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "catalog",
        help="register the warehouse's tables in a Hive metastore (database cfrec)",
        description="'sync' makes the catalog list exactly the tables and run_date partitions on disk "
        "(after a restore, say) and adds columns a newer cfrec declares. With --metastore it first "
        "attaches the warehouse to that metastore; every later publish registers its partitions itself.",
    )
    p.add_argument("action", choices=["sync"])
    add_warehouse(p)
    p.add_argument(
        "--metastore", metavar="JDBC_URL", help="jdbc:derby://HOST:PORT/NAME or jdbc:postgresql://HOST:PORT/DB"
    )
    p.add_argument("--database", default="cfrec", help="catalog database of the tables (default: cfrec)")
    p.set_defaults(func=cmd_catalog_sync)

    p = sub.add_parser(
        "sql-server",
        help="start, stop or check the JDBC/ODBC SQL endpoint (Spark Thrift server) over the catalog",
        description="Run Spark's Thrift JDBC/ODBC server (HiveServer2 protocol) over the warehouse's "
        "catalog, with a local Derby network server as the metastore unless the warehouse is attached "
        "to another. Prints the JDBC URL for beeline, DBeaver, Superset or PyHive.",
    )
    p.add_argument("action", choices=["start", "stop", "status"])
    add_warehouse(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1 only)")
    p.add_argument("--port", type=int, default=10000, help="JDBC port (default: 10000)")
    p.add_argument("--metastore-port", type=int, default=1527, help="local Derby metastore's port (default: 1527)")
    p.add_argument(
        "--writable",
        action="store_true",
        help="start without the read-only guard (by default only queries, SHOW, DESCRIBE, EXPLAIN, SET and USE run)",
    )
    p.set_defaults(func=cmd_sql_server)

    p = sub.add_parser(
        "report",
        help="write a night's run report (static HTML)",
        description="Write WAREHOUSE/reports/run_date=D/index.html: the promoted model and why, list "
        "metrics over the last nights beside popularity, rejected rows, coverage and popularity bias, "
        "the most recommended items and sample users' histories beside their lists.",
    )
    add_warehouse(p)
    p.add_argument("--run-date", default=None, help="the night to report (default: the latest with recommendations)")
    p.set_defaults(func=cmd_report)
