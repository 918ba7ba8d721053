from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from support import REPO, real_data_dir

from cfrec_airflow import local as airflow_local

# The DAGs and spark-submit jobs of this checkout; Airflow reads its configuration on first import,
# so it points at a throwaway home before any test module imports it.
os.environ["CFREC_DAGS_FOLDER"] = str(REPO / "dags")
os.environ["CFREC_JOBS_DIR"] = str(REPO / "jobs")
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cfrec-test-airflow-"))
airflow_local.configure(AIRFLOW_HOME)


@pytest.fixture(scope="session")
def ml100k() -> Path:
    return real_data_dir("ml-100k")


@pytest.fixture(scope="session")
def spark():
    from cfmodel.spark import get_spark

    session = get_spark("cfrec-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def airflow_db():
    airflow_local.init_db()
    yield AIRFLOW_HOME


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
