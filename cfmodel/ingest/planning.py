"""A layout applied to a concrete input folder: which files, and which field is which.

`plan_ingest` checks the input folder, reads each file's header on the driver (a few bytes),
resolves column names to positions and returns an `IngestPlan` that the Spark parsers in
`cfmodel.ingest.parsing` execute. Nothing here needs Spark, so bad input fails before a JVM starts.
"""

from __future__ import annotations

import csv
import glob
import gzip
from dataclasses import dataclass, field, replace
from pathlib import Path

from cfmodel.errors import CfrecError
from cfmodel.ingest.layouts import (
    MOVIELENS_100K_GENRES,
    Column,
    ExtraColumn,
    ExtraSpec,
    GenreSpec,
    ItemsSpec,
    RatingScale,
    TextFormat,
)
from cfmodel.ingest.source_options import get_layout
from cfmodel.paths import resolved


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # as recorded in rejects: the path relative to the input folder


@dataclass(frozen=True)
class RatingsPlan:
    files: list[InputFile]
    text: TextFormat | None
    user: Column
    item: Column
    rating: Column
    timestamp: Column | None
    n_fields: int | None


@dataclass(frozen=True)
class ItemsPlan:
    files: list[InputFile]
    text: TextFormat
    item: int
    title: int
    genres: GenreSpec
    year: int | None
    min_fields: int
    max_fields: int
    genre_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExtraPlan:
    table: str
    files: list[InputFile]
    text: TextFormat
    columns: tuple[ExtraColumn, ...]  # with `source` resolved to a position
    key: tuple[str, ...]
    n_fields: int


@dataclass(frozen=True)
class IngestPlan:
    source: str
    root: Path
    ratings: RatingsPlan
    items: ItemsPlan | None
    scale: RatingScale
    extras: list[ExtraPlan] = field(default_factory=list)
    missing_extras: list[ExtraSpec] = field(default_factory=list)  # side files not in the input


def find_files(root: Path, pattern: str, folders: bool = False) -> list[InputFile]:
    """Files matching `pattern` (a name or glob inside `root`), in name order; with `folders`, also
    folders (a Parquet data set written by Spark is a folder). A pattern that reaches outside
    `root` is refused.

    Name order is file order: of duplicated ratings without timestamps, the one in the later file wins.
    """
    root = root.resolve()
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise CfrecError(f"file pattern '{pattern}' must name files inside the input folder {root}")
    matches = sorted(
        Path(p) for p in glob.glob(str(root / pattern)) if Path(p).is_file() or (folders and Path(p).is_dir())
    )
    out = []
    for path in matches:
        if not resolved(path, "input file").is_relative_to(root):  # a symbolic link out of the folder
            raise CfrecError(f"{path} leads outside the input folder {root}")
        out.append(InputFile(path, str(path.relative_to(root))))
    return out


def first_line(path: Path, encoding: str) -> str | None:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            line = f.readline()
    except (OSError, EOFError) as exc:  # unreadable, or not the gzip file its name says
        raise CfrecError(f"{path} cannot be read: {exc}") from None
    if not line:
        return None
    return line.decode(encoding, errors="replace").lstrip("\ufeff").rstrip("\r\n")


def header_names(path: Path, text: TextFormat) -> list[str]:
    line = first_line(path, text.encoding)
    if line is None:
        raise CfrecError(f"{path} is empty: expected a header line")
    names = next(csv.reader([line], delimiter=text.sep)) if len(text.sep) == 1 else line.split(text.sep)
    return [n.strip() for n in names]


def resolve_columns(files: list[InputFile], text: TextFormat, wanted: dict[str, Column | None]) -> tuple[dict, int]:
    """Column names -> positions from the files' headers (which must agree); number of fields."""
    headers = {f.name: header_names(f.path, text) for f in files}
    first_name, names = next(iter(headers.items()))
    for name, other in headers.items():
        if other != names:
            raise CfrecError(f"{name} has header {','.join(other)} but {first_name} has {','.join(names)}")
    lowered = [n.lower() for n in names]
    positions = {}
    for key, column in wanted.items():
        if column is None or isinstance(column, int):
            positions[key] = column
        elif column.lower() in lowered:
            positions[key] = lowered.index(column.lower())
        else:
            raise CfrecError(f"{first_name} has no column '{column}' (header: {','.join(names)})")
    return positions, len(names)


def _positions_fit(files: list[InputFile], positions: dict, n_fields: int | None) -> None:
    highest = max(p for p in positions.values() if p is not None)
    if n_fields is not None and highest >= n_fields:
        raise CfrecError(f"column position {highest} is past the {n_fields} fields of {files[0].name}")


def read_genre_names(root: Path) -> list[str]:
    """Genre names in flag order from MovieLens 100k's u.genre ('name|index' lines); the standard list if absent."""
    path = root / "u.genre"
    if not path.is_file():
        return MOVIELENS_100K_GENRES
    pairs = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, _, index = line.strip().rpartition("|")
            try:
                pairs.append((int(index), name))
            except ValueError:
                raise CfrecError(f"{path} has a line that is not 'name|index': '{line.strip()}'") from None
    return [name for _, name in sorted(pairs)]


def plan_ingest(source: str, input_dir: str | Path, **options) -> IngestPlan:
    layout = get_layout(source, **options)
    root = resolved(input_dir, "input folder")
    if not root.is_dir():
        raise CfrecError(f"input folder {root} does not exist")

    spec = layout.ratings
    files = find_files(root, spec.pattern, folders=spec.text is None)
    if not files:
        raise CfrecError(f"input folder {root} has no {spec.pattern} (expected the {layout.name} layout)")
    wanted = {"user": spec.user, "item": spec.item, "rating": spec.rating, "timestamp": spec.timestamp}
    n_fields = spec.n_fields
    if spec.text is not None and spec.text.header:
        wanted, n_fields = resolve_columns(files, spec.text, wanted)
    elif spec.text is not None and n_fields is None:
        n_fields = max(p for p in wanted.values() if p is not None) + 1
    if spec.text is not None:
        _positions_fit(files, wanted, n_fields)
    ratings = RatingsPlan(files, spec.text, n_fields=n_fields, **wanted)

    items = None
    if layout.items is not None:
        items = _plan_items(root, layout.items)
    extras = [(spec, _plan_extra(root, spec)) for spec in layout.extras]
    return IngestPlan(
        layout.name,
        root,
        ratings,
        items,
        layout.scale,
        extras=[plan for _, plan in extras if plan is not None],
        missing_extras=[spec for spec, plan in extras if plan is None],
    )


def _plan_extra(root: Path, spec: ExtraSpec) -> ExtraPlan | None:
    files = find_files(root, spec.pattern)
    if not files:
        return None
    wanted = {c.name: c.source for c in spec.columns}
    if spec.text.header:
        wanted, n_fields = resolve_columns(files, spec.text, wanted)
    else:
        n_fields = max(wanted.values()) + 1
    columns = tuple(replace(c, source=wanted[c.name]) for c in spec.columns)
    return ExtraPlan(spec.table, files, spec.text, columns, spec.key, n_fields)


def _plan_items(root: Path, spec: ItemsSpec) -> ItemsPlan | None:
    files = find_files(root, spec.pattern)
    if not files:
        return None
    wanted = {"item": spec.item, "title": spec.title, "year": spec.year, "genres": spec.genres.column}
    min_fields, max_fields = spec.min_fields, spec.max_fields
    genre_names = read_genre_names(root) if spec.genres.kind == "flags" else []
    if genre_names:
        min_fields = max_fields = spec.genres.column + len(genre_names)
    if spec.text.header:
        wanted, n_fields = resolve_columns(files, spec.text, wanted)
        min_fields = max_fields = n_fields
    elif max_fields is None:
        min_fields = max_fields = max(p for p in wanted.values() if p is not None) + 1
    _positions_fit(files, {k: v for k, v in wanted.items() if k != "genres" or spec.genres.kind != "flags"}, max_fields)
    genres = replace(spec.genres, column=wanted["genres"])
    return ItemsPlan(
        files, spec.text, wanted["item"], wanted["title"], genres, wanted["year"], min_fields, max_fields, genre_names
    )
