"""SQL over the warehouse: DuckDB for analysts without a cluster, Spark SQL for everything else.

Every table folder becomes a view of the same name. Partitioned tables (run_date=D folders) get
their partition column back as a DATE in both engines, and partitions written before a column
was added read as null in it (schemas are merged by name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse
from cfmodel.warehouse.lock import reading

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession

OUTPUT_FORMATS = ("table", "csv", "json")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parquet_source(files: list[Path], partitioned: bool) -> str:
    """The DuckDB table function reading one warehouse table from its visible files.

    Files are listed rather than globbed: a glob would also match hidden folders of writes in
    progress, which every other reader skips.
    """
    listed = "[" + ", ".join(_literal(str(f)) for f in files) + "]"
    if partitioned:
        # DuckDB refuses a hive type for a column that is not a partition of this table.
        dated = any(part.startswith("run_date=") for f in files for part in f.parts)
        types = ", hive_types = {'run_date': DATE}" if dated else ""
        return f"read_parquet({listed}, hive_partitioning = true, union_by_name = true{types})"
    return f"read_parquet({listed}, union_by_name = true)"


def connect(warehouse: str | Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per warehouse table, confined to the warehouse: it can read
    files under the warehouse folder and nothing else, load no extension, and its configuration is
    locked."""
    import duckdb

    wh = Warehouse.open(warehouse, create=False)
    tables = wh.tables()
    if not tables:
        raise CfrecError(f"warehouse {wh.root} has no tables yet; run 'cfrec run' or the nightly DAG first")
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for name, partitioned in tables.items():
        source = parquet_source(wh.table_files(name), partitioned)
        con.execute(f"CREATE VIEW {_identifier(name)} AS SELECT * FROM {source}")
    con.execute(f"SET allowed_directories = [{_literal(str(wh.root) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def read_only_statement(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """`sql` when it is exactly one SELECT; a CfrecError otherwise (`cfrec sql` only reads)."""
    import duckdb

    statements = con.extract_statements(sql)
    if len(statements) != 1:
        raise CfrecError(f"cfrec sql runs exactly one statement, got {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = statements[0].type.name
        raise CfrecError(f"cfrec sql only reads: a {kind} statement is refused (use SELECT)")
    return sql


def arrow_table(relation: object) -> object:
    # DuckDB >= 1.4 names it to_arrow_table; older releases call the same thing arrow().
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def query(warehouse: str | Path, sql: str) -> pd.DataFrame:
    """Run one SELECT over the warehouse's views; errors come back as one-line CfrecErrors.

    DATE columns (run_date) come back as datetime.date, as Spark and pyarrow give them.
    """
    import duckdb

    with reading(Warehouse.open(warehouse, create=False).root):  # the files listed stay until the end
        con = connect(warehouse)
        try:
            relation = con.sql(read_only_statement(con, sql))
            return pd.DataFrame() if relation is None else arrow_table(relation).to_pandas(date_as_object=True)
        except duckdb.Error as exc:
            raise CfrecError(str(exc).strip().splitlines()[0]) from None
        finally:
            con.close()


def render(frame: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return json.dumps(records, indent=2, default=_json_value)
    if fmt == "table":
        with pd.option_context(
            "display.max_rows", None, "display.max_columns", None, "display.width", 200, "display.max_colwidth", 60
        ):
            return frame.to_string(index=False)
    raise CfrecError(f"unknown output format '{fmt}' (use {', '.join(OUTPUT_FORMATS)})")


def _json_value(value: object) -> object:
    if hasattr(value, "tolist"):  # numpy arrays and scalars (factors, counts)
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def register_spark_views(spark: SparkSession, warehouse: str | Path) -> list[str]:
    """Register every warehouse table as a Spark temporary view of the same name; returns their names."""
    wh = Warehouse.open(warehouse, create=False)
    names = []
    for name, partitioned in wh.tables().items():
        reader = spark.read.option("mergeSchema", "true") if partitioned else spark.read
        reader.parquet(str(wh.table(name))).createOrReplaceTempView(name)
        names.append(name)
    return names
