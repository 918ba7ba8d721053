import subprocess
import sys
from datetime import timedelta

import pytest
from support import REPO

from cfmodel import options
from cfmodel.config import TrainRun

DAGS_FOLDER = REPO / "dags"

NIGHTLY_ORDER = [
    "wait_for_input",
    "ingest",
    "quality_gate",
    "train",
    "evaluate",
    "gate",
    "score",
    "publish_tables",
    "publish",
]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_dags_import_cleanly(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"cfrec_nightly", "cfrec_weekly_retrain", "cfrec_recommendations_consumer"}


def test_nightly_dag_shape(dagbag):
    dag = dagbag.dags["cfrec_nightly"]
    assert set(dag.task_ids) == set(NIGHTLY_ORDER)
    for upstream, downstream in zip(NIGHTLY_ORDER, NIGHTLY_ORDER[1:]):
        assert downstream in dag.get_task(upstream).get_flat_relative_ids(upstream=False), (upstream, downstream)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.schedule == "@daily"
    for key in (
        "source",
        "input_path",
        "warehouse",
        "top_n",
        "model",
        "n_factors",
        "epochs",
        "lr",
        "wd",
        "device",
        "warm_start",
        "gate_tolerance",
        "max_reject_fraction",
        "max_drop_fraction",
    ):
        assert key in dag.params


def test_weekly_retrain_is_a_cold_start(dagbag):
    dag = dagbag.dags["cfrec_weekly_retrain"]
    # As its tasks read the params: null would mean the default, a warm start from the nightly model.
    run = options.from_mapping(TrainRun, {key: dag.params[key] for key in dag.params})
    assert run.warm_start is None and run.version_suffix == "-full"
    assert {"train", "gate", "score", "publish"} <= set(dag.task_ids)


def test_training_lands_in_the_gpu_pool(dagbag):
    for dag_id in ("cfrec_nightly", "cfrec_weekly_retrain"):
        assert dagbag.dags[dag_id].get_task("train").pool == "gpu"


def test_every_task_that_writes_the_warehouse_shares_one_single_slot_pool(dagbag):
    """The nightly and weekly DAGs (and the consumer) write the same tables: they queue for them."""
    writers = {
        "cfrec_nightly": {"ingest", "quality_gate", "evaluate", "gate", "score", "publish_tables"},
        "cfrec_weekly_retrain": {"evaluate", "gate", "score", "publish_tables"},
        "cfrec_recommendations_consumer": {"most_recommended"},
    }
    for dag_id, task_ids in writers.items():
        dag = dagbag.dags[dag_id]
        in_pool = {task.task_id for task in dag.tasks if task.pool == "cfrec_warehouse"}
        assert in_pool == task_ids, dag_id
    from cfrec_airflow.settings import pools, settings

    assert ("cfrec_warehouse", 1) in [(name, slots) for name, slots, _ in pools(settings())]


def test_every_task_retries_with_backoff_times_out_and_alerts(dagbag):
    from cfrec_airflow.alerts import on_failure

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.retries >= 1, task.task_id
            assert task.retry_exponential_backoff, task.task_id
            assert task.execution_timeout and task.execution_timeout <= timedelta(hours=6), task.task_id
            callbacks = (
                task.on_failure_callback if isinstance(task.on_failure_callback, list) else [task.on_failure_callback]
            )
            assert on_failure in callbacks, task.task_id


def test_publish_emits_the_recommendations_asset(dagbag):
    from cfrec_airflow.tasks import RECOMMENDATIONS

    assert RECOMMENDATIONS in dagbag.dags["cfrec_nightly"].get_task("publish").outlets
    assert RECOMMENDATIONS.name == "cfrec_recommendations"


def test_spark_steps_use_spark_submit_on_the_default_connection(dagbag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    dag = dagbag.dags["cfrec_nightly"]
    for task_id, job in (("ingest", "ingest"), ("score", "score"), ("publish_tables", "publish")):
        task = dag.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator)
        assert task._conn_id == "spark_default"
        assert task.application == str(DAGS_FOLDER.parent / "jobs" / f"{job}.py")
    context = {"params": {**dag.params.dump(), "warehouse": "/wh", "input_path": "/in/{ds}"}, "ds": "2026-11-23"}
    args = dag.get_task("ingest").job_arguments(context)
    assert args == [
        "--warehouse",
        "/wh",
        "--run-date",
        "2026-11-23",
        "--source",
        "movielens-100k",
        "--input",
        "/in/2026-11-23",
    ]


def test_parsing_the_dags_loads_no_heavy_library():
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(sorted(m for m in ('torch', 'pyspark', 'pandas', 'numpy', 'duckdb') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
