"""The nightly pipeline's steps, the only code the command line, the spark-submit jobs and the DAGs call.

    ingest -> quality -> train -> evaluate -> gate -> score -> publish_tables

Each step is keyed on a `Night` (warehouse and logical date), takes its typed config from
`cfmodel.config` and returns a typed result. A step's output depends only on its date and what
earlier dates left in the warehouse, so a backfill, or re-running a date, reproduces the same
tables: the warm start and the gate look at the model promoted *before* the run date, not at
whatever is current now, and a run for an old date never moves `CURRENT` back in time.
`run_night` runs the whole sequence in one process, exactly as the nightly DAG runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfmodel.config import (
    WARM_START_PREVIOUS,
    GateConfig,
    IngestConfig,
    Night,
    QualityConfig,
    ScoreConfig,
    TablesConfig,
    TrainRun,
)
from cfmodel.errors import CfrecError
from cfmodel.training.config import TrainConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cfmodel.ingest.job import IngestReport
    from cfmodel.ingest.quality import QualityResult
    from cfmodel.registry.gate import GateDecision
    from cfmodel.reporting.analytics import MostRecommended
    from cfmodel.reporting.metrics import MetricsReport
    from cfmodel.reporting.tables import TablesReport
    from cfmodel.scoring.recommend import ScoreReport

log = logging.getLogger(__name__)
# A trained model waits this long for another writer to finish rather than be lost.
SAVE_WAIT_SECONDS = 1800.0


@contextmanager
def writing(
    night: Night, step: str, create: bool = True, keep_on_failure: bool = False, wait: float | None = None
) -> Iterator[None]:
    """Hold the warehouse's writer lock while `step` writes (`cfmodel.warehouse.lock`), and make what
    it writes appear all together or not at all (`cfmodel.warehouse.transaction`): a step that fails,
    or was killed before, leaves the warehouse as it was. `keep_on_failure`: a step whose failure is
    itself a result to keep (the quality gate's evaluation). `wait`: seconds to wait for another
    writer (default: CFREC_LOCK_WAIT_SECONDS)."""
    from cfmodel.warehouse import Warehouse
    from cfmodel.warehouse.catalog import sync_attached, table_of
    from cfmodel.warehouse.lock import writer_lock
    from cfmodel.warehouse.transaction import all_or_nothing, roll_back

    root = Warehouse.open(night.warehouse, create=create).root
    with writer_lock(root, step, wait):
        if keep_on_failure:
            roll_back(root)  # whatever a killed step left half done (all_or_nothing does it too)
            yield
        else:
            with all_or_nothing(root, step) as transaction:
                yield
            published = {table_of(root, path) for path in transaction.changed} - {None}
            if published:
                sync_attached(root, sorted(published))


def input_ready(night_date: str, config: IngestConfig) -> bool:
    """Whether the night's files are there and readable as the configured source (the sensor's test)."""
    from cfmodel.ingest.planning import plan_ingest

    try:
        plan_ingest(config.source, config.input_for(night_date), **config.layout_options())
    except CfrecError as exc:
        log.info("waiting for input: %s", exc)
        return False
    return True


def spark_inputs(night: Night, ingest: IngestConfig | None = None) -> list[Path]:
    """What a night's Spark work grows with, for choosing how its driver starts (`cfmodel.spark.get_spark`):
    the warehouse's rating increments (every rating it holds) and, for an ingest, the night's input."""
    from cfmodel.warehouse import Warehouse
    from cfmodel.warehouse.schemas import RATINGS_INCREMENTS

    inputs = [Warehouse(Path(night.warehouse)).table(RATINGS_INCREMENTS)]  # not opened: it may not exist yet
    if ingest is not None:
        inputs.append(Path(ingest.input_for(night.run_date)))
    return inputs


def ingest(spark: SparkSession, night: Night, config: IngestConfig) -> IngestReport:
    """The night's files -> clean increment, current tables, rejects, id indices and a report."""
    from cfmodel.ingest.job import ingest as run_ingest

    with writing(night, "ingest"):
        return run_ingest(spark, night.warehouse, night.run_date, config)


def quality(night: Night, config: QualityConfig) -> QualityResult:
    """Fail the night when too many rows were rejected or clean rows dropped sharply."""
    from cfmodel.ingest.quality import check_quality

    with writing(night, "quality", create=False, keep_on_failure=True):
        return check_quality(night.warehouse, night.run_date, config)


@dataclass
class TrainResult:
    version: str
    device: str
    warm_start_from: str | None
    metrics: dict[str, Any]  # the model's hold-out metrics
    baseline: dict[str, Any]  # the most-popular list's on the same hold-out
    train_seconds: float
    epochs_run: int


def train(night: Night, model: TrainConfig, run: TrainRun | None = None, **fit_options: Any) -> TrainResult:
    """Fit a candidate on the warehouse's ratings and save it as a new version (CURRENT untouched).

    `run.nproc` > 1 trains data-parallel in that many processes (`training.distributed`).
    `fit_options` go to `training.trainer.train` (a data-parallel `fitter`, `save`, `progress`).
    """
    import torch

    from cfmodel.registry.registry import ModelRegistry
    from cfmodel.training.trainer import train as fit_model
    from cfmodel.warehouse import Warehouse

    run = run or TrainRun()
    if run.nproc > 1:
        from cfmodel.training.distributed import train_data_parallel

        if fit_options:
            raise CfrecError(
                f"data-parallel training takes no {', '.join(fit_options)}: its processes choose their own"
            )

        return train_data_parallel(night, model, run)
    if run.device == "auto" and not torch.cuda.is_available():
        log.warning("no CUDA device on this worker: training on the CPU")
    registry = ModelRegistry(Warehouse.open(night.warehouse).models)
    previous = run.warm_start
    if previous == WARM_START_PREVIOUS:
        previous = registry.promoted_before(night.run_date, model.model)
        if previous is None:
            log.info("warm start: no %s model promoted before %s; training from scratch", model.model, night.run_date)
    # Only the saving holds the writer lock: a night's training does not keep other writers waiting.
    trained = fit_model(
        night.warehouse,
        night.run_date,
        model,
        run.device,
        previous,
        run.version_suffix,
        saving=lambda: writing(night, "train", wait=SAVE_WAIT_SECONDS),
        **fit_options,
    )
    valid = trained.metrics.get("valid", {})
    return TrainResult(
        trained.version,
        trained.config.device,
        previous,
        valid.get("model", {}),
        valid.get("popularity", {}),
        trained.metrics["train_seconds"],
        trained.metrics["epochs_run"],
    )


def evaluate(night: Night, version: str) -> MetricsReport:
    """metrics/run_date=D: the hold-out metrics of every model trained for the date, beside popularity."""
    from cfmodel.reporting.metrics import publish_metrics

    with writing(night, "evaluate"):
        return publish_metrics(night.warehouse, night.run_date, version)


def gate(night: Night, version: str, config: GateConfig) -> GateDecision:
    """Promote `version` if it is not worse than the model promoted before the run date; the
    decision's `score_with` is the version the night's recommendations use."""
    from cfmodel.registry.gate import gate_for_date

    with writing(night, "gate"):
        return gate_for_date(night.warehouse, night.run_date, version, config)


def score(spark: SparkSession, night: Night, config: ScoreConfig, version: str | None = None) -> ScoreReport:
    """recommendations/run_date=D: every user's top N with `version` (default: the current model)."""
    from cfmodel.scoring.recommend import score as score_users

    with writing(night, "score"), _settings_for_ratings(spark, night):
        return score_users(spark, night.warehouse, night.run_date, config.top_n, version, config.candidates)


def publish_tables(spark: SparkSession, night: Night, config: TablesConfig, version: str | None = None) -> TablesReport:
    """similar_items, item_factors, user_factors of the scoring model; metrics/run_date=D; model_runs."""
    from cfmodel.reporting.tables import publish_tables as write_tables

    with writing(night, "publish_tables"), _settings_for_ratings(spark, night):
        return write_tables(spark, night.warehouse, night.run_date, version, config.similar_k)


def _settings_for_ratings(spark: SparkSession, night: Night) -> AbstractContextManager:
    """The Spark settings for a step whose work grows with the ratings table (cfmodel.spark)."""
    from cfmodel.spark import session_settings, settings_for
    from cfmodel.warehouse import Warehouse
    from cfmodel.warehouse.schemas import RATINGS

    return session_settings(spark, settings_for(Warehouse.open(night.warehouse).table(RATINGS)))


def most_recommended(night: Night, limit: int = 100) -> MostRecommended:
    """analytics/most_recommended/run_date=D: what a downstream consumer of the night's lists writes."""
    from cfmodel.reporting.analytics import write_most_recommended

    with writing(night, "most_recommended", create=False):
        return write_most_recommended(night.warehouse, night.run_date, limit)


@dataclass
class NightConfig:
    """Everything one night needs, as the nightly DAG's params hold it."""

    ingest: IngestConfig
    quality: QualityConfig = field(default_factory=QualityConfig)
    model: TrainConfig = field(default_factory=TrainConfig)
    train: TrainRun = field(default_factory=TrainRun)
    gate: GateConfig = field(default_factory=GateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    publish_tables: bool = True  # False: stop after the recommendations (`cfrec run --no-tables`)


@dataclass
class NightReport:
    """What each step of a night returned."""

    ingest: IngestReport
    quality: QualityResult
    train: TrainResult
    evaluate: MetricsReport
    gate: GateDecision
    score: ScoreReport
    tables: TablesReport | None


def run_night(spark: SparkSession, night: Night, config: NightConfig) -> NightReport:
    """The nightly DAG's sequence in one process, with its gate: the night is scored with the
    candidate if it passed, else with the model it was judged against."""
    ingested = ingest(spark, night, config.ingest)
    checked = quality(night, config.quality)
    candidate = train(night, config.model, config.train)
    evaluated = evaluate(night, candidate.version)
    decision = gate(night, candidate.version, config.gate)
    scored = score(spark, night, config.score, decision.score_with)
    tables = publish_tables(spark, night, config.tables, decision.score_with) if config.publish_tables else None
    return NightReport(ingested, checked, candidate, evaluated, decision, scored, tables)
