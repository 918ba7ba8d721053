import pytest

from cfmodel import sources
from tests.conftest import write_lines

RATING_LINES = [
    ("u.data", 1, "1\t10\t4\t100"),
    ("u.data", 2, "\ufeff2\t20\t5\t100\r"),          # BOM and CRLF
    ("u.data", 3, "  3\t007\t3\t100\t"),             # surrounding space, trailing delimiter, leading zeros
    ("u.data", 4, ""),
    ("u.data", 5, "garbage"),
    ("u.data", 6, "\t10\t4\t100"),
    ("u.data", 7, "4\t\t4\t100"),
    ("u.data", 8, "4\t10\tfour\t100"),
    ("u.data", 9, "4\t10\t9\t100"),
    ("u.data", 10, "4\t10\t4\tyesterday"),
    ("u.data", 11, "5\t10\t2\t100"),                 # superseded by line 12 (later timestamp)
    ("u.data", 12, "5\t10\t5\t200"),
    ("u.data", 13, "5\t10\t1\t150"),                 # superseded as well
    ("u.data", 14, "6\t10\t1\t100"),                 # same timestamp: the later line wins
    ("u.data", 15, "6\t10\t3\t100"),
    ("u.data", 16, "7\t10\tNaN\t100"),
    ("u.data", 17, "1\t11\t4\t100\textra"),
    ("u.data", 18, "1\t12\t0.5\t100"),
]


@pytest.fixture(scope="module")
def parsed(spark):
    lines = spark.createDataFrame(RATING_LINES, sources.LINE_SCHEMA)
    rows = sources.parse_ratings(lines, "\t", 1.0, 5.0).orderBy("line_number").collect()
    return {r["line_number"]: r for r in rows}


def test_every_line_lands_once_with_the_expected_reason(parsed):
    reasons = {n: r["reason"] for n, r in parsed.items()}
    assert reasons == {
        1: None, 2: None, 3: None, 4: "blank_line", 5: "unparseable", 6: "missing_user", 7: "missing_item",
        8: "rating_not_numeric", 9: "rating_out_of_scale", 10: "timestamp_not_numeric",
        11: "duplicate_superseded", 12: None, 13: "duplicate_superseded", 14: "duplicate_superseded", 15: None,
        16: "rating_not_numeric", 17: "unparseable", 18: "rating_out_of_scale",
    }


def test_clean_rows_are_typed_and_ids_kept_as_spelled(parsed):
    assert (parsed[1]["user_id"], parsed[1]["item_id"], parsed[1]["rating"], parsed[1]["timestamp"]) == ("1", "10", 4.0, 100)
    assert parsed[2]["user_id"] == "2" and parsed[2]["timestamp"] == 100
    assert parsed[3]["user_id"] == "3" and parsed[3]["item_id"] == "007"
    assert parsed[12]["rating"] == 5.0 and parsed[15]["rating"] == 3.0
    assert parsed[5]["raw"] == "garbage"


def test_read_lines_numbers_lines_and_decodes_latin1(spark, tmp_path):
    path = write_lines(tmp_path / "u.item", ["1|Misérables, Les (1995)|x", "2|Señor Noël (1990)|y"], encoding="latin-1")
    rows = sources.read_lines(spark, path, "ISO-8859-1").orderBy("line_number").collect()
    assert [(r["source_file"], r["line_number"]) for r in rows] == [("u.item", 1), ("u.item", 2)]
    assert rows[0]["raw"].startswith("1|Misérables, Les (1995)")
    assert rows[1]["raw"] == "2|Señor Noël (1990)|y"


def test_invalid_utf8_is_rejected_as_bad_encoding(spark, tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t2\t3\t4\n1\t3\xff\t3\t4\n")
    lines = sources.read_lines(spark, path, "UTF-8")
    reasons = [r["reason"] for r in sources.parse_ratings(lines, "\t", 1, 5).orderBy("line_number").collect()]
    assert reasons == [None, "bad_encoding"]


def test_parse_movielens_items(spark):
    genres = ["unknown", "Action", "Comedy"]
    lines = spark.createDataFrame(
        [
            ("u.item", 1, "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1"),
            ("u.item", 2, "2|Heat (1995)  |01-Jan-1995||http://x|0|1|1\r"),
            ("u.item", 3, "3|Untitled|||http://x|1|0|0"),
            ("u.item", 4, "4|Too short|x"),
        ],
        sources.LINE_SCHEMA,
    )
    rows = {r["line_number"]: r for r in sources.parse_movielens_items(lines, "|", genres).collect()}
    assert (rows[1]["item_id"], rows[1]["title"], rows[1]["year"], rows[1]["genres"]) == ("1", "Toy Story (1995)", 1995, ["Comedy"])
    assert rows[2]["title"] == "Heat (1995)" and rows[2]["genres"] == ["Action", "Comedy"]
    assert rows[3]["year"] is None and rows[3]["reason"] is None
    assert rows[4]["reason"] == "unparseable"


def test_genre_names_come_from_u_genre(tmp_path):
    write_lines(tmp_path / "u.genre", ["Comedy|1", "unknown|0", ""])
    assert sources.read_genre_names(tmp_path) == ["unknown", "Comedy"]
    assert sources.read_genre_names(tmp_path / "missing") == sources.MOVIELENS_100K_GENRES
