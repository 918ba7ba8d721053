"""Building the SparkSession the same way for spark-submit, the CLI and tests."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cfmodel.class_archive import SUBMIT_OPTS, submit_env

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TIME_ZONE = "spark.sql.session.timeZone"
# The master of a Spark application that cfrec starts itself (not through spark-submit).
MASTER_ENV = "CFREC_SPARK_MASTER"
# Every cfrec Spark application, local or submitted by the DAGs.
SESSION_CONF = {
    "spark.ui.showConsoleProgress": "false",
    TIME_ZONE: "UTC",
}
# Small tables on a laptop or CI box: 200 shuffle partitions would mostly be scheduling overhead.
SHUFFLE_PARTITIONS = "8"
LOCAL_DEFAULTS = {**SESSION_CONF, "spark.sql.shuffle.partitions": SHUFFLE_PARTITIONS, "spark.driver.memory": "4g"}


# Whole-stage code generation and adaptive execution pay off on large data; on a small night their
# compile and re-planning cost is most of the Spark work (MovieLens 100k's ingest: 15-16 s instead
# of 18-20 s in a fresh JVM), so a step whose data is below SMALL_DATA_BYTES runs without them, and
# with few shuffle partitions where its launch did not choose a number (a bare spark-submit: Spark's
# 200 made MovieLens 100k's score job 60 s instead of 22 s).
SMALL_DATA_BYTES = 64 * 2**20
SMALL_DATA_SETTINGS = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.shuffle.partitions": SHUFFLE_PARTITIONS,
}
# The same holds for the JVM's optimising compiler (C2): a driver that runs a small step's few
# seconds of Spark work spends much of them compiling code it hardly runs again, so a local driver
# started for small data compiles with C1 only (MovieLens 100k's ingest, one fresh process each:
# see README, Measured). On large data C2's code is what runs: 5M rows ingest in 51 s with C1
# alone against 35 s, hence only below SMALL_DATA_BYTES, decided when the JVM starts.
SMALL_DATA_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"


@contextlib.contextmanager
def session_settings(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Run with these SQL settings, then put back what was there. A setting the application was
    launched with (spark-submit --conf, spark-defaults.conf, `get_spark`) is kept: it was chosen."""
    launched = spark.sparkContext.getConf()
    settings = {key: value for key, value in settings.items() if not launched.contains(key)}
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def data_bytes(*inputs: Path) -> int:
    """The bytes of these files and folders (those that exist)."""
    total = 0
    for path in inputs:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def settings_for(*inputs: Path) -> dict[str, str]:
    """SMALL_DATA_SETTINGS for a step whose inputs (files or folders) hold fewer than
    SMALL_DATA_BYTES, else none."""
    return SMALL_DATA_SETTINGS if data_bytes(*inputs) < SMALL_DATA_BYTES else {}


def driver_env(inputs: Sequence[Path] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that start a local driver JVM (spark-submit's, or pyspark's gateway) quickly:
    on the class archive (`cfmodel.class_archive`), and with SMALL_DATA_JAVA_OPTIONS when the
    application's work grows with `inputs` and they are small. Empty when there is nothing to add."""
    environ = os.environ if environ is None else environ
    added = submit_env(environ)
    if inputs and data_bytes(*inputs) < SMALL_DATA_BYTES:
        given = added.get(SUBMIT_OPTS, environ.get(SUBMIT_OPTS, ""))
        added = {SUBMIT_OPTS: f"{given} {SMALL_DATA_JAVA_OPTIONS}".strip()}
    return added


def launched_by_spark_submit() -> bool:
    # spark-submit starts the Python driver with a gateway to its already running JVM; the master,
    # memory and every --conf then come from spark-submit and must not be overridden here.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_code_zip(dest_dir: str | Path) -> Path:
    """Zip the installed cfmodel package, for executors that do not have it installed."""
    package = Path(__file__).resolve().parent
    target = Path(dest_dir) / "cfmodel.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*.py")):
            archive.write(path, Path("cfmodel") / path.relative_to(package))
    return target


def ship_code(spark: SparkSession) -> Path | None:
    """On a cluster, send this driver's cfmodel to every executor (like --py-files), so jobs run
    unchanged wherever spark_default points. Executors still need the third-party dependencies."""
    context = spark.sparkContext
    if context.master.startswith("local") or os.environ.get("CFREC_SHIP_CODE", "1") == "0":
        return None
    shipped = getattr(context, "_cfrec_code_zip", None)
    if shipped is None:
        shipped = build_code_zip(tempfile.mkdtemp(prefix="cfrec-code-"))
        context.addPyFile(str(shipped))
        context._cfrec_code_zip = shipped
    return shipped


def spark_log() -> Path | None:
    """Where a local Spark's own output goes: $CFREC_SPARK_LOG ('-': stderr), by default a file in
    the temporary folder. Its start-up banner, warnings and executors' traces are not for the
    terminal of someone running `cfrec`; errors reach them as one line (`cfmodel.cli.main`)."""
    value = os.environ.get("CFREC_SPARK_LOG", str(Path(tempfile.gettempdir()) / f"cfrec-spark-{os.getuid()}.log"))
    return None if value == "-" else Path(value)


def _launch_jvm(settings: dict[str, str], inputs: Sequence[Path]) -> None:
    """Start the local JVM with `driver_env(inputs)` and its stderr in `spark_log()` (pyspark
    would leave it on ours)."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None:
        return
    target = spark_log()
    with contextlib.ExitStack() as stack:
        popen_kwargs = {}
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            popen_kwargs["stderr"] = stack.enter_context(open(target, "ab"))
        # pyspark hands the launch a copy of os.environ: the driver's options go in there, for the
        # launch only.
        stack.enter_context(temporary_environment(driver_env(inputs)))
        gateway = launch_gateway(SparkConf().setAll(settings.items()), popen_kwargs=popen_kwargs)
    SparkContext._ensure_initialized(gateway=gateway)


@contextlib.contextmanager
def temporary_environment(variables: dict[str, str]) -> Iterator[None]:
    """Run with these environment variables set, then put back what was there."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def get_spark(app_name: str = "cfrec", conf: dict[str, str] | None = None, inputs: Sequence[Path] = ()) -> SparkSession:
    """The process's SparkSession; `conf` adds settings to a session this call starts (a catalog's),
    `inputs` are what its work grows with (`driver_env`)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if not launched_by_spark_submit():
        # Local Python workers must run the interpreter that has cfmodel and its dependencies.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        settings = {
            "spark.master": os.environ.get(MASTER_ENV, "local[*]"),
            "spark.app.name": app_name,
            **LOCAL_DEFAULTS,
            **(conf or {}),
        }
        _launch_jvm(settings, inputs)
        for key, value in settings.items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if launched_by_spark_submit() and not spark.sparkContext.getConf().contains(TIME_ZONE):
        # A spark-submit by hand, without the DAG's --conf, would read and write timestamps in the
        # machine's time zone; the time zone is a session setting, so it is still set here.
        spark.conf.set(TIME_ZONE, SESSION_CONF[TIME_ZONE])
    spark.sparkContext.setLogLevel(os.environ.get("CFREC_SPARK_LOG_LEVEL", "WARN"))
    ship_code(spark)
    return spark
