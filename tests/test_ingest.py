import pandas as pd
import pytest

from cfmodel.errors import CfrecError
from cfmodel.ingest import ingest
from tests.conftest import write_lines


@pytest.fixture
def small_source(tmp_path):
    src = tmp_path / "ml"
    write_lines(src / "u.data", ["1\t1\t5\t10", "1\t2\t3\t11", "2\t1\t4\t12", "2\t1\t2\t9", "bad line", "3\t9\t4\t13"])
    write_lines(
        src / "u.item",
        ["1|Misérables, Les (1995)|||u|" + "|".join("0" * 18 + "1"), "2|Crumb (1994)|||u|" + "|".join("0" * 7 + "1" + "0" * 11), "x|short"],
        encoding="latin-1",
    )
    return src


def test_ingest_writes_tables_and_accounts_for_every_line(spark, small_source, tmp_path):
    wh = tmp_path / "wh"
    report = ingest(spark, "movielens-100k", small_source, wh, "2026-01-02")
    assert report["input_rows"] == 6
    assert report["clean_rows"] == 4
    assert report["rejects_by_reason"] == {"unparseable": 1, "duplicate_superseded": 1}
    assert report["input_rows"] == report["clean_rows"] + report["rejected_rows"]
    assert (report["item_rows"], report["item_rejects"], report["ratings_on_unknown_items"]) == (2, 1, 1)

    ratings = pd.read_parquet(wh / "ratings").sort_values(["user_id", "item_id"])
    assert ratings[["user_id", "item_id", "rating"]].values.tolist() == [
        ["1", "1", 5.0], ["1", "2", 3.0], ["2", "1", 4.0], ["3", "9", 4.0]
    ]
    assert ratings["user_id"].dtype == object
    items = pd.read_parquet(wh / "items").set_index("item_id")
    assert items.loc["1", "title"] == "Misérables, Les (1995)"
    assert list(items.loc["1", "genres"]) == ["Western"] and items.loc["2", "year"] == 1994

    rejects = pd.read_parquet(wh / "rejects").sort_values(["table", "line_number"])
    assert rejects[["table", "line_number", "raw", "reason"]].values.tolist() == [
        ["items", 3, "x|short", "unparseable"],
        ["ratings", 4, "2\t1\t2\t9", "duplicate_superseded"],
        ["ratings", 5, "bad line", "unparseable"],
    ]
    assert str(rejects["run_date"].iloc[0]) == "2026-01-02"
    stored = pd.read_parquet(wh / "ingest_report").iloc[0]
    assert stored["clean_rows"] == 4 and dict(stored["rejects_by_reason"]) == report["rejects_by_reason"]
    assert pd.read_parquet(wh / "datasets")[["rating_min", "rating_max"]].values.tolist() == [[1.0, 5.0]]
    for table in ("ratings", "items", "datasets", "rejects/run_date=2026-01-02"):
        assert (wh / table / "_SUCCESS").exists()


def test_reingest_same_date_replaces_instead_of_duplicating(spark, small_source, tmp_path):
    wh = tmp_path / "wh"
    ingest(spark, "movielens-100k", small_source, wh, "2026-01-02")
    ingest(spark, "movielens-100k", small_source, wh, "2026-01-02")
    assert len(pd.read_parquet(wh / "ratings")) == 4
    assert len(pd.read_parquet(wh / "rejects")) == 3
    assert not [p for p in wh.rglob(".tmp-*")]


def test_ingest_refuses_a_source_with_no_clean_rating(spark, tmp_path):
    src = tmp_path / "ml"
    write_lines(src / "u.data", ["nonsense"])
    write_lines(src / "u.item", ["1|A (1990)|||u|" + "|".join("0" * 19)])
    with pytest.raises(CfrecError, match="no clean ratings"):
        ingest(spark, "movielens-100k", src, tmp_path / "wh", "2026-01-02")
