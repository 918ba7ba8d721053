"""Reading rating sources into typed DataFrames, with every unusable line kept as a reject.

Parsing is split in two so each half is testable on tiny DataFrames: `read_lines` turns files
into (source_file, line_number, raw) rows decoded with the source's encoding; `parse_ratings` and
`parse_items` turn those rows into typed columns plus a `reason` that is null for clean rows.
Everything is Spark-native (no Python UDFs), so it runs distributed at JVM speed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.errors import CfrecError
from cfmodel.ingest.layouts import LATIN1, UTF8, RatingScale, TextFormat
from cfmodel.ingest.planning import ExtraPlan, InputFile, ItemsPlan, RatingsPlan

LINE_SCHEMA = T.StructType(
    [
        T.StructField("source_file", T.StringType(), False),
        T.StructField("line_number", T.LongType(), False),
        T.StructField("raw", T.StringType(), True),
        T.StructField("encoding_ok", T.BooleanType(), False),
    ]
)
RATING_COLUMNS = ["source_file", "line_number", "raw", "user_id", "item_id", "rating", "timestamp", "reason"]
UTF8_BOM = bytearray(b"\xef\xbb\xbf")
# A rating counts as on the scale's step when within this of a whole number of steps.
STEP_TOLERANCE = 1e-6
# Java's number parser, which the cast uses, also takes a type suffix ('4d', '4F') and hexadecimal
# ('0x1p2'); 'NaN' and 'Infinity' it takes too, but a rating must be finite anyway.
TYPE_SUFFIXES = "dDfF"
HEX_MARKS = "xX"
# Ratings are stored as 32-bit floats: anything larger would become infinite.
FLOAT32_MAX = 3.4028234663852886e38
# The ASCII characters of Unicode's White_Space (what `trimmed` removes, with non-ASCII ones).
ASCII_WHITESPACE = " \t\n\x0b\x0c\r"


@dataclass(frozen=True)
class TextLines:
    """Lines of a set of files, and how many lines each file has (counted independently of parsing)."""

    frame: DataFrame
    lines_per_file: dict[str, int]


def _encoding_ok(value: Column, encoding: str) -> Column:
    """Whether a line's bytes are valid in the encoding (every byte is a latin-1 character); a
    U+FFFD that the file itself holds is valid UTF-8."""
    return F.is_valid_utf8(value) if encoding == UTF8 else F.lit(True)


def _decoded(value: Column, encoding: str) -> Column:
    if encoding == UTF8:
        # Invalid bytes become U+FFFD in the raw text kept for the reject (`_encoding_ok` flags them).
        return F.make_valid_utf8(value)
    if encoding != LATIN1:
        raise ValueError(f"unsupported encoding {encoding}")
    # Spark's text reader keeps the bytes it read; decoding them here applies the real encoding.
    # A UTF-8 BOM would otherwise decode to three latin-1 characters.
    binary = value.cast("binary")
    unmarked = F.when(F.startswith(binary, F.lit(UTF8_BOM)), F.substring(binary, 4, 2**31 - 1)).otherwise(binary)
    return F.decode(unmarked, "ISO-8859-1")


def read_lines(spark: SparkSession, files: list[InputFile], encoding: str) -> TextLines:
    """One row per physical line of each file, numbered from 1 within the file.

    Line numbers come from the position of each line inside its file block: a first pass counts the
    lines of every block (`_metadata.file_block_start`), then each line's number is its ordinal
    inside the block (`monotonically_increasing_id` counts rows within a partition, and a block is
    read whole by one partition) plus the lines of the blocks before it. Both passes are plain scans
    with no Python in the data path, and the first pass also gives the input count the ingest
    checks its output against.
    """
    frames, counts = [], {}
    for file in files:
        scan = spark.read.text(str(file.path)).select(
            "value",
            F.col("_metadata.file_block_start").alias("_block"),
            F.monotonically_increasing_id().alias("_ordinal"),
        )
        blocks = (
            scan.groupBy("_block").agg(F.min("_ordinal").alias("first"), F.count(F.lit(1)).alias("lines")).collect()
        )
        offsets, seen = [], 0
        for block in sorted(blocks, key=lambda b: b["_block"]):
            offsets += [F.lit(block["_block"]), F.lit(seen + 1 - block["first"])]
            seen += block["lines"]
        counts[file.name] = seen
        if not offsets:
            continue
        line_number = F.col("_ordinal") + F.try_element_at(F.create_map(*offsets), F.col("_block"))
        frames.append(
            scan.select(
                F.lit(file.name).alias("source_file"),
                line_number.cast("long").alias("line_number"),
                _decoded(F.col("value"), encoding).alias("raw"),
                _encoding_ok(F.col("value"), encoding).alias("encoding_ok"),
            )
        )
    if not frames:
        return TextLines(spark.createDataFrame([], LINE_SCHEMA), counts)
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return TextLines(frame, counts)


def _clean_line(col: Column) -> Column:
    # Copied files often carry a BOM, CRLF endings or stray spaces (a trailing delimiter: _split).
    return F.btrim(col, F.lit(" \r\ufeff"))


def _field_count_ok(fields: Column, min_fields: int, max_fields: int) -> Column:
    n = F.size(fields)
    n = F.when((n == max_fields + 1) & (F.element_at(fields, -1) == ""), n - 1).otherwise(n)  # trailing separator
    return (n >= min_fields) & (n <= max_fields)


def _csv_record(line: Column, sep: str, n_fields: int) -> Column:
    """RFC-4180 parse of a line into a struct c0..c{n-1} plus `_corrupt`, set (to the line) when it
    does not split into exactly n fields or has an unterminated quote. One trailing separator is
    tolerated."""
    schema = ", ".join(f"`c{i}` string" for i in range(n_fields)) + ", `_corrupt` string"
    options = {
        "sep": sep,
        "quote": '"',
        "escape": '"',
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": "_corrupt",
        "ignoreLeadingWhiteSpace": "true",
        "ignoreTrailingWhiteSpace": "true",
    }
    parsed = F.from_csv(line, schema, options)
    stripped = F.when(line.endswith(sep), F.regexp_replace(line, re.escape(sep) + "$", ""))
    return F.when(
        parsed["_corrupt"].isNotNull() & stripped.isNotNull(), F.from_csv(stripped, schema, options)
    ).otherwise(parsed)


def trimmed(text: Column) -> Column:
    """`text` without leading and trailing whitespace of any kind (tabs, no-break spaces), the one
    normalisation of every id and field, whether the file quoted it or not."""
    return F.regexp_replace(text, r"(?U)^\s+|\s+$", "")


def _field(fields: Column, position: int | None) -> Column:
    """The field at `position` of `_split`'s (trimmed) fields, "" when the line is too short for it."""
    if position is None:
        return F.lit(None).cast("string")
    return F.coalesce(F.get(fields, position), F.lit(""))


def _timestamp(text: Column) -> Column:
    # Epoch seconds as MovieLens and MovieTweetings write them; ISO-8601 date-times also accepted.
    return F.coalesce(text.try_cast("long"), F.unix_seconds(F.try_to_timestamp(text)))


def _decimal(text: Column) -> Column:
    """A rating written as people write numbers (`[+-]digits[.digits][e[+-]digits]`), else null.
    Spark's cast takes what Java's parser takes, which is that plus the forms refused here; testing
    for those few characters costs a fraction of a regular expression on every row."""
    java_only = F.lit(False)
    for suffix in TYPE_SUFFIXES:
        java_only = java_only | text.endswith(suffix)
    for mark in HEX_MARKS:
        java_only = java_only | text.contains(mark)
    return F.when(~java_only, text.try_cast("double"))


def _rating_reason(rating: Column, scale: RatingScale) -> Column:
    not_numeric = rating.isNull() | F.isnan(rating) | (F.abs(rating) == float("inf"))
    reason = F.when(not_numeric, F.lit("rating_not_numeric")).when(
        F.abs(rating) > FLOAT32_MAX, F.lit("rating_overflow")
    )
    if scale.known:
        off_scale = (rating < scale.min) | (rating > scale.max)
        if scale.step:
            steps = (rating - scale.min) / scale.step
            off_scale = off_scale | (F.abs(steps - F.round(steps)) > STEP_TOLERANCE)
        reason = reason.when(off_scale, F.lit("rating_out_of_scale"))
    return reason


def typed_ratings(rows: DataFrame, has_timestamp: bool, scale: RatingScale) -> DataFrame:
    """Text columns (_user, _item, _rating, _timestamp, _structural reason) -> typed ratings with the
    reason a row is unusable (null when clean). Duplicates are left to `cfmodel.ingest.dedup`.

    Each step is its own projection so the split and the casts run once per row: Spark does not
    share an expression between the branches of a CASE WHEN, and keeps an expensive column that is
    referenced twice in its own projection rather than inlining it.
    """
    typed = rows.select(
        "source_file",
        "line_number",
        "raw",
        "_structural",
        F.col("_user").alias("user_id"),
        F.col("_item").alias("item_id"),
        _decimal(F.col("_rating")).alias("rating"),
        (_timestamp(F.col("_timestamp")) if has_timestamp else F.lit(None).cast("long")).alias("timestamp"),
    )
    reason = (
        F.when(F.col("_structural").isNotNull(), F.col("_structural"))
        .when(F.col("user_id") == "", F.lit("missing_user"))
        .when(F.col("item_id") == "", F.lit("missing_item"))
        .otherwise(_rating_reason(F.col("rating"), scale))
    )
    if has_timestamp:
        reason = F.coalesce(reason, F.when(F.col("timestamp").isNull(), F.lit("timestamp_not_numeric")))
    return typed.select(*RATING_COLUMNS[:-1], reason.alias("reason"))


def _line_reason(encoding_ok: Column, line: Column, well_formed: Column) -> Column:
    return (
        F.when(line == "", F.lit("blank_line"))
        .when(~encoding_ok, F.lit("bad_encoding"))
        .when(~well_formed, F.lit("unparseable"))
    )


def _split(lines: DataFrame, text: TextFormat, min_fields: int, max_fields: int) -> DataFrame:
    """lines + _fields (array of fields, each `trimmed`) and _structural (blank_line / bad_encoding /
    unparseable, or null when the line has an acceptable number of fields).

    Quoted formats follow RFC-4180: a line holding a quote goes through Spark's CSV parser; a line
    without one means the same either way and takes the plain split, twice as fast. The parsed
    record is its own column so the parser runs once per line.
    """
    cleaned = lines.select("source_file", "line_number", "raw", "encoding_ok", _clean_line(F.col("raw")).alias("_line"))
    line = F.col("_line")
    # The split is its own column: inlined, it would run once per reference, as Spark evaluates
    # the branches of a CASE WHEN separately (about twice the cost of the whole parse).
    step = cleaned.select("*", F.split(line, re.escape(text.sep), -1).alias("_plain"))
    fields = F.col("_plain")
    well_formed = _field_count_ok(fields, min_fields, max_fields)
    if text.quoted:
        has_quote = line.contains('"')
        # An RFC-4180 record on one line holds quotes in pairs: an odd count is a field that runs on
        # into the next line (which has an odd count too), and both lines are unparseable.
        odd_quotes = (F.length(line) - F.length(F.regexp_replace(line, '"', ""))) % 2 == 1
        step = step.withColumn("_record", F.when(has_quote, _csv_record(line, text.sep, max_fields)))
        record = F.col("_record")
        quoted = F.array(*[F.coalesce(record[f"c{i}"], F.lit("")) for i in range(max_fields)])
        fields = F.when(has_quote, quoted).otherwise(fields)
        well_formed = F.when(has_quote, record["_corrupt"].isNull() & ~odd_quotes).otherwise(well_formed)
    # An ASCII line without ASCII whitespace has nothing to trim. Most lines are such, and a
    # regular expression per field costs more than the rest of the parse.
    maybe_whitespace = F.length(line) != F.octet_length(line)
    for char in ASCII_WHITESPACE:
        maybe_whitespace = maybe_whitespace | line.contains(char)
    fields = F.when(maybe_whitespace, F.transform(fields, trimmed)).otherwise(fields)
    return step.select(
        "source_file",
        "line_number",
        "raw",
        fields.alias("_fields"),
        _line_reason(F.col("encoding_ok"), line, well_formed).alias("_structural"),
    )


def parse_ratings(lines: DataFrame, plan: RatingsPlan, scale: RatingScale) -> DataFrame:
    """(source_file, line_number, raw) -> source_file, line_number, raw, user_id, item_id, rating,
    timestamp, reason (null when clean). Header lines must already be removed."""
    split = _split(lines, plan.text, plan.n_fields, plan.n_fields)
    fields = F.col("_fields")
    texts = split.select(
        "source_file",
        "line_number",
        "raw",
        "_structural",
        _field(fields, plan.user).alias("_user"),
        _field(fields, plan.item).alias("_item"),
        _field(fields, plan.rating).alias("_rating"),
        _field(fields, plan.timestamp).alias("_timestamp"),
    )
    return typed_ratings(texts, plan.timestamp is not None, scale)


def _as_text(column: Column, data_type: T.DataType) -> Column:
    # pandas stores an integer id column with gaps as float64: 1.0 is read back as '1'.
    if isinstance(data_type, (T.DoubleType, T.FloatType)):
        whole = F.when(column == F.floor(column), column.try_cast("long")).cast("string")
        return F.coalesce(whole, column.cast("string"))
    return column.cast("string")


def read_parquet_rows(spark: SparkSession, file: InputFile) -> DataFrame:
    """A Parquet file or folder as source_file, line_number (row number within its file), raw (the
    row as JSON) and `fields`, a struct of every column cast to string."""
    try:
        df = spark.read.parquet(str(file.path))
    except AnalysisException as exc:
        reason = str(exc).strip().splitlines()[0]
        hint = " (write timestamps as microseconds, e.g. pandas coerce_timestamps='us')" if "NANOS" in reason else ""
        raise CfrecError(f"cannot read {file.name} as Parquet: {reason}{hint}") from None
    columns = [F.col(f"`{c}`") for c in df.columns]
    as_text = [_as_text(c, df.schema[n].dataType) for c, n in zip(columns, df.columns)]
    name = F.lit(file.name) if file.path.is_file() else F.concat(F.lit(file.name + "/"), F.col("_metadata.file_name"))
    return df.select(
        name.alias("source_file"),
        (F.col("_metadata.row_index") + 1).alias("line_number"),
        F.to_json(F.struct(*columns)).alias("raw"),
        F.struct(*[c.alias(n) for c, n in zip(as_text, df.columns)]).alias("fields"),
    )


def parse_parquet_ratings(rows: DataFrame, plan: RatingsPlan, scale: RatingScale) -> DataFrame:
    """Rows from `read_parquet_rows` -> the columns `parse_ratings` returns."""

    def text(column: str | None) -> Column:
        if column is None:
            return F.lit(None).cast("string")
        return trimmed(F.coalesce(F.col("fields").getField(column), F.lit("")))

    texts = rows.select(
        "source_file",
        "line_number",
        "raw",
        F.lit(None).cast("string").alias("_structural"),
        text(plan.user).alias("_user"),
        text(plan.item).alias("_item"),
        text(plan.rating).alias("_rating"),
        text(plan.timestamp).alias("_timestamp"),
    )
    return typed_ratings(texts, plan.timestamp is not None, scale)


def title_year(title: Column) -> Column:
    """The year a title ends with in parentheses, as MovieLens writes it: 'Heat (1995)' -> 1995."""
    return F.regexp_extract(title, r"\((\d{4})\)\s*$", 1).try_cast("int")


def _genres(fields: Column, plan: ItemsPlan) -> Column:
    spec = plan.genres
    if spec.kind == "flags":
        flags = [F.get(fields, spec.column + i) for i in range(len(plan.genre_names))]
        return F.filter(
            F.array(*[F.when(flag == "1", F.lit(name)) for flag, name in zip(flags, plan.genre_names)]),
            lambda g: g.isNotNull(),
        )
    if spec.kind == "list":
        text = _field(fields, spec.column)
        listed = F.filter(F.transform(F.split(text, re.escape(spec.sep), -1), trimmed), lambda g: g != "")
        if spec.none_marker is not None:
            listed = F.when(text == spec.none_marker, F.array().cast("array<string>")).otherwise(listed)
        return listed
    return F.array().cast("array<string>")


def parse_items(lines: DataFrame, plan: ItemsPlan) -> DataFrame:
    """Item lines -> source_file, line_number, raw, item_id, title, year, genres (array), reason.
    Duplicated item ids are left to `cfmodel.ingest.dedup` (the later line wins)."""
    split = _split(lines, plan.text, plan.min_fields, plan.max_fields)
    fields = F.col("_fields")
    item = _field(fields, plan.item)
    title = _field(fields, plan.title)
    year = title_year(title) if plan.year is None else _field(fields, plan.year).try_cast("double").cast("int")
    return split.select(
        "source_file",
        "line_number",
        "raw",
        item.alias("item_id"),
        F.when(title != "", title).alias("title"),
        year.alias("year"),
        _genres(fields, plan).alias("genres"),
        F.coalesce(F.col("_structural"), F.when(item == "", F.lit("missing_item"))).alias("reason"),
    )


def parse_extra(lines: DataFrame, plan: ExtraPlan) -> DataFrame:
    """Lines of a side file -> source_file, line_number, raw, its columns (empty values null), reason.
    An empty key column is `missing_<name>` (`missing_user` for user_id); an `int` column holding
    something else is `<name>_not_numeric`. Duplicated keys are left to `cfmodel.ingest.dedup`."""
    split = _split(lines, plan.text, plan.n_fields, plan.n_fields)
    fields = F.col("_fields")
    values, reason = [], F.col("_structural")
    for column in plan.columns:
        text = _field(fields, column.source)
        if column.name in plan.key:
            reason = F.coalesce(reason, F.when(text == "", F.lit("missing_" + column.name.removesuffix("_id"))))
        if column.type == "int":
            number = text.try_cast("int")
            reason = F.coalesce(reason, F.when((text != "") & number.isNull(), F.lit(column.name + "_not_numeric")))
            values.append(number.alias(column.name))
        else:
            values.append(F.when(text != "", text).alias(column.name))
    return split.select("source_file", "line_number", "raw", *values, reason.alias("reason"))
