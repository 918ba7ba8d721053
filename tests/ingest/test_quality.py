"""The data-quality gate, on ingest reports written directly (no Spark needed)."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cfmodel.cli import main
from cfmodel.config import QualityConfig
from cfmodel.errors import CfrecError
from cfmodel.ingest.quality import check_quality, read_reports
from cfmodel.warehouse import Warehouse

REASONS = pa.map_(pa.string(), pa.int64())


def write_report(wh, run_date, input_rows, clean_rows, by_reason, item_input_rows=0, item_by_reason=None):
    partition = wh / "ingest_report" / f"run_date={run_date}"
    partition.mkdir(parents=True)
    table = pa.table(
        {
            "source": ["movielens-1m"],
            "input_rows": [input_rows],
            "clean_rows": [clean_rows],
            "rejected_rows": [sum(by_reason.values())],
            "rejects_by_reason": pa.array([list(by_reason.items())], REASONS),
            "item_input_rows": [item_input_rows],
            "item_rejects_by_reason": pa.array([list((item_by_reason or {}).items())], REASONS),
        }
    )
    pq.write_table(table, partition / "part-0.parquet")


def test_passes_and_records_every_check(tmp_path):
    write_report(tmp_path, "2026-01-01", 1000, 990, {"unparseable": 10})
    write_report(
        tmp_path,
        "2026-01-02",
        1000,
        900,
        {"unparseable": 5, "duplicate_superseded": 80, "blank_line": 15},
        item_input_rows=100,
        item_by_reason={"unparseable": 1},
    )
    result = check_quality(tmp_path, "2026-01-02")
    checks = {c["check"]: c for c in result.checks}
    assert result.passed and set(checks) == {"reject_fraction", "item_reject_fraction", "clean_rows_drop"}
    assert checks["reject_fraction"]["value"] == pytest.approx(0.005)  # blank lines and duplicates aside
    assert checks["reject_fraction"]["detail"] == "5 of 1000 rows rejected (unparseable 5)"
    assert checks["clean_rows_drop"]["value"] == pytest.approx(1 - 900 / 990)
    stored = pd.read_parquet(tmp_path / "quality" / "run_date=2026-01-02")
    assert stored["passed"].all() and len(stored) == 3


def test_fails_on_too_many_rejects_with_a_clear_message(tmp_path):
    write_report(tmp_path, "2026-01-01", 1000, 970, {"unparseable": 20, "rating_out_of_scale": 10})
    with pytest.raises(CfrecError) as error:
        check_quality(tmp_path, "2026-01-01")
    assert str(error.value) == (
        "data-quality gate failed for 2026-01-01: reject_fraction 3.00% > 1.00%: "
        "30 of 1000 rows rejected (unparseable 20, rating_out_of_scale 10)"
    )
    stored = pd.read_parquet(tmp_path / "quality" / "run_date=2026-01-01")
    assert stored["passed"].tolist() == [False]  # the failed evaluation is kept too
    assert check_quality(tmp_path, "2026-01-01", QualityConfig(max_reject_fraction=0.05)).passed


def test_fails_when_clean_rows_drop_sharply_against_the_previous_run(tmp_path):
    write_report(tmp_path, "2026-01-01", 1000, 1000, {})
    write_report(tmp_path, "2026-01-03", 400, 400, {})
    with pytest.raises(CfrecError, match=r"clean_rows_drop 60.00% > 50.00%: 400 clean rows vs 1000 on 2026-01-01"):
        check_quality(tmp_path, "2026-01-03")
    assert check_quality(tmp_path, "2026-01-03", QualityConfig(max_drop_fraction=0.7)).passed
    assert check_quality(tmp_path, "2026-01-03", QualityConfig(max_drop_fraction=None)).passed
    # The first run has nothing to compare with; a later run is not compared with itself.
    assert [c["check"] for c in check_quality(tmp_path, "2026-01-01").checks] == ["reject_fraction"]


def test_missing_report_and_bad_thresholds(tmp_path):
    write_report(tmp_path, "2026-01-01", 10, 10, {})
    with pytest.raises(
        CfrecError, match="no ingest report for 2026-01-05 in .*; run 'cfrec ingest' for that date first"
    ):
        check_quality(tmp_path, "2026-01-05")
    with pytest.raises(CfrecError, match="max reject fraction must be between 0 and 1"):
        QualityConfig(max_reject_fraction=2)
    with pytest.raises(CfrecError, match="warehouse .* does not exist"):
        check_quality(tmp_path / "nowhere", "2026-01-01")
    assert read_reports(Warehouse(tmp_path))["2026-01-01"]["rejects_by_reason"] == {}


def test_cli_quality_exits_2_with_one_line(tmp_path, capsys):
    write_report(tmp_path, "2026-01-01", 100, 50, {"missing_user": 50})
    assert main(["quality", "--warehouse", str(tmp_path), "--run-date", "2026-01-01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cfrec quality: error: data-quality gate failed for 2026-01-01")
    assert (
        main(
            [
                "quality",
                "--warehouse",
                str(tmp_path),
                "--run-date",
                "2026-01-01",
                "--max-reject-fraction",
                "0.6",
                "--max-drop-fraction",
                "-1",
            ]
        )
        == 0
    )
    assert '"passed": true' in capsys.readouterr().out
