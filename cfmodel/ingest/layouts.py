"""What each rating source looks like on disk.

A `SourceLayout` describes a source's files declaratively: file names, separator, quoting, header,
encoding, which column is which, and the rating scale. `get_layout` returns a named source's
layout, or builds the generic `csv` one from options. `cfmodel.ingest.planning` applies a layout to an
input folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cfmodel.errors import CfrecError

UTF8 = "UTF-8"
LATIN1 = "ISO-8859-1"

MOVIELENS_100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


@dataclass(frozen=True)
class TextFormat:
    """How a text file splits into fields.

    `quoted` files follow RFC-4180 (a field may be wrapped in double quotes, with `""` for a quote
    inside, and may then contain the separator); others are split on every separator.
    `header` is true when the first line of each file names the columns.
    """

    sep: str
    quoted: bool = False
    header: bool = False
    encoding: str = UTF8


@dataclass(frozen=True)
class RatingScale:
    """Valid ratings: min <= r <= max and, when `step` is set, a whole number of steps above min."""

    min: float | None
    max: float | None
    step: float | None = None

    @property
    def known(self) -> bool:
        return self.min is not None and self.max is not None


# A column is named (header files, Parquet) or addressed by 0-based position (headerless files).
Column = str | int


@dataclass(frozen=True)
class RatingsSpec:
    pattern: str
    text: TextFormat | None  # None: Parquet
    user: Column
    item: Column
    rating: Column
    timestamp: Column | None
    n_fields: int | None = None  # headerless text: the exact number of fields per line


@dataclass(frozen=True)
class GenreSpec:
    """Where an item's genres are: `flags` (0/1 columns from `column` on, names from u.genre),
    `list` (one column, `sep`-separated, `none_marker` meaning no genre) or `none`."""

    kind: str = "none"
    column: Column | None = None
    sep: str = "|"
    none_marker: str | None = None


@dataclass(frozen=True)
class ItemsSpec:
    pattern: str
    text: TextFormat
    item: Column
    title: Column
    genres: GenreSpec = field(default_factory=GenreSpec)
    year: Column | None = None  # a year column; None: the year a title ends with, '(1995)'
    min_fields: int | None = None  # headerless text: allowed field counts
    max_fields: int | None = None


@dataclass(frozen=True)
class ExtraColumn:
    name: str  # as stored in the warehouse
    source: Column  # header name or 0-based position
    type: str = "string"  # or "int": a value that is not a whole number is rejected


@dataclass(frozen=True)
class ExtraSpec:
    """A side file a source ships beside its ratings (user demographics, a want-to-read list),
    ingested as its own table when present. `key` names the columns that identify a row: a
    later line with the same key supersedes an earlier one, and a key left empty is rejected."""

    table: str
    pattern: str
    text: TextFormat
    columns: tuple[ExtraColumn, ...]
    key: tuple[str, ...]


@dataclass(frozen=True)
class SourceLayout:
    name: str
    ratings: RatingsSpec
    items: ItemsSpec | None
    scale: RatingScale
    description: str
    extras: tuple[ExtraSpec, ...] = ()


def _users(pattern: str, text: TextFormat, *columns: ExtraColumn) -> ExtraSpec:
    return ExtraSpec("users", pattern, text, (ExtraColumn("user_id", 0), *columns), key=("user_id",))


def _ml_dat(name: str, items_encoding: str, scale: RatingScale, description: str) -> SourceLayout:
    dat = TextFormat(sep="::")
    # 1M's users.dat (UserID::Gender::Age::Occupation::Zip-code; age and occupation are codes).
    # 10M has no users.dat, so nothing is ingested for it.
    users = _users(
        "users.dat",
        replace(dat, encoding=items_encoding),
        ExtraColumn("gender", 1),
        ExtraColumn("age", 2, "int"),
        ExtraColumn("occupation", 3),
        ExtraColumn("zip_code", 4),
    )
    return SourceLayout(
        name=name,
        ratings=RatingsSpec("ratings.dat", dat, user=0, item=1, rating=2, timestamp=3, n_fields=4),
        items=ItemsSpec(
            "movies.dat",
            replace(dat, encoding=items_encoding),
            item=0,
            title=1,
            genres=GenreSpec("list", column=2),
            min_fields=3,
            max_fields=3,
        ),
        scale=scale,
        description=description,
        extras=(users,),
    )


SOURCES: dict[str, SourceLayout] = {
    layout.name: layout
    for layout in [
        SourceLayout(
            name="movielens-100k",
            ratings=RatingsSpec(
                "u.data", TextFormat("\t", encoding=LATIN1), user=0, item=1, rating=2, timestamp=3, n_fields=4
            ),
            items=ItemsSpec(
                "u.item",
                TextFormat("|", encoding=LATIN1),
                item=0,
                title=1,
                genres=GenreSpec("flags", column=5),
                min_fields=5 + len(MOVIELENS_100K_GENRES),
                max_fields=5 + len(MOVIELENS_100K_GENRES),
            ),
            scale=RatingScale(1, 5, 1),
            description="u.data (TAB: user item rating timestamp), u.item ('|', latin-1, 19 genre flags named by u.genre)",
            extras=(
                _users(
                    "u.user",
                    TextFormat("|", encoding=LATIN1),
                    ExtraColumn("age", 1, "int"),
                    ExtraColumn("gender", 2),
                    ExtraColumn("occupation", 3),
                    ExtraColumn("zip_code", 4),
                ),
            ),
        ),
        _ml_dat(
            "movielens-1m",
            LATIN1,
            RatingScale(1, 5, 1),
            "ratings.dat (UserID::MovieID::Rating::Timestamp), movies.dat (MovieID::Title::Genres, latin-1)",
        ),
        _ml_dat(
            "movielens-10m",
            UTF8,
            RatingScale(0.5, 5, 0.5),
            "the movielens-1m layout with half-star ratings 0.5-5; movies.dat read as UTF-8",
        ),
        SourceLayout(
            name="movielens-latest",
            ratings=RatingsSpec(
                "ratings.csv",
                TextFormat(",", quoted=True, header=True),
                user="userId",
                item="movieId",
                rating="rating",
                timestamp="timestamp",
            ),
            items=ItemsSpec(
                "movies.csv",
                TextFormat(",", quoted=True, header=True),
                item="movieId",
                title="title",
                genres=GenreSpec("list", column="genres", none_marker="(no genres listed)"),
            ),
            scale=RatingScale(0.5, 5, 0.5),
            description="ratings.csv (userId,movieId,rating,timestamp), movies.csv (movieId,title,genres; RFC-4180)",
        ),
        SourceLayout(
            name="movietweetings",
            ratings=RatingsSpec("ratings.dat", TextFormat("::"), user=0, item=1, rating=2, timestamp=3, n_fields=4),
            items=ItemsSpec(
                "movies.dat",
                TextFormat("::"),
                item=0,
                title=1,
                genres=GenreSpec("list", column=2),
                min_fields=2,
                max_fields=3,
            ),
            scale=RatingScale(0, 10, 1),
            description="ratings.dat (user_id::movie_id::rating::rating_timestamp, 0-10), movies.dat (UTF-8)",
            extras=(_users("users.dat", TextFormat("::"), ExtraColumn("twitter_id", 1)),),
        ),
        SourceLayout(
            name="goodbooks",
            ratings=RatingsSpec(
                "ratings.csv",
                TextFormat(",", quoted=True, header=True),
                user="user_id",
                item="book_id",
                rating="rating",
                timestamp=None,
            ),
            items=ItemsSpec(
                "books.csv",
                TextFormat(",", quoted=True, header=True),
                item="book_id",
                title="title",
                year="original_publication_year",
            ),
            scale=RatingScale(1, 5, 1),
            description="ratings.csv (user_id,book_id,rating; no timestamp, file order is time order), books.csv",
            extras=(
                ExtraSpec(
                    "to_read",
                    "to_read.csv",
                    TextFormat(",", quoted=True, header=True),
                    (ExtraColumn("user_id", "user_id"), ExtraColumn("item_id", "book_id")),
                    key=("user_id", "item_id"),
                ),
            ),
        ),
    ]
}
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
    import codecs

    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise CfrecError(f"unknown encoding '{name}'") from None
    if codec in ("utf-8", "ascii"):
        return UTF8
    if codec == "iso8859-1":
        return LATIN1
    raise CfrecError(f"encoding '{name}' is not supported: use utf-8 or latin-1")


def _column(value, header: bool, option: str) -> Column:
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


def _scale_option(value, name: str) -> float | None:
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
