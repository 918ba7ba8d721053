"""A class-data-sharing archive of the classes a Spark driver loads, so that a driver JVM maps them
from one file instead of reading and verifying each one from the jars. On a small night most of a
Spark step is this start-up: the archive starts a local session ~4 s sooner and runs its first
query ~2 s sooner (README: Measured).

Java 17 writes such an archive when a JVM started with -XX:ArchiveClassesAtExit ends. It is made
once per Java and Spark installation by a short Spark application of its own (`python -m
cfmodel.class_archive`, run by `make spark-classes`); drivers use it where it exists and start as
before where it does not. A change to Java, the jars or the configuration folders on the classpath
names a new archive, so a stale one is never used. The options reach the driver through
SPARK_SUBMIT_OPTS, which spark-submit adds to the driver's command, so that the driver options a
launch or spark-defaults.conf sets (spark.driver.extraJavaOptions) are kept as they are.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cfmodel.errors import CfrecError

ARCHIVE_ENV = "CFREC_CLASS_ARCHIVE"  # the archives' folder; "off": drivers start without one
SUBMIT_OPTS = "SPARK_SUBMIT_OPTS"
# JVM warnings (e.g. an archive that no longer matches, which is then not used) go to the JVM's
# stderr, the Spark log, not to stdout, where `cfrec` prints its results.
QUIET = "-Xlog:disable -Xlog:all=warning:stderr"
MAKE_TIMEOUT_SECONDS = 300


def archive_dir() -> Path | None:
    value = os.environ.get(ARCHIVE_ENV) or str(Path.home() / ".cache" / "cfrec" / "spark-classes")
    return None if value == "off" else Path(value).expanduser()


def java_binary() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def archive_key(java: Path) -> str:
    """What an archive depends on: the JVM and its base archive, the jars and the classpath's folders."""
    from pyspark.find_spark_home import _find_spark_home  # where pyspark's launch finds Spark

    jars = sorted((Path(_find_spark_home()) / "jars").glob("*.jar"))
    stamps = [
        (str(f), (st := f.stat()).st_size, st.st_mtime_ns)
        for f in [java, *java.parent.parent.glob("lib/server/*.jsa"), *jars]
    ]
    folders = [os.environ.get(name, "") for name in ("SPARK_CONF_DIR", "HADOOP_CONF_DIR", "YARN_CONF_DIR")]
    return hashlib.sha256(repr((stamps, folders)).encode()).hexdigest()[:20]


def archive_path() -> Path | None:
    """Where the archive of this Java and Spark is (or would be); None when archives are off or
    cannot be had here (no java, no home folder, a path that a JVM option cannot hold)."""
    try:
        folder, java = archive_dir(), java_binary()
        archive = None if folder is None or java is None else folder / f"{archive_key(java)}.jsa"
    except (OSError, RuntimeError, ImportError):  # a speed-up: never the reason a step fails
        return None
    # spark-submit splits SPARK_SUBMIT_OPTS on white space.
    return None if archive is None or any(c.isspace() for c in str(archive)) else archive


def driver_java_options() -> str | None:
    """The options that start a driver JVM on the archive; None when there is none to use."""
    archive = archive_path()
    return f"-XX:SharedArchiveFile={archive} {QUIET}" if archive is not None and archive.is_file() else None


def submit_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that start the driver of a spark-submit (or of pyspark's gateway) on the
    archive, added to any SPARK_SUBMIT_OPTS of `environ`; none when there is no archive."""
    options = driver_java_options()
    if options is None:
        return {}
    given = (os.environ if environ is None else environ).get(SUBMIT_OPTS, "")
    return {SUBMIT_OPTS: f"{given} {options}".strip()}


def make_archive() -> Path | None:
    """Write the archive, unless it is there or another process is making it, by a short Spark
    application (a query, a Parquet round trip, an Arrow Python function: the classes of cfrec's
    steps). About 50 s on 2 cores, once per installation (`make spark-classes` runs it)."""
    archive = archive_path()
    if archive is None:
        return None
    archive.parent.mkdir(parents=True, exist_ok=True)
    with open(archive.parent / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if archive.is_file():
            return archive
        part = archive.with_suffix(f".{os.getpid()}.part")
        command = [sys.executable, "-m", "cfmodel.class_archive", "--record", str(part)]
        # Its own process group: on a timeout the JVM goes with the Python process that started it.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, stderr = process.communicate(timeout=MAKE_TIMEOUT_SECONDS)
            why = (stderr.strip().splitlines() or [f"exit code {process.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            why = f"no archive after {MAKE_TIMEOUT_SECONDS} s"
        if process.returncode != 0 or not part.is_file():
            part.unlink(missing_ok=True)
            raise CfrecError(f"making the Spark class archive failed: {why}")
        os.replace(part, archive)
        return archive


def _record_classes(target: str) -> None:
    """The archive-making application: its driver writes `target` as it ends."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    from cfmodel.spark import LOCAL_DEFAULTS

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {**LOCAL_DEFAULTS, "spark.master": "local[2]"}
    recording = f"-XX:ArchiveClassesAtExit={target} {QUIET}"
    os.environ[SUBMIT_OPTS] = f"{os.environ.get(SUBMIT_OPTS, '')} {recording}".strip()
    gateway = launch_gateway(SparkConf().setAll(settings.items()), popen_kwargs={"stderr": subprocess.DEVNULL})
    SparkContext._ensure_initialized(gateway=gateway)
    spark = SparkSession.builder.config(map=settings).getOrCreate()
    with tempfile.TemporaryDirectory(prefix="cfrec-classes-") as scratch:
        frame = spark.range(1000).selectExpr("cast(id as string) as user_id", "id % 7 as item", "rand() as rating")
        frame.write.parquet(f"{scratch}/t")
        read = spark.read.parquet(f"{scratch}/t")
        joined = read.groupBy("item").count().join(read, "item")
        joined.mapInArrow(lambda batches: batches, joined.schema).count()
        read.toPandas()
    spark.stop()
    gateway.shutdown()
    gateway.proc.stdin.close()  # the JVM ends on this, and writes the archive as it does
    gateway.proc.wait(timeout=MAKE_TIMEOUT_SECONDS)


def main(argv: list[str] | None = None) -> int:
    """`python -m cfmodel.class_archive`: make the archive if there is none; prints its path."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--record"]:
        _record_classes(argv[1])
        return 0
    try:
        made = make_archive()
    except (CfrecError, OSError) as error:
        print(f"cfmodel.class_archive: error: {error}", file=sys.stderr)
        return 2
    print(made or "no archive: archives are off, there is no java, or another process is making it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
