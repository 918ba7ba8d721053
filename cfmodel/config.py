"""The options of every pipeline step, with their defaults: the one place they are defined.

Each step of `cfmodel.pipeline` takes one of these dataclasses. The command line builds its
arguments from them, the DAGs their params, and both turn what the user gave back into these
classes (`cfmodel.options`), whose `__post_init__` checks every value. The training options
themselves are `cfmodel.training.config.TrainConfig`. Only the standard library is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime

from cfmodel.errors import CfrecError
from cfmodel.ingest.source_options import CSV_DEFAULTS, KNOWN_SOURCES, get_layout
from cfmodel.options import option

DEFAULT_SOURCE = "movielens-100k"
WARM_START_PREVIOUS = "previous"  # the latest model of the same type promoted before the run date


def run_date_value(text: str | date) -> str:
    """A run date as YYYY-MM-DD; CfrecError for anything else."""
    if isinstance(text, date):
        return text.isoformat()
    try:
        return date.fromisoformat(str(text)).isoformat()
    except ValueError:
        raise CfrecError(f"run date must be YYYY-MM-DD, got '{text}'") from None


def today() -> str:
    return datetime.now(UTC).date().isoformat()


@dataclass(frozen=True)
class Night:
    """What every step is keyed on: the warehouse it writes and the logical date of the run."""

    warehouse: str = option(None, "root folder of the Parquet tables and models", metavar="DIR", required=True)
    run_date: str = option(
        None,
        "logical date of this run, YYYY-MM-DD; names the output partitions (default: today, UTC)",
        parse=run_date_value,
    )

    def __post_init__(self) -> None:
        if not self.warehouse:
            raise CfrecError("a warehouse folder is required")
        object.__setattr__(self, "run_date", run_date_value(self.run_date or today()))


def _csv_help(text: str, key: str) -> str:
    default = CSV_DEFAULTS[key]
    return f"{text} (csv default: {default})" if default is not None else text


@dataclass(frozen=True)
class IngestConfig:
    """Which files to read and how: a named source's layout, or the generic `csv` one."""

    source: str = option(
        DEFAULT_SOURCE,
        f"layout of the input files: {', '.join(KNOWN_SOURCES)} (README, 'Sources', describes each)",
        required=True,
    )
    input_path: str | None = option(
        None,
        "folder holding the source's files (e.g. u.data, u.item); {ds} is replaced by the run date",
        flag="--input",
        metavar="DIR",
        required=True,
    )
    ratings_file: str | None = option(
        None, "ratings file name or glob inside --input, instead of the source's own (e.g. u1.base)", metavar="PATTERN"
    )
    items_file: str | None = option(None, "items file name or glob inside --input", metavar="PATTERN")
    encoding: str | None = option(None, "text encoding of the files, utf-8 or latin-1 (default: the source's)")
    format: str | None = option(
        None, "csv only: ratings file format (default: parquet for *.parquet, else csv)", choices=("csv", "parquet")
    )
    sep: str | None = option(None, _csv_help("csv only: field separator, e.g. ',' or '\\t'", "sep"))
    header: bool | None = option(
        None,
        "csv only: the files have no header line: columns are then 0-based positions",
        flag="--no-header",
        negate=True,
    )
    user_col: str | None = option(None, _csv_help("csv only: user id column", "user_col"))
    item_col: str | None = option(None, _csv_help("csv only: item id column", "item_col"))
    rating_col: str | None = option(None, _csv_help("csv only: rating column", "rating_col"))
    timestamp_col: str | None = option(None, "csv only: timestamp column, epoch seconds or ISO-8601 (default: none)")
    rating_min: float | None = option(None, "csv only: lowest valid rating (default: inferred from the data)")
    rating_max: float | None = option(None, "csv only: highest valid rating (default: inferred from the data)")
    rating_step: float | None = option(
        None, "csv only: ratings must be rating-min plus a whole number of steps, e.g. 0.5"
    )
    item_id_col: str | None = option(None, _csv_help("csv only: item id column of the items file", "item_id_col"))
    title_col: str | None = option(None, _csv_help("csv only: title column of the items file", "title_col"))
    genres_col: str | None = option(
        None, "csv only: genres column of the items file, values separated by --genre-sep (default: none)"
    )
    genre_sep: str | None = option(None, _csv_help("csv only: separator between genres", "genre_sep"))

    def __post_init__(self) -> None:
        get_layout(self.source, **self.layout_options())  # every option checked before anything runs

    def layout_options(self) -> dict:
        """The options given for the layout (`get_layout`'s keyword arguments), defaults left out."""
        skip = ("source", "input_path")
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }

    def input_for(self, run_date: str) -> str:
        """The input folder of a night: `/data/in/{ds}` -> `/data/in/2026-11-23`."""
        if not self.input_path:
            raise CfrecError("an input folder is required")
        return self.input_path.replace("{ds}", run_date)

    def for_night(self, run_date: str) -> IngestConfig:
        """This config with the night's input folder."""
        return replace(self, input_path=self.input_for(run_date))


def _drop_fraction(value: float | str) -> float | None:
    fraction = float(value)
    return None if fraction < 0 else fraction


@dataclass(frozen=True)
class QualityConfig:
    """The data-quality gate between ingest and training."""

    max_reject_fraction: float = option(
        0.01, "fail when more than this fraction of the night's rating (or item) rows was rejected for a defect"
    )
    max_drop_fraction: float | None = option(
        0.5,
        "fail when clean rows fell by more than this fraction against the previous run; -1 turns the check off",
        parse=_drop_fraction,
    )

    def __post_init__(self) -> None:
        if not 0 <= self.max_reject_fraction <= 1:
            raise CfrecError(f"max reject fraction must be between 0 and 1, got {self.max_reject_fraction}")
        if self.max_drop_fraction is not None and not 0 <= self.max_drop_fraction <= 1:
            raise CfrecError(f"max drop fraction must be between 0 and 1, got {self.max_drop_fraction}")


def _warm_start(value: str | bool) -> str | None:
    if isinstance(value, bool):
        return WARM_START_PREVIOUS if value else None
    return None if str(value).lower() in ("", "none", "false", "no") else str(value)


@dataclass(frozen=True)
class TrainRun:
    """Where and from what a model trains (the model's own options are `TrainConfig`)."""

    device: str = option("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    warm_start: str | None = option(
        WARM_START_PREVIOUS,
        f"start from a previous model's vectors for the ids it knew: '{WARM_START_PREVIOUS}' (the latest model "
        "of the same type promoted before the run date) or a VERSION; 'none' starts fresh",
        nargs="?",
        const=WARM_START_PREVIOUS,
        metavar="VERSION",
        parse=_warm_start,
    )
    version_suffix: str = option(
        "",
        "appended to the version name, for models of the same type and date trained on another schedule (e.g. -full)",
    )
    nproc: int = option(1, "train data-parallel in this many processes (DDP; gloo on CPU, NCCL on GPUs)")
    launcher: str = option(
        "torchrun",
        "how nproc processes start: torchrun on this machine, or spark: Spark's TorchDistributor, one barrier "
        "task per process on the cluster's executors",
        choices=("torchrun", "spark"),
    )

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise CfrecError(f"nproc must be 1 or more, got {self.nproc}")
        if self.launcher == "spark" and self.nproc < 2:
            raise CfrecError("launcher spark launches data-parallel training: give nproc 2 or more")


@dataclass(frozen=True)
class GateConfig:
    """The model gate: a candidate becomes current only if it is not worse than the model it replaces."""

    gate_tolerance: float = option(
        0.01,
        "promote the new model only if its validation metric is no worse than "
        "the model promoted before the run date by more than this fraction",
    )
    gate_metric: str | None = option(
        None, "validation metric the gate compares (default: the first of rmse, ndcg@10 both models report)"
    )

    def __post_init__(self) -> None:
        if self.gate_tolerance < 0:
            raise CfrecError(f"gate tolerance must be >= 0, got {self.gate_tolerance}")


@dataclass(frozen=True)
class ScoreConfig:
    top_n: int = option(10, "recommendations per user")
    candidates: int = option(
        1000,
        "models too costly to score every item (nn) score this many candidate items per user, "
        "picked by the network at the centre of the user's cluster; 0: score every item",
    )

    def __post_init__(self) -> None:
        if self.top_n < 1:
            raise CfrecError(f"--top-n must be at least 1, got {self.top_n}")
        if self.candidates < 0:
            raise CfrecError(f"--candidates must be 0 (score every item) or more, got {self.candidates}")


@dataclass(frozen=True)
class TablesConfig:
    similar_k: int = option(20, "neighbours per item in the similar_items table")

    def __post_init__(self) -> None:
        if self.similar_k < 1:
            raise CfrecError(f"--similar-k must be at least 1, got {self.similar_k}")
