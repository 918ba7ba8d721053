"""Downstream analytics on the published tables, with DuckDB: what an analyst's DAG would do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, is_published, publish, write_arrow
from cfmodel.warehouse.schemas import MOST_RECOMMENDED, RECOMMENDATIONS
from cfmodel.warehouse.sql import arrow_table


@dataclass
class MostRecommended:
    run_date: str
    rows: int
    path: str
    top: dict | None  # the most recommended item: item_id, title, users, mean_rank


def write_most_recommended(warehouse: str | Path, run_date: str, limit: int = 100) -> MostRecommended:
    """analytics/most_recommended/run_date=D/: items by how many users got them in their list."""
    import duckdb

    wh = Warehouse.open(warehouse)
    partition = wh.partition(RECOMMENDATIONS, run_date)
    if not is_published(partition):
        raise CfrecError(f"no published recommendations for {run_date} in {wh.root}")
    query = f"""
        SELECT item_id, any_value(title) AS title, count(*) AS users, avg(rank) AS mean_rank
        FROM read_parquet('{partition}/*.parquet')
        GROUP BY item_id ORDER BY users DESC, item_id LIMIT {int(limit)}
    """
    with duckdb.connect() as con:
        table = arrow_table(con.sql(query)).cast(MOST_RECOMMENDED.arrow)
    target = wh.partition(MOST_RECOMMENDED, run_date)
    publish(target, write_arrow(table))
    top = table.slice(0, 1).to_pylist()
    return MostRecommended(run_date, table.num_rows, str(target), top[0] if top else None)
