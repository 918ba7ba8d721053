"""The data-quality gate between ingest and training.

`check_quality` reads the night's `ingest_report` and fails with one clear line when too many
input rows were rejected or when the clean row count fell sharply against the previous run.
Blank lines and superseded duplicates are counted in the report but are not defects of the data,
so they do not count against the reject threshold. Every evaluation, passed or failed, is kept in
`quality/run_date=D` for later inspection. Plain pandas/pyarrow: it runs in any Airflow worker.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq

from cfmodel.errors import CfrecError
from cfmodel.warehouse.store import Warehouse, publish

log = logging.getLogger(__name__)

DEFAULT_MAX_REJECT_FRACTION = 0.01
DEFAULT_MAX_DROP_FRACTION = 0.5
BENIGN_REASONS = frozenset({"blank_line", "duplicate_superseded"})

QUALITY_SCHEMA = pa.schema(
    [
        ("check", pa.string()),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("passed", pa.bool_()),
        ("detail", pa.string()),
    ]
)


def read_reports(wh: Warehouse) -> dict[str, dict]:
    """run_date -> that run's ingest report (one row each), with map columns as dicts."""
    root = wh.table("ingest_report")
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


def check_quality(
    warehouse,
    run_date: str,
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
    max_drop_fraction: float | None = DEFAULT_MAX_DROP_FRACTION,
) -> dict:
    """Gate the ingest of `run_date`; returns the checks, raises CfrecError when one fails.

    - reject fraction: rating rows (and, separately, item rows) rejected for a defect, over input
      rows, must not exceed `max_reject_fraction`;
    - drop: clean rating rows must not fall below `1 - max_drop_fraction` times those of the
      latest earlier run (skipped on the first run, or when `max_drop_fraction` is None).
    """
    if not 0 <= max_reject_fraction <= 1:
        raise CfrecError(f"max reject fraction must be between 0 and 1, got {max_reject_fraction}")
    if max_drop_fraction is not None and not 0 <= max_drop_fraction <= 1:
        raise CfrecError(f"max drop fraction must be between 0 and 1, got {max_drop_fraction}")
    wh = Warehouse.open(warehouse, create=False)
    reports = read_reports(wh)
    if run_date not in reports:
        raise CfrecError(f"no ingest report for {run_date} in {wh.root}; run 'cfrec ingest' for that date first")
    report = reports[run_date]

    checks = [_reject_check("reject_fraction", report["rejects_by_reason"], report["input_rows"], max_reject_fraction)]
    if report.get("item_input_rows"):
        checks.append(
            _reject_check(
                "item_reject_fraction", report["item_rejects_by_reason"], report["item_input_rows"], max_reject_fraction
            )
        )
    earlier = [d for d in reports if d < run_date]
    if earlier and max_drop_fraction is not None:
        previous = reports[earlier[-1]]
        drop = 1 - report["clean_rows"] / previous["clean_rows"] if previous["clean_rows"] else 0.0
        checks.append(
            {
                "check": "clean_rows_drop",
                "value": drop,
                "threshold": max_drop_fraction,
                "passed": drop <= max_drop_fraction,
                "detail": f"{report['clean_rows']} clean rows vs {previous['clean_rows']} on {earlier[-1]}",
            }
        )

    publish(
        wh.partition("quality", run_date),
        lambda tmp: (tmp.mkdir(), pq.write_table(pa.Table.from_pylist(checks, QUALITY_SCHEMA), tmp / "part-0.parquet")),
    )
    failed = [c for c in checks if not c["passed"]]
    result = {"run_date": run_date, "passed": not failed, "checks": checks}
    if failed:
        reasons = "; ".join(f"{c['check']} {c['value']:.2%} > {c['threshold']:.2%}: {c['detail']}" for c in failed)
        raise CfrecError(f"data-quality gate failed for {run_date}: {reasons}")
    log.info("quality gate passed for %s: %s", run_date, checks)
    return result
