"""The ingest task end to end on small hand-written sources and on the real sample files."""

import json
import threading

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import ingest_files, write_lines
from support import real_data_dir as data_dir

from cfmodel.errors import CfrecError
from cfmodel.ingest.job import parse_item_files
from cfmodel.ingest.planning import plan_ingest
from cfmodel.ingest.quality import check_quality

GENRE_FLAGS = 19


def u_item(item_id: str, title: str, genre: int) -> str:
    flags = ["1" if i == genre else "0" for i in range(GENRE_FLAGS)]
    return "|".join([item_id, title, "", "", "u", *flags])


@pytest.fixture
def small_source(tmp_path):
    src = tmp_path / "ml"
    write_lines(src / "u.data", ["1\t1\t5\t10", "1\t2\t3\t11", "2\t1\t4\t12", "2\t1\t2\t9", "bad line", "3\t9\t4\t13"])
    write_lines(
        src / "u.item",
        [u_item("1", "Misérables, Les (1995)", 18), u_item("2", "Crumb (1994)", 7), "x|short"],
        encoding="latin-1",
    )
    return src


def index_of(path) -> dict[str, int]:
    frame = pd.read_parquet(path)
    assert sorted(frame["index"]) == list(range(len(frame)))
    return dict(zip(frame["id"], frame["index"]))


def test_ingest_writes_tables_and_accounts_for_every_line(spark, small_source, tmp_path):
    wh = tmp_path / "wh"
    killed = wh / ".staging" / "ratings-2026-01-01-0123456789ab"  # left by an ingest that was killed
    killed.mkdir(parents=True)
    report = ingest_files(spark, "movielens-100k", small_source, wh, "2026-01-02")
    assert not (wh / ".staging").exists() or not any((wh / ".staging").iterdir())
    assert (report["input_rows"], report["clean_rows"], report["rejected_rows"]) == (6, 4, 2)
    assert report["rejects_by_reason"] == {"duplicate_superseded": 1, "unparseable": 1}
    assert (report["item_input_rows"], report["item_rows"], report["item_rejects"]) == (3, 2, 1)
    assert report["item_rejects_by_reason"] == {"unparseable": 1}
    assert report["ratings_on_unknown_items"] == 1  # item 9 is not in u.item, the rating is kept
    assert (report["ratings_rows"], report["users"], report["items"], report["new_users"]) == (4, 3, 3, 3)
    assert report["input_files"] == ["u.data"] and report["item_files"] == ["u.item"]

    ratings = pd.read_parquet(wh / "ratings").sort_values(["user_id", "item_id"])
    assert ratings[["user_id", "item_id", "rating", "timestamp"]].values.tolist() == [
        ["1", "1", 5.0, 10],
        ["1", "2", 3.0, 11],
        ["2", "1", 4.0, 12],
        ["3", "9", 4.0, 13],
    ]
    assert [str(t) for t in ratings.dtypes] == ["object", "object", "float32", "int64"]
    items = pd.read_parquet(wh / "items").set_index("item_id")
    assert items.loc["1", "title"] == "Misérables, Les (1995)"
    assert list(items.loc["1", "genres"]) == ["Western"] and items.loc["2", "year"] == 1994

    rejects = pd.read_parquet(wh / "rejects").sort_values(["table", "line_number"])
    assert rejects[["table", "source_file", "line_number", "raw", "reason"]].values.tolist() == [
        ["items", "u.item", 3, "x|short", "unparseable"],
        ["ratings", "u.data", 4, "2\t1\t2\t9", "duplicate_superseded"],
        ["ratings", "u.data", 5, "bad line", "unparseable"],
    ]
    assert str(rejects["run_date"].iloc[0]) == "2026-01-02"
    stored = pd.read_parquet(wh / "ingest_report").iloc[0]
    assert stored["clean_rows"] == 4 and dict(stored["rejects_by_reason"]) == report["rejects_by_reason"]
    datasets = pd.read_parquet(wh / "datasets")
    assert datasets[["source", "rating_min", "rating_max", "rating_step", "scale_origin"]].values.tolist() == [
        ["movielens-100k", 1.0, 5.0, 1.0, "layout"]
    ]
    assert index_of(wh / "user_index") == {"1": 0, "2": 1, "3": 2}
    assert index_of(wh / "item_index") == {"1": 0, "2": 1, "9": 2}
    for table in (
        "ratings",
        "items",
        "datasets",
        "user_index",
        "item_index",
        "rejects/run_date=2026-01-02",
        "ratings_increments/run_date=2026-01-02",
        "items_increments/run_date=2026-01-02",
    ):
        assert (wh / table / "_SUCCESS").exists(), table
    assert not list(wh.rglob(".tmp-*")) and not list((wh / ".staging").iterdir())


def test_nightly_increments_union_rerun_and_stable_indices(spark, tmp_path):
    wh = tmp_path / "wh"
    day1, day2 = tmp_path / "d1", tmp_path / "d2"
    write_lines(day1 / "ratings.dat", ["1::1::5::10", "1::2::3::11", "2::1::4::12"])
    write_lines(day1 / "movies.dat", ["1::Heat (1995)::Action", "2::Crumb (1994)::Documentary"], encoding="latin-1")
    write_lines(day2 / "ratings.dat", ["1::1::2::20", "3::3::4::21", "2::9::1::5"])
    write_lines(
        day2 / "movies.dat", ["1::Heat (1995)::Action|Crime|Thriller", "3::Café (2003)::Drama"], encoding="latin-1"
    )

    ingest_files(spark, "movielens-1m", day1, wh, "2026-03-01")
    first = ingest_files(spark, "movielens-1m", day2, wh, "2026-03-02")
    assert (first["clean_rows"], first["ratings_rows"], first["superseded_earlier_rows"]) == (3, 5, 1)
    assert (first["new_users"], first["new_items"], first["ratings_on_unknown_items"]) == (1, 2, 1)

    def current():
        ratings = pd.read_parquet(wh / "ratings")
        return sorted(map(tuple, ratings[["user_id", "item_id", "rating"]].values.tolist()))

    expected = [("1", "1", 2.0), ("1", "2", 3.0), ("2", "1", 4.0), ("2", "9", 1.0), ("3", "3", 4.0)]
    assert current() == expected
    items = pd.read_parquet(wh / "items").set_index("item_id")
    assert list(items.loc["1", "genres"]) == ["Action", "Crime", "Thriller"]  # the newer items file wins
    assert items.loc["2", "title"] == "Crumb (1994)" and items.loc["3", "title"] == "Café (2003)"
    users, item_index = index_of(wh / "user_index"), index_of(wh / "item_index")
    assert users == {"1": 0, "2": 1, "3": 2} and item_index == {"1": 0, "2": 1, "3": 2, "9": 3}

    again = ingest_files(spark, "movielens-1m", day2, wh, "2026-03-02")  # re-running a date replaces it
    assert current() == expected and again["ratings_rows"] == 5 and again["new_users"] == 0
    assert sorted(p.name for p in (wh / "ratings_increments").iterdir()) == [
        "run_date=2026-03-01",
        "run_date=2026-03-02",
    ]
    assert len(pd.read_parquet(wh / "ingest_report")) == 2

    # Day 1 re-delivered with a new user "0": it sorts first but is appended, nothing is renumbered.
    write_lines(day1 / "ratings.dat", ["1::1::5::10", "1::2::3::11", "2::1::4::12", "0::2::1::13"])
    ingest_files(spark, "movielens-1m", day1, wh, "2026-03-01")
    assert index_of(wh / "user_index") == {**users, "0": 3}
    # The current table is rebuilt as of the re-run date: day 2's newer rating of (1, 1) waits for day 2.
    assert ("0", "2", 1.0) in current() and ("1", "1", 5.0) in current() and ("3", "3", 4.0) not in current()
    ingest_files(spark, "movielens-1m", day2, wh, "2026-03-02")
    assert ("0", "2", 1.0) in current() and ("1", "1", 2.0) in current() and ("3", "3", 4.0) in current()

    gate = check_quality(wh, "2026-03-02")
    assert gate.passed and [c["check"] for c in gate.checks] == [
        "reject_fraction",
        "item_reject_fraction",
        "clean_rows_drop",
    ]


def test_generic_csv_without_items_infers_and_records_the_scale(spark, tmp_path):
    src = tmp_path / "in"
    write_lines(src / "events.csv", ["who,what,score", "a,x,7", "b,x,-2", "a,y,12.5", "c,z,oops"])
    report = ingest_files(
        spark,
        "csv",
        src,
        tmp_path / "wh",
        "2026-01-01",
        ratings_file="events.csv",
        user_col="who",
        item_col="what",
        rating_col="score",
    )
    assert (report["clean_rows"], report["rejects_by_reason"]) == (3, {"rating_not_numeric": 1})
    assert (report["rating_min"], report["rating_max"], report["ratings_on_unknown_items"]) == (-2.0, 12.5, 3)
    datasets = pd.read_parquet(tmp_path / "wh" / "datasets").iloc[0]
    assert (datasets["scale_origin"], datasets["rating_min"], datasets["rating_max"]) == ("inferred", -2.0, 12.5)
    assert pd.read_parquet(tmp_path / "wh" / "ratings")["timestamp"].isna().all()
    assert pd.read_parquet(tmp_path / "wh" / "items").empty


def side_files_left(spark, wh) -> dict:
    """What a failed ingest could have left of its side files' staging, which runs in a thread
    beside the ratings': published side partitions, staging folders, running threads, cached data."""
    return {
        "published": sorted(p.parent.name for p in wh.glob("*_increments/run_date=*") if "ratings" not in str(p)),
        "staging": sorted(str(p.relative_to(wh)) for p in (wh / ".staging").rglob("*")),
        "threads": [t.name for t in threading.enumerate() if t.name.startswith("cfrec-side-files")],
        "cached": spark.sparkContext._jsc.getPersistentRDDs().size(),
    }


def test_ingest_refuses_a_source_with_no_clean_rating(spark, tmp_path):
    src = tmp_path / "ml"
    write_lines(src / "u.data", ["nonsense"])
    write_lines(src / "u.item", [u_item("1", "A (1990)", 0)])
    write_lines(src / "u.user", ["1|24|M|technician|85711"])
    cached = spark.sparkContext._jsc.getPersistentRDDs().size()
    with pytest.raises(
        CfrecError, match="no clean ratings in u.data .1 rows read; rejects by reason: {'unparseable': 1}"
    ):
        ingest_files(spark, "movielens-100k", src, tmp_path / "wh", "2026-01-02")
    assert not (tmp_path / "wh" / "ratings").exists()
    # The items and users, staged beside the ratings, were waited for and left nothing behind.
    assert side_files_left(spark, tmp_path / "wh") == {"published": [], "staging": [], "threads": [], "cached": cached}


def test_a_failure_in_the_side_files_fails_the_ingest_and_publishes_nothing(spark, small_source, tmp_path, monkeypatch):
    from cfmodel import pipeline
    from cfmodel.config import IngestConfig, Night
    from cfmodel.ingest import job

    write_lines(small_source / "u.user", ["1|24|M|technician|85711", "2|53|F|other|94043"])

    def unreadable(spark, extra):
        raise CfrecError(f"{extra.files[0].name} could not be read")

    monkeypatch.setattr(job, "parse_extra_files", unreadable)
    cached = spark.sparkContext._jsc.getPersistentRDDs().size()
    wh = tmp_path / "wh"
    with pytest.raises(CfrecError, match="^u.user could not be read$"):
        pipeline.ingest(spark, Night(str(wh), "2026-01-02"), IngestConfig("movielens-100k", str(small_source)))
    # The items staged before the failure were released, and the ratings' increment, published
    # before the side files' result was taken, was undone with the failed step.
    assert side_files_left(spark, wh) == {"published": [], "staging": [], "threads": [], "cached": cached}
    assert not list(wh.glob("ratings*/**/*.parquet"))


def test_ingest_refuses_to_mix_sources_in_one_warehouse(spark, small_source, tmp_path):
    wh = tmp_path / "wh"
    wh.mkdir()
    pd.DataFrame({"source": ["movietweetings"], "rating_min": [0.0], "rating_max": [10.0]}).to_parquet(wh / "datasets")
    with pytest.raises(CfrecError, match="holds 'movietweetings' data; ingesting 'movielens-100k' into it"):
        ingest_files(spark, "movielens-100k", small_source, wh, "2026-01-02")


def test_real_goodbooks_sample(spark, tmp_path):
    root = data_dir("goodbooks-10k-sample")
    wh = tmp_path / "wh"
    report = ingest_files(spark, "goodbooks", root, wh, "2026-02-01")
    assert (report["input_rows"], report["clean_rows"], report["rejected_rows"]) == (99, 99, 0)
    assert (report["item_input_rows"], report["item_rows"], report["item_rejects"]) == (99, 99, 0)
    assert (report["users"], report["items"], report["ratings_on_unknown_items"]) == (5, 96, 69)
    ratings = pd.read_parquet(wh / "ratings")
    assert ratings["timestamp"].isna().all() and set(ratings["rating"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    first = ratings[(ratings["user_id"] == "1") & (ratings["item_id"] == "258")]
    assert first["rating"].tolist() == [5.0]
    items = pd.read_parquet(wh / "items").set_index("item_id")
    assert items.loc["1", "title"] == "The Hunger Games (The Hunger Games, #1)" and items.loc["1", "year"] == 2008
    assert items.loc["2", "title"] == "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)"
    assert pd.read_parquet(wh / "datasets")[["rating_min", "rating_max"]].values.tolist() == [[1.0, 5.0]]


def test_real_goodbooks_full_books_file_parses_clean(spark):
    root = data_dir("goodbooks-10k-sample")
    parsed, n = parse_item_files(spark, plan_ingest("goodbooks", root, items_file="books_full.csv"))
    rows = {r["item_id"]: r for r in parsed.collect()}
    assert n == len(rows) == 10_000 and all(r["reason"] is None for r in rows.values())
    assert (rows["221"]["title"], rows["221"]["year"]) == ('A Child Called "It" (Dave Pelzer #1)', 1995)
    assert sum(r["year"] is None for r in rows.values()) == 21
    assert rows["1867"]["title"] == "The Hangman's Daughter (The Hangman's Daughter, #1)"


def test_real_movielens_100k(spark, ml100k, tmp_path):
    wh = tmp_path / "wh"
    report = ingest_files(spark, "movielens-100k", ml100k, wh, "2026-02-01", ratings_file="u1.base")
    assert (report["input_rows"], report["clean_rows"], report["rejected_rows"]) == (80_000, 80_000, 0)
    assert (report["item_rows"], report["users"], report["items"], report["ratings_on_unknown_items"]) == (
        1682,
        943,
        1650,
        0,
    )
    items = pd.read_parquet(wh / "items").set_index("item_id")
    assert items.loc["543", "title"] == "Misérables, Les (1995)"
    assert list(items.loc["1", "genres"]) == ["Animation", "Children's", "Comedy"]
    users = index_of(wh / "user_index")
    assert users["1"] == 0 and users["10"] == 1  # sorted as strings, like IdIndex
    assert (report["extra_rows"], report["extra_rejects_by_reason"]) == ({"users": 943}, {"users": {}})
    demographics = pd.read_parquet(wh / "users").set_index("user_id")
    assert len(demographics) == 943 and demographics.index.is_monotonic_increasing
    assert demographics.loc["1"].tolist() == [24, "M", "technician", "85711"]
    assert demographics.loc["2", "zip_code"] == "94043" and demographics["age"].between(7, 73).all()

    # The matching test split arrives the next night: same users, more items, more ratings.
    report = ingest_files(spark, "movielens-100k", ml100k, wh, "2026-02-02", ratings_file="u1.test")
    assert (report["clean_rows"], report["ratings_rows"], report["new_users"]) == (20_000, 100_000, 0)
    assert report["items"] == 1682 and index_of(wh / "user_index") == users


def test_side_tables_are_increments_with_rejects_and_follow_reruns(spark, tmp_path):
    night1, night2, wh = tmp_path / "n1", tmp_path / "n2", tmp_path / "wh"
    write_lines(night1 / "ratings.csv", ["user_id,book_id,rating", "1,10,5", "2,10,4"])
    write_lines(night1 / "to_read.csv", ["user_id,book_id", "1,20", "1,20", "2,", "3,30"])
    write_lines(night2 / "ratings.csv", ["user_id,book_id,rating", "3,10,2"])
    write_lines(night2 / "to_read.csv", ["user_id,book_id", "1,20", "4,40"])

    report = ingest_files(spark, "goodbooks", night1, wh, "2026-03-01")
    assert report["extra_rows"] == {"to_read": 2}
    assert report["extra_rejects_by_reason"] == {"to_read": {"duplicate_superseded": 1, "missing_item": 1}}
    rejects = pd.read_parquet(wh / "rejects/run_date=2026-03-01")
    assert sorted(zip(rejects["table"], rejects["line_number"], rejects["raw"], rejects["reason"])) == [
        ("to_read", 2, "1,20", "duplicate_superseded"),
        ("to_read", 4, "2,", "missing_item"),
    ]
    pairs = lambda: sorted(pd.read_parquet(wh / "to_read").itertuples(index=False, name=None))  # noqa: E731
    assert pairs() == [("1", "20"), ("3", "30")]

    ingest_files(spark, "goodbooks", night2, wh, "2026-03-02")
    assert pairs() == [("1", "20"), ("3", "30"), ("4", "40")]  # the union of the nights, each pair once
    (night2 / "to_read.csv").unlink()
    report = ingest_files(spark, "goodbooks", night2, wh, "2026-03-02")
    assert report["extra_rows"] == {} and not (wh / "to_read_increments/run_date=2026-03-02").exists()
    assert pairs() == [("1", "20"), ("3", "30")]


def test_a_night_merges_into_the_ratings_table_rewriting_only_the_files_it_touches(spark, tmp_path):
    """Tonight's rows are merged into yesterday's table as a rebuild from every increment would
    order them (latest timestamp, then latest night); files holding no superseded rating are kept
    as they are (the same inode), and a re-run rebuilds the same table from the increments."""
    wh = tmp_path / "wh"
    nights = {
        "2026-03-01": ["1::1::5::10", "1::2::3::11", "2::1::4::12"],
        "2026-03-02": ["3::3::4::21", "2::9::1::5"],  # new pairs only
        # A later re-rating, an earlier one (the old rating stays), the same timestamp (the later
        # night wins), a new user.
        "2026-03-03": ["1::1::2::20", "2::1::1::11", "1::2::4::11", "4::1::3::30"],
    }

    def night(date):
        folder = tmp_path / date
        write_lines(folder / "ratings.dat", nights[date])
        write_lines(folder / "movies.dat", ["1::Heat (1995)::Action"], encoding="latin-1")
        return ingest_files(spark, "movielens-1m", folder, wh, date)

    def table():
        ratings = pd.read_parquet(wh / "ratings")
        return sorted(map(tuple, ratings[["user_id", "item_id", "rating", "timestamp"]].values.tolist()))

    def inodes():
        return {f.name: f.stat().st_ino for f in (wh / "ratings").glob("*.parquet")}

    night("2026-03-01")
    night("2026-03-02")
    before = inodes()
    report = night("2026-03-03")
    after = inodes()
    second_night = [name for name in before if name.startswith("part-2026-03-02-")]
    assert second_night and all(after[name] == before[name] for name in second_night)
    assert any(after.get(name) != inode for name, inode in before.items() if name not in second_night)
    assert [name for name in after if name.startswith("part-2026-03-03-")]
    assert (report["ratings_rows"], report["superseded_earlier_rows"], report["new_users"]) == (6, 3, 1)
    assert index_of(wh / "user_index") == {"1": 0, "2": 1, "3": 2, "4": 3}
    merged = table()
    assert merged == [
        ("1", "1", 2.0, 20),
        ("1", "2", 4.0, 11),
        ("2", "1", 4.0, 12),
        ("2", "9", 1.0, 5),
        ("3", "3", 4.0, 21),
        ("4", "1", 3.0, 30),
    ]
    built_from = json.loads((wh / "ratings" / "_built_from.json").read_text())["run_dates"]
    assert built_from == sorted(nights)
    # Every file, rewritten or not, reads back with the table's own types (ids as plain strings),
    # and its numeric columns keep their min/max statistics.
    for file in (wh / "ratings").glob("*.parquet"):
        assert pq.read_schema(file).types == [pa.string(), pa.string(), pa.float32(), pa.int64()], file.name
        group = pq.ParquetFile(file).metadata.row_group(0)
        assert all(group.column(i).statistics.has_min_max for i in (2, 3)), file.name
    rerun = night("2026-03-03")  # the table already holds this night: rebuilt from every increment
    assert table() == merged and rerun["ratings_rows"] == 6 and rerun["superseded_earlier_rows"] == 3
