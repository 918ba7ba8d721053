"""The nightly run report: written by the night's tables step, whole and self-contained, readable in a browser."""

import html
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support import planted_ratings, write_warehouse

from cfmodel import pipeline
from cfmodel.cli import main
from cfmodel.config import GateConfig, IngestConfig, Night, ScoreConfig, TablesConfig, TrainRun
from cfmodel.datasets.synth import SynthSpec, generate
from cfmodel.reporting import report
from cfmodel.reporting.report import report_path, write_report
from cfmodel.training.config import TrainConfig
from cfmodel.warehouse import Warehouse, publish, write_arrow
from cfmodel.warehouse.lock import writer_lock
from cfmodel.warehouse.schemas import RECOMMENDATIONS
from cfmodel.warehouse.transaction import all_or_nothing

FIRST, SECOND = "2026-05-01", "2026-05-02"
SECTIONS = (
    report.MODEL_SECTION,
    report.METRICS_SECTION,
    report.REJECTS_SECTION,
    report.COVERAGE_SECTION,
    report.MOST_RECOMMENDED_SECTION,
    report.SAMPLE_SECTION,
)
EMBEDDED_PNG = '<img src="data:image/png;base64,'


def awkward_titles(u_item):
    """Every title gets characters that mean something in HTML."""
    lines = u_item.read_text(encoding="latin-1").splitlines()
    fields = [line.split("|") for line in lines]
    for f in fields:
        f[1] = re.sub(r" \((\d{4})\)$", r" & <Co> (\1)", f[1])
    u_item.write_text("".join("|".join(f) + "\n" for f in fields), encoding="latin-1")


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory):
    """Two nights of the nightly steps on a small synthetic data set with two malformed rows. The
    first night only trains and evaluates a model, on the same ratings: a second Spark ingest would
    double the time and show the report nothing more."""
    root = tmp_path_factory.mktemp("report")
    source, wh = root / "input", root / "wh"
    generate(source, SynthSpec(n_users=150, n_items=300, n_ratings=4000))
    awkward_titles(source / "u.item")
    with open(source / "u.data", "a") as f:
        f.write("1\t2\t9\t874724710\n2\t3\tfour\t874724710\n")
    first, second = Night(str(wh), FIRST), Night(str(wh), SECOND)
    pipeline.ingest(spark, second, IngestConfig(source="movielens-100k", input_path=str(source)))
    for night in (first, second):
        candidate = pipeline.train(night, TrainConfig.for_model("rank", epochs=10), TrainRun(device="cpu"))
        pipeline.evaluate(night, candidate.version)
    decision = pipeline.gate(second, candidate.version, GateConfig())
    pipeline.score(spark, second, ScoreConfig(top_n=5), decision.score_with)
    pipeline.publish_tables(spark, second, TablesConfig(similar_k=3), decision.score_with)
    return wh


def test_the_nights_tables_step_writes_a_self_contained_report(warehouse):
    path = warehouse / "reports" / f"run_date={SECOND}" / "index.html"
    assert path == report_path(warehouse, SECOND) and (path.parent / "_SUCCESS").is_file()
    page = path.read_text(encoding="utf-8")
    for heading in SECTIONS:
        assert f"<h2>{html.escape(heading)}</h2>" in page

    runs = pd.read_parquet(warehouse / "model_runs")
    tonight = runs[runs["run_date"].astype(str) == SECOND].iloc[0]
    verdict = "promoted" if tonight["promoted"] else "not promoted"
    assert f"<b>{tonight['model_version']}</b> was {verdict}: {html.escape(tonight['promotion_reason'])}" in page
    current = runs.loc[runs["is_current"], "model_version"].iloc[0]
    assert f"Current model: <b>{current}</b>" in page
    assert "2 night(s) up to 2026-05-02" in page  # the metric history spans both nights
    assert "rating_out_of_scale" in page and "rating_not_numeric" in page

    recs = pd.read_parquet(warehouse / "recommendations" / f"run_date={SECOND}")
    top = recs["item_id"].value_counts().index[0]
    title = recs.loc[recs["item_id"] == top, "title"].iloc[0]
    assert "& <Co>" in title and html.escape(title) in page
    assert "<Co>" not in page and "& <" not in page  # every title escaped

    images = page.count("<img ")
    assert images >= 7 and page.count(EMBEDDED_PNG) == images  # 5 metrics, rejects, popularity deciles
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]*)""", page) + re.findall(r"url\(([^)]*)\)", page)
    assert len(references) == images and all(r.startswith("data:image/png;base64,") for r in references)
    assert "http://" not in page and "https://" not in page  # the page fetches nothing
    assert "reports" not in Warehouse(warehouse).tables()


def test_a_rerun_replaces_the_report_and_a_failed_step_keeps_the_previous_one(warehouse):
    path = report_path(warehouse, SECOND)
    page = path.read_text(encoding="utf-8")
    path.write_text("an earlier report")
    with pytest.raises(RuntimeError, match="later write"), writer_lock(warehouse, "test"):
        with all_or_nothing(warehouse, "publish_tables"):
            write_report(warehouse, SECOND)
            raise RuntimeError("a later write of the step failed")
    assert path.read_text() == "an earlier report"
    assert write_report(warehouse, None) == path  # the latest night, on its own: it takes the lock itself
    assert path.read_text(encoding="utf-8") == page  # the same tables give the same page
    assert [p.name for p in path.parent.parent.iterdir()] == [f"run_date={SECOND}"]  # nothing left aside


def chromium(*args, cwd):
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium) to render the report")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={cwd / 'profile'}"]
    done = subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_report_renders_in_a_browser_with_every_image(warehouse, tmp_path):
    from PIL import Image

    path = report_path(warehouse, SECOND)
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri(), cwd=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert (pixels < 245).any(axis=1).mean() > 0.05  # not a blank page
    assert len(np.unique(pixels, axis=0)) > 200  # charts, not just text

    dom = chromium("--dump-dom", "--virtual-time-budget=5000", path.as_uri(), cwd=tmp_path)
    body = dict(re.findall(r'data-([a-z-]+)="(\d+)"', re.search(r"<body[^>]*>", dom)[0]))
    images = path.read_text(encoding="utf-8").count("<img ")
    assert body == {"images": str(images), "loaded-images": str(images), "broken-images": "0"}


def recommendation_rows(users, items, source="popular"):
    rows = [
        (u, rank, i, 1.0 / rank, None, source, "popular", f"Fast & <Furious> {i}", None, None)
        for u in users
        for rank, i in enumerate(items, 1)
    ]
    return pa.Table.from_pylist([dict(zip(RECOMMENDATIONS.column_names, r)) for r in rows], RECOMMENDATIONS.arrow)


def test_missing_tables_are_said_not_available(tmp_path):
    """A warehouse with lists but no metrics, model runs or ingest report yet."""
    wh = write_warehouse(tmp_path / "wh", planted_ratings(n_users=12, n_items=30, per_user=8))
    publish(Warehouse(wh).partition(RECOMMENDATIONS, FIRST), write_arrow(recommendation_rows(["u1", "u2"], ["i1"])))
    page = write_report(wh, None).read_text(encoding="utf-8")
    for missing in ("Model runs", "Metrics", f"Ingest report for {FIRST}"):
        assert f'<p class="missing">{missing} not available.</p>' in page
    assert "Fast &amp; &lt;Furious&gt; i1" in page and "<Furious>" not in page
    assert page.count(EMBEDDED_PNG) == 1  # the popularity deciles, from the ratings


@pytest.mark.parametrize(
    "run_date, message",
    [("1999-01-01", "no recommendations for 1999-01-01 in warehouse"), ("01/01/1999", "run date must be YYYY-MM-DD")],
)
def test_a_night_without_lists_is_a_one_line_error(capsys, tmp_path, run_date, message):
    assert main(["report", "--warehouse", str(tmp_path), "--run-date", run_date]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cfrec report: error: ") and err.count("\n") == 1 and message in err
