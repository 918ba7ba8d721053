"""The record of trained models: each version's config, metrics and promotion decision.

Read straight from `models/<version>/*.json`, without loading weights, so listing every run
stays cheap however many models are kept.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

PROMOTION_FILE = "promotion.json"
# Flat metrics.json keys look like `valid_rmse`; only held-out splits are metrics of quality.
FLAT_SPLITS = ("valid", "test")
BASELINE = "popularity"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _numbers(values: dict | None) -> dict[str, float]:
    return {name: number for name, value in (values or {}).items() if (number := _number(value)) is not None}


def split_metrics(metrics: dict) -> dict[str, dict[str, dict[str, float]]]:
    """metrics.json, nested or flat -> {split: {"model": {metric: value}, "popularity": {...}}}.

    Nested: {"valid": {"model": {...}, "popularity": {...}}, ...}. Flat: {"valid_rmse": .., ...}.
    Non-numeric and non-finite values are left out rather than guessed.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and isinstance(value.get("model"), dict):
            out[key] = {"model": _numbers(value["model"]), BASELINE: _numbers(value.get(BASELINE))}
    for key, value in metrics.items():
        split, _, metric = key.partition("_")
        number = _number(value)
        if split in FLAT_SPLITS and metric and number is not None:
            out.setdefault(split, {"model": {}, BASELINE: {}})["model"].setdefault(metric, number)
    return out


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def versions(models_dir: Path) -> list[str]:
    """Complete model versions (published with a `_SUCCESS` marker), oldest first by name."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in models_dir.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and (p / "_SUCCESS").exists()
    )


def read_run(models_dir: Path, version: str) -> dict:
    folder = models_dir / version
    return {
        "version": version,
        "config": read_json(folder / "config.json"),
        "metrics": read_json(folder / "metrics.json"),
        "promotion": read_json(folder / PROMOTION_FILE),
    }


def record_promotion(models_dir: Path, version: str, decision: dict) -> None:
    folder = models_dir / version
    tmp = folder / f".{PROMOTION_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(decision, indent=2))
    os.replace(tmp, folder / PROMOTION_FILE)


def current_version(models_dir: Path) -> str | None:
    marker = models_dir / "CURRENT"
    return marker.read_text().strip() if marker.is_file() else None
