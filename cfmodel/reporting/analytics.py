"""Downstream analytics on the published tables, with DuckDB: what an analyst's DAG would do."""

from __future__ import annotations

from pathlib import Path

from cfmodel.errors import CfrecError
from cfmodel.warehouse.store import Warehouse, publish


def write_most_recommended(warehouse: str | Path, run_date: str, limit: int = 100) -> dict:
    """analytics/most_recommended/run_date=D/: items by how many users got them in their list."""
    import duckdb

    wh = Warehouse.open(warehouse)
    partition = wh.partition("recommendations", run_date)
    if not (partition / "_SUCCESS").exists():
        raise CfrecError(f"no published recommendations for {run_date} in {wh.root}")
    items = wh.table("items")
    titles = f"LEFT JOIN read_parquet('{items}/**/*.parquet') AS i USING (item_id)" if items.exists() else ""
    title = "any_value(i.title)" if titles else "NULL"
    query = f"""
        SELECT r.item_id, {title} AS title, count(*) AS users, avg(r.rank) AS mean_rank
        FROM read_parquet('{partition}/*.parquet') AS r {titles}
        GROUP BY r.item_id ORDER BY users DESC, r.item_id LIMIT {int(limit)}
    """
    with duckdb.connect() as con:
        table = con.sql(query).arrow()
    target = wh.table("analytics") / "most_recommended" / f"run_date={run_date}"

    def write(tmp: Path) -> None:
        import pyarrow.parquet as pq

        tmp.mkdir(parents=True)
        pq.write_table(table, tmp / "part-0.parquet")

    publish(target, write)
    top = table.slice(0, 1).to_pylist()
    return {"run_date": run_date, "rows": table.num_rows, "path": str(target), "top": top[0] if top else None}
