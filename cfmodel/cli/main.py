"""The `cfrec` command line: one parser built from each command's own piece.

Commands live in `cfmodel.cli.data` (synth, fetch, ingest, quality), `cfmodel.cli.models` (train,
evaluate, lr-find, fold-in, interpret) and `cfmodel.cli.publish` (score, tables, sql, run); other
installed packages add theirs through the `cfrec.commands` entry point (cfrec_airflow adds `demo`
and `airflow`). Spark and torch are imported only by the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, is_dataclass
from importlib.metadata import entry_points

from cfmodel.cli import data, models, publish
from cfmodel.errors import CfrecError

COMMAND_GROUP = "cfrec.commands"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfrec",
        description="Nightly collaborative-filtering recommendations: Spark ingest, PyTorch training, "
        "Parquet top-N tables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, models, publish):
        module.register(sub)
    for extension in entry_points(group=COMMAND_GROUP):
        try:
            register = extension.load()
        except ImportError as exc:  # an install without that package (e.g. Spark executors without Airflow)
            log.debug("commands of %s not available: %s", extension.value, exc)
            continue
        register(sub)
    return parser


def _json_value(value: object) -> object:
    """Results are dataclasses, dicts of them, and values JSON has no type for (dates, paths)."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


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
        print(json.dumps(result, indent=2, default=_json_value))
    return 0
