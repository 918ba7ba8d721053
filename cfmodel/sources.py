"""Reading rating sources into typed DataFrames, with every unusable line kept as a reject.

Parsing is split in two so each half is testable on tiny DataFrames:
`read_lines` turns a file into (source_file, line_number, raw) rows, decoded with the source's
encoding; `parse_ratings` and `parse_movielens_items` turn those rows into typed columns plus a
`reason` that is null for clean rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.errors import CfrecError

LINE_SCHEMA = T.StructType(
    [
        T.StructField("source_file", T.StringType(), False),
        T.StructField("line_number", T.LongType(), False),
        T.StructField("raw", T.StringType(), True),
    ]
)

MOVIELENS_100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]


@dataclass(frozen=True)
class SourceLayout:
    name: str
    ratings_file: str
    ratings_sep: str
    items_file: str
    items_sep: str
    encoding: str
    rating_min: float
    rating_max: float


SOURCES = {
    "movielens-100k": SourceLayout(
        name="movielens-100k",
        ratings_file="u.data",
        ratings_sep="\t",
        items_file="u.item",
        items_sep="|",
        encoding="ISO-8859-1",
        rating_min=1.0,
        rating_max=5.0,
    ),
}


def get_layout(source: str) -> SourceLayout:
    try:
        return SOURCES[source]
    except KeyError:
        raise CfrecError(f"unknown source '{source}' (known: {', '.join(sorted(SOURCES))})") from None


def check_input(layout: SourceLayout, input_dir: str | Path) -> Path:
    root = Path(input_dir).expanduser().resolve()
    if not root.is_dir():
        raise CfrecError(f"input folder {root} does not exist")
    for name in (layout.ratings_file, layout.items_file):
        if not (root / name).is_file():
            raise CfrecError(f"input folder {root} has no {name} (expected the {layout.name} layout)")
    return root


def read_lines(spark: SparkSession, path: Path, encoding: str) -> DataFrame:
    """One row per physical line, numbered from 1, decoded from `encoding`.

    Spark's text reader keeps the bytes it read; casting to binary and decoding applies the source's
    real encoding (latin-1 for MovieLens 100k) instead of assuming UTF-8. Decoding happens before
    the lines leave the JVM, where Python would otherwise decode them as UTF-8.
    """
    value = F.col("value")
    if encoding.replace("-", "").upper() == "UTF8":
        text = F.make_valid_utf8(value)  # invalid bytes become U+FFFD, rejected as bad_encoding
    else:
        text = F.decode(value.cast("binary"), encoding)
    decoded = spark.read.text(str(path)).select(text)
    name = path.name
    numbered = decoded.rdd.zipWithIndex().map(lambda pair: (name, pair[1] + 1, pair[0][0]))
    return spark.createDataFrame(numbered, LINE_SCHEMA)


def _clean_line(col: F.Column) -> F.Column:
    # Copied files often carry a BOM, CRLF endings, stray spaces or a trailing delimiter.
    return F.trim(F.regexp_replace(col, r"^\x{FEFF}|\r$", ""))


def _fields(col: F.Column, sep: str) -> F.Column:
    return F.split(col, re.escape(sep), -1)


def parse_ratings(lines: DataFrame, sep: str, rating_min: float, rating_max: float) -> DataFrame:
    """(source_file, line_number, raw) -> typed ratings with a `reason` (null when clean).

    Expects `user sep item sep rating sep timestamp`; a trailing empty field is tolerated.
    Of duplicated (user, item) pairs the latest rating (by timestamp, then line) stays clean and the
    others are marked `duplicate_superseded`.
    """
    line = _clean_line(F.col("raw"))
    fields = _fields(line, sep)
    n_fields = F.when(F.element_at(fields, -1) == "", F.size(fields) - 1).otherwise(F.size(fields))
    user = F.trim(F.get(fields, 0))
    item = F.trim(F.get(fields, 1))
    rating_text = F.trim(F.get(fields, 2))
    ts_text = F.trim(F.get(fields, 3))
    rating = rating_text.try_cast("double")
    ts = ts_text.try_cast("long")
    reason = (
        F.when(line == "", F.lit("blank_line"))
        .when(F.col("raw").contains("\ufffd"), F.lit("bad_encoding"))
        .when(n_fields != 4, F.lit("unparseable"))
        .when(user == "", F.lit("missing_user"))
        .when(item == "", F.lit("missing_item"))
        .when(rating.isNull() | F.isnan(rating), F.lit("rating_not_numeric"))
        .when((rating < rating_min) | (rating > rating_max), F.lit("rating_out_of_scale"))
        .when(ts.isNull(), F.lit("timestamp_not_numeric"))
    )
    parsed = lines.select(
        "source_file",
        "line_number",
        "raw",
        user.alias("user_id"),
        item.alias("item_id"),
        rating.alias("rating"),
        ts.alias("timestamp"),
        reason.alias("reason"),
    )
    latest_first = Window.partitionBy("user_id", "item_id").orderBy(
        F.col("timestamp").desc(), F.col("line_number").desc()
    )
    clean_rank = F.when(F.col("reason").isNull(), F.row_number().over(latest_first))
    return parsed.withColumn("_rank", clean_rank).select(
        *[c for c in parsed.columns if c != "reason"],
        F.when(F.col("_rank") > 1, F.lit("duplicate_superseded")).otherwise(F.col("reason")).alias("reason"),
    )


def parse_movielens_items(lines: DataFrame, sep: str, genre_names: list[str]) -> DataFrame:
    """MovieLens `u.item` lines -> item_id, title, year, genres (array) and a `reason`."""
    line = _clean_line(F.col("raw"))
    fields = _fields(line, sep)
    n_expected = 5 + len(genre_names)
    item = F.trim(F.get(fields, 0))
    title = F.trim(F.get(fields, 1))
    flags = [F.get(fields, 5 + i) for i in range(len(genre_names))]
    genres = F.filter(
        F.array(*[F.when(flag == "1", F.lit(name)) for flag, name in zip(flags, genre_names)]),
        lambda g: g.isNotNull(),
    )
    reason = (
        F.when(line == "", F.lit("blank_line"))
        .when(F.size(fields) < n_expected, F.lit("unparseable"))
        .when(item == "", F.lit("missing_item"))
    )
    return lines.select(
        "source_file",
        "line_number",
        "raw",
        item.alias("item_id"),
        title.alias("title"),
        title_year(title).alias("year"),
        genres.alias("genres"),
        reason.alias("reason"),
    )


def title_year(title: F.Column) -> F.Column:
    """The year a title ends with in parentheses, as MovieLens writes it: 'Heat (1995)' -> 1995."""
    return F.regexp_extract(title, r"\((\d{4})\)\s*$", 1).try_cast("int")


def read_genre_names(input_dir: Path) -> list[str]:
    path = input_dir / "u.genre"
    if not path.is_file():
        return MOVIELENS_100K_GENRES
    pairs = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, _, index = line.strip().rpartition("|")
            pairs.append((int(index), name))
    return [name for _, name in sorted(pairs)]
