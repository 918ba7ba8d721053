"""Small steps run without whole-stage code generation and adaptive execution; large ones keep them."""

from cfmodel.spark import SMALL_DATA_BYTES, SMALL_DATA_SETTINGS, session_settings, settings_for


def test_settings_follow_the_size_of_the_inputs(tmp_path):
    small = tmp_path / "u.data"
    small.write_bytes(b"1\t2\t3\t4\n" * 10)
    folder = tmp_path / "ratings"
    (folder / "run_date=2026-01-01").mkdir(parents=True)
    (folder / "run_date=2026-01-01" / "part-0.parquet").write_bytes(b"x" * 1000)
    assert settings_for(small, folder, tmp_path / "missing") == SMALL_DATA_SETTINGS
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:  # sparse: sized without writing the bytes
        f.truncate(SMALL_DATA_BYTES)
    assert settings_for(small, big) == {}
    assert settings_for(folder) == SMALL_DATA_SETTINGS and settings_for(big.parent) == {}


def test_session_settings_are_put_back_as_they_were(spark):
    key, unset = "spark.sql.codegen.wholeStage", "spark.cfrec.test.unset"
    before = spark.conf.get(key)
    with session_settings(spark, {key: "false", unset: "1"}):
        assert spark.conf.get(key) == "false" and spark.conf.get(unset) == "1"
    assert spark.conf.get(key) == before and spark.conf.get(unset, None) is None
    try:
        with session_settings(spark, {key: "false"}):
            raise RuntimeError("a failing step")
    except RuntimeError:
        pass
    assert spark.conf.get(key) == before


def test_a_setting_the_application_was_launched_with_is_kept(spark):
    # The tests' session is launched with its shuffle partitions (cfmodel.spark.LOCAL_DEFAULTS), as a
    # DAG's spark-submit is with its shuffle_partitions param: a step's size rule leaves them alone.
    launched = spark.conf.get("spark.sql.shuffle.partitions")
    assert spark.sparkContext.getConf().get("spark.sql.shuffle.partitions") == launched
    with session_settings(spark, SMALL_DATA_SETTINGS | {"spark.sql.shuffle.partitions": str(int(launched) + 5)}):
        assert spark.conf.get("spark.sql.shuffle.partitions") == launched
        assert spark.conf.get("spark.sql.adaptive.enabled") == "false"
    assert spark.conf.get("spark.sql.shuffle.partitions") == launched
