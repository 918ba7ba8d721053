"""The read-only guard of the analysts' SQL endpoint: a Spark SQL extension, compiled once per warehouse.

Spark's Thrift server runs whatever SQL a client sends, and the catalog's tables are the very
folders the nightly job published: without a guard, an `INSERT OVERWRITE` from a BI tool would
replace a night's recommendations, and a `LOAD DATA` would move files into them. `ReadOnlyGuard.java`
(beside this module) is a check rule that refuses every command that is not known to only read;
Spark loads it through `spark.sql.extensions`. It is compiled with the JDK's `javac` against the
installed pyspark's jars, cached in the endpoint's state folder under a name that changes with the
source and the Spark version, and packaged as a jar with nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from cfmodel.errors import CfrecError

GUARD_CLASS = "cfrec.ReadOnlyGuard"
GUARD_SOURCE = Path(__file__).with_name("ReadOnlyGuard.java")
COMPILE_SECONDS = 300


def javac() -> str | None:
    """The JDK's compiler: $JAVA_HOME/bin/javac, else the first on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "javac").is_file():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def guard_jar(cache: Path, spark_jars: Path) -> Path:
    """The guard's jar in `cache`, compiled against `spark_jars` unless already there."""
    source = GUARD_SOURCE.read_bytes()
    key = hashlib.sha256(source + str(sorted(p.name for p in spark_jars.glob("spark-*.jar"))).encode()).hexdigest()
    jar = Path(cache) / f"read-only-guard-{key[:12]}.jar"
    if jar.is_file():
        return jar
    compiler = javac()
    if compiler is None:
        raise CfrecError(
            "the SQL endpoint is read-only through a Spark extension that is compiled once with a JDK's javac, "
            "and this machine has none: install a JDK 17 (e.g. apt-get install openjdk-17-jdk-headless), or "
            "pass --writable to serve the catalog without the guard"
        )
    with tempfile.TemporaryDirectory(dir=cache, prefix=".guard-") as work:
        done = subprocess.run(
            [compiler, "-nowarn", "-cp", str(spark_jars / "*"), "-d", work, str(GUARD_SOURCE)],
            capture_output=True,
            text=True,
            timeout=COMPILE_SECONDS,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[0]
            raise CfrecError(f"compiling the SQL endpoint's read-only guard failed: {last}")
        partial = Path(work) / "guard.jar"
        with zipfile.ZipFile(partial, "w") as archive:
            for compiled in sorted(Path(work).rglob("*.class")):
                archive.write(compiled, compiled.relative_to(work).as_posix())
        os.replace(partial, jar)
    return jar
