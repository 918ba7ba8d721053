"""cfmodel on a real Spark standalone cluster (master + worker on 127.0.0.1, tests/conftest.py); the
nightly DAG's run on it is in test_scheduler.py.

Run alone with: pytest -m cluster
"""

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PROBE = """
from cfmodel.spark import get_spark
spark = get_spark("cfrec-probe")
def origin(_):
    import cfmodel
    yield cfmodel.__file__
print("EXECUTOR_CFMODEL=" + spark.sparkContext.parallelize([0], 1).mapPartitions(origin).first())
print("SESSION_TIME_ZONE=" + spark.conf.get("spark.sql.session.timeZone"))
"""


def test_a_bare_spark_submit_gets_cfmodel_on_executors_and_a_utc_session(spark_cluster, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    result = subprocess.run(
        ["spark-submit", "--master", spark_cluster["url"], "--executor-memory", "1g", str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, "TZ": "America/New_York"},  # a machine not on UTC
    )
    assert result.returncode == 0, result.stderr[-3000:]
    origin = [line for line in result.stdout.splitlines() if line.startswith("EXECUTOR_CFMODEL=")]
    assert origin and "cfmodel.zip" in origin[0], result.stdout[-2000:]
    assert "SESSION_TIME_ZONE=UTC" in result.stdout.splitlines(), result.stdout[-2000:]
