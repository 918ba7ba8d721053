"""A night's run report: one static HTML page, `<warehouse>/reports/run_date=D/index.html`.

It answers what a person checks in the morning: which model made the lists and why it was
promoted, how the lists compare with the most-popular list over the last nights, what ingest
rejected, how much of the catalog the lists reach and how much goes to the most popular items,
and what a few users rated beside what they were recommended. The page needs nothing but itself:
charts are embedded PNGs, the style is inline, nothing is fetched, so it can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import math
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfmodel.reporting import report_data as rd
from cfmodel.reporting.plots import _png
from cfmodel.warehouse import Warehouse, publish
from cfmodel.warehouse.lock import writer_lock
from cfmodel.warehouse.schemas import REPORTS, RUN_DATE
from cfmodel.warehouse.transaction import active, all_or_nothing

REPORT_FILE = "index.html"
MODEL_SECTION = "Model"
METRICS_SECTION = "List metrics over the last nights"
REJECTS_SECTION = "Rows rejected by reason"
COVERAGE_SECTION = "Coverage and popularity bias"
MOST_RECOMMENDED_SECTION = "Most recommended items"
SAMPLE_SECTION = "Sample users"

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2330; margin: 24px auto; max-width: 1200px; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { border-bottom: 2px solid #d9dee8; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e3e7ef; }
th { text-align: left; background: #f3f5f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.lead { color: #4a5366; margin-top: 0; }
.verdict { background: #eef6ee; padding: 8px 12px; border-left: 4px solid #3a8d3a; }
.verdict.no { background: #fbf1e6; border-color: #d48a2c; }
.missing { color: #8a93a6; font-style: italic; }
.charts, .pair { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
img { max-width: 100%; }
"""
# Marks the page with how many of its images the browser failed to decode: a check for headless browsers.
IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.loadedImages = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.brokenImages = images.filter(function (i) { return i.naturalWidth === 0; }).length;
});
</script>"""
MODEL_RUN_COLUMNS = {
    "model_version": "version",
    "model_type": "type",
    "promoted": "promoted",
    "gate_metric": "gate metric",
    "gate_value": "value",
    "compared_with": "judged against",
    "compared_value": "its value",
    "popularity_value": "popularity",
    "data_ratings": "ratings",
    "train_seconds": "train s",
    "is_current": "current",
}


def report_path(root: str | Path, run_date: str) -> Path:
    return Warehouse(Path(root)).partition(REPORTS, run_date) / REPORT_FILE


def write_report(root: str | Path, run_date: str | None = None) -> Path:
    """Write the report of `run_date` (default: the latest night with recommendations) and return its path.

    Inside a night's step (`publish_tables`) it joins that step's lock and transaction, so the report
    appears with the tables it describes or not at all; on its own it takes the writer lock itself,
    as every writer of the warehouse does. A re-run replaces the night's report."""
    if active() is not None:
        return _write(Path(root), run_date)
    with writer_lock(Path(root), "report"), all_or_nothing(Path(root), "report"):
        return _write(Path(root), run_date)


def _write(root: Path, run_date: str | None) -> Path:
    wh = Warehouse.open(root, create=False)
    night = rd.night_to_report(wh, run_date)
    page = render(rd.gather(wh, night))

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        (tmp / REPORT_FILE).write_text(page, encoding="utf-8")

    publish(wh.partition(REPORTS, night), write)
    return report_path(wh.root, night)


# -- HTML pieces ------------------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value))


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _cell(value: object, decimals: int = 4) -> str:
    """A table cell: numbers right-aligned and rounded, nothing shown as a dash."""
    if _missing(value):
        return "<td>–</td>"
    if isinstance(value, bool | np.bool_):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, Integral):
        return f'<td class="num">{int(value):,}</td>'
    if isinstance(value, Real):
        number = float(value)
        return f'<td class="num">{number:,.{decimals if abs(number) < 10 else min(decimals, 1)}f}</td>'
    return f"<td>{_e(value)}</td>"


def _table(frame: pd.DataFrame, columns: dict[str, str], decimals: dict[str, int] | None = None) -> str:
    """`frame`'s `columns` (name -> heading) as an HTML table; `decimals`: of the columns that need fewer than 4."""
    decimals = decimals or {}
    head = "".join(f"<th>{_e(heading)}</th>" for heading in columns.values())
    rows = ["".join(_cell(row[name], decimals.get(name, 4)) for name in columns) for _, row in frame.iterrows()]
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(pairs: list[tuple[str, object]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th>{_cell(v)}</tr>" for k, v in pairs) + "</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_e(alt)}">'


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _not_available(what: str) -> str:
    return f'<p class="missing">{_e(what)} not available.</p>'


def _percent(share: float) -> str:
    return "–" if _missing(share) else f"{100 * share:.1f}%"


# -- charts -----------------------------------------------------------------------------------------------------------


def metric_png(history: pd.DataFrame, metric: str) -> bytes:
    """The model's value and the most-popular list's, night by night."""
    rows = history[history["metric"] == metric].sort_values(RUN_DATE)
    fig = Figure(figsize=(3.7, 2.5))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ax.plot(x, rows["value"].astype(float), "o-", label="model")
    ax.plot(x, rows["popularity"].astype(float), "s--", color="#888", label="popularity")
    step = max(1, math.ceil(len(rows) / 6))
    ax.set_xticks(x[::step], [str(d)[5:] for d in rows[RUN_DATE].iloc[::step]])
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_title(metric)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def rejects_png(rejects: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(6, 0.5 + 0.35 * len(rejects)))
    ax = fig.add_subplot()
    labels = [f"{r.input}: {r.reason}" for r in rejects.itertuples()]
    ax.barh(labels[::-1], rejects["rows"].to_numpy()[::-1], color="#d48a2c")
    ax.set_xlabel("rows rejected")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def deciles_png(by_decile: pd.DataFrame) -> bytes:
    """Where the lists go beside where the ratings are, by item popularity decile."""
    fig = Figure(figsize=(6.5, 3))
    ax = fig.add_subplot()
    x = by_decile["decile"].to_numpy()
    ax.bar(x - 0.2, 100 * by_decile["share_of_ratings"], 0.4, label="share of ratings", color="#9aa7bd")
    ax.bar(x + 0.2, 100 * by_decile["share_of_recommendations"], 0.4, label="share of recommendations")
    ax.set_xticks(x)
    ax.set_xlabel("item popularity decile (1 = most rated)")
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


# -- sections ---------------------------------------------------------------------------------------------------------


def _model_section(data: rd.ReportData) -> str:
    scored_by = ", ".join(sorted(data.recommendations["model_version"].dropna().astype(str).unique())) or "–"
    parts = [f"<p>Lists scored by <b>{_e(scored_by)}</b>.</p>"]
    if data.model_runs is None:
        return _section(MODEL_SECTION, *parts, _not_available("Model runs"))
    runs = data.model_runs
    current = runs.loc[runs["is_current"].eq(True), "model_version"]
    parts.append(f"<p>Current model: <b>{_e(current.iloc[0] if len(current) else 'none')}</b>.</p>")
    tonight = runs[runs["run_date"].astype(str) == data.run_date].sort_values("model_version")
    if tonight.empty:
        parts.append(f'<p class="verdict no">No model was trained for {_e(data.run_date)}.</p>')
    for run in tonight.itertuples():
        verdict = "promoted" if run.promoted else "not promoted"
        reason = "" if _missing(run.promotion_reason) else f": {run.promotion_reason}"
        css = "verdict" if run.promoted else "verdict no"
        parts.append(f'<p class="{css}"><b>{_e(run.model_version)}</b> was {verdict}{_e(reason)}.</p>')
    if not tonight.empty:
        parts.append(_table(tonight, MODEL_RUN_COLUMNS, {"train_seconds": 1}))
    return _section(MODEL_SECTION, *parts)


def _metrics_section(data: rd.ReportData) -> str:
    history = rd.metric_history(data)
    if history is None:
        return _section(METRICS_SECTION, _not_available("Metrics"))
    names = rd.metric_names(history, data)
    nights = history[RUN_DATE].nunique()
    charts = "".join(_img(metric_png(history, name), f"{name} per night") for name in names)
    tonight = history[history[RUN_DATE] == data.run_date].set_index("metric").reindex(names).dropna(how="all")
    tonight = tonight.reset_index().assign(lift=lambda f: f["value"] / f["popularity"].where(f["popularity"] > 0))
    columns = {
        "metric": "metric",
        "model_version": "model",
        "value": "value",
        "popularity": "popularity",
        "lift": "model ÷ popularity",
        "evaluated_users": "users",
    }
    split = history["split"].iloc[0]
    table = _table(tonight, columns) if len(tonight) else _not_available(f"Metrics for {data.run_date}")
    lead = f'<p class="lead">{_e(split)} split, {nights} night(s) up to {_e(data.run_date)}; the night:</p>'
    return _section(METRICS_SECTION, f'<div class="charts">{charts}</div>', lead, table)


def _rejects_section(data: rd.ReportData) -> str:
    if data.ingest is None:
        return _section(REJECTS_SECTION, _not_available(f"Ingest report for {data.run_date}"))
    ingest = data.ingest
    facts = _facts(
        [
            ("input rows", ingest.get("input_rows")),
            ("clean rows", ingest.get("clean_rows")),
            ("rejected rows", ingest.get("rejected_rows")),
            ("item rows read", ingest.get("item_input_rows")),
            ("item rows kept", ingest.get("item_rows")),
            ("item rows rejected", ingest.get("item_rejects")),
        ]
    )
    rejects = rd.rejects(ingest)
    if rejects.empty:
        return _section(REJECTS_SECTION, facts, "<p>No rows rejected.</p>")
    table = _table(rejects, {"input": "input", "reason": "reason", "rows": "rows"})
    chart = _img(rejects_png(rejects), "rows rejected by reason")
    return _section(REJECTS_SECTION, facts, f'<div class="pair">{table}{chart}</div>')


def _coverage_section(data: rd.ReportData) -> str:
    cover = rd.coverage(data)
    sources = ", ".join(f"{source} {rows:,}" for source, rows in cover.rows_by_source.items())
    facts = _facts(
        [
            ("users with a list", cover.users),
            ("recommendation rows", cover.rows),
            ("rows by source", sources),
            (f"catalog items ({cover.catalog_from})", cover.catalog_items),
            ("items in at least one list", cover.recommended_items),
            ("share of the catalog in some list", _percent(cover.recommended_items / max(cover.catalog_items, 1))),
            (f"rows going to the {cover.top_items:,} most rated items (top 1%)", _percent(cover.top_item_share)),
        ]
    )
    if cover.by_decile is None:
        return _section(COVERAGE_SECTION, facts, _not_available("Item popularity (ratings table)"))
    chart = _img(deciles_png(cover.by_decile), "recommendations by item popularity decile")
    return _section(COVERAGE_SECTION, f'<div class="pair">{facts}{chart}</div>')


def _most_recommended_section(data: rd.ReportData) -> str:
    top = rd.most_recommended(data).reset_index(drop=True)
    top.insert(0, "place", np.arange(1, len(top) + 1))
    top["share"] = (top["users"] / max(data.recommendations["user_id"].nunique(), 1)).map(_percent)
    columns = {"place": "#", "title": "title", "item_id": "item", "users": "users", "share": "of users"}
    columns |= {"mean_rank": "mean rank"} | ({"ratings": "ratings"} if "ratings" in top else {})
    return _section(MOST_RECOMMENDED_SECTION, _table(top, columns, {"mean_rank": 2}))


def _sample_section(data: rd.ReportData) -> str:
    parts = []
    for user in rd.sample_users(data):
        rated = user.rated.assign(day=[None if _missing(t) else _day(t) for t in user.rated["timestamp"]])
        rated_html = (
            _table(rated, {"title": "title", "rating": "rating", "day": "rated on"}, {"rating": 1})
            if len(rated)
            else '<p class="missing">No ratings.</p>'
        )
        listed = _table(
            user.recommended,
            {
                "rank": "#",
                "title": "title",
                "score": "score",
                "predicted_rating": "predicted",
                "because_title": "because they rated",
                "source": "source",
            },
            {"score": 3, "predicted_rating": 2},
        )
        parts.append(
            f"<h3>User {_e(user.user_id)}</h3>"
            f'<div class="pair"><div><b>Rated highest, then latest</b>{rated_html}</div>'
            f"<div><b>Recommended</b>{listed}</div></div>"
        )
    return _section(SAMPLE_SECTION, *parts)


def _day(timestamp: object) -> str:
    return pd.Timestamp(int(timestamp), unit="s").date().isoformat()


def render(data: rd.ReportData) -> str:
    """The whole page: every section, each saying so when its table is missing."""
    body = "".join(
        [
            f"<h1>Run report: night of {_e(data.run_date)}</h1>",
            '<p class="lead">cfrec nightly recommendations, from the warehouse\'s tables.</p>',
            _model_section(data),
            _metrics_section(data),
            _rejects_section(data),
            _coverage_section(data),
            _most_recommended_section(data),
            _sample_section(data),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cfrec run report {_e(data.run_date)}</title><style>{CSS}</style></head>"
        f"<body>{body}{IMAGE_PROBE}</body></html>\n"
    )
