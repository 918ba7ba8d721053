import ast
from datetime import timedelta

import pytest

from cfmodel.airflow_local import DAGS_FOLDER


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_dags_import_cleanly(dagbag):
    assert dagbag.import_errors == {}
    assert "cfrec_nightly" in dagbag.dag_ids


def test_nightly_dag_shape(dagbag):
    dag = dagbag.dags["cfrec_nightly"]
    assert set(dag.task_ids) == {"ingest", "train", "score"}
    assert dag.get_task("ingest").downstream_task_ids == {"train"}
    assert dag.get_task("train").downstream_task_ids == {"score"}
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.schedule == "@daily"
    assert dag.timetable.expression == "0 0 * * *"
    for params_key in ("source", "input_path", "warehouse", "top_n", "n_factors", "epochs", "lr", "wd", "device"):
        assert params_key in dag.params


def test_every_task_retries_with_backoff_and_has_a_timeout(dagbag):
    dag = dagbag.dags["cfrec_nightly"]
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.execution_timeout and task.execution_timeout <= timedelta(hours=6), task.task_id


def test_spark_steps_use_spark_submit_on_the_default_connection(dagbag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    dag = dagbag.dags["cfrec_nightly"]
    for task_id in ("ingest", "score"):
        task = dag.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator)
        assert task._conn_id == "spark_default"
        assert task.application.endswith(f"jobs/{task_id}.py")
        assert "{{ ds }}" in task.application_args


def test_dag_files_do_no_heavy_imports_at_parse_time():
    heavy = {"torch", "pyspark", "pandas", "numpy", "cfmodel"}
    for path in DAGS_FOLDER.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in heavy, f"{path.name} imports {name} at module level"
