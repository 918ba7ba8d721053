"""Task builders shared by the cfrec DAGs. Declarations only: every task calls a step of `cfmodel.pipeline`.

A DAG's params are built from the steps' config classes (`cfmodel.config`, `TrainConfig`), so
every option of the command line is also a param, settable per run with `dag_run.conf`; each task
turns the params back into those classes, which check them with the same code as the command line.
Machine-specific settings come from the environment (`cfrec_airflow.settings`) and the
`spark_default` connection.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, task
from airflow.sdk.exceptions import AirflowNotFoundException

from cfmodel import options
from cfmodel.config import GateConfig, IngestConfig, Night, QualityConfig, ScoreConfig, TablesConfig, TrainRun
from cfmodel.errors import CfrecError
from cfmodel.spark import MASTER_ENV, SESSION_CONF, SHUFFLE_PARTITIONS, driver_env, temporary_environment
from cfmodel.training.config import TrainConfig
from cfmodel.warehouse.schemas import RECOMMENDATIONS as RECOMMENDATIONS_TABLE
from cfrec_airflow.alerts import on_failure
from cfrec_airflow.settings import settings

# Downstream DAGs schedule on this; each event's extra names the warehouse, run date and counts.
RECOMMENDATIONS = Asset(name="cfrec_recommendations", uri=f"file://{settings().warehouse}/{RECOMMENDATIONS_TABLE.name}")
GATE_TASK = "gate"
SPARK_CONN_ID = "spark_default"
MODEL_STEPS = (TrainConfig, TrainRun, GateConfig, ScoreConfig, TablesConfig)


def default_args() -> dict[str, Any]:
    env = settings()
    return {
        "owner": "cfrec",
        "retries": env.retries,
        "retry_delay": timedelta(seconds=env.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": on_failure,
    }


def params(*configs: type, **defaults: Any) -> dict[str, Param]:
    """One Param per option of each config class, with its default (or the one given here) and help."""
    out = {
        "warehouse": Param(
            settings().warehouse, type="string", description="root folder of the Parquet tables and models"
        ),
        "shuffle_partitions": Param(
            int(SHUFFLE_PARTITIONS),
            type="integer",
            minimum=1,
            description="spark.sql.shuffle.partitions of the Spark jobs",
        ),
        "spark_conn_id": Param(
            SPARK_CONN_ID,
            type="string",
            description="Airflow connection of the Spark the jobs are submitted to (e.g. a cluster for a big backfill)",
        ),
    }
    for config in configs:
        for opt in options.options(config):
            value = defaults.get(opt.name, opt.default)
            value = list(value) if isinstance(value, tuple) else value
            schema = options.param_schema(opt)
            if value is None and "null" not in schema["type"]:
                schema["type"] = ["null", schema["type"]]
            out[opt.name] = Param(value, description=opt.help, **schema)
    return out


def night(params: dict, ds: str) -> Night:
    """What a task's step is keyed on: the run's warehouse param and its logical date."""
    return Night(warehouse=params["warehouse"], run_date=ds)


def input_ready(params: dict | None = None, ds: str | None = None) -> bool:
    """The sensor's test: the night's files are there and readable as the configured source."""
    from cfmodel import pipeline

    return pipeline.input_ready(ds, options.from_mapping(IngestConfig, params))


def spark_conn_id(params: dict) -> str:
    return params.get("spark_conn_id") or SPARK_CONN_ID


def spark_connection(conn_id: str) -> dict[str, Any]:
    """A Spark connection's master, deploy mode, ..., read as spark-submit's hook reads them for the
    jobs. A connection that does not exist is an error: the hook would quietly submit to YARN."""
    hook = SparkSubmitHook(conn_id=conn_id)
    try:
        hook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise CfrecError(
            f"no Airflow connection '{conn_id}' (the run's spark_conn_id): create it, or leave spark_conn_id "
            f"at {SPARK_CONN_ID}"
        ) from None
    return hook._connection  # resolved when the hook was made


def spark_of_the_run(params: dict, run: TrainRun) -> contextlib.AbstractContextManager:
    """Training launched by Spark (`launcher: spark`) starts its Spark application in the task, on
    the master of the run's `spark_conn_id`, where the run's Spark jobs go; the environment is put
    back after (`dag.test()` runs every task in one process)."""
    if run.launcher != "spark":
        return contextlib.nullcontext()
    return temporary_environment({MASTER_ENV: spark_connection(spark_conn_id(params))["master"]})


def driver_env_vars(env_vars: dict[str, str] | None, conn_id: str, inputs: list[Path]) -> dict[str, str] | None:
    """A job's `env_vars` with its driver started as `cfmodel.spark.driver_env` starts a local one
    (on the class archive; for small `inputs`, compiling with C1 only), where the driver runs in
    spark-submit's own process (a client-mode driver, not on Kubernetes, where the variables go to
    a remote driver)."""
    added = driver_env(inputs, {**os.environ, **(env_vars or {})})  # what spark-submit's process would have
    if not added:
        return env_vars
    connection = spark_connection(conn_id)
    if connection["deploy_mode"] == "cluster" or connection["master"].startswith("k8s://"):
        return env_vars
    return {**(env_vars or {}), **added}


class PipelineJob(SparkSubmitOperator):
    """A pipeline step run by spark-submit (`jobs/<job>.py`). Its arguments are built when the task
    runs, from the run's params through the step's config classes, so they are checked by the
    same code as the command line's before Spark starts."""

    def __init__(
        self, *, task_id: str, job: str, configs: tuple[type, ...], model_version: bool = False, **kwargs: Any
    ) -> None:
        conf = {**SESSION_CONF, "spark.sql.shuffle.partitions": "{{ params.shuffle_partitions }}"}
        super().__init__(
            task_id=task_id,
            conn_id=SPARK_CONN_ID,
            application=str(settings().jobs_dir / f"{job}.py"),
            name=f"cfrec-{task_id}-{{{{ ds }}}}",
            conf=conf,
            pool=settings().writer_pool,
            **kwargs,
        )
        self.configs = configs
        self.model_version = model_version

    def job_arguments(self, context: dict) -> list[str]:
        args = options.to_argv(night(context["params"], context["ds"]))
        for config in self.configs:
            values = options.from_mapping(config, context["params"])
            if isinstance(values, IngestConfig):
                values = values.for_night(context["ds"])
            args += options.to_argv(values)
        if self.model_version:
            from cfmodel.registry.gate import GateDecision

            decision = GateDecision.from_dict(context["ti"].xcom_pull(task_ids=GATE_TASK))
            args += ["--model-version", decision.score_with]
        return args

    def spark_inputs(self, context: dict) -> list[Path]:
        from cfmodel import pipeline

        params = context["params"]
        ingest = options.from_mapping(IngestConfig, params) if IngestConfig in self.configs else None
        return pipeline.spark_inputs(night(params, context["ds"]), ingest)

    def execute(self, context: dict) -> None:
        self._conn_id = spark_conn_id(context["params"])
        spark_connection(self._conn_id)  # refuses a connection that does not exist
        self.application_args = self.job_arguments(context)
        self.env_vars = driver_env_vars(self.env_vars, self._conn_id, self.spark_inputs(context))
        return super().execute(context)


def ingest_steps() -> tuple[PipelineJob, Any]:
    """ingest >> quality_gate: the night's files into the warehouse, then the data-quality gate."""
    ingest = PipelineJob(task_id="ingest", job="ingest", configs=(IngestConfig,))

    @task(task_id="quality_gate", pool=settings().writer_pool)
    def quality_gate(params: dict | None = None, ds: str | None = None) -> dict:
        from cfmodel import pipeline

        return asdict(pipeline.quality(night(params, ds), options.from_mapping(QualityConfig, params)))

    checked = quality_gate()
    ingest >> checked
    return ingest, checked


def model_steps() -> tuple[Any, Any]:
    """train >> evaluate >> gate >> score >> publish_tables >> publish, keyed on the logical date."""

    env = settings()

    @task(task_id="train", pool=env.train_pool, queue=env.train_queue)
    def train(params: dict | None = None, ds: str | None = None) -> dict:
        from cfmodel import pipeline

        run = options.from_mapping(TrainRun, params)
        with spark_of_the_run(params, run):
            result = pipeline.train(night(params, ds), options.from_mapping(TrainConfig, params), run)
        return asdict(result)

    @task(task_id="evaluate", pool=env.writer_pool)
    def evaluate(candidate: dict, params: dict | None = None, ds: str | None = None) -> dict:
        from cfmodel import pipeline

        return asdict(pipeline.evaluate(night(params, ds), candidate["version"]))

    @task(task_id=GATE_TASK, pool=env.writer_pool)
    def gate(candidate: dict, evaluation: dict, params: dict | None = None, ds: str | None = None) -> dict:
        from cfmodel import pipeline

        decision = pipeline.gate(night(params, ds), candidate["version"], options.from_mapping(GateConfig, params))
        return asdict(decision)

    score = PipelineJob(task_id="score", job="score", configs=(ScoreConfig,), model_version=True)
    publish_tables = PipelineJob(task_id="publish_tables", job="publish", configs=(TablesConfig,), model_version=True)

    @task(task_id="publish", outlets=[RECOMMENDATIONS])
    def publish(decision: dict, params: dict | None = None, ds: str | None = None, outlet_events: Any = None) -> dict:
        from cfmodel.registry.gate import GateDecision
        from cfmodel.scoring.recommend import recommendations_summary

        summary = asdict(recommendations_summary(params["warehouse"], ds))
        outlet_events[RECOMMENDATIONS].extra = {
            "warehouse": params["warehouse"],
            "run_date": ds,
            "model_version": GateDecision.from_dict(decision).score_with,
            **summary,
        }
        return summary

    candidate = train()
    decision = gate(candidate, evaluate(candidate))
    decision >> score >> publish_tables
    announced = publish(decision)
    publish_tables >> announced
    return candidate, announced
