"""Spark drivers start on a class-data-sharing archive of the classes they load, where one was made."""

import re
import subprocess

import pytest

from cfmodel import class_archive
from cfmodel.class_archive import (
    ARCHIVE_ENV,
    SUBMIT_OPTS,
    archive_path,
    driver_java_options,
    java_binary,
    make_archive,
    submit_env,
)
from cfmodel.spark import SMALL_DATA_BYTES, SMALL_DATA_JAVA_OPTIONS, driver_env


def test_the_session_driver_maps_the_spark_classes_from_the_archive(spark):
    """The test session's driver started on the archive if it was there before the driver (`make
    test` makes it first; made here otherwise), and the archive is usable with the driver's own
    classpath: a JVM that must use it (-Xshare:on) runs Spark's submit class and loads hundreds of
    its classes from the archive's top layer."""
    archive = make_archive() or archive_path()
    if archive is None or not archive.is_file():
        pytest.skip(f"no Spark class archive here ({ARCHIVE_ENV} off, or another process is making it)")
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    started_on_it = f"-XX:SharedArchiveFile={archive}" in list(runtime.getInputArguments())
    assert started_on_it == (archive.stat().st_mtime * 1000 < runtime.getStartTime())
    classpath = spark.sparkContext._jvm.System.getProperty("java.class.path")
    command = [str(java_binary()), f"-XX:SharedArchiveFile={archive}", "-Xshare:on", "-Xlog:class+load=info"]
    command += ["-cp", classpath, "org.apache.spark.deploy.SparkSubmit", "--version"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    from_archive = len(re.findall(r"source: shared objects file \(top\)", done.stdout))
    assert from_archive > 300, done.stdout[-2000:]


def test_a_changed_installation_names_another_archive_and_off_means_none(monkeypatch, tmp_path):
    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path))
    first = archive_path()
    assert first.parent == tmp_path and driver_java_options() is None and submit_env() == {}  # none made yet
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path / "conf"))  # first on the driver's classpath
    assert archive_path() != first
    monkeypatch.delenv("SPARK_CONF_DIR")
    first.write_bytes(b"made")
    options = f"-XX:SharedArchiveFile={first} {class_archive.QUIET}"
    assert driver_java_options() == options
    # Added to the driver options a launch already passes this way, which are kept.
    assert submit_env({SUBMIT_OPTS: "-Dmine=1"}) == {SUBMIT_OPTS: f"-Dmine=1 {options}"}
    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path / "a folder"))  # spark-submit would split the option
    assert archive_path() is None and driver_java_options() is None
    monkeypatch.setenv(ARCHIVE_ENV, "off")
    assert archive_path() is None and driver_java_options() is None and make_archive() is None


def _small_and_big(tmp_path):
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_bytes(b"1,2,3\n")
    with open(big, "wb") as f:
        f.truncate(SMALL_DATA_BYTES)  # sparse: the size without the bytes
    return small, big


def test_a_local_driver_for_small_data_compiles_with_c1_only(monkeypatch, tmp_path):
    monkeypatch.setenv(ARCHIVE_ENV, "off")
    monkeypatch.delenv(SUBMIT_OPTS, raising=False)
    small, big = _small_and_big(tmp_path)
    assert driver_env([small]) == {SUBMIT_OPTS: SMALL_DATA_JAVA_OPTIONS}
    assert driver_env([small, tmp_path / "not yet there"]) == {SUBMIT_OPTS: SMALL_DATA_JAVA_OPTIONS}
    assert driver_env([small, big]) == {} and driver_env() == {}  # no inputs named: a session of any size
    assert driver_env([small], {SUBMIT_OPTS: "-Dmine=1"}) == {SUBMIT_OPTS: f"-Dmine=1 {SMALL_DATA_JAVA_OPTIONS}"}


def test_a_nights_spark_inputs_are_the_warehouses_ratings_and_the_ingests_input(tmp_path):
    from cfmodel.config import IngestConfig, Night
    from cfmodel.pipeline import spark_inputs

    night = Night(warehouse=str(tmp_path / "wh"), run_date="2026-11-02")
    increments = tmp_path / "wh" / "ratings_increments"
    assert spark_inputs(night) == [increments]
    ingest = IngestConfig(source="movielens-100k", input_path=str(tmp_path / "in" / "{ds}"))
    assert spark_inputs(night, ingest) == [increments, tmp_path / "in" / "2026-11-02"]


def test_the_dag_jobs_drivers_start_like_local_ones_unless_they_run_elsewhere(monkeypatch, tmp_path):
    from cfrec_airflow.tasks import driver_env_vars

    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path))
    monkeypatch.delenv(SUBMIT_OPTS, raising=False)
    archive_path().write_bytes(b"made")
    spark = '{"conn_type": "spark", "host": "%s", "extra": {"deploy-mode": "%s"}}'
    monkeypatch.setenv("AIRFLOW_CONN_NEARBY", spark % ("spark://10.0.0.9:7077", "client"))
    monkeypatch.setenv("AIRFLOW_CONN_FARAWAY", spark % ("spark://10.0.0.9:7077", "cluster"))
    small, big = _small_and_big(tmp_path)
    env = {"MINE": "1"}
    archive = driver_java_options()
    assert driver_env_vars(env, "nearby", [big]) == {"MINE": "1", SUBMIT_OPTS: archive}
    assert driver_env_vars(None, "nearby", [small]) == {SUBMIT_OPTS: f"{archive} {SMALL_DATA_JAVA_OPTIONS}"}
    assert driver_env_vars(env, "faraway", [small]) == env
    monkeypatch.setenv(ARCHIVE_ENV, "off")
    assert driver_env_vars(env, "nearby", [big]) == env
    assert driver_env_vars(env, "nearby", [small]) == {"MINE": "1", SUBMIT_OPTS: SMALL_DATA_JAVA_OPTIONS}
