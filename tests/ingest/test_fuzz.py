"""Fuzzing the ingest parsers: whatever the lines, every one is clean or a reject, and nothing escapes.

Lines are generated from the pieces real files are made of (ids, numbers in every spelling,
separators, quotes, blanks, odd characters and invalid bytes), mixed at random, and run through
the real parse of each text source.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfmodel.ingest.job import parse_rating_files
from cfmodel.ingest.planning import plan_ingest

pytestmark = pytest.mark.slow

PIECES = st.sampled_from(
    [
        "1",
        "42",
        "0120735",
        "tt0111161",
        "4",
        "4.5",
        "5.5",
        "-1",
        "1e308",
        "4d",
        "0x1p2",
        "NaN",
        "Infinity",
        "",
        " ",
        "\t",
        ",",
        "::",
        "|",
        '"',
        '""',
        '"a,b"',
        "é",
        "\ufffd",
        "\u2028",
        "964982703",
        "2024-01-01",
        "x" * 50,
    ]
)
LINE = st.lists(PIECES, min_size=0, max_size=9).map("".join)
RAW_BYTES = st.binary(min_size=0, max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b)
SOURCES = {  # source -> (file, header line)
    "movielens-100k": ("u.data", None),
    "movielens-1m": ("ratings.dat", None),
    "movielens-latest": ("ratings.csv", b"userId,movieId,rating,timestamp"),
    "goodbooks": ("ratings.csv", b"user_id,book_id,rating"),
}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.sampled_from(sorted(SOURCES)),
    lines=st.lists(st.one_of(LINE.map(lambda t: t.encode("utf-8")), RAW_BYTES), min_size=1, max_size=60),
    crlf=st.booleans(),
)
def test_every_generated_line_is_clean_or_a_reject(spark, tmp_path_factory, source, lines, crlf):
    root = tmp_path_factory.mktemp("fuzz")
    name, header = SOURCES[source]
    ending = b"\r\n" if crlf else b"\n"
    body = ([header] if header else []) + lines
    (root / name).write_bytes(ending.join(body) + ending)
    plan = plan_ingest(source, root)
    parsed, input_rows = parse_rating_files(spark, plan)
    rows = parsed.select("line_number", "reason", "rating").collect()
    assert len(rows) == input_rows == len(lines)
    assert len({r["line_number"] for r in rows}) == len(rows)
    for row in rows:  # a clean rating is a finite number on the source's scale
        if row["reason"] is None:
            assert plan.scale.min <= row["rating"] <= plan.scale.max
