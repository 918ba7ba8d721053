"""Backfill and re-run semantics of cfrec_nightly, on MovieLens 100k split into two nights.

Two past dates run in order (as `airflow dags backfill` would), then the first runs again, a date
older than the current model's, while its score job crashes once after writing its output but
before publishing it. The retry must succeed, the crash must leave nothing partial, and the re-run
must reproduce the same partition.
"""

import shutil
from datetime import UTC, datetime

import pandas as pd
import pytest

from cfrec_airflow import local as airflow_local

pytestmark = pytest.mark.slow

DATES = ["2026-11-01", "2026-11-02"]
RERUN = DATES[0]


@pytest.fixture(scope="module")
def nightly_inputs(ml100k, tmp_path_factory):
    """u.data split by time into three nights; each night's folder also has u.item and u.genre."""
    root = tmp_path_factory.mktemp("nights")
    ratings = pd.read_csv(ml100k / "u.data", sep="\t", names=["u", "i", "r", "t"], dtype=str)
    ratings = ratings.sort_values("t", key=lambda t: t.astype(int), kind="stable")
    cuts = [0, 80_000, len(ratings)]
    for date, start, stop in zip(DATES, cuts, cuts[1:]):
        night = root / date
        night.mkdir()
        ratings.iloc[start:stop].to_csv(night / "u.data", sep="\t", header=False, index=False)
        for name in ("u.item", "u.genre"):
            shutil.copy(ml100k / name, night / name)
    return root


def run(date, inputs, warehouse):
    # Later nights are increments, far smaller than the first load: allow the drop.
    conf = {"input_path": f"{inputs}/{{ds}}", "warehouse": str(warehouse), "top_n": 10, "max_drop_fraction": 0.9}
    logical = datetime.fromisoformat(date).replace(tzinfo=UTC)
    dag_run = airflow_local.run_dag("cfrec_nightly", logical, conf)
    states = airflow_local.task_states(dag_run)
    assert dag_run.state == "success", states
    return dag_run


def recommendations(warehouse, date):
    return (
        pd.read_parquet(warehouse / "recommendations" / f"run_date={date}")
        .sort_values(["user_id", "rank"])
        .reset_index(drop=True)
    )


def test_backfill_then_rerun_with_a_crash_reproduces_the_partition(airflow_db, nightly_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("CFREC_RETRY_DELAY_SECONDS", "1")
    warehouse = tmp_path / "wh"
    for date in DATES:
        run(date, nightly_inputs, warehouse)
    first = {date: recommendations(warehouse, date) for date in DATES}
    users = pd.read_parquet(warehouse / "ratings")["user_id"].nunique()
    assert users == 943
    assert first[DATES[-1]]["user_id"].nunique() == 943
    increments = sorted(p.name for p in (warehouse / "ratings_increments").iterdir() if not p.name.startswith("."))
    assert increments == [f"run_date={d}" for d in DATES]
    current = (warehouse / "models" / "CURRENT").read_text().strip()
    assert current in {f"rank-{d}" for d in DATES}  # the gate may have kept an earlier night's model

    marker = tmp_path / "crashed-once"
    monkeypatch.setenv("CFREC_INJECT_FAULT", f"recommendations/run_date={RERUN}:{marker}")
    dag_run = run(RERUN, nightly_inputs, warehouse)
    assert marker.exists(), "the injected crash never happened"
    score = [ti for ti in dag_run.get_task_instances() if ti.task_id == "score"][0]
    assert score.try_number == 2, "score should have failed once and succeeded on its retry"

    partitions = sorted(p.name for p in (warehouse / "recommendations").iterdir())
    assert partitions == [f"run_date={d}" for d in DATES]  # nothing hidden or partial left beside them
    # The re-run trained a new version of its date; the first one is still there, unchanged.
    assert (warehouse / "models" / f"rank-{RERUN}.2" / "_SUCCESS").exists()
    assert (warehouse / "models" / f"rank-{RERUN}" / "_SUCCESS").exists()
    for date in DATES:
        again = recommendations(warehouse, date)
        if date == RERUN:  # the same lists, from whichever version the re-run's gate kept
            assert set(again["model_version"]) <= {f"rank-{RERUN}", f"rank-{RERUN}.2"}
            pd.testing.assert_frame_equal(
                first[date].drop(columns="model_version"), again.drop(columns="model_version")
            )
        else:
            pd.testing.assert_frame_equal(first[date], again)
    # CURRENT never moved back in time: it is the same model, or the re-run's attempt at its own date.
    now = (warehouse / "models" / "CURRENT").read_text().strip()
    assert now == current or (current == f"rank-{RERUN}" and now == f"rank-{RERUN}.2")
