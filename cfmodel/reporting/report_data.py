"""What the run report shows about a night, read from the warehouse's Parquet tables alone.

Every table but the night's recommendations may be missing (a popularity-only night has no metrics,
a warehouse filled by hand has no ingest report): each is then None, and the report says so. The
ratings table can be large, so only what the report needs of it is read: each item's number of
ratings and the sample users' ratings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cfmodel.config import run_date_value
from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, is_published
from cfmodel.warehouse.schemas import (
    INGEST_REPORT,
    ITEMS,
    METRICS,
    MODEL_RUNS,
    RATINGS,
    RECOMMENDATIONS,
    RUN_DATE,
    Table,
)

METRIC_NIGHTS = 30  # how far back the metric history goes
PREFERRED_SPLIT = "valid"  # the split the gate judges on
TOP_SHARE = 0.01  # "the most popular items": this fraction of the catalog
DECILES = 10
SAMPLE_USERS = 4
SAMPLE_SEED = 0


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "_"))


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if not _hidden(p))


def _read(files: list[Path], columns: list[str] | None = None) -> pd.DataFrame | None:
    if not files:
        return None
    return pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files], ignore_index=True)


def _read_nights(wh: Warehouse, table: Table | str, nights: list[str]) -> pd.DataFrame | None:
    found = wh.partitions(table)
    frames = [_read(_parquet_files(found[n])).assign(**{RUN_DATE: n}) for n in nights if n in found]
    return pd.concat(frames, ignore_index=True) if frames else None


@dataclass
class ReportData:
    run_date: str
    recommendations: pd.DataFrame
    items: pd.DataFrame | None  # item_id, title
    popularity: pd.Series | None  # item_id -> number of ratings
    samples: list[str]  # the users shown
    sample_ratings: pd.DataFrame | None  # their ratings: user_id, item_id, rating, timestamp
    model_runs: pd.DataFrame | None
    metrics: pd.DataFrame | None  # up to METRIC_NIGHTS nights up to run_date, with their run_date
    ingest: dict | None  # the night's ingest_report row

    def titles(self) -> pd.Series:
        """item_id -> title, from the items table and, for items it lacks, the lists themselves."""
        known = self.recommendations.dropna(subset=["title"]).drop_duplicates("item_id").set_index("item_id")["title"]
        if self.items is not None:
            known = self.items.drop_duplicates("item_id").set_index("item_id")["title"].combine_first(known)
        return known


def night_to_report(wh: Warehouse, run_date: str | None) -> str:
    """The night asked for, or the latest with complete recommendations; CfrecError if it has none."""
    published = [night for night, path in wh.partitions(RECOMMENDATIONS).items() if is_published(path)]
    if run_date is None:
        if not published:
            raise CfrecError(f"no recommendations in warehouse {wh.root}; run 'cfrec score' first")
        return published[-1]
    run_date = run_date_value(run_date)
    if run_date not in published:
        raise CfrecError(f"no recommendations for {run_date} in warehouse {wh.root}; run 'cfrec score' first")
    return run_date


def choose_samples(recommendations: pd.DataFrame, count: int = SAMPLE_USERS) -> list[str]:
    """A few users with lists, the same ones every time the night's report is written."""
    users = np.sort(recommendations["user_id"].unique())
    return sorted(np.random.default_rng(SAMPLE_SEED).choice(users, min(count, len(users)), replace=False))


def _from_ratings(files: list[Path], users: list[str]) -> tuple[pd.Series | None, pd.DataFrame | None]:
    """Each item's number of ratings, and the ratings of `users`."""
    if not files:
        return None, None
    ratings = ds.dataset(files, format="parquet")
    counts = pc.value_counts(ratings.to_table(columns=["item_id"])["item_id"])
    popularity = pd.Series(counts.field("counts").to_numpy(), index=counts.field("values").to_pandas())
    theirs = ratings.to_table(["user_id", "item_id", "rating", "timestamp"], filter=ds.field("user_id").isin(users))
    return popularity, theirs.to_pandas()


def gather(wh: Warehouse, run_date: str) -> ReportData:
    recommendations = _read(_parquet_files(wh.partition(RECOMMENDATIONS, run_date)))
    items = _read(wh.table_files(ITEMS), ["item_id", "title"])
    samples = choose_samples(recommendations)
    popularity, sample_ratings = _from_ratings(wh.table_files(RATINGS), samples)
    model_runs = _read(wh.table_files(MODEL_RUNS))
    nights = [n for n in wh.partitions(METRICS) if n <= run_date][-METRIC_NIGHTS:]
    metrics = _read_nights(wh, METRICS, nights)
    ingest = _read_nights(wh, INGEST_REPORT, [run_date])
    return ReportData(
        run_date,
        recommendations,
        items,
        popularity,
        samples,
        sample_ratings,
        model_runs,
        metrics,
        None if ingest is None else ingest.iloc[0].to_dict(),
    )


def metric_history(data: ReportData) -> pd.DataFrame | None:
    """One row per (night, metric): the night's model on the gate's split beside popularity.

    Where a night trained several models, the one promoted that night stands for it."""
    if data.metrics is None or data.metrics.empty:
        return None
    metrics = data.metrics
    splits = set(metrics["split"])
    split = PREFERRED_SPLIT if PREFERRED_SPLIT in splits else min(splits)
    metrics = metrics[metrics["split"] == split]
    promoted = set()
    if data.model_runs is not None:
        promoted = set(data.model_runs.loc[data.model_runs["promoted"].eq(True), "model_version"])
    chosen = (
        metrics.assign(not_promoted=~metrics["model_version"].isin(promoted))
        .sort_values([RUN_DATE, "not_promoted", "model_version"])
        .drop_duplicates([RUN_DATE, "metric"])
    )
    return chosen[[RUN_DATE, "metric", "model_version", "value", "popularity", "evaluated_users", "split"]]


def metric_names(history: pd.DataFrame, data: ReportData) -> list[str]:
    """Every metric in the history, the gate's first."""
    names = sorted(set(history["metric"]))
    if data.model_runs is not None:
        tonight = data.model_runs[data.model_runs["run_date"].astype(str) == data.run_date]
        gate = [m for m in tonight["gate_metric"].dropna() if m in names][:1]
        names = gate + [n for n in names if n not in gate]
    return names


def rejects(ingest: dict) -> pd.DataFrame:
    """One row per (input, reason) with its rejected rows."""

    def pairs(value: object) -> list[tuple[str, object]]:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return []
        return list(value.items()) if isinstance(value, dict) else [tuple(pair) for pair in value]

    rows = [("ratings", reason, n) for reason, n in pairs(ingest.get("rejects_by_reason"))]
    rows += [("items", reason, n) for reason, n in pairs(ingest.get("item_rejects_by_reason"))]
    for extra, by_reason in pairs(ingest.get("extra_rejects_by_reason")):
        rows += [(extra, reason, n) for reason, n in pairs(by_reason)]
    frame = pd.DataFrame(rows, columns=["input", "reason", "rows"])
    return frame[frame["rows"] > 0].sort_values(["rows", "input", "reason"], ascending=[False, True, True])


@dataclass
class Coverage:
    catalog_items: int
    catalog_from: str  # where the catalog's size comes from
    recommended_items: int
    top_items: int  # how many items are the most popular TOP_SHARE
    top_item_share: float  # of the night's recommendation rows, to those items
    users: int
    rows: int
    rows_by_source: dict[str, int]
    by_decile: pd.DataFrame | None  # decile (1 = most rated), share of ratings, share of recommendations


def coverage(data: ReportData) -> Coverage:
    """How much of the catalog the lists reach, and how much of them goes to the most popular items."""
    recs = data.recommendations
    if data.items is not None:
        catalog, catalog_from = pd.Index(data.items["item_id"].unique()), "items table"
    elif data.popularity is not None:
        catalog, catalog_from = data.popularity.index, "distinct rated items"
    else:
        catalog, catalog_from = pd.Index(recs["item_id"].unique()), "recommended items"
    by_source = {str(k): int(v) for k, v in recs["source"].value_counts().sort_index().items()}
    top_items, top_share, by_decile = 0, float("nan"), None
    if data.popularity is not None and len(catalog):
        counts = data.popularity
        popularity = pd.DataFrame({"item_id": catalog.union(counts.index)})
        popularity["ratings"] = popularity["item_id"].map(counts).fillna(0)
        popularity = popularity.sort_values(["ratings", "item_id"], ascending=[False, True], ignore_index=True)
        top_items = max(1, math.ceil(TOP_SHARE * len(popularity)))
        top_share = float(recs["item_id"].isin(popularity["item_id"].head(top_items)).mean())
        popularity["decile"] = np.arange(len(popularity)) * DECILES // len(popularity) + 1
        shown = recs["item_id"].map(popularity.set_index("item_id")["decile"]).value_counts()
        by_decile = popularity.groupby("decile").agg(ratings=("ratings", "sum"))
        by_decile["share_of_ratings"] = by_decile["ratings"] / max(by_decile["ratings"].sum(), 1)
        by_decile["share_of_recommendations"] = shown.reindex(by_decile.index).fillna(0) / max(len(recs), 1)
        by_decile = by_decile.reset_index()
    return Coverage(
        catalog_items=len(catalog),
        catalog_from=catalog_from,
        recommended_items=int(recs["item_id"].nunique()),
        top_items=top_items,
        top_item_share=top_share,
        users=int(recs["user_id"].nunique()),
        rows=len(recs),
        rows_by_source=by_source,
        by_decile=by_decile,
    )


def most_recommended(data: ReportData, limit: int = 20) -> pd.DataFrame:
    """The night's most recommended items: how many users got each, and how high in their lists."""
    top = (
        data.recommendations.groupby("item_id")
        .agg(users=("user_id", "nunique"), mean_rank=("rank", "mean"))
        .reset_index()
        .sort_values(["users", "mean_rank", "item_id"], ascending=[False, True, True])
        .head(limit)
    )
    top["title"] = top["item_id"].map(data.titles())
    if data.popularity is not None:
        top["ratings"] = top["item_id"].map(data.popularity).fillna(0).astype(int)
    return top


@dataclass
class SampleUser:
    user_id: str
    rated: pd.DataFrame  # their best and latest ratings, with titles
    recommended: pd.DataFrame  # their list tonight


def sample_users(data: ReportData, rated_shown: int = 10) -> list[SampleUser]:
    """The sample users' best and latest ratings beside their lists."""
    titles = data.titles()
    out = []
    for user in data.samples:
        rated = pd.DataFrame(columns=["item_id", "rating", "timestamp"])
        if data.sample_ratings is not None:
            mine = data.sample_ratings[data.sample_ratings["user_id"] == user]
            rated = mine.sort_values(["rating", "timestamp", "item_id"], ascending=[False, False, True])
        rated = rated.head(rated_shown).assign(title=lambda f: f["item_id"].map(titles))
        listed = data.recommendations[data.recommendations["user_id"] == user].sort_values("rank")
        out.append(SampleUser(user, rated, listed))
    return out
