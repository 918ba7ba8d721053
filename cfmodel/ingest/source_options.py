"""The options a user gives to ingest a source: a named source's layout with its files or encoding
overridden, or the generic `csv` layout built from column and scale options. `get_layout` checks
every option, so a bad one fails before any file is read."""

from __future__ import annotations

import codecs
from dataclasses import replace

from cfmodel.errors import CfrecError
from cfmodel.ingest.layouts import (
    LATIN1,
    SOURCES,
    UTF8,
    Column,
    GenreSpec,
    ItemsSpec,
    RatingScale,
    RatingsSpec,
    SourceLayout,
    TextFormat,
)

CSV_SOURCE = "csv"
KNOWN_SOURCES = sorted([*SOURCES, CSV_SOURCE])

# Options any source accepts, and those only the generic `csv` source accepts (with defaults).
COMMON_OPTIONS = {"ratings_file", "items_file", "encoding"}
CSV_DEFAULTS = {
    "format": None,
    "sep": ",",
    "header": True,
    "user_col": "user_id",
    "item_col": "item_id",
    "rating_col": "rating",
    "timestamp_col": None,
    "rating_min": None,
    "rating_max": None,
    "rating_step": None,
    "item_id_col": "item_id",
    "title_col": "title",
    "genres_col": None,
    "genre_sep": "|",
}


def get_layout(source: str, **options) -> SourceLayout:
    """The layout of a named source, or of `csv` built from options; overrides applied."""
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - COMMON_OPTIONS - set(CSV_DEFAULTS)
    if unknown:
        raise CfrecError(f"unknown ingest option(s): {', '.join(sorted(unknown))}")
    if source == CSV_SOURCE:
        layout = _csv_layout({**CSV_DEFAULTS, **options})
    elif source in SOURCES:
        misplaced = set(options) - COMMON_OPTIONS
        if misplaced:
            flags = ", ".join("--" + o.replace("_", "-") for o in sorted(misplaced))
            raise CfrecError(f"{flags}: only for --source csv (source '{source}' has a fixed layout)")
        layout = SOURCES[source]
    else:
        raise CfrecError(f"unknown source '{source}' (known: {', '.join(KNOWN_SOURCES)})")
    return _with_overrides(layout, options)


def _with_overrides(layout: SourceLayout, options: dict) -> SourceLayout:
    ratings, items = layout.ratings, layout.items
    if "ratings_file" in options:
        ratings = replace(ratings, pattern=str(options["ratings_file"]))
    if "items_file" in options and items is not None:
        items = replace(items, pattern=str(options["items_file"]))
    if "encoding" in options:
        encoding = _check_encoding(options["encoding"])
        if ratings.text is not None:
            ratings = replace(ratings, text=replace(ratings.text, encoding=encoding))
        if items is not None:
            items = replace(items, text=replace(items.text, encoding=encoding))
        extras = tuple(replace(e, text=replace(e.text, encoding=encoding)) for e in layout.extras)
        layout = replace(layout, extras=extras)
    return replace(layout, ratings=ratings, items=items)


def _check_encoding(name: str) -> str:
    # Lines are decoded inside the JVM: UTF-8 (invalid bytes become bad_encoding rejects) or latin-1
    # (every byte is a character). ASCII files are valid UTF-8.
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise CfrecError(f"unknown encoding '{name}'") from None
    if codec in ("utf-8", "ascii"):
        return UTF8
    if codec == "iso8859-1":
        return LATIN1
    raise CfrecError(f"encoding '{name}' is not supported: use utf-8 or latin-1")


def _column(value: str | int | None, header: bool, option: str) -> Column:
    if header:
        return str(value)
    try:
        position = int(value)
    except (TypeError, ValueError):
        raise CfrecError(
            f"--{option.replace('_', '-')} must be a 0-based column position when the file has no header, got '{value}'"
        ) from None
    if position < 0:
        raise CfrecError(f"--{option.replace('_', '-')} must be >= 0, got {position}")
    return position


def _scale_option(value: str | float | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CfrecError(f"--{name.replace('_', '-')} must be a number, got '{value}'") from None


def _csv_layout(o: dict) -> SourceLayout:
    header = o["header"] if isinstance(o["header"], bool) else str(o["header"]).lower() in ("1", "true", "yes")
    if o["format"] not in (None, "csv", "parquet"):
        raise CfrecError(f"--format must be csv or parquet, got '{o['format']}'")
    sep = str(o["sep"]).replace("\\t", "\t")
    if not sep or '"' in sep:
        raise CfrecError(f"--sep must be a non-empty separator without quotes, got '{o['sep']}'")
    text = TextFormat(sep, quoted=True, header=header)
    pattern = o.get("ratings_file") or "ratings.*"
    parquet = o["format"] == "parquet" or (o["format"] is None and str(pattern).endswith(".parquet"))
    named = header or parquet
    ratings = RatingsSpec(
        pattern,
        None if parquet else text,
        user=_column(o["user_col"], named, "user_col"),
        item=_column(o["item_col"], named, "item_col"),
        rating=_column(o["rating_col"], named, "rating_col"),
        timestamp=None if o["timestamp_col"] in (None, "") else _column(o["timestamp_col"], named, "timestamp_col"),
    )
    items = None
    if o.get("items_file"):
        items = ItemsSpec(
            o["items_file"],
            text,
            item=_column(o["item_id_col"], header, "item_id_col"),
            title=_column(o["title_col"], header, "title_col"),
            genres=GenreSpec("list", column=_column(o["genres_col"], header, "genres_col"), sep=o["genre_sep"])
            if o["genres_col"] not in (None, "")
            else GenreSpec(),
        )
    bounds = [_scale_option(o["rating_min"], "rating_min"), _scale_option(o["rating_max"], "rating_max")]
    if (bounds[0] is None) != (bounds[1] is None):
        raise CfrecError("give both --rating-min and --rating-max, or neither to infer the scale from the data")
    if bounds[0] is not None and bounds[0] >= bounds[1]:
        raise CfrecError(f"--rating-min {bounds[0]} must be below --rating-max {bounds[1]}")
    step = _scale_option(o["rating_step"], "rating_step")
    if step is not None and step <= 0:
        raise CfrecError(f"--rating-step must be positive, got {step}")
    return SourceLayout(
        CSV_SOURCE,
        ratings,
        items,
        RatingScale(bounds[0], bounds[1], step),
        description="delimited text or Parquet with columns named by options",
    )
