"""The analysts' SQL endpoint: Spark's Thrift JDBC/ODBC server (HiveServer2 protocol) over the catalog.

`start` runs, each in its own process group and recorded in `<warehouse>/.sql-server/`:
- Derby's network server, when the warehouse has no metastore yet or a local Derby one: the catalog
  lives in `.sql-server/derby/metastore_db`, and the endpoint and the nightly writers share it;
- the Thrift server (`HiveThriftServer2` through spark-submit) bound to 127.0.0.1 by default,
  read-only: it loads `cfmodel.warehouse.read_only`'s guard, so that queries and SHOW/DESCRIBE run
  and no statement can write, drop or move the published files (`writable=True` leaves it out).
The catalog is synchronised with the warehouse's folders before the endpoint opens. `stop` ends both
by process group; `status` says what runs and where to connect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cfmodel.errors import CfrecError
from cfmodel.processes import alive, end_groups, listening
from cfmodel.spark import MASTER_ENV
from cfmodel.warehouse.catalog import STATE_DIR, Metastore, attach, attached
from cfmodel.warehouse.read_only import GUARD_CLASS, guard_jar

THRIFT_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
DERBY_NETWORK_JAR = "/usr/share/java/derbynet.jar"  # Debian's libderby-java
LOCAL_HOST = "127.0.0.1"
START_SECONDS = 180.0
STOP_SECONDS = 30.0


@dataclass
class EndpointStatus:
    running: bool
    jdbc_url: str | None
    thrift_pid: int | None
    derby_pid: int | None
    metastore: str | None
    log: str
    read_only: bool | None = None  # None when not running


def _state(root: Path) -> Path:
    state = Path(root) / STATE_DIR
    state.mkdir(exist_ok=True)
    return state


def _pid(state: Path, name: str) -> int | None:
    path = state / f"{name}.pid"
    return int(path.read_text()) if path.is_file() else None


def _launch(state: Path, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(state / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    (state / f"{name}.pid").write_text(str(process.pid))
    return process


def _wait_for_port(process: subprocess.Popen, host: str, port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not listening(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            end_groups([process.pid], STOP_SECONDS)
            tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-3:]
            raise CfrecError(f"{what} did not start on {host}:{port} (see {log}): {' | '.join(tail)[-400:]}")
        time.sleep(0.5)


def derby_url(port: int) -> str:
    return f"jdbc:derby://{LOCAL_HOST}:{port}/metastore_db;create=true"


def _start_derby(state: Path, port: int) -> None:
    jar = Path(os.environ.get("CFREC_DERBY_NETWORK_JAR", DERBY_NETWORK_JAR))
    if not jar.is_file():
        raise CfrecError(
            f"Derby's network server is not at {jar}: install Debian's libderby-java (or set CFREC_DERBY_NETWORK_JAR)"
        )
    if alive(_pid(state, "derby")) and listening(LOCAL_HOST, port):
        return
    if listening(LOCAL_HOST, port):
        raise CfrecError(f"port {port} is taken by another process: pick a free one with --metastore-port")
    home = state / "derby"
    home.mkdir(exist_ok=True)
    command = [
        "java",
        f"-Dderby.system.home={home}",
        f"-Dderby.drda.host={LOCAL_HOST}",
        f"-Dderby.drda.portNumber={port}",
        "-jar",
        str(jar),
        "start",
        "-noSecurityManager",
    ]
    _wait_for_port(_launch(state, "derby", command), LOCAL_HOST, port, "Derby's network server", state / "derby.log")


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _thrift_command(root: Path, metastore: Metastore, host: str, port: int, guard: Path | None) -> list[str]:
    conf = {
        **metastore.spark_conf(Path(root) / STATE_DIR),
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "8",
        "spark.driver.memory": os.environ.get("CFREC_SQL_SERVER_MEMORY", "2g"),
    }
    command = [str(spark_home() / "bin" / "spark-submit"), "--master", os.environ.get(MASTER_ENV, "local[*]")]
    command += ["--class", THRIFT_CLASS, "--name", "cfrec-sql-server"]
    if guard is not None:
        command += ["--jars", str(guard)]
        conf["spark.sql.extensions"] = GUARD_CLASS
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command += ["--hiveconf", f"hive.server2.thrift.bind.host={host}", "--hiveconf", f"hive.server2.thrift.port={port}"]
    return [*command, "spark-internal"]


def status(root: Path) -> EndpointStatus:
    state = Path(root) / STATE_DIR
    saved = json.loads((state / "server.json").read_text()) if (state / "server.json").is_file() else {}
    thrift, derby = _pid(state, "thrift"), _pid(state, "derby")
    running = alive(thrift) and bool(saved) and listening(saved["host"], saved["port"])
    metastore = attached(root)
    return EndpointStatus(
        running,
        saved.get("jdbc_url") if running else None,
        thrift if alive(thrift) else None,
        derby if alive(derby) else None,
        metastore.url if metastore else None,
        str(state / "thrift.log"),
        saved.get("read_only", False) if running else None,
    )


def start(
    root: Path, host: str = LOCAL_HOST, port: int = 10000, metastore_port: int = 1527, writable: bool = False
) -> EndpointStatus:
    """Start the endpoint (and a local Derby metastore when the warehouse has no other); idempotent.
    Read-only unless `writable`."""
    from cfmodel.warehouse.catalog import sync_now

    root = Path(root)
    current = status(root)
    if current.running:
        return current
    state = _state(root)
    guard = None if writable else guard_jar(state, spark_home() / "jars")
    metastore = attached(root)
    if metastore is None or (metastore.kind == "derby" and metastore.url == derby_url(metastore_port)):
        _start_derby(state, metastore_port)
        if metastore is None:
            metastore = Metastore(derby_url(metastore_port))
            attach(root, metastore)
    if listening(host, port):
        raise CfrecError(f"port {port} on {host} is taken by another process: pick a free one with --port")
    sync_now(root)
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": host, "PYSPARK_PYTHON": sys.executable}
    process = _launch(state, "thrift", _thrift_command(root, metastore, host, port, guard), env)
    _wait_for_port(process, host, port, "the Thrift SQL server", state / "thrift.log")
    url = f"jdbc:hive2://{host}:{port}/{metastore.database}"
    saved = {"host": host, "port": port, "jdbc_url": url, "read_only": guard is not None}
    (state / "server.json").write_text(json.dumps(saved) + "\n")
    return status(root)


def stop(root: Path) -> dict:
    """End the endpoint and the Derby server this warehouse started; the catalog stays on disk."""
    state = Path(root) / STATE_DIR
    before = asdict(status(root))
    for name in ("thrift", "derby"):  # the endpoint first: it holds connections to the metastore
        end_groups([_pid(state, name)], STOP_SECONDS)
        (state / f"{name}.pid").unlink(missing_ok=True)
    (state / "server.json").unlink(missing_ok=True)
    return {"stopped": [n for n in ("thrift_pid", "derby_pid") if before[n]], "was": before}
