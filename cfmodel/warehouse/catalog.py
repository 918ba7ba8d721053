"""The analysts' catalog: the warehouse's tables as tables of a Hive metastore, in database `cfrec`.

A warehouse is attached to a metastore once (`cfrec catalog sync --metastore URL`, or `cfrec sql-server
start`, which runs a local Derby network server); the attachment is kept in `<warehouse>/.catalog.json`.
From then on every step that publishes tables registers them after its commit, still holding the
writer lock: a partition appears in the catalog only once it is complete on disk, a re-run of a
date registers the same partition again (it is never listed twice), and a partition a step withdrew
leaves the catalog. Every table is external: dropping or re-creating one never touches its files.

Metastores (JDBC URLs, as Hive's javax.jdo.option.ConnectionURL):
- `jdbc:derby://127.0.0.1:1527/metastore_db;create=true`: Derby's network server, for one machine;
- `jdbc:postgresql://HOST:5432/metastore`: a shared metastore in production; user and password from
  CFREC_METASTORE_USER and CFREC_METASTORE_PASSWORD.
The JDBC driver's jar comes from Debian's libderbyclient-java / libpostgresql-jdbc-java in
/usr/share/java, or from CFREC_METASTORE_DRIVER_JAR.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cfmodel.errors import CfrecError
from cfmodel.warehouse import schemas
from cfmodel.warehouse.schemas import MODELS, REPORTS, RUN_DATE, Table
from cfmodel.warehouse.store import Warehouse

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ATTACHMENT = ".catalog.json"
STATE_DIR = ".sql-server"  # the local SQL endpoint's processes, logs and Derby database
DATABASE = "cfrec"
DRIVERS = {
    "derby": ("org.apache.derby.jdbc.ClientDriver", "/usr/share/java/derbyclient.jar", "libderbyclient-java"),
    "postgresql": ("org.postgresql.Driver", "/usr/share/java/postgresql.jar", "libpostgresql-jdbc-java"),
}
# Every table the warehouse publishes, by its catalog name (a table under a folder keeps its last part).
TABLES = {t.name.rsplit("/", 1)[-1]: t for t in vars(schemas).values() if isinstance(t, Table)}


@dataclass(frozen=True)
class Metastore:
    url: str  # JDBC URL of the metastore's database
    database: str = DATABASE

    @classmethod
    def parse(cls, url: str, database: str = DATABASE) -> Metastore:
        if not url.startswith("jdbc:"):
            url = "jdbc:" + url
        kind = url.split(":")[1]
        if kind not in DRIVERS:
            raise CfrecError(
                f"metastore URL {url} is not Derby or PostgreSQL (jdbc:derby://... or jdbc:postgresql://...)"
            )
        if not database.isidentifier():
            raise CfrecError(f"catalog database name '{database}' is not a plain identifier")
        return cls(url, database)

    @property
    def kind(self) -> str:
        return self.url.split(":")[1]

    def driver_jar(self) -> Path:
        _, default, package = DRIVERS[self.kind]
        jar = Path(os.environ.get("CFREC_METASTORE_DRIVER_JAR", default))
        if not jar.is_file():
            raise CfrecError(
                f"the {self.kind} JDBC driver is not at {jar}: install Debian's {package} "
                "or set CFREC_METASTORE_DRIVER_JAR to its jar"
            )
        return jar

    def spark_conf(self, state_dir: Path) -> dict[str, str]:
        """What a Spark application needs to use this metastore as its catalog."""
        conf = {
            "spark.sql.catalogImplementation": "hive",
            "spark.driver.extraClassPath": str(self.driver_jar()),
            "spark.hadoop.javax.jdo.option.ConnectionURL": self.url,
            "spark.hadoop.javax.jdo.option.ConnectionDriverName": DRIVERS[self.kind][0],
            # The metastore creates its own schema on first use; Spark's built-in Hive 2.3 client.
            "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
            "spark.hadoop.hive.metastore.schema.verification": "false",
            "spark.sql.warehouse.dir": str(state_dir / "spark-warehouse"),
            # List a partition's files at every query: a re-run swaps them, and a cached listing
            # would name files that are gone.
            "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
        }
        if self.kind == "postgresql":
            # DataNucleus adds a foreign key to a table another of its connections holds row locks
            # on while it creates the schema lazily, and waits for itself forever on PostgreSQL.
            del conf["spark.hadoop.datanucleus.schema.autoCreateAll"]
            conf["spark.hadoop.datanucleus.schema.autoCreateTables"] = "true"
            conf["spark.hadoop.datanucleus.schema.autoCreateColumns"] = "true"
            conf["spark.hadoop.datanucleus.schema.autoCreateConstraints"] = "false"
        for key, name in (
            ("ConnectionUserName", "CFREC_METASTORE_USER"),
            ("ConnectionPassword", "CFREC_METASTORE_PASSWORD"),
        ):
            if os.environ.get(name):
                conf[f"spark.hadoop.javax.jdo.option.{key}"] = os.environ[name]
        return conf


def attach(root: Path, metastore: Metastore) -> None:
    path = Path(root) / ATTACHMENT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"metastore": metastore.url, "database": metastore.database}) + "\n")
    os.replace(tmp, path)


def attached(root: Path) -> Metastore | None:
    """The metastore the warehouse's tables are registered in, if any."""
    path = Path(root) / ATTACHMENT
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return Metastore.parse(saved["metastore"], saved.get("database", DATABASE))
    except (ValueError, KeyError) as exc:
        raise CfrecError(f"{path} is damaged ({exc}); attach again with 'cfrec catalog sync --metastore URL'") from None


@dataclass
class SyncReport:
    database: str
    tables: list[str] = field(default_factory=list)
    partitions_added: int = 0
    partitions_dropped: int = 0
    columns_added: dict[str, list[str]] = field(default_factory=dict)
    recreated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _present(root: Path, table: Table) -> bool:
    path = Path(root) / table.name
    if table.partitioned:
        return bool(Warehouse(Path(root)).partitions(table))
    return path.is_dir() and any(path.glob("*.parquet"))


def _columns_ddl(table: Table) -> str:
    columns = ", ".join(f"`{name}` {kind}" for name, kind in table.columns)
    return f"{columns}, `{RUN_DATE}` date" if table.partitioned else columns


def _create(spark: SparkSession, name: str, table: Table, location: Path) -> None:
    partitioning = f" PARTITIONED BY ({RUN_DATE})" if table.partitioned else ""
    spark.sql(
        f"CREATE TABLE {name} ({_columns_ddl(table)}) USING parquet{partitioning} LOCATION {_quoted(str(location))}"
    )


def _sync_table(spark: SparkSession, root: Path, database: str, short: str, table: Table, report: SyncReport) -> None:
    name = f"{database}.{short}"
    location = Path(root) / table.name
    exists = spark.catalog.tableExists(name)
    if not _present(root, table):
        if exists:
            spark.sql(f"DROP TABLE {name}")  # external: the catalog entry goes, no file is touched
            report.dropped.append(short)
        return
    if exists:
        have = {c.name: c.dataType for c in spark.catalog.listColumns(name)}
        wanted = dict(table.columns) | ({RUN_DATE: "date"} if table.partitioned else {})
        described = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
        where = next((r.data_type for r in described if r.col_name == "Location"), "")
        same_place = where.removeprefix("file:").rstrip("/") == str(location)
        if not same_place or any(c not in wanted or have[c] != wanted[c] for c in have):
            spark.sql(f"DROP TABLE {name}")  # a column changed type or went away: declare it anew
            exists = False
            report.recreated.append(short)
        elif set(wanted) - set(have):
            new = [c for c, _ in table.columns if c not in have]  # nullable: old files read null there
            spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({', '.join(f'`{c}` {dict(table.columns)[c]}' for c in new)})")
            report.columns_added[short] = new
    if not exists:
        _create(spark, name, table, location)
    report.tables.append(short)
    if table.partitioned:
        on_disk = Warehouse(Path(root)).partitions(table)
        listed = {row[0].split("=", 1)[1] for row in spark.sql(f"SHOW PARTITIONS {name}").collect()}
        for date in sorted(set(on_disk) - listed):
            spark.sql(
                f"ALTER TABLE {name} ADD IF NOT EXISTS PARTITION ({RUN_DATE}={_quoted(date)}) "
                f"LOCATION {_quoted(str(on_disk[date]))}"
            )
            report.partitions_added += 1
        for date in sorted(listed - set(on_disk)):
            spark.sql(f"ALTER TABLE {name} DROP IF EXISTS PARTITION ({RUN_DATE}={_quoted(date)})")
            report.partitions_dropped += 1


def _discovered(spark: SparkSession, root: Path, only: list[str] | None = None) -> dict[str, Table]:
    """Tables on disk that no schema declares (a source's extra files, e.g. MovieLens users), with the
    columns their Parquet files have."""
    found = {}
    for name, partitioned in Warehouse(root).tables().items():
        if name in TABLES or not name.isidentifier() or (only is not None and name not in only):
            continue
        schema = spark.read.parquet(str(root / name)).schema
        columns = tuple((f.name, f.dataType.simpleString()) for f in schema.fields if f.name != RUN_DATE)
        found[name] = Table(name, columns, partitioned)
    return found


def sync(spark: SparkSession, root: Path, database: str = DATABASE, only: list[str] | None = None) -> SyncReport:
    """Make the catalog list exactly the warehouse's visible tables and partitions, with today's
    columns; `only`: just these tables (catalog names), those a step just published."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    report = SyncReport(database)
    tables = TABLES | _discovered(spark, Path(root), only)
    for name in sorted(only if only is not None else set(tables) | _listed(spark, database)):
        table = tables.get(name) or Table(name, ())  # listed but gone from disk: dropped below
        _sync_table(spark, Path(root), database, name, table, report)
    return report


def table_of(root: Path, folder: Path) -> str | None:
    """The catalog name of the table a published folder belongs to (None: not a table's)."""
    parts = folder.relative_to(root).parts
    if not parts or parts[0] in (MODELS, REPORTS):
        return None
    path = "/".join(parts[: next((i for i, p in enumerate(parts) if p.startswith(f"{RUN_DATE}=")), len(parts))])
    short = path.rsplit("/", 1)[-1]
    return short if short.isidentifier() else None


def _listed(spark: SparkSession, database: str) -> set[str]:
    return {t.name for t in spark.catalog.listTables(database) if not t.isTemporary}


def catalog_session(root: Path, metastore: Metastore) -> SparkSession:
    """A local SparkSession whose catalog is `metastore` (this process must not have started Spark)."""
    from cfmodel.spark import get_spark

    return get_spark("cfrec-catalog", metastore.spark_conf(Path(root) / STATE_DIR))


def reachable(metastore: Metastore) -> bool:
    """Whether the metastore's database server accepts connections (a quick socket probe)."""
    import re

    from cfmodel.processes import listening

    where = re.match(r"jdbc:\w+://([^/:;?]+)(?::(\d+))?", metastore.url)
    if where is None:
        return True  # not a network URL: let the driver say what is wrong
    port = int(where[2] or (1527 if metastore.kind == "derby" else 5432))
    return listening(where[1], port, timeout=3.0)


def sync_attached(root: Path, tables: list[str] | None = None) -> SyncReport | None:
    """After a step published tables: register them in the attached catalog, if there is one.

    The caller holds the writer lock. Registration runs in its own process, because it needs a
    Spark session whose catalog is the metastore, and the step's own session may not be one. The
    tables are already published when this runs: a catalog that is down or refuses is logged, not
    raised (the step's output stands), and the next step or `cfrec catalog sync` catches up."""
    metastore = attached(root)
    if metastore is None:
        return None
    if not reachable(metastore):
        log.error("catalog %s is not reachable: tables published in %s are not registered yet", metastore.url, root)
        return None
    try:
        return _sync_in_child(root, tables)
    except CfrecError as exc:
        log.error("registering %s's tables in the catalog %s failed: %s", root, metastore.url, exc)
        return None


def _sync_in_child(root: Path, tables: list[str] | None = None) -> SyncReport:
    command = [sys.executable, "-m", "cfmodel.warehouse.catalog", str(root), *(tables or [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise CfrecError(f"catalog sync failed: {lines[-1] if lines else 'exit ' + str(done.returncode)}")
    return SyncReport(**json.loads(done.stdout.strip().splitlines()[-1]))


def sync_now(root: Path, metastore: Metastore | None = None) -> SyncReport:
    """`cfrec catalog sync`: attach `metastore` if given, then register everything, or fail with why."""
    from cfmodel.warehouse.lock import writer_lock

    if metastore is not None:
        attach(root, metastore)
    metastore = attached(root)
    if metastore is None:
        raise CfrecError(f"warehouse {root} is not attached to a catalog: pass --metastore JDBC_URL")
    if not reachable(metastore):
        raise CfrecError(f"catalog {metastore.url} is not reachable (is its database server running?)")
    with writer_lock(root, "catalog sync"):
        return _sync_in_child(root)


def _main(root: str, tables: list[str]) -> int:
    from dataclasses import asdict

    metastore = attached(Path(root))
    if metastore is None:
        print(f"warehouse {root} is not attached to a catalog", file=sys.stderr)
        return 2
    try:
        spark = catalog_session(Path(root), metastore)
        report = sync(spark, Path(root), metastore.database, tables or None)
    except Exception as exc:  # one line for the parent's error message; the trace stays in the log
        log.debug("catalog sync failed", exc_info=True)
        print(" ".join(str(exc).split())[:500], file=sys.stderr)
        return 1
    print(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2:]))
