"""Parsing every source's layout, on hand-written files holding the cases real files have."""

import gzip

import pytest
from pyspark.sql import functions as F
from support import write_lines

from cfmodel.ingest import dedup
from cfmodel.ingest import parsing as sources
from cfmodel.ingest.job import parse_extra_files, parse_item_files, parse_rating_files
from cfmodel.ingest.layouts import LATIN1, RatingScale, TextFormat
from cfmodel.ingest.planning import InputFile, RatingsPlan, plan_ingest

TAB_PLAN = RatingsPlan([], TextFormat("\t"), user=0, item=1, rating=2, timestamp=3, n_fields=4)

RATING_LINES = [
    ("u.data", 1, "1\t10\t4\t100"),
    ("u.data", 2, "\ufeff2\t20\t5\t100\r"),  # BOM and CRLF
    ("u.data", 3, "  3\t007\t3\t100\t"),  # surrounding space, trailing delimiter, leading zeros
    ("u.data", 4, ""),
    ("u.data", 5, "garbage"),
    ("u.data", 6, "\t10\t4\t100"),
    ("u.data", 7, "4\t\t4\t100"),
    ("u.data", 8, "4\t10\tfour\t100"),
    ("u.data", 9, "4\t10\t9\t100"),
    ("u.data", 10, "4\t10\t4\tyesterday"),
    ("u.data", 11, "5\t10\t2\t100"),  # superseded by line 12 (later timestamp)
    ("u.data", 12, "5\t10\t5\t200"),
    ("u.data", 13, "5\t10\t1\t150"),  # superseded as well
    ("u.data", 14, "6\t10\t1\t100"),  # same timestamp: the later line wins
    ("u.data", 15, "6\t10\t3\t100"),
    ("u.data", 16, "7\t10\tNaN\t100"),
    ("u.data", 17, "1\t11\t4\t100\textra"),
    ("u.data", 18, "1\t12\t0.5\t100"),
    ("u.data", 19, "1\t13\t2.5\t100"),  # not a whole star
    ("u.data", 20, "8\t10\t4\t2026-01-02T03:04:05Z"),  # ISO-8601 timestamps are read too
]


def resolved(ratings):
    frame, counts = dedup.resolve(ratings, dedup.RATING_KEY, dedup.ratings_newest_first())
    assert counts == {row["reason"]: row["count"] for row in frame.groupBy("reason").count().collect()}
    return frame


def by_line(df):
    return {r["line_number"]: r for r in df.collect()}


def reasons(rows):
    return {n: r["reason"] for n, r in rows.items()}


@pytest.fixture(scope="module")
def parsed(spark):
    lines = spark.createDataFrame([(*line, True) for line in RATING_LINES], sources.LINE_SCHEMA)
    return by_line(resolved(sources.parse_ratings(lines, TAB_PLAN, RatingScale(1, 5, 1))))


def test_every_line_lands_once_with_the_expected_reason(parsed):
    assert reasons(parsed) == {
        1: None,
        2: None,
        3: None,
        4: "blank_line",
        5: "unparseable",
        6: "missing_user",
        7: "missing_item",
        8: "rating_not_numeric",
        9: "rating_out_of_scale",
        10: "timestamp_not_numeric",
        11: "duplicate_superseded",
        12: None,
        13: "duplicate_superseded",
        14: "duplicate_superseded",
        15: None,
        16: "rating_not_numeric",
        17: "unparseable",
        18: "rating_out_of_scale",
        19: "rating_out_of_scale",
        20: None,
    }


def test_clean_rows_are_typed_and_ids_kept_as_spelled(parsed):
    assert (parsed[1]["user_id"], parsed[1]["item_id"], parsed[1]["rating"], parsed[1]["timestamp"]) == (
        "1",
        "10",
        4.0,
        100,
    )
    assert parsed[2]["user_id"] == "2" and parsed[2]["timestamp"] == 100
    assert parsed[3]["user_id"] == "3" and parsed[3]["item_id"] == "007"
    assert parsed[12]["rating"] == 5.0 and parsed[15]["rating"] == 3.0
    assert parsed[20]["timestamp"] == 1767323045
    assert parsed[5]["raw"] == "garbage"


def test_read_lines_numbers_lines_and_decodes_latin1(spark, tmp_path):
    path = write_lines(tmp_path / "u.item", ["1|Misérables, Les (1995)|x", "2|Señor Noël (1990)|y"], encoding="latin-1")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM must not become 'ï»¿' in latin-1
    lines = sources.read_lines(spark, [InputFile(path, "u.item")], LATIN1)
    rows = lines.frame.orderBy("line_number").collect()
    assert [(r["source_file"], r["line_number"]) for r in rows] == [("u.item", 1), ("u.item", 2)]
    assert rows[0]["raw"] == "1|Misérables, Les (1995)|x"
    assert rows[1]["raw"] == "2|Señor Noël (1990)|y"
    assert lines.lines_per_file == {"u.item": 2}


def test_line_numbers_stay_exact_across_file_blocks_and_files(spark, tmp_path):
    first = write_lines(tmp_path / "a.dat", [f"{i}::{i * 7}::3::{i}" for i in range(1, 301)])
    second = write_lines(tmp_path / "b.dat", [f"b{i}" for i in range(1, 41)], newline="\r\n")
    third = tmp_path / "c.dat.gz"
    third.write_bytes(gzip.compress("".join(f"c{i}\n" for i in range(1, 101)).encode()))
    files = [InputFile(first, "a.dat"), InputFile(second, "b.dat"), InputFile(third, "c.dat.gz")]
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "256")  # dozens of blocks per file
    try:
        lines = sources.read_lines(spark, files, "UTF-8")
        rows = lines.frame.collect()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    numbered = {(r["source_file"], r["line_number"]): r["raw"] for r in rows}
    assert len(rows) == len(numbered) == 440
    assert all(numbered[("a.dat", i)] == f"{i}::{i * 7}::3::{i}" for i in range(1, 301))
    assert all(numbered[("b.dat", i)] == f"b{i}" for i in range(1, 41))  # the reader drops CRLF endings
    assert all(numbered[("c.dat.gz", i)] == f"c{i}" for i in range(1, 101))  # one block: gzip does not split
    assert lines.lines_per_file == {"a.dat": 300, "b.dat": 40, "c.dat.gz": 100}


def test_invalid_utf8_is_rejected_as_bad_encoding(spark, tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t2\t3\t4\n1\t3\xff\t3\t4\n1\t4\xef\xbf\xbd\t3\t4\n")
    lines = sources.read_lines(spark, [InputFile(path, "u.data")], "UTF-8").frame
    parsed = by_line(sources.parse_ratings(lines, TAB_PLAN, RatingScale(1, 5, 1)))
    assert reasons(parsed) == {1: None, 2: "bad_encoding", 3: None}  # a U+FFFD the file holds is valid UTF-8
    assert parsed[2]["raw"] == "1\t3\ufffd\t3\t4" and parsed[3]["item_id"] == "4\ufffd"


def parse(spark, source, root, **options):
    plan = plan_ingest(source, root, **options)
    ratings, n_ratings = parse_rating_files(spark, plan)
    ratings = by_line(resolved(ratings))
    assert n_ratings == len(ratings)
    if plan.items is None:
        return ratings, None
    items, n_items = parse_item_files(spark, plan)
    items, counts = dedup.resolve(items, ["item_id"], dedup.file_order_newest_first())
    items = by_line(items)
    assert n_items == len(items) == sum(counts.values())
    return ratings, items


def test_movielens_100k_items_with_genre_flags(spark, tmp_path):
    write_lines(tmp_path / "u.data", ["1\t1\t5\t1"])
    flags = lambda *on: "|".join("1" if i in on else "0" for i in range(19))  # noqa: E731
    write_lines(
        tmp_path / "u.item",
        [
            f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}",
            f"2|Heat (1995)  |01-Jan-1995||http://x|{flags(1)}|",  # trailing delimiter
            f"267|unknown||||{flags(0)}",
            "4|Too short|x",
            f"543|Misérables, Les (1995)|||u|{flags(8, 12)}\r",
        ],
        encoding="latin-1",
    )
    _, items = parse(spark, "movielens-100k", tmp_path)
    assert reasons(items) == {1: None, 2: None, 3: None, 4: "unparseable", 5: None}
    assert (items[1]["item_id"], items[1]["title"], items[1]["year"]) == ("1", "Toy Story (1995)", 1995)
    assert items[1]["genres"] == ["Animation", "Children's", "Comedy"]
    assert items[2]["title"] == "Heat (1995)" and items[2]["genres"] == ["Action"]
    assert items[3]["year"] is None and items[3]["genres"] == ["unknown"]
    assert items[5]["title"] == "Misérables, Les (1995)" and items[5]["genres"] == ["Drama", "Musical"]


def test_movielens_1m_dat_files(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.dat",
        [
            "\ufeff1::1193::5::978300760",
            "2::1193::3::978300761",
            "3::0042::4::978300762::",  # trailing delimiter, leading zeros
            "4::1193::4.5::978300763",  # no half stars in 1M
            "not a rating",
            "5::1::2::978300765",
            "5::1::5::978300764",  # earlier timestamp: superseded although later in the file
            "6:: ::3::978300766",
            "7::8::3::978300767::x",
        ],
        newline="\r\n",
    )
    write_lines(
        tmp_path / "movies.dat",
        [
            "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
            "2::Misérables, Les (1995)::Drama|Musical",
            "0042::City of Lost Children, The (Cité des enfants perdus, La) (1995)::Adventure|Sci-Fi",
            "5::No genre field (1990)",
        ],
        encoding="latin-1",
    )
    ratings, items = parse(spark, "movielens-1m", tmp_path)
    assert reasons(ratings) == {
        1: None,
        2: None,
        3: None,
        4: "rating_out_of_scale",
        5: "unparseable",
        6: None,
        7: "duplicate_superseded",
        8: "missing_item",
        9: "unparseable",
    }
    assert (ratings[1]["user_id"], ratings[1]["item_id"], ratings[1]["timestamp"]) == ("1", "1193", 978300760)
    assert ratings[3]["item_id"] == "0042" and ratings[6]["rating"] == 2.0
    assert reasons(items) == {1: None, 2: None, 3: None, 4: "unparseable"}
    assert (items[2]["title"], items[2]["year"], items[2]["genres"]) == (
        "Misérables, Les (1995)",
        1995,
        ["Drama", "Musical"],
    )
    assert items[3]["title"].startswith("City of Lost Children, The (Cité") and items[3]["year"] == 1995


def test_movielens_10m_half_stars(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.dat", ["1::1::0.5::1", "1::2::4.5::1", "1::3::0::1", "1::4::5.5::1", "1::5::3.25::1"]
    )
    ratings, items = parse(spark, "movielens-10m", tmp_path)
    assert reasons(ratings) == {
        1: None,
        2: None,
        3: "rating_out_of_scale",
        4: "rating_out_of_scale",
        5: "rating_out_of_scale",
    }
    assert ratings[1]["rating"] == 0.5 and items is None


def test_movielens_latest_csv_with_rfc4180_quoting(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.csv",
        [
            "\ufeffuserId,movieId,rating,timestamp",
            "1,1,4.0,964982703",
            "1,3,4.5,964981247",
            "1,6,0.5,964982224",
            "1,47,5.5,964983815",
            "1,50,3.7,964982931",
            '"2","11",4,964982000',
            "garbage,,",
            "",
            "3,1,4.0,964982703,",
        ],
        newline="\r\n",
    )
    write_lines(
        tmp_path / "movies.csv",
        [
            "movieId,title,genres",
            "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
            '11,"American President, The (1995)",Comedy|Drama|Romance',
            '2,"""Great Performances"" Cats (1998)",Musical',
            "3,Misérables (2012),Drama",
            "4,Babylon 5,(no genres listed)",
            '5,"Unterminated,Drama',
            '6,"Comma, extra (2000)",Drama,Extra',
        ],
    )
    ratings, items = parse(spark, "movielens-latest", tmp_path)
    assert reasons(ratings) == {
        2: None,
        3: None,
        4: None,
        5: "rating_out_of_scale",
        6: "rating_out_of_scale",
        7: None,
        8: "unparseable",
        9: "blank_line",
        10: None,
    }
    assert [ratings[n]["rating"] for n in (2, 3, 4)] == [4.0, 4.5, 0.5]
    assert (ratings[7]["user_id"], ratings[7]["item_id"], ratings[10]["user_id"]) == ("2", "11", "3")
    assert reasons(items) == {2: None, 3: None, 4: None, 5: None, 6: None, 7: "unparseable", 8: "unparseable"}
    assert (items[3]["title"], items[3]["year"], items[3]["genres"]) == (
        "American President, The (1995)",
        1995,
        ["Comedy", "Drama", "Romance"],
    )
    assert items[4]["title"] == '"Great Performances" Cats (1998)'
    assert items[5]["title"] == "Misérables (2012)"
    assert (items[6]["year"], items[6]["genres"]) == (None, [])


def test_movietweetings_keeps_leading_zeros_and_the_0_to_10_scale(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.dat",
        [
            "1::0114508::8::1381006850",
            "2::0499549::9::1376753198",
            "2::0120735::10::1376753200",
            "3::0120735::0::1376753300",
            "3::0499549::11::1376753301",
            "4::0120735::7.5::1376753302",
            "5::0120735::6::1376753303",
            "5::0120735::6::1376753303",  # exact duplicate line: the later one stays
        ],
    )
    write_lines(
        tmp_path / "movies.dat",
        [
            "0114508::Species (1995)::Action|Horror|Sci-Fi",
            "0120735::Lock, Stock and Two Smoking Barrels (1998)::",
            "0000008::Edison Kinetoscopic Record of a Sneeze (1894)::Documentary|Short",
            "0211915::Amélie (2001)::Comedy|Romance",
            "0499549::Avatar (2009)",
        ],
    )
    (tmp_path / "users.dat").write_text("1::177651718\n")
    ratings, items = parse(spark, "movietweetings", tmp_path)
    assert reasons(ratings) == {
        1: None,
        2: None,
        3: None,
        4: None,
        5: "rating_out_of_scale",
        6: "rating_out_of_scale",
        7: "duplicate_superseded",
        8: None,
    }
    assert [ratings[n]["item_id"] for n in (1, 2, 3)] == ["0114508", "0499549", "0120735"]
    assert ratings[3]["rating"] == 10.0 and ratings[4]["rating"] == 0.0
    assert reasons(items) == {n: None for n in range(1, 6)}
    assert items[2]["item_id"] == "0120735" and items[2]["genres"] == [] and items[2]["year"] == 1998
    assert items[3]["item_id"] == "0000008" and items[3]["year"] == 1894
    assert items[4]["title"] == "Amélie (2001)" and items[5]["genres"] == []


def test_goodbooks_keeps_the_later_of_duplicates_by_file_order(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.csv", ["user_id,book_id,rating", "1,258,5", "2,4081,4", "1,258,3", "2,26,0", "3,26,5"]
    )
    header = (
        "book_id,goodreads_book_id,best_book_id,work_id,books_count,isbn,isbn13,authors,"
        "original_publication_year,original_title,title,language_code,average_rating,ratings_count,"
        "work_ratings_count,work_text_reviews_count,ratings_1,ratings_2,ratings_3,ratings_4,ratings_5,"
        "image_url,small_image_url"
    )
    tail = "eng,4.0,1,1,1,1,1,1,1,1,u,s"
    write_lines(
        tmp_path / "books.csv",
        [
            header,
            f'258,1,1,1,1,1,1,"J.K. Rowling, Mary GrandPré",1997.0,X,"Harry Potter (Harry Potter, #1)",{tail}',
            f"26,2,2,2,2,,,Homer,-750.0,Ὀδύσσεια,The Odyssey,{tail}",
            f'4081,3,3,3,3,,,Anon,,,"A Child Called ""It""",{tail}',
        ],
    )
    ratings, items = parse(spark, "goodbooks", tmp_path)
    assert reasons(ratings) == {2: "duplicate_superseded", 3: None, 4: None, 5: "rating_out_of_scale", 6: None}
    assert ratings[4]["rating"] == 3.0 and ratings[4]["timestamp"] is None
    assert reasons(items) == {2: None, 3: None, 4: None}
    assert (items[2]["title"], items[2]["year"]) == ("Harry Potter (Harry Potter, #1)", 1997)
    assert items[3]["year"] == -750 and items[4]["title"] == 'A Child Called "It"' and items[4]["year"] is None


def test_generic_csv_with_named_columns_and_inferred_scale(spark, tmp_path):
    write_lines(
        tmp_path / "events.tsv",
        [
            "member\tproduct\tstars\twhen",
            "a\tp1\t7\t2024-01-01 10:00:00",
            "b\tp1\t-2\t2024-01-02T00:00:00Z",
            "c\tp2\tten\t2024-01-02",
            "d\tp2\t3\tsoon",
        ],
    )
    ratings, _ = parse(
        spark,
        "csv",
        tmp_path,
        ratings_file="events.tsv",
        sep="\\t",
        user_col="member",
        item_col="product",
        rating_col="stars",
        timestamp_col="when",
    )
    assert reasons(ratings) == {2: None, 3: None, 4: "rating_not_numeric", 5: "timestamp_not_numeric"}
    assert ratings[2]["timestamp"] == 1704103200 and ratings[3]["rating"] == -2.0


def test_generic_parquet_ratings(spark, tmp_path):
    import pandas as pd

    pd.DataFrame(
        {
            "uid": [1, 2, 2, None],
            "iid": ["007", "8", "8", "9"],
            "score": [4.5, 2.0, 3.0, 1.0],
            "at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"], utc=True),
        }
    ).to_parquet(tmp_path / "ratings.parquet", coerce_timestamps="us")
    ratings, _ = parse(
        spark,
        "csv",
        tmp_path,
        ratings_file="ratings.parquet",
        user_col="uid",
        item_col="iid",
        rating_col="score",
        timestamp_col="at",
        rating_min=1,
        rating_max=5,
    )
    assert reasons(ratings) == {1: None, 2: "duplicate_superseded", 3: None, 4: "missing_user"}
    assert (ratings[1]["user_id"], ratings[1]["item_id"], ratings[1]["timestamp"]) == ("1", "007", 1704067200)
    assert ratings[3]["raw"].startswith('{"uid":2')


def test_unreadable_parquet_gives_a_clear_error(spark, tmp_path):
    import pandas as pd

    from cfmodel.errors import CfrecError

    pd.DataFrame(
        {"user_id": ["1"], "item_id": ["2"], "rating": [3.0], "at": pd.to_datetime(["2024-01-01"])}
    ).to_parquet(tmp_path / "ratings.parquet")
    with pytest.raises(CfrecError, match="cannot read ratings.parquet as Parquet: .*microseconds"):
        parse(spark, "csv", tmp_path, ratings_file="ratings.parquet")


def parse_extras(spark, source, root):
    plan = plan_ingest(source, root)
    out = {}
    for extra in plan.extras:
        parsed, n_rows = parse_extra_files(spark, extra)
        resolved_rows, counts = dedup.resolve(parsed, list(extra.key), dedup.file_order_newest_first())
        out[extra.table] = by_line(resolved_rows)
        assert n_rows == len(out[extra.table]) == sum(counts.values())
    return out, [spec.table for spec in plan.missing_extras]


def test_movielens_user_files(spark, tmp_path):
    ml100k, ml1m = tmp_path / "100k", tmp_path / "1m"
    write_lines(ml100k / "u.data", ["1\t1\t5\t1"])
    write_lines(
        ml100k / "u.user",
        [
            "1|24|M|technician|85711",
            "2|53|F|other|06405\r",  # leading zero in the zip code, CRLF
            "3|old|M|writer|32067",
            "|30|F|artist|10001",
            "4|25|M|student",
            "5|33|F|médecin|H3Z 2Y7|",  # latin-1 text, trailing delimiter
            "2|54|F|other|06405",  # later line for user 2 supersedes line 2
        ],
        encoding="latin-1",
    )
    users = parse_extras(spark, "movielens-100k", ml100k)[0]["users"]
    assert reasons(users) == {
        1: None,
        2: "duplicate_superseded",
        3: "age_not_numeric",
        4: "missing_user",
        5: "unparseable",
        6: None,
        7: None,
    }
    assert (users[1]["user_id"], users[1]["age"], users[1]["gender"], users[1]["zip_code"]) == ("1", 24, "M", "85711")
    assert users[7]["age"] == 54 and users[7]["zip_code"] == "06405"
    assert (users[6]["occupation"], users[6]["zip_code"]) == ("médecin", "H3Z 2Y7")

    write_lines(ml1m / "ratings.dat", ["1::1::5::1"])
    write_lines(ml1m / "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::"])
    users = parse_extras(spark, "movielens-1m", ml1m)[0]["users"]
    assert reasons(users) == {1: None, 2: None, 3: None}
    assert (users[2]["gender"], users[2]["age"], users[2]["occupation"], users[2]["zip_code"]) == (
        "M",
        56,
        "16",
        "70072",
    )
    assert users[3]["zip_code"] is None


def test_movietweetings_users_and_goodbooks_to_read(spark, tmp_path):
    tweets, books = tmp_path / "mt", tmp_path / "gb"
    write_lines(tweets / "ratings.dat", ["1::0114508::8::1381006850"])
    write_lines(tweets / "users.dat", ["1::177651718", "2::0042", "3"])
    users = parse_extras(spark, "movietweetings", tweets)[0]["users"]
    assert reasons(users) == {1: None, 2: None, 3: "unparseable"}
    assert users[2]["twitter_id"] == "0042"

    write_lines(books / "ratings.csv", ["user_id,book_id,rating", "1,258,5"])
    extras, missing = parse_extras(spark, "goodbooks", books)
    assert extras == {} and missing == ["to_read"]
    write_lines(
        books / "to_read.csv", ["\ufeffuser_id,book_id", "9,8", "9,8", "1,", "11,12,", '"12","0013"'], newline="\r\n"
    )
    to_read = parse_extras(spark, "goodbooks", books)[0]["to_read"]
    assert reasons(to_read) == {2: "duplicate_superseded", 3: None, 4: "missing_item", 5: None, 6: None}
    assert [(to_read[n]["user_id"], to_read[n]["item_id"]) for n in (3, 5, 6)] == [
        ("9", "8"),
        ("11", "12"),
        ("12", "0013"),
    ]


def test_ratings_must_be_plain_finite_decimals(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.csv",
        [
            "user_id,item_id,rating",
            "a,1,4",
            "a,2,4d",
            "a,3,0x1p2",
            "a,4,1e308",
            "a,5,-1e39",
            "a,6,1e30",
            "a,7,NaN",
            "a,8,Infinity",
            "a,9,+.5",
            "a,10,2.",
            "a,11,3.5e-1",
        ],
    )
    ratings, _ = parse(spark, "csv", tmp_path)
    assert reasons(ratings) == {
        2: None,
        3: "rating_not_numeric",
        4: "rating_not_numeric",
        5: "rating_overflow",
        6: "rating_overflow",
        7: None,
        8: "rating_not_numeric",
        9: "rating_not_numeric",
        10: None,
        11: None,
        12: None,
    }
    assert [ratings[n]["rating"] for n in (10, 11, 12)] == [0.5, 2.0, 0.35]


def test_a_quoted_field_running_over_two_lines_rejects_both(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.csv",
        ["userId,movieId,rating,timestamp", '"1,2,4.0,964982703', 'b",3,4.0,964982703', '"4",5,3.0,1'],
    )
    ratings, _ = parse(spark, "movielens-latest", tmp_path)
    assert reasons(ratings) == {2: "unparseable", 3: "unparseable", 4: None}


def test_ids_are_trimmed_of_any_whitespace_quoted_or_not(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.csv",
        ["user_id,item_id,rating", "\t7,1,4", '"\t7",2,4', '" 7 ",3,4', "7\t,4,4", '"7\u00a0",5,4', "7,\t,4"],
    )
    ratings, _ = parse(spark, "csv", tmp_path)
    assert {n: (r["user_id"], r["reason"]) for n, r in ratings.items() if n < 7} == {
        n: ("7", None) for n in range(2, 7)
    }
    assert ratings[7]["reason"] == "missing_item"  # an id of whitespace only is no id


def test_unquoted_ids_lose_non_ascii_whitespace_and_keep_other_characters(spark, tmp_path):
    write_lines(
        tmp_path / "ratings.csv",
        ["user_id,item_id,rating", "7\u2003,1,4", "\u30007,2,4", "7,\u00e9\u00a0,4", "\u00e9,\u00e8,4", "7,\u0085,4"],
    )
    ratings, _ = parse(spark, "csv", tmp_path)
    assert [(ratings[n]["user_id"], ratings[n]["item_id"], ratings[n]["reason"]) for n in range(2, 7)] == [
        ("7", "1", None),
        ("7", "2", None),
        ("7", "\u00e9", None),
        ("\u00e9", "\u00e8", None),
        ("7", "", "missing_item"),
    ]


def test_a_rating_is_numeric_exactly_when_written_as_a_plain_decimal(spark):
    # Every string of up to three characters over the characters that matter, against the grammar
    # `[+-]digits[.digits][e[+-]digits]` (also Python's float for these strings) and finiteness.
    import itertools
    import math
    import re

    grammar = re.compile(r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?")
    alphabet = "09.eE+-dFxXpnI"
    texts = ["".join(t) for n in range(4) for t in itertools.product(alphabet, repeat=n)]
    texts += ["NaN", "Infinity", "-Infinity", "inf", "0x1p2", "0x1.8p1d", "4.5f", "1e308", "1e309", "3.5e-1"]
    frame = spark.createDataFrame([(t,) for t in texts], "text string")
    values = frame.select("text", sources._decimal(F.col("text")).alias("value")).collect()
    got = {r["text"]: r["value"] for r in values}
    for text in texts:
        expected = float(text) if grammar.fullmatch(text) else None
        value = got[text]
        numeric = value is not None and math.isfinite(value)
        assert numeric == (expected is not None and math.isfinite(expected)), text
        if numeric:
            assert value == expected, text


@pytest.mark.parametrize("on_driver", [True, False])
def test_superseded_rows_on_the_driver_and_in_spark(spark, tmp_path, monkeypatch, on_driver):
    if not on_driver:
        monkeypatch.setattr(dedup, "DRIVER_HASH_ROWS", 0)
    rows = spark.createDataFrame(
        [
            ("f", 1, "a", "1", 100, None),
            ("f", 2, "a", "1", 300, None),  # newest of three
            ("f", 3, "a", "1", 200, None),
            ("f", 4, "a", "2", 100, None),
            ("f", 5, "b", "1", 100, None),
            ("f", 6, "b", "1", 100, None),  # same time: the later line wins
            ("f", 7, "b", "2", 100, "rating_out_of_scale"),  # a reject supersedes nothing
            ("f", 8, "b", "2", 50, None),
        ],
        "source_file string, line_number long, user_id string, item_id string, timestamp long, reason string",
    )
    superseded, count = dedup.superseded_rows(
        rows, dedup.RATING_KEY, dedup.ratings_newest_first(), 7, tmp_path / "hashes.parquet"
    )
    assert count == 3
    assert sorted(r["line_number"] for r in superseded.collect()) == [1, 3, 5]
    superseded.unpersist()
    unique = rows.where(~F.col("line_number").isin(1, 3, 5))
    assert dedup.superseded_rows(unique, dedup.RATING_KEY, dedup.ratings_newest_first(), 4, tmp_path / "none") == (
        None,
        0,
    )
