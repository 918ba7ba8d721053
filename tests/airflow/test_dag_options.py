"""The nightly DAG takes every option `cfrec run` takes, as a param or in `dag_run.conf`, and turns it into
the same step configs through the same code."""

import copy
import os

import pytest
from airflow.dag_processing.dagbag import DagBag
from support import REPO

from cfmodel import options
from cfmodel.cli import build_parser
from cfmodel.config import GateConfig, IngestConfig, Night, QualityConfig, ScoreConfig, TablesConfig, TrainRun
from cfmodel.errors import CfrecError
from cfmodel.training.config import TrainConfig

STEP_CONFIGS = (IngestConfig, QualityConfig, TrainConfig, TrainRun, GateConfig, ScoreConfig, TablesConfig)
# A value other than the default for every option of `cfrec run`, as a user types it.
CLI_VALUES = {
    "--source": "csv",
    "--input": "/data/in/{ds}",
    "--ratings-file": "ratings-*.csv",
    "--items-file": "items.csv",
    "--encoding": "latin-1",
    "--format": "csv",
    "--sep": ";",
    "--user-col": "1",
    "--item-col": "0",
    "--rating-col": "2",
    "--timestamp-col": "3",
    "--rating-min": "0.5",
    "--rating-max": "10",
    "--rating-step": "0.5",
    "--item-id-col": "0",
    "--title-col": "1",
    "--genres-col": "2",
    "--genre-sep": ",",
    "--max-reject-fraction": "0.2",
    "--max-drop-fraction": "-1",
    "--model": "nn",
    "--n-factors": "12",
    "--epochs": "3",
    "--lr": "0.02",
    "--wd": "0.3",
    "--bias-wd": "0.2",
    "--bs": "64",
    "--valid-pct": "0.1",
    "--split": "time",
    "--seed": "7",
    "--patience": "0",
    "--layers": "30,20",
    "--dropout": "0.2",
    "--embed-dropout": "0.05",
    "--loss": "bpr",
    "--n-negatives": "64",
    "--min-rating": "3",
    "--rating-model": "none",
    "--history-dropout": "0.5",
    "--item-item": "0.5",
    "--item-item-l2": "200",
    "--max-rank-users": "500",
    "--device": "cpu",
    "--warm-start": "none",
    "--version-suffix": "-test",
    "--nproc": "2",
    "--launcher": "spark",
    "--gate-tolerance": "0.05",
    "--gate-metric": "mae",
    "--top-n": "7",
    "--candidates": "300",
    "--similar-k": "3",
}
CLI_FLAGS = [
    "--no-header",
    "--no-batch-norm",
    "--weight-by-rating",
    "--no-mixed-precision",
    "--no-refit",
    "--no-tables",
]


@pytest.fixture(scope="module")
def nightly():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors
    return bag.dags["cfrec_nightly"]


def run_parser():
    return build_parser()._subparsers._group_actions[0].choices["run"]


def test_every_option_of_cfrec_run_is_a_param_of_the_nightly_dag(nightly):
    # The DAG's run date is its logical date, and it always publishes the tables `--no-tables` skips.
    flags = [a for a in run_parser()._actions if a.option_strings and a.dest not in ("help", "run_date", "tables")]
    assert {a.dest for a in flags} <= set(nightly.params), sorted({a.dest for a in flags} - set(nightly.params))
    given = {*CLI_VALUES, *CLI_FLAGS, "--y-range"}
    assert {a.option_strings[0] for a in flags} - given == {"--warehouse"}  # the test covers them all


def test_the_dag_builds_the_same_configs_as_the_command_line(nightly):
    argv = ["run", "--warehouse", "/wh", "--run-date", "2026-11-23", *CLI_FLAGS]
    argv += [f"{flag}={value}" for flag, value in CLI_VALUES.items()]
    argv += ["--y-range", "0", "10"]
    args = build_parser().parse_args(argv)
    from_cli = [options.from_namespace(config, args) for config in STEP_CONFIGS]
    assert from_cli[0].input_path == "/data/in/{ds}" and from_cli[0].header is False
    assert from_cli[2].layers == (30, 20) and from_cli[2].patience == 0 and from_cli[2].use_bn is False
    assert from_cli[2].y_range == (0.0, 10.0)
    assert from_cli[3].warm_start is None and from_cli[1].max_drop_fraction is None

    # What a user puts in dag_run.conf: JSON values of the same options.
    conf = {
        "source": "csv",
        "input_path": "/data/in/{ds}",
        "ratings_file": "ratings-*.csv",
        "items_file": "items.csv",
        "encoding": "latin-1",
        "format": "csv",
        "sep": ";",
        "header": False,
        "user_col": "1",
        "item_col": "0",
        "rating_col": "2",
        "timestamp_col": "3",
        "rating_min": 0.5,
        "rating_max": 10,
        "rating_step": 0.5,
        "item_id_col": "0",
        "title_col": "1",
        "genres_col": "2",
        "genre_sep": ",",
        "max_reject_fraction": 0.2,
        "max_drop_fraction": -1,
        "model": "nn",
        "n_factors": 12,
        "epochs": 3,
        "lr": 0.02,
        "wd": 0.3,
        "bias_wd": 0.2,
        "bs": 64,
        "valid_pct": 0.1,
        "split": "time",
        "seed": 7,
        "patience": 0,
        "layers": [30, 20],
        "ps": 0.2,
        "embed_p": 0.05,
        "use_bn": False,
        "loss": "bpr",
        "n_negatives": 64,
        "min_rating": 3,
        "rating_model": "none",
        "history_dropout": 0.5,
        "item_item": 0.5,
        "item_item_l2": 200,
        "weight_by_rating": True,
        "max_rank_users": 500,
        "mixed_precision": False,
        "refit": False,
        "y_range": [0, 10],
        "device": "cpu",
        "warm_start": "none",
        "version_suffix": "-test",
        "nproc": 2,
        "launcher": "spark",
        "gate_tolerance": 0.05,
        "gate_metric": "mae",
        "top_n": 7,
        "candidates": 300,
        "similar_k": 3,
    }
    assert set(conf) <= set(nightly.params)
    checked = copy.deepcopy(nightly.params)
    checked.update(conf)
    params = checked.validate()  # the JSON-schema check Airflow applies to a run's conf
    from_dag = [options.from_mapping(config, params) for config in STEP_CONFIGS]
    assert from_dag == from_cli

    # The ingest job the DAG submits reads back the same options with the command line's parser.
    context = {"params": {**params, "warehouse": "/wh"}, "ds": "2026-11-23"}
    job_args = build_parser().parse_args(["ingest", *nightly.get_task("ingest").job_arguments(context)])
    assert options.from_namespace(IngestConfig, job_args) == from_cli[0].for_night("2026-11-23")
    assert options.from_namespace(Night, job_args) == Night("/wh", "2026-11-23")


def test_the_dag_refuses_what_the_command_line_refuses(nightly):
    params = nightly.params.dump()
    for bad, message in (
        ({"source": "movielens-100k", "sep": ";"}, "--sep: only for --source csv"),
        ({"source": "netflix"}, "unknown source 'netflix'"),
        ({"encoding": "utf-16"}, "encoding 'utf-16' is not supported"),
        ({"layers": "100,x"}, "--layers must be comma-separated sizes"),
        ({"model": "svd"}, "model must be one of dot, nn, rank"),
        ({"lr": 0}, "lr must be positive"),
        ({"max_reject_fraction": 3}, "max reject fraction must be between 0 and 1"),
        ({"top_n": 0}, "--top-n must be at least 1"),
        ({"candidates": -1}, "--candidates must be 0"),
        ({"nproc": 0}, "nproc must be 1 or more"),
        ({"launcher": "spark"}, "launcher spark launches data-parallel training: give nproc 2 or more"),
        ({"launcher": "mpirun", "nproc": 2}, "launcher must be one of torchrun, spark"),
    ):
        with pytest.raises(CfrecError, match=message):
            for config in STEP_CONFIGS:
                options.from_mapping(config, {**params, **bad})


class Launched(Exception):
    """Raised in place of training: what the train task handed to the pipeline."""


def test_training_launched_by_spark_runs_on_the_spark_of_the_run(nightly, monkeypatch):
    """With `launcher: spark` the train task starts its own Spark application: on the master of the
    run's `spark_conn_id`, where the run's Spark jobs are submitted, not a machine-wide default."""
    from cfmodel import pipeline
    from cfmodel.spark import MASTER_ENV

    monkeypatch.setenv("AIRFLOW_CONN_BIG_CLUSTER", '{"conn_type": "spark", "host": "spark://10.0.0.9", "port": 7077}')
    monkeypatch.setenv(MASTER_ENV, "local[2]")
    monkeypatch.setattr(
        pipeline, "train", lambda night, config, run: (_ for _ in ()).throw(Launched(os.environ[MASTER_ENV]))
    )
    train = nightly.get_task("train").python_callable
    params = {**nightly.params.dump(), "warehouse": "/wh", "spark_conn_id": "big_cluster", "nproc": 2}
    with pytest.raises(Launched, match=r"^spark://10\.0\.0\.9:7077$"):
        train(params={**params, "launcher": "spark"}, ds="2026-11-23")
    assert os.environ[MASTER_ENV] == "local[2]"  # put back for the next task of an in-process run
    with pytest.raises(Launched, match=r"^local\[2\]$"):  # torchrun: no Spark application at all
        train(params={**params, "launcher": "torchrun"}, ds="2026-11-23")


def test_a_spark_conn_id_that_names_no_connection_stops_the_task_before_any_spark_starts(nightly, monkeypatch):
    """The spark-submit hook would quietly fall back to YARN for a connection it cannot find."""
    from cfmodel import pipeline
    from cfrec_airflow.tasks import PipelineJob

    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CLUSTER", raising=False)
    monkeypatch.setattr(pipeline, "train", lambda *args: pytest.fail("training started"))
    monkeypatch.setattr(PipelineJob.__mro__[1], "execute", lambda self, context: pytest.fail("spark-submit ran"))
    params = {**nightly.params.dump(), "warehouse": "/wh", "spark_conn_id": "no_such_cluster", "nproc": 2}
    message = r"^no Airflow connection 'no_such_cluster' \(the run's spark_conn_id\)"
    with pytest.raises(CfrecError, match=message):
        nightly.get_task("train").python_callable(params={**params, "launcher": "spark"}, ds="2026-11-23")
    for job in ("ingest", "score", "publish_tables"):
        with pytest.raises(CfrecError, match=message):
            nightly.get_task(job).execute({"params": params, "ds": "2026-11-23"})


def test_the_demo_night_takes_every_scoring_option_given(nightly, tmp_path):
    from cfrec_airflow.demo import demo_conf

    args = build_parser().parse_args(["demo", "--top-n", "7", "--candidates", "300"])
    conf = demo_conf(tmp_path / "in", tmp_path / "wh", options.from_namespace(ScoreConfig, args))
    checked = copy.deepcopy(nightly.params)
    checked.update(conf)
    assert options.from_mapping(ScoreConfig, checked.validate()) == ScoreConfig(top_n=7, candidates=300)
