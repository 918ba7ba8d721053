"""The analysts' side on real MovieLens 100k: the nightly DAG's warehouse served as database `cfrec`
through Spark's Thrift JDBC server, read with beeline and PyHive, and the same catalog kept by later
publishes, a failed one, a re-run and a restore; then a PostgreSQL metastore."""

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import NIGHT_DATE, NIGHTS, REPO, free_port

from cfmodel import processes
from cfmodel.cli import main
from cfmodel.warehouse import catalog, sql_server
from cfmodel.warehouse.sql import query as duckdb_query

pytestmark = pytest.mark.slow

LATER = "2026-11-22"
RECOMMENDATION_COLUMNS = ["user_id", "rank", "item_id", "score", "predicted_rating", "source", "model_version", "title"]


def copy_warehouse(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock", ".readers.lock", catalog.ATTACHMENT))
    return target


@pytest.fixture(scope="module")
def endpoint(nights, tmp_path_factory):
    if not Path(sql_server.DERBY_NETWORK_JAR).is_file():
        pytest.skip("Derby's network server is not installed (apt-get install libderby-java libderbyclient-java)")
    warehouse = copy_warehouse(nights.dag, tmp_path_factory.mktemp("analysts") / "warehouse")
    started = sql_server.start(warehouse, port=free_port(), metastore_port=free_port())
    assert started.running and started.derby_pid and started.thrift_pid
    yield warehouse, started
    sql_server.stop(warehouse)
    assert not processes.alive(started.thrift_pid) and not processes.alive(started.derby_pid)


def pyhive(started, sql: str) -> pd.DataFrame:
    from pyhive import hive

    host, port = re.match(r"jdbc:hive2://([^:]+):(\d+)/", started.jdbc_url).groups()
    with hive.connect(host=host, port=int(port), username="analyst", database="cfrec") as con:
        cursor = con.cursor()
        cursor.execute(sql)
        columns = [d[0].split(".")[-1] for d in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def beeline(started, sql: str) -> pd.DataFrame:
    done = subprocess.run(
        [str(sql_server.spark_home() / "bin" / "beeline"), "-u", started.jdbc_url, "-n", "analyst"]
        + ["--silent=true", "--showHeader=true", "--outputformat=tsv2", "-e", sql],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SPARK_HOME": str(sql_server.spark_home())},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # beeline prints its prompt before the first line of the answer
    lines = [re.sub(r"^\d+: jdbc:\S*> ", "", line) for line in done.stdout.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("WARNING", "0: jdbc"))]
    # tsv2 leaves values unquoted (titles have commas, never tabs)
    return pd.DataFrame([line.split("\t") for line in lines[1:]], columns=lines[0].split("\t"))


def parquet_recommendations(warehouse: Path, run_date: str) -> pd.DataFrame:
    frame = pd.read_parquet(warehouse / "recommendations" / f"run_date={run_date}")[RECOMMENDATION_COLUMNS]
    return frame.sort_values(["user_id", "rank"]).reset_index(drop=True)


def catalog_ddl(warehouse: Path, *statements: str) -> None:
    """Run DDL on the warehouse's catalog from a session of its own (the endpoint refuses DDL)."""
    code = (
        "import sys; from pathlib import Path; from cfmodel.warehouse.catalog import attached, catalog_session; "
        "root = Path(sys.argv[1]); spark = catalog_session(root, attached(root)); [spark.sql(s) for s in sys.argv[2:]]"
    )
    done = subprocess.run([sys.executable, "-c", code, str(warehouse), *statements], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def partitions(started) -> list[str]:
    return sorted(pyhive(started, "SHOW PARTITIONS recommendations").iloc[:, 0])


def test_the_catalog_has_every_table_with_its_declared_columns(endpoint):
    warehouse, started = endpoint
    tables = set(pyhive(started, "SHOW TABLES")["tableName"])
    on_disk = {name for name, table in catalog.TABLES.items() if (warehouse / table.name).exists()}
    assert on_disk >= {"recommendations", "ratings", "items", "metrics", "model_runs", "similar_items"}
    assert tables == on_disk | {"users", "users_increments"}  # MovieLens' u.user, a table no schema declares
    described = pyhive(started, "DESCRIBE recommendations")
    names = [n for n in described["col_name"] if n and not n.startswith("#")]
    assert names[: len(catalog.TABLES["recommendations"].columns) + 1] == [
        *catalog.TABLES["recommendations"].column_names,
        "run_date",
    ]
    assert partitions(started) == [f"run_date={d}" for d in NIGHTS]


def test_beeline_and_pyhive_read_exactly_the_parquet_rows(endpoint):
    warehouse, started = endpoint
    expected = parquet_recommendations(warehouse, NIGHT_DATE)
    select = f"SELECT {', '.join(RECOMMENDATION_COLUMNS)} FROM recommendations WHERE run_date = DATE'{NIGHT_DATE}'"
    through_pyhive = pyhive(started, select).sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(through_pyhive, expected, check_dtype=False)
    through_beeline = beeline(started, select.replace("predicted_rating, ", "").replace("score, ", ""))
    through_beeline["rank"] = through_beeline["rank"].astype(int)
    through_beeline = through_beeline.sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        through_beeline, expected.drop(columns=["score", "predicted_rating"]), check_dtype=False
    )
    assert len(expected) == 9430


def readme_analyst_queries() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### For analysts") :]
    block = re.search(r"```sql\n(.*?)```", section, re.S)[1]
    statements = [re.sub(r"--[^\n]*\n", "", part).strip() for part in block.split(";")]
    return [s for s in statements if s]


def comparable(frame: pd.DataFrame) -> list[tuple]:
    def cell(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, float):
            return round(value, 3)
        return str(value).lower() if isinstance(value, (bool, np.bool_)) else str(value)

    return [tuple(cell(v) for v in row) for row in frame.astype(object).itertuples(index=False)]


def test_the_readme_analyst_queries_give_the_same_answers_through_the_endpoint_and_cfrec_sql(endpoint):
    warehouse, started = endpoint
    queries = readme_analyst_queries()
    assert len(queries) >= 5
    for sql in queries:
        served, local = pyhive(started, sql), duckdb_query(warehouse, sql)
        assert not served.empty, sql
        assert list(served.columns) == list(local.columns), sql
        assert comparable(served) == comparable(local), sql


def test_the_endpoint_refuses_every_statement_that_writes_and_the_files_stay(endpoint):
    warehouse, started = endpoint
    assert sql_server.status(warehouse).read_only
    files = {p: p.stat().st_mtime_ns for p in warehouse.rglob("*.parquet") if catalog.STATE_DIR not in p.parts}
    tables = set(pyhive(started, "SHOW TABLES")["tableName"])
    counts = "SELECT count(*) AS n FROM recommendations"
    rows = pyhive(started, counts)["n"][0]
    elsewhere = warehouse.parent / "written-by-sql"
    copy = shutil.copytree(warehouse / "items", warehouse.parent / "items-copy")
    for sql in (
        f"INSERT OVERWRITE TABLE items SELECT * FROM parquet.`{copy}` WHERE 1 = 0",
        "INSERT INTO model_runs SELECT * FROM model_runs",
        "TRUNCATE TABLE ratings",
        "DROP TABLE items",
        f"ALTER TABLE recommendations DROP PARTITION (run_date = DATE'{NIGHT_DATE}')",
        "ALTER TABLE items RENAME TO items_old",
        f"CREATE TABLE copied USING parquet LOCATION '{elsewhere}' AS SELECT * FROM items",
        f"INSERT OVERWRITE DIRECTORY '{elsewhere}' USING parquet SELECT * FROM items",
        "ADD JAR /nonexistent/any.jar",
        "CREATE FUNCTION shell AS 'org.example.Shell'",
        "DROP DATABASE cfrec CASCADE",
    ):
        with pytest.raises(Exception, match="read-only"):
            pyhive(started, sql)
    assert set(pyhive(started, "SHOW TABLES")["tableName"]) == tables
    assert rows > 0 and pyhive(started, counts)["n"][0] == rows
    assert {p: p.stat().st_mtime_ns for p in warehouse.rglob("*.parquet") if catalog.STATE_DIR not in p.parts} == files
    assert not elsewhere.exists()
    # reading statements still run
    assert not pyhive(started, "DESCRIBE TABLE EXTENDED items").empty
    assert not pyhive(started, "EXPLAIN SELECT * FROM items").empty
    assert not pyhive(started, "SHOW PARTITIONS recommendations").empty


def test_publishes_register_complete_partitions_once(endpoint, spark, tmp_path, monkeypatch):
    warehouse, started = endpoint
    score = ["score", "--warehouse", str(warehouse), "--run-date", LATER]

    # A score that dies after writing its partition and before publishing it leaves nothing to see.
    marker = tmp_path / "crashed"
    monkeypatch.setenv("CFREC_INJECT_FAULT", f"recommendations/run_date={LATER}:{marker}")
    with pytest.raises(RuntimeError, match="injected fault"):
        main(score)
    assert marker.exists()
    assert partitions(started) == [f"run_date={d}" for d in NIGHTS]
    assert pyhive(started, f"SELECT count(*) AS n FROM recommendations WHERE run_date = DATE'{LATER}'")["n"][0] == 0

    # The retry publishes it and registers it in the same step.
    assert main(score) == 0
    assert partitions(started) == [f"run_date={d}" for d in (*NIGHTS, LATER)]
    later = pyhive(
        started, f"SELECT {', '.join(RECOMMENDATION_COLUMNS)} FROM recommendations WHERE run_date = '{LATER}'"
    )
    expected = parquet_recommendations(warehouse, LATER)
    pd.testing.assert_frame_equal(
        later.sort_values(["user_id", "rank"]).reset_index(drop=True), expected, check_dtype=False
    )

    # A re-run swaps the partition's files: still one partition, its rows read once, from the new files.
    before = {p.name for p in (warehouse / "recommendations" / f"run_date={LATER}").glob("*.parquet")}
    assert main(score) == 0
    after = {p.name for p in (warehouse / "recommendations" / f"run_date={LATER}").glob("*.parquet")}
    assert before != after or not before  # new files (names carry the write's id)
    assert partitions(started) == [f"run_date={d}" for d in (*NIGHTS, LATER)]
    counts = pyhive(started, "SELECT run_date, count(*) AS n FROM recommendations GROUP BY run_date ORDER BY run_date")
    on_disk = [len(pd.read_parquet(warehouse / "recommendations" / f"run_date={d}")) for d in (*NIGHTS, LATER)]
    assert counts["n"].tolist() == on_disk and on_disk[-2:] == [9430, 9430]


def test_catalog_sync_rebuilds_the_catalog_after_a_restore_and_a_schema_change(endpoint, capsys):
    warehouse, started = endpoint
    # A restore brings back the warehouse without the later night; an older cfrec declared fewer columns.
    shutil.rmtree(warehouse / "recommendations" / f"run_date={LATER}")
    location = warehouse / "similar_items"
    catalog_ddl(
        warehouse,
        "DROP TABLE cfrec.similar_items",
        f"CREATE TABLE cfrec.similar_items (item_id string, `rank` int) USING parquet LOCATION '{location}'",
    )
    assert main(["catalog", "sync", "--warehouse", str(warehouse)]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["partitions_dropped"] == 1
    assert report["columns_added"] == {
        "similar_items": ["similar_item_id", "similarity", "similar_title", "model_version"]
    }
    assert partitions(started) == [f"run_date={d}" for d in NIGHTS]
    similar = pyhive(
        started, "SELECT item_id, `rank`, similar_title FROM similar_items WHERE item_id = '1' ORDER BY `rank`"
    )
    assert len(similar) == 5 and similar["similar_title"].notna().all()
    assert list(Path(location).glob("*.parquet")), "the catalog's changes never touch the files"


def test_a_postgresql_metastore_serves_the_same_tables(nights, postgres, tmp_path, monkeypatch, capsys):
    if not Path(catalog.DRIVERS["postgresql"][1]).is_file():
        pytest.skip("PostgreSQL's JDBC driver is not installed (apt-get install libpostgresql-jdbc-java)")
    port, psql = postgres  # the session's server; Airflow's metadata is another database of it
    monkeypatch.setenv("CFREC_METASTORE_USER", "cfrec")
    warehouse = copy_warehouse(nights.dag, tmp_path / "warehouse")
    url = f"jdbc:postgresql://127.0.0.1:{port}/metastore"
    assert main(["catalog", "sync", "--warehouse", str(warehouse), "--metastore", url]) == 0
    assert "recommendations" in capsys.readouterr().out
    tables = set(psql('SELECT "TBL_NAME" FROM "TBLS"', "metastore").split())
    assert {"recommendations", "ratings", "model_runs", "metrics"} <= tables
    registered = psql(
        'SELECT "PART_NAME" FROM "PARTITIONS" p JOIN "TBLS" t USING ("TBL_ID") WHERE "TBL_NAME" = \'recommendations\'',
        "metastore",
    )
    assert sorted(registered.split()) == [f"run_date={d}" for d in NIGHTS]

    started = sql_server.start(warehouse, port=free_port())
    try:
        assert started.derby_pid is None  # the warehouse's metastore is PostgreSQL: no Derby
        counts = pyhive(
            started,
            "SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM recommendations "
            f"WHERE run_date = DATE'{NIGHT_DATE}'",
        )
        assert counts.iloc[0].tolist() == [9430, 943]
    finally:
        sql_server.stop(warehouse)
    assert not processes.alive(started.thrift_pid)
