"""The `cfrec` command line: one parser built from each command's own piece.

Commands live in `cfmodel.cli.data` (synth, fetch, ingest, quality), `cfmodel.cli.models` (train,
evaluate, lr-find, fold-in, interpret), `cfmodel.cli.publish` (score, tables, sql, run) and
`cfmodel.cli.analysts` (catalog, sql-server, report); other installed packages add theirs through
the `cfrec.commands` entry point (cfrec_airflow adds `demo` and `airflow`).
Spark and torch are imported only by the commands that use them.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import re
import sys
from dataclasses import asdict, is_dataclass
from importlib.metadata import entry_points

from cfmodel.cli import analysts, data, models, publish
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
    for module in (data, models, publish, analysts):
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


# What a Python worker's error looks like at the end of a Spark failure: "ValueError: ...".
PYTHON_ERROR = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", re.M)


def failure_line(exc: Exception) -> str | None:
    """One line for a failure the user can act on (bad input, a damaged file, the disk, Spark's
    verdict on the data); None for anything else, which is a bug and keeps its traceback."""
    if isinstance(exc, CfrecError):
        return str(exc)
    if isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc)):
        return "no space left on device"  # as Spark's writers report it: the same line whoever writes
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}" if exc.strerror else f"{exc}{where}"
    if not _is_spark_error(exc):
        return None
    text = str(exc)
    if "No space left on device" in text:
        return "no space left on device"
    python_errors = PYTHON_ERROR.findall(text)
    if python_errors:  # raised inside a Python worker: its own message, not the JVM's wrapping
        kind, message = python_errors[-1]
        return f"{kind}: {message.strip()}"
    return " ".join(text.strip().splitlines()[0].split())[:500]


def _is_spark_error(exc: Exception) -> bool:
    if "pyspark" not in sys.modules:
        return False
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(exc, (PySparkException, Py4JError))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("cfmodel").setLevel(logging.INFO)
    try:
        result = args.func(args)
    except Exception as exc:
        message = failure_line(exc)
        if message is None:
            raise
        log.debug("cfrec %s failed", args.command, exc_info=True)  # the whole trace, with -v
        print(f"cfrec {args.command}: error: {message}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=_json_value))
    return 0
