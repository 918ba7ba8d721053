"""The nightly merge of `ratings` gives what a rebuild from every increment gives, timestamps or none."""

import pandas as pd

from cfmodel.ingest.increments import materialise_ratings
from cfmodel.warehouse import Warehouse

NONE = None


def write_increment(wh, run_date: str, rows: list[tuple]) -> None:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame = frame.astype({"rating": "float32", "timestamp": "Int64"})
    folder = wh / "ratings_increments" / f"run_date={run_date}"
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "part-00000.parquet", index=False)


def table(wh) -> list[tuple]:
    frame = pd.read_parquet(wh / "ratings").astype({"timestamp": "Int64"})
    rows = frame[["user_id", "item_id", "rating", "timestamp"]].itertuples(index=False)
    return sorted((u, i, float(r), None if pd.isna(t) else int(t)) for u, i, r, t in rows)


def test_merge_orders_ratings_as_the_rebuild_does_with_and_without_timestamps(spark, tmp_path):
    wh = tmp_path / "wh"
    write_increment(
        wh,
        "2026-04-01",
        [
            ("a", "1", 1.0, 10),  # tonight later: tonight wins
            ("a", "2", 2.0, 10),  # tonight earlier: this stays
            ("a", "3", 3.0, 10),  # the same timestamp: the later night wins
            ("b", "1", 4.0, NONE),  # none before, one tonight: tonight wins
            ("b", "2", 5.0, 10),  # one before, none tonight: this stays
            ("b", "3", 1.0, NONE),  # none on both nights: the later night wins
            ("c", "1", 2.0, NONE),  # untouched, without a timestamp
            ("a", "4", 3.0, 7),  # untouched, a user of tonight's
        ],
    )
    first = materialise_ratings(spark, Warehouse.open(wh), "2026-04-01")
    assert (first.rows, first.merged) == (8, False)
    write_increment(
        wh,
        "2026-04-02",
        [
            ("a", "1", 5.0, 20),
            ("a", "2", 4.0, 5),
            ("a", "3", 3.5, 10),
            ("b", "1", 2.5, 1),
            ("b", "2", 1.5, NONE),
            ("b", "3", 4.5, NONE),
            ("d", "9", 1.0, NONE),  # a new pair without a timestamp
        ],
    )
    merged = materialise_ratings(spark, Warehouse.open(wh), "2026-04-02")
    assert merged.merged and (merged.rows, merged.increment_rows) == (9, 15)
    expected = [
        ("a", "1", 5.0, 20),
        ("a", "2", 2.0, 10),
        ("a", "3", 3.5, 10),
        ("a", "4", 3.0, 7),
        ("b", "1", 2.5, 1),
        ("b", "2", 5.0, 10),
        ("b", "3", 4.5, None),
        ("c", "1", 2.0, None),
        ("d", "9", 1.0, None),
    ]
    assert table(wh) == expected
    rebuilt = materialise_ratings(spark, Warehouse.open(wh), "2026-04-02")  # holds the night: a rebuild
    assert not rebuilt.merged and table(wh) == expected and rebuilt.rows == 9
