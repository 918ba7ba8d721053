"""The SQL endpoint's read-only guard: compiled once per source and Spark version, refused clearly
without a JDK. (That it refuses writes through the endpoint is tested in tests/end_to_end/test_analysts.py.)"""

import zipfile
from pathlib import Path

import pytest

from cfmodel.errors import CfrecError
from cfmodel.warehouse import read_only
from cfmodel.warehouse.sql_server import spark_home


def test_the_guard_is_compiled_once_into_a_jar_named_by_its_source_and_spark(tmp_path):
    if read_only.javac() is None:
        pytest.skip("no javac on this machine (a JDK 17 compiles the guard)")
    jars = spark_home() / "jars"
    jar = read_only.guard_jar(tmp_path, jars)
    with zipfile.ZipFile(jar) as archive:
        assert "cfrec/ReadOnlyGuard.class" in archive.namelist()
    built = jar.stat().st_mtime_ns
    assert read_only.guard_jar(tmp_path, jars) == jar and jar.stat().st_mtime_ns == built
    assert [p.name for p in tmp_path.iterdir()] == [jar.name]  # no work folder left behind

    # Another Spark is another jar; one the guard cannot compile against fails in one line, leaving nothing.
    broken = tmp_path / "broken-spark"
    broken.mkdir()
    (broken / "spark-core_2.13-9.9.9.jar").write_bytes(b"not a jar")
    with pytest.raises(CfrecError, match="^compiling the SQL endpoint's read-only guard failed: .+"):
        read_only.guard_jar(tmp_path, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken-spark", jar.name]


def test_without_javac_the_start_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(read_only, "javac", lambda: None)
    with pytest.raises(CfrecError, match="install a JDK 17.*--writable"):
        read_only.guard_jar(tmp_path, Path(spark_home() / "jars"))
    assert not list(tmp_path.iterdir())
