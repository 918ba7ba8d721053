"""Spark ingest throughput on a synthetic ratings file in the MovieLens 25M `ratings.csv` layout.

    .venv/bin/python bench/bench_ingest.py                   # 25M rows under /tmp/cfrec-bench
    .venv/bin/python bench/bench_ingest.py --rows 2000000    # a quicker run

Writes `ratings.csv` (header userId,movieId,rating,timestamp; sorted by user then movie; half-star
ratings; ~162k users and ~59k movies at 25M rows, as in ML-25M) unless an equal one is there,
then times:

- pyarrow.csv.read_csv of the file: just reading it into memory on one node, the lower bound;
- Spark's own CSV reader converting the file to Parquet with nothing checked (no line numbers,
  rejects, duplicates, increments or indices): what the Spark part costs by itself;
- cfmodel.pipeline.ingest (source movielens-latest): parse, validate, deduplicate, write the
  increment, rejects, report, current table and id indices (SparkSession start not included).

and prints both, rows per second, and their ratio, with the peak resident memory of the Python
driver, the Spark JVM and the Python workers during the ingest (bench/memory.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ML25M_ROWS, ML25M_USERS, ML25M_MOVIES = 25_000_095, 162_541, 59_047
HALF_STARS = np.array([f"{0.5 * k:.1f}" for k in range(1, 11)])
CHUNK_ROWS = 2_000_000


def synth_pairs(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, movie) pairs sorted by user then movie: skewed activity and popularity."""
    rng = np.random.default_rng(seed)
    n_users = max(10, round(ML25M_USERS * rows / ML25M_ROWS))
    n_movies = max(10, round(ML25M_MOVIES * rows / ML25M_ROWS))
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.9
    popularity /= popularity.sum()
    activity = rng.lognormal(0.0, 1.2, n_users)
    for _ in range(3):  # no user rates more than a third of the catalogue
        activity = np.minimum(activity / activity.sum(), n_movies / 3 / rows)
    activity /= activity.sum()
    users = rng.choice(n_users, rows, p=activity).astype(np.int64) + 1
    movies = rng.choice(n_movies, rows, p=popularity).astype(np.int64) + 1
    keys = np.unique(users * 1_000_000 + movies)
    while len(keys) < rows:  # replace repeated pairs with uniform draws, which rarely repeat
        need = rows - len(keys)
        extra = rng.integers(1, n_users + 1, need) * 1_000_000 + rng.integers(1, n_movies + 1, need)
        keys = np.unique(np.concatenate([keys, extra]))
    if len(keys) > rows:
        keys = np.delete(keys, rng.choice(len(keys), len(keys) - rows, replace=False))
    return keys // 1_000_000, keys % 1_000_000


def write_ratings(path: Path, rows: int, seed: int = 0) -> None:
    users, movies = synth_pairs(rows, seed)
    rng = np.random.default_rng(seed + 1)
    tmp = path.with_suffix(".tmp")
    schema = pa.schema(
        [
            ("userId", pa.int64()),
            ("movieId", pa.int64()),
            ("rating", pa.dictionary(pa.int8(), pa.string())),
            ("timestamp", pa.int64()),
        ]
    )
    with open(tmp, "wb") as sink:
        sink.write(b"userId,movieId,rating,timestamp\n")  # unquoted, as GroupLens writes it
        writer = pacsv.CSVWriter(
            sink, schema, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none")
        )
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            stars = pa.DictionaryArray.from_arrays(
                pa.array(rng.integers(0, 10, n, dtype=np.int8)), pa.array(HALF_STARS)
            )
            writer.write_batch(
                pa.record_batch(
                    [
                        pa.array(users[start : start + n]),
                        pa.array(movies[start : start + n]),
                        stars,
                        pa.array(rng.integers(789_652_009, 1_574_327_703, n)),
                    ],
                    names=["userId", "movieId", "rating", "timestamp"],
                )
            )
        writer.close()
    tmp.rename(path)


def ensure_input(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path, marker = folder / "ratings.csv", folder / "rows.json"
    if not (path.exists() and marker.exists() and json.loads(marker.read_text()) == {"rows": rows}):
        started = time.perf_counter()
        write_ratings(path, rows)
        marker.write_text(json.dumps({"rows": rows}))
        print(f"wrote {path} ({rows:,} rows) in {time.perf_counter() - started:.0f}s")
    return path


def write_night(folder: Path, rows: int, history_users: int, seed: int = 1) -> Path:
    """A night's `ratings.csv`: mostly new ratings of known users, some of new users, and 1% re-ratings
    of pairs the history holds (each such user's first movie in the history file), with later timestamps."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    users = rng.integers(1, int(history_users * 1.02) + 1, rows)  # ~2% of them new
    movies = rng.integers(1, ML25M_MOVIES + 1, rows)
    again = rng.random(rows) < 0.01
    users[again] = rng.integers(1, history_users + 1, int(again.sum()))
    frame = pd.DataFrame({"userId": users, "movieId": movies})
    first = pd.read_csv(folder.parent / "input" / "ratings.csv", usecols=[0, 1]).drop_duplicates("userId")
    frame.loc[again, "movieId"] = frame.loc[again, "userId"].map(first.set_index("userId")["movieId"]).to_numpy()
    frame = frame.dropna().drop_duplicates(["userId", "movieId"]).astype(np.int64)
    frame["rating"] = rng.choice(HALF_STARS, len(frame))
    frame["timestamp"] = 1_800_000_000 + np.arange(len(frame))
    frame.to_csv(folder / "ratings.csv", index=False)
    return folder / "ratings.csv"


def time_increment(work: Path, warehouse: Path, rows: int, history_users: int) -> dict:
    """Seconds of ingesting one night of `rows` ratings on top of the history in `warehouse`, and
    of ingesting the same night into an empty warehouse, with the pipeline's own counts checked."""
    from cfmodel.config import IngestConfig
    from cfmodel.ingest.job import ingest
    from cfmodel.spark import get_spark

    path = write_night(work / "night", rows, history_users)
    spark = get_spark("cfrec-bench-ingest")
    config = IngestConfig(source="movielens-latest", input_path=str(path.parent))
    figures = {}
    for name, target, date in (("on_history", warehouse, "2026-01-02"), ("on_empty", work / "empty", "2026-01-01")):
        shutil.rmtree(work / "empty", ignore_errors=True)
        started = time.perf_counter()
        night = ingest(spark, target, date, config)
        figures[f"night_{name}_s"] = round(time.perf_counter() - started, 1)
        assert night.input_rows == night.clean_rows + night.rejected_rows, night
        figures[f"night_{name}_ratings_rows"] = night.ratings_rows
        figures[f"night_{name}_superseded"] = night.superseded_earlier_rows
    shutil.rmtree(work / "empty", ignore_errors=True)
    figures["night_rows"] = night.input_rows
    figures["night_history_over_empty"] = round(figures["night_on_history_s"] / figures["night_on_empty_s"], 2)
    return figures


def time_pyarrow(path: Path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        table = pacsv.read_csv(path)
        best = min(best, time.perf_counter() - started)
        del table
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=25_000_000, help="rows in the synthetic file (default 25M)")
    parser.add_argument("--dir", default="/tmp/cfrec-bench", help="work folder, outside the repository")
    parser.add_argument("--repeats", type=int, default=2, help="pyarrow reads to take the best of (default 2)")
    parser.add_argument("--keep-warehouse", action="store_true", help="keep the warehouse the ingest wrote")
    parser.add_argument(
        "--increment",
        type=int,
        default=20_000,
        help="then time a night of this many ratings on top of the history and on an empty warehouse "
        "(default 20000; 0: none)",
    )
    args = parser.parse_args()

    work = Path(args.dir)
    path = ensure_input(work / "input", args.rows)
    size_mb = path.stat().st_size / 1e6
    load = os.getloadavg()[0]

    arrow_s = time_pyarrow(path, args.repeats)

    from memory import PeakMemory

    from cfmodel.config import IngestConfig
    from cfmodel.ingest.job import ingest
    from cfmodel.spark import get_spark

    started = time.perf_counter()
    spark = get_spark("cfrec-bench-ingest")
    spark_start_s = time.perf_counter() - started
    warehouse = work / "warehouse"
    shutil.rmtree(warehouse, ignore_errors=True)
    started = time.perf_counter()
    config = IngestConfig(source="movielens-latest", input_path=str(path.parent))
    with PeakMemory() as memory:
        report = asdict(ingest(spark, warehouse, "2026-01-01", config))
    ingest_s = time.perf_counter() - started
    plain = work / "plain-parquet"
    started = time.perf_counter()
    spark.read.schema("userId string, movieId string, rating float, timestamp long").option("header", True).csv(
        str(path)
    ).write.mode("overwrite").parquet(str(plain))
    plain_s = time.perf_counter() - started
    shutil.rmtree(plain, ignore_errors=True)
    night = None
    if args.increment:
        night = time_increment(work, warehouse, args.increment, report["users"])
    spark.stop()
    if not args.keep_warehouse:
        shutil.rmtree(warehouse, ignore_errors=True)

    assert report["input_rows"] == report["clean_rows"] == args.rows, report
    rows = report["input_rows"]
    print(
        json.dumps(
            {
                "file": str(path),
                "rows": rows,
                "megabytes": round(size_mb, 1),
                "cpus": os.cpu_count(),
                "load_average_before": round(load, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
                "pyarrow_read_csv_s": round(arrow_s, 2),
                "pyarrow_rows_per_s": round(rows / arrow_s),
                "spark_session_start_s": round(spark_start_s, 1),
                "spark_ingest_s": round(ingest_s, 1),
                "spark_ingest_rows_per_s": round(rows / ingest_s),
                "spark_over_pyarrow_time": round(ingest_s / arrow_s, 1),
                "spark_csv_to_parquet_unchecked_s": round(plain_s, 1),
                **{f"ingest_{key}": value for key, value in memory.summary().items()},
                "users": report["users"],
                "items": report["items"],
                **(night or {}),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
