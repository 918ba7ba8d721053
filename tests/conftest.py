from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cfrec_airflow import local as airflow_local

# Airflow reads its configuration on first import: point it at a throwaway home before any test
# module imports it.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cfrec-test-airflow-"))
airflow_local.configure(AIRFLOW_HOME)


def test_data_dir(name: str) -> Path:
    root = os.environ.get("CFREC_TEST_DATA")
    if not root:
        pytest.skip("CFREC_TEST_DATA is not set (point it at the folder holding ml-100k/ to run real-data tests)")
    path = Path(root) / name
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


@pytest.fixture(scope="session")
def ml100k() -> Path:
    return test_data_dir("ml-100k")


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


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path
