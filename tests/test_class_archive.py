"""Spark drivers start on a class-data-sharing archive of the classes they load, where one was made."""

import re
import subprocess

from cfmodel import class_archive
from cfmodel.class_archive import (
    ARCHIVE_ENV,
    JAVA_OPTIONS,
    archive_path,
    driver_java_options,
    java_binary,
    make_archive,
)


def test_the_session_driver_maps_the_spark_classes_from_the_archive(spark):
    """The test session's driver was started on the archive (made now if `make test` did not), and
    the archive is usable with the driver's own classpath: a JVM that must use it (-Xshare:on)
    runs Spark's submit class and loads hundreds of its classes from the archive's top layer."""
    archive = make_archive() or archive_path()
    assert archive is not None and archive.is_file()
    jvm = spark.sparkContext._jvm
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    if f"-XX:SharedArchiveFile={archive}" not in arguments:  # the session started before this test made it
        assert not any(a.startswith("-XX:SharedArchiveFile") for a in arguments)
    classpath = jvm.System.getProperty("java.class.path")
    command = [str(java_binary()), f"-XX:SharedArchiveFile={archive}", "-Xshare:on", "-Xlog:class+load=info"]
    command += ["-cp", classpath, "org.apache.spark.deploy.SparkSubmit", "--version"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    from_archive = len(re.findall(r"source: shared objects file \(top\)", done.stdout))
    assert from_archive > 300, done.stdout[-2000:]


def test_a_changed_installation_names_another_archive_and_off_means_none(monkeypatch, tmp_path):
    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path))
    first = archive_path()
    assert first.parent == tmp_path and driver_java_options() is None  # nothing made there yet
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path / "conf"))  # first on the driver's classpath
    assert archive_path() != first
    first.write_bytes(b"made")
    monkeypatch.delenv("SPARK_CONF_DIR")
    assert driver_java_options() == f"-XX:SharedArchiveFile={first} {class_archive.QUIET}"
    monkeypatch.setenv(ARCHIVE_ENV, "off")
    assert archive_path() is None and driver_java_options() is None and make_archive() is None


def test_the_dag_jobs_drivers_start_on_the_archive_unless_they_run_on_the_cluster(monkeypatch, tmp_path):
    from cfrec_airflow.tasks import on_class_archive

    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path))
    archive_path().write_bytes(b"made")
    monkeypatch.setenv("AIRFLOW_CONN_NEARBY", '{"conn_type": "spark", "host": "spark://10.0.0.9:7077"}')
    monkeypatch.setenv(
        "AIRFLOW_CONN_FARAWAY",
        '{"conn_type": "spark", "host": "spark://10.0.0.9:7077", "extra": {"deploy-mode": "cluster"}}',
    )
    conf = {JAVA_OPTIONS: "-Dmine=1", "spark.sql.shuffle.partitions": "8"}
    assert on_class_archive(conf, "nearby") == {**conf, JAVA_OPTIONS: f"{driver_java_options()} -Dmine=1"}
    assert on_class_archive(conf, "faraway") == conf
    monkeypatch.setenv(ARCHIVE_ENV, "off")
    assert on_class_archive(conf, "nearby") == conf
