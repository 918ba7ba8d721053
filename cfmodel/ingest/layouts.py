"""What each rating source looks like on disk.

A `SourceLayout` describes a source's files declaratively: file names, separator, quoting, header,
encoding, which column is which, and the rating scale. `SOURCES` holds the named sources' layouts;
`cfmodel.ingest.source_options` applies a user's options to them (or builds the generic `csv`
layout from options), and `cfmodel.ingest.planning` applies a layout to an input folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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

    @property
    def bounds(self) -> tuple[float, float] | None:
        """(min, max) as floats, None when the scale is not known."""
        return (float(self.min), float(self.max)) if self.known else None


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
            description="u.data (TAB: user item rating timestamp), "
            "u.item ('|', latin-1, 19 genre flags named by u.genre)",
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
