"""The catalog's pieces that need no JVM: metastore URLs, attachments, which folders are partitions."""

from pathlib import Path

import pytest

from cfmodel.cli import main
from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, catalog
from cfmodel.warehouse.catalog import Metastore, attach, attached, table_of
from cfmodel.warehouse.schemas import MOST_RECOMMENDED, RECOMMENDATIONS


def test_metastore_urls_name_their_driver_and_refuse_others():
    derby = Metastore.parse("derby://127.0.0.1:1527/metastore_db;create=true")
    assert derby.url.startswith("jdbc:derby://") and derby.kind == "derby"
    postgres = Metastore.parse("jdbc:postgresql://db:5432/metastore", "analytics")
    assert postgres.kind == "postgresql" and postgres.database == "analytics"
    with pytest.raises(CfrecError, match="not Derby or PostgreSQL"):
        Metastore.parse("jdbc:mysql://db/metastore")
    with pytest.raises(CfrecError, match="identifier"):
        Metastore.parse("jdbc:postgresql://db/metastore", "cfrec; DROP")


def test_spark_settings_point_at_the_metastore_and_its_driver(tmp_path, monkeypatch):
    jar = tmp_path / "postgresql.jar"
    jar.write_bytes(b"")
    monkeypatch.setenv("CFREC_METASTORE_DRIVER_JAR", str(jar))
    monkeypatch.setenv("CFREC_METASTORE_USER", "hive")
    conf = Metastore.parse("jdbc:postgresql://db:5432/metastore").spark_conf(tmp_path)
    assert conf["spark.sql.catalogImplementation"] == "hive"
    assert conf["spark.driver.extraClassPath"] == str(jar)
    assert conf["spark.hadoop.javax.jdo.option.ConnectionURL"] == "jdbc:postgresql://db:5432/metastore"
    assert conf["spark.hadoop.javax.jdo.option.ConnectionDriverName"] == "org.postgresql.Driver"
    assert conf["spark.hadoop.javax.jdo.option.ConnectionUserName"] == "hive"
    assert conf["spark.sql.hive.filesourcePartitionFileCacheSize"] == "0"  # a re-run's files, not a stale listing
    monkeypatch.setenv("CFREC_METASTORE_DRIVER_JAR", str(tmp_path / "absent.jar"))
    with pytest.raises(CfrecError, match="libpostgresql-jdbc-java"):
        Metastore.parse("jdbc:postgresql://db:5432/metastore").spark_conf(tmp_path)


def test_an_attachment_is_remembered_and_a_damaged_one_is_said(tmp_path):
    assert attached(tmp_path) is None
    attach(tmp_path, Metastore.parse("jdbc:derby://127.0.0.1:1600/metastore_db", "cfrec"))
    assert attached(tmp_path) == Metastore("jdbc:derby://127.0.0.1:1600/metastore_db", "cfrec")
    (tmp_path / catalog.ATTACHMENT).write_text("{not json")
    with pytest.raises(CfrecError, match="damaged"):
        attached(tmp_path)


def test_only_complete_visible_partitions_are_registered(tmp_path):
    table = tmp_path / "recommendations"
    for name, files in {
        "run_date=2026-11-01": ["part-0.parquet"],
        "run_date=2026-11-02": ["part-0.parquet", "_SUCCESS"],
        "run_date=2026-11-03": [],  # nothing in it
        ".run_date=2026-11-04.tmp-1": ["part-0.parquet"],  # a write in progress
    }.items():
        (table / name).mkdir(parents=True)
        for file in files:
            (table / name / file).write_bytes(b"")
    assert sorted(Warehouse(tmp_path).partitions(RECOMMENDATIONS)) == ["2026-11-01", "2026-11-02"]


def test_published_folders_map_to_catalog_tables(tmp_path):
    assert table_of(tmp_path, tmp_path / "recommendations" / "run_date=2026-11-01") == "recommendations"
    assert table_of(tmp_path, tmp_path / MOST_RECOMMENDED.name / "run_date=2026-11-01") == "most_recommended"
    assert table_of(tmp_path, tmp_path / "ratings") == "ratings"
    assert table_of(tmp_path, tmp_path / "models" / "rank_2026") is None
    assert table_of(tmp_path, tmp_path / "reports" / "run_date=2026-11-01") is None
    assert set(catalog.TABLES) >= {"recommendations", "most_recommended", "model_runs", "metrics", "ratings"}


def test_no_catalog_no_cost(tmp_path):
    assert catalog.sync_attached(tmp_path) is None  # not attached: nothing starts


def test_a_catalog_that_is_down_does_not_fail_the_step(tmp_path, caplog, monkeypatch):
    attach(tmp_path, Metastore.parse("jdbc:derby://127.0.0.1:9/metastore_db"))  # nothing listens on port 9
    monkeypatch.setattr(catalog.subprocess, "run", lambda *a, **k: pytest.fail("no sync should start"))
    assert catalog.sync_attached(tmp_path, ["recommendations"]) is None
    assert "not reachable" in caplog.text


def test_catalog_commands_fail_with_one_line(tmp_path, capsys):
    assert main(["catalog", "sync", "--warehouse", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not attached to a catalog" in err
    assert main(["catalog", "sync", "--warehouse", str(tmp_path), "--metastore", "jdbc:derby://127.0.0.1:9/m"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not reachable" in err
    assert main(["sql-server", "status", "--warehouse", str(Path(tmp_path) / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sql_server_without_derby_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CFREC_DERBY_NETWORK_JAR", str(tmp_path / "derbynet.jar"))
    assert main(["sql-server", "start", "--warehouse", str(tmp_path), "--metastore-port", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "libderby-java" in err
    assert not (tmp_path / catalog.ATTACHMENT).exists()  # nothing attached to a metastore that never ran
