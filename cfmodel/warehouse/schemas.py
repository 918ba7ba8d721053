"""Every warehouse table: its name, its columns and their types, defined once.

A `Table` declares its columns in Spark SQL's type syntax; `ddl` gives the string Spark readers
and `createDataFrame` take, `arrow` the pyarrow schema for tables written on the driver. Both come
from the same declaration, and nothing here imports pyarrow or pyspark until asked (DAG files
read table names from here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

RUN_DATE = "run_date"  # the partition column of every per-night table


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, Spark SQL type)
    partitioned: bool = False  # one `run_date=D` folder per night

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def ddl(self) -> str:
        return ", ".join(f"{name} {kind}" for name, kind in self.columns)

    @cached_property
    def arrow(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([(name, arrow_type(kind)) for name, kind in self.columns])

    def without(self, *names: str) -> Table:
        return Table(self.name, tuple(c for c in self.columns if c[0] not in names), self.partitioned)


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "<"
        depth -= char == ">"
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


_ARROW_SCALARS = {
    "string": "string",
    "float": "float32",
    "double": "float64",
    "int": "int32",
    "bigint": "int64",
    "boolean": "bool_",
    "date": "date32",
}


def arrow_type(kind: str) -> pa.DataType:
    """The pyarrow type of a Spark SQL type name (the subset the warehouse uses)."""
    import pyarrow as pa

    kind = kind.strip()
    if kind in _ARROW_SCALARS:
        return getattr(pa, _ARROW_SCALARS[kind])()
    if kind == "timestamp":
        return pa.timestamp("us", tz="UTC")
    nested = re.fullmatch(r"(array|map)<(.*)>", kind)
    if nested and nested[1] == "array":
        return pa.list_(arrow_type(nested[2]))
    if nested:
        key, value = _split_top_level(nested[2])
        return pa.map_(arrow_type(key), arrow_type(value))
    raise ValueError(f"no Arrow type for Spark type '{kind}'")


def _columns(ddl: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(part.split(" ", 1)) for part in _split_top_level(ddl))  # type: ignore[misc]


def table(name: str, ddl: str, partitioned: bool = False) -> Table:
    return Table(name, _columns(ddl), partitioned)


def increments_of(table: str) -> str:
    """Where a table's nightly increments live: `<table>_increments/run_date=D`."""
    return f"{table}_increments"


def increments(of: Table) -> Table:
    """The increments table of `of`: same columns, one partition per night."""
    return Table(increments_of(of.name), of.columns, partitioned=True)


RATINGS = table("ratings", "user_id string, item_id string, rating float, timestamp bigint")
ITEMS = table("items", "item_id string, title string, year int, genres array<string>")
RATINGS_INCREMENTS = increments(RATINGS)
ITEMS_INCREMENTS = increments(ITEMS)
USER_INDEX = table("user_index", "id string, index bigint")
ITEM_INDEX = table("item_index", "id string, index bigint")
REJECTS = table(
    "rejects",
    "source string, table string, source_file string, line_number bigint, raw string, reason string",
    partitioned=True,
)
DATASETS = table(
    "datasets",
    "source string, rating_min double, rating_max double, rating_step double, scale_origin string, run_date string",
)
INGEST_REPORT = table(
    "ingest_report",
    "source string, input_files array<string>, input_rows bigint, clean_rows bigint, rejected_rows bigint, "
    "rejects_by_reason map<string,bigint>, item_files array<string>, item_input_rows bigint, item_rows bigint, "
    "item_rejects bigint, item_rejects_by_reason map<string,bigint>, extra_rows map<string,bigint>, "
    "extra_rejects_by_reason map<string,map<string,bigint>>, ratings_on_unknown_items bigint, ratings_rows bigint, "
    "superseded_earlier_rows bigint, users bigint, new_users bigint, items bigint, new_items bigint, "
    "rating_min double, rating_max double, seconds double",
    partitioned=True,
)
QUALITY = table(
    "quality", "check string, value double, threshold double, passed boolean, detail string", partitioned=True
)
RECOMMENDATIONS = table(
    "recommendations",
    "user_id string, rank int, item_id string, score float, predicted_rating float, source string, "
    "model_version string, title string, because_item_id string, because_title string",
    partitioned=True,
)
SIMILAR_ITEMS = table(
    "similar_items",
    "item_id string, rank int, similar_item_id string, similarity float, similar_title string, model_version string",
)
ITEM_FACTORS = table("item_factors", "item_id string, factors array<float>, bias float, model_version string")
USER_FACTORS = table("user_factors", "user_id string, factors array<float>, bias float, model_version string")
METRICS = table(
    "metrics",
    "model_version string, model_type string, split string, metric string, value double, "
    "popularity double, evaluated_users bigint",
    partitioned=True,
)
MODEL_RUNS = table(
    "model_runs",
    "model_version string, model_type string, run_date date, created_at timestamp, params string, "
    "data_ratings bigint, data_train bigint, data_valid bigint, data_users bigint, data_items bigint, device string, "
    "train_seconds double, gate_metric string, gate_value double, compared_value double, popularity_value double, "
    "promoted boolean, promotion_reason string, compared_with string, is_current boolean",
)
MOST_RECOMMENDED = table(
    "analytics/most_recommended", "item_id string, title string, users bigint, mean_rank double", partitioned=True
)
MODELS = "models"  # not a table: the model registry's folder
REPORTS = "reports"  # not a table: each night's HTML run report (`cfmodel.reporting.report`)
