"""Source layouts and input planning: no Spark needed, so bad input is caught before a JVM starts."""

import pytest
from support import write_lines

from cfmodel.errors import CfrecError
from cfmodel.ingest.layouts import LATIN1, SOURCES, UTF8
from cfmodel.ingest.planning import plan_ingest, read_genre_names
from cfmodel.ingest.source_options import KNOWN_SOURCES, get_layout


def test_every_named_source_declares_a_rating_scale_and_files():
    assert KNOWN_SOURCES == [
        "csv",
        "goodbooks",
        "movielens-100k",
        "movielens-10m",
        "movielens-1m",
        "movielens-latest",
        "movietweetings",
    ]
    scales = {name: (s.scale.min, s.scale.max, s.scale.step) for name, s in SOURCES.items()}
    assert scales == {
        "movielens-100k": (1, 5, 1),
        "movielens-1m": (1, 5, 1),
        "movielens-10m": (0.5, 5, 0.5),
        "movielens-latest": (0.5, 5, 0.5),
        "movietweetings": (0, 10, 1),
        "goodbooks": (1, 5, 1),
    }
    assert SOURCES["movielens-1m"].items.text.encoding == LATIN1
    assert SOURCES["movietweetings"].items.text.encoding == UTF8
    assert SOURCES["goodbooks"].ratings.timestamp is None


@pytest.mark.parametrize(
    "source, options, message",
    [
        ("netflix", {}, "unknown source 'netflix' (known: csv, goodbooks, movielens-100k"),
        ("movielens-100k", {"sep": ","}, "--sep: only for --source csv"),
        ("movielens-100k", {"colour": "red"}, "unknown ingest option(s): colour"),
        ("movielens-100k", {"encoding": "klingon"}, "unknown encoding 'klingon'"),
        ("movielens-100k", {"encoding": "utf-16"}, "encoding 'utf-16' is not supported"),
        ("csv", {"rating_min": 1}, "give both --rating-min and --rating-max"),
        ("csv", {"rating_min": 5, "rating_max": 1}, "--rating-min 5.0 must be below --rating-max 1.0"),
        ("csv", {"rating_step": 0}, "--rating-step must be positive"),
        ("csv", {"header": False}, "--user-col must be a 0-based column position when the file has no header"),
        ("csv", {"format": "xlsx"}, "--format must be csv or parquet"),
        ("csv", {"sep": '"'}, "--sep must be a non-empty separator without quotes"),
    ],
)
def test_bad_options_give_a_clear_error(source, options, message):
    with pytest.raises(CfrecError) as error:
        get_layout(source, **options)
    assert message in str(error.value)


def test_encoding_names_are_normalised():
    assert get_layout("movielens-1m", encoding="latin1").items.text.encoding == LATIN1
    assert get_layout("movielens-1m", encoding="utf8").ratings.text.encoding == UTF8
    assert get_layout("movielens-1m", encoding="ascii").ratings.text.encoding == UTF8


def test_header_names_resolve_to_positions_bom_and_case_tolerated(tmp_path):
    write_lines(tmp_path / "ratings.csv", ["\ufeffUserId,movieId,rating,timestamp", "1,2,3.5,4"], newline="\r\n")
    write_lines(tmp_path / "movies.csv", ["movieId,title,genres", "2,X (1999),Drama"])
    plan = plan_ingest("movielens-latest", tmp_path)
    r = plan.ratings
    assert (r.user, r.item, r.rating, r.timestamp, r.n_fields) == (0, 1, 2, 3, 4)
    assert (plan.items.item, plan.items.title, plan.items.genres.column, plan.items.max_fields) == (0, 1, 2, 3)


def test_goodbooks_books_columns_come_from_the_real_header(tmp_path):
    header = (
        "book_id,goodreads_book_id,best_book_id,work_id,books_count,isbn,isbn13,authors,"
        "original_publication_year,original_title,title,language_code,average_rating,ratings_count,"
        "work_ratings_count,work_text_reviews_count,ratings_1,ratings_2,ratings_3,ratings_4,ratings_5,"
        "image_url,small_image_url"
    )
    write_lines(tmp_path / "ratings.csv", ["user_id,book_id,rating"])
    write_lines(tmp_path / "books.csv", [header])
    items = plan_ingest("goodbooks", tmp_path).items
    assert (items.item, items.title, items.year, items.min_fields, items.max_fields) == (0, 10, 8, 23, 23)


@pytest.mark.parametrize(
    "files, source, options, message",
    [
        ({}, "movietweetings", {}, "has no ratings.dat (expected the movietweetings layout)"),
        (
            {"ratings.csv": ["user,book_id,rating"]},
            "goodbooks",
            {},
            "ratings.csv has no column 'user_id' (header: user,book_id,rating)",
        ),
        ({"ratings.csv": []}, "goodbooks", {}, "is empty: expected a header line"),
        (
            {"a.csv": ["u,i,r"], "b.csv": ["u,i,r,t"]},
            "csv",
            {"ratings_file": "*.csv", "user_col": "u", "item_col": "i", "rating_col": "r"},
            "b.csv has header u,i,r,t but a.csv has u,i,r",
        ),
        (
            {"r.tsv": ["1\t2\t3"]},
            "csv",
            {
                "ratings_file": "r.tsv",
                "header": False,
                "user_col": 0,
                "item_col": 1,
                "rating_col": 2,
                "timestamp_col": 7,
            },
            None,
        ),
    ],
)
def test_planning_rejects_inputs_that_do_not_match_the_layout(tmp_path, files, source, options, message):
    for name, lines in files.items():
        (tmp_path / name).write_text("".join(line + "\n" for line in lines))
    if message is None:
        plan = plan_ingest(source, tmp_path, **options)
        assert plan.ratings.n_fields == 8  # the highest position named decides the field count
        return
    with pytest.raises(CfrecError) as error:
        plan_ingest(source, tmp_path, **options)
    assert message in str(error.value)


def test_missing_folder_and_glob_patterns(tmp_path):
    with pytest.raises(CfrecError, match="input folder .*/nowhere does not exist"):
        plan_ingest("movielens-100k", tmp_path / "nowhere")
    for name in ("ratings-2.csv", "ratings-1.csv", "notes.txt"):
        (tmp_path / name).write_text("user_id,item_id,rating\n")
    plan = plan_ingest("csv", tmp_path, ratings_file="ratings-*.csv")
    assert [f.name for f in plan.ratings.files] == ["ratings-1.csv", "ratings-2.csv"]
    assert plan.items is None and not plan.scale.known


def test_a_movielens_split_is_ingested_with_ratings_file(tmp_path):
    write_lines(tmp_path / "u1.base", ["1\t2\t3\t4"])
    plan = plan_ingest("movielens-100k", tmp_path, ratings_file="u1.base")
    assert [f.name for f in plan.ratings.files] == ["u1.base"] and plan.items is None


def test_genre_names_come_from_u_genre(tmp_path):
    write_lines(tmp_path / "u.genre", ["Comedy|1", "unknown|0", ""])
    assert read_genre_names(tmp_path) == ["unknown", "Comedy"]
    assert len(read_genre_names(tmp_path / "missing")) == 19
    write_lines(tmp_path / "u.data", ["1\t2\t3\t4"])
    write_lines(tmp_path / "u.item", ["1|A|||u|0|1"])
    assert plan_ingest("movielens-100k", tmp_path).items.max_fields == 7  # 5 fixed fields + 2 genre flags
    write_lines(tmp_path / "u.genre", ["Comedy|one"])
    with pytest.raises(CfrecError, match="not 'name|index'"):
        read_genre_names(tmp_path)


def test_file_patterns_stay_inside_the_input_folder(tmp_path):
    inside = tmp_path / "in"
    write_lines(inside / "u.data", ["1\t2\t3\t4"])
    write_lines(tmp_path / "secret.data", ["1\t2\t3\t4"])
    (inside / "link.data").symlink_to(tmp_path / "secret.data")
    for pattern, message in (
        ("../secret.data", "must name files inside the input folder"),
        (str(tmp_path / "secret.data"), "must name files inside the input folder"),
        ("../../../../etc/passwd", "must name files inside the input folder"),
        ("link.data", "leads outside the input folder"),
    ):
        with pytest.raises(CfrecError, match=message):
            plan_ingest("movielens-100k", inside, ratings_file=pattern)
        with pytest.raises(CfrecError, match=message):
            plan_ingest("movielens-100k", inside, items_file=pattern)
