"""The data-quality gate between ingest and training.

`check_quality` reads the night's `ingest_report` and fails with one clear line when too many
input rows were rejected or when the clean row count fell sharply against the previous run.
Blank lines and superseded duplicates are counted in the report but are not defects of the data,
so they do not count against the reject threshold. Every evaluation, passed or failed, is kept in
`quality/run_date=D` for later inspection. Plain pandas/pyarrow: it runs in any Airflow worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cfmodel.config import QualityConfig
from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, publish, write_arrow
from cfmodel.warehouse.schemas import INGEST_REPORT, QUALITY

log = logging.getLogger(__name__)

BENIGN_REASONS = frozenset({"blank_line", "duplicate_superseded"})


def read_reports(wh: Warehouse) -> dict[str, dict]:
    """run_date -> that run's ingest report (one row each), with map columns as dicts."""
    root = wh.table(INGEST_REPORT)
    reports = {}
    for partition in sorted(root.glob("run_date=*")) if root.is_dir() else []:
        rows = pq.read_table(partition).to_pylist()
        if rows:
            row = rows[0]
            for key in ("rejects_by_reason", "item_rejects_by_reason"):
                row[key] = dict(row.get(key) or [])
            reports[partition.name.split("=", 1)[1]] = row
    return reports


def _defects(by_reason: dict[str, int]) -> tuple[int, str]:
    counted = {k: v for k, v in by_reason.items() if k not in BENIGN_REASONS and v}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counted.items(), key=lambda kv: -kv[1]))
    return sum(counted.values()), detail


def _reject_check(name: str, by_reason: dict, total: int, limit: float) -> dict:
    defects, detail = _defects(by_reason)
    fraction = defects / total if total else 0.0
    return {
        "check": name,
        "value": fraction,
        "threshold": limit,
        "passed": fraction <= limit,
        "detail": f"{defects} of {total} rows rejected" + (f" ({detail})" if detail else ""),
    }


@dataclass
class QualityResult:
    run_date: str
    passed: bool
    checks: list[dict]  # the `quality/run_date=D` rows: check, value, threshold, passed, detail


def check_quality(warehouse: str | Path, run_date: str, config: QualityConfig | None = None) -> QualityResult:
    """Gate the ingest of `run_date`; returns the checks, raises CfrecError when one fails.

    - reject fraction: rating rows (and, separately, item rows) rejected for a defect, over input
      rows, must not exceed `max_reject_fraction`;
    - drop: clean rating rows must not fall below `1 - max_drop_fraction` times those of the
      latest earlier run (skipped on the first run, or when `max_drop_fraction` is None).
    """
    config = config or QualityConfig()
    wh = Warehouse.open(warehouse, create=False)
    reports = read_reports(wh)
    if run_date not in reports:
        raise CfrecError(f"no ingest report for {run_date} in {wh.root}; run 'cfrec ingest' for that date first")
    report = reports[run_date]
    limit = config.max_reject_fraction
    checks = [_reject_check("reject_fraction", report["rejects_by_reason"], report["input_rows"], limit)]
    if report.get("item_input_rows"):
        checks.append(
            _reject_check("item_reject_fraction", report["item_rejects_by_reason"], report["item_input_rows"], limit)
        )
    earlier = [d for d in reports if d < run_date]
    if earlier and config.max_drop_fraction is not None:
        checks.append(_drop_check(report, reports[earlier[-1]], earlier[-1], config.max_drop_fraction))
    publish(wh.partition(QUALITY, run_date), write_arrow(pa.Table.from_pylist(checks, QUALITY.arrow)))
    failed = [c for c in checks if not c["passed"]]
    if failed:
        reasons = "; ".join(f"{c['check']} {c['value']:.2%} > {c['threshold']:.2%}: {c['detail']}" for c in failed)
        raise CfrecError(f"data-quality gate failed for {run_date}: {reasons}")
    log.info("quality gate passed for %s: %s", run_date, checks)
    return QualityResult(run_date, True, checks)


def _drop_check(report: dict, previous: dict, previous_date: str, limit: float) -> dict:
    drop = 1 - report["clean_rows"] / previous["clean_rows"] if previous["clean_rows"] else 0.0
    return {
        "check": "clean_rows_drop",
        "value": drop,
        "threshold": limit,
        "passed": drop <= limit,
        "detail": f"{report['clean_rows']} clean rows vs {previous['clean_rows']} on {previous_date}",
    }
