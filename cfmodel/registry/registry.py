"""The model registry: every trained version, the `CURRENT` pointer and the record of each gate decision.

    models/<version>/           one folder per version, published atomically (complete once `_SUCCESS` is there)
    models/<version>/promotion.json   the gate's decision on that version
    models/CURRENT              the version scoring uses by default

Versions are named `<model>-<run date><suffix>`. Reading the record of a run (config, metrics,
decision) needs no weights, so listing every run stays cheap however many models are kept.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cfmodel.errors import CfrecError
from cfmodel.registry.artifact import ArtifactConfig
from cfmodel.warehouse import is_published, publish, write_file

if TYPE_CHECKING:
    from cfmodel.registry.artifact import ModelArtifact

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
PROMOTION_FILE = "promotion.json"
VERSION = re.compile(r"^(?P<model>[a-z]+)-(?P<date>\d{4}-\d{2}-\d{2})(?P<suffix>.*)$")
# Any name a version folder may have: never a path, so a version never leads outside models/.
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Flat metrics.json keys look like `valid_rmse`; only held-out splits are metrics of quality.
FLAT_SPLITS = ("valid", "test")
BASELINE = "popularity"
# What a night scores with when no model may be used (its first candidate was refused and there is
# no earlier one): every user gets the most-popular unrated items, marked `source = popular`.
POPULARITY_LISTS = "popular"


def version_name(model_type: str, run_date: str, suffix: str = "", attempt: int = 1) -> str:
    """`dot-2026-11-23` for a date's first training attempt, `dot-2026-11-23.2` for its second, ..."""
    if suffix and not all(c.isalnum() or c in "-_." for c in suffix):
        raise CfrecError(f"version suffix may hold only letters, digits, '-', '_' and '.', got '{suffix}'")
    base = f"{model_type}-{run_date}{suffix}"
    return base if attempt == 1 else f"{base}.{attempt}"


def version_date(version: str) -> str | None:
    match = VERSION.match(version)
    return match["date"] if match else None


@dataclass(frozen=True)
class ModelRun:
    """What the registry knows of a version without loading its weights."""

    version: str
    config: ArtifactConfig
    metrics: dict
    promotion: dict

    @property
    def promoted(self) -> bool:
        return bool(self.promotion.get("promoted"))


class ModelRegistry:
    """The `models` folder of a warehouse."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, version: str) -> Path:
        if not VERSION_NAME.match(version):
            raise CfrecError(f"'{version}' is not a model version name (letters, digits, '.', '_' and '-')")
        return self.root / version

    def exists(self, version: str) -> bool:
        return is_published(self.folder(version))

    def require(self, version: str) -> str:
        if not self.exists(version):
            raise CfrecError(f"model version '{version}' not found (or incomplete) in {self.root}")
        return version

    def versions(self) -> list[str]:
        """Complete versions, oldest first by name."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith((".", "_")) and is_published(p))

    # CURRENT -------------------------------------------------------------------------------------------------------

    def current(self) -> str | None:
        """The version `CURRENT` names; None when there is none yet."""
        marker = self.root / CURRENT_FILE
        if not marker.is_file():
            return None
        version = marker.read_text().strip()
        if not VERSION_NAME.match(version):
            raise CfrecError(f"{marker} holds '{version[:80]}', which is not a model version name")
        return version

    def require_current(self) -> str:
        version = self.current()
        if version is None:
            raise CfrecError(f"no trained model in {self.root}; run 'cfrec train' first")
        return version

    def set_current(self, version: str) -> None:
        self.require(version)
        write_file(self.root / CURRENT_FILE, version + "\n")

    # artifacts -----------------------------------------------------------------------------------------------------

    def save(self, artifact: ModelArtifact) -> Path:
        """Publish a new version; a version that exists is never rewritten."""
        from cfmodel.registry.artifact import write_artifact

        folder = self.folder(artifact.version)
        if folder.exists():
            raise CfrecError(f"model version '{artifact.version}' exists in {self.root}; versions are never rewritten")
        return publish(folder, lambda tmp: write_artifact(artifact, tmp))

    def load(self, version: str | None = None) -> ModelArtifact:
        """A saved model of any type (default: the current one), on the CPU in eval mode."""
        from cfmodel.registry.artifact import read_artifact

        version = self.require(version or self.require_current())
        return read_artifact(self.folder(version), version)

    # run records ---------------------------------------------------------------------------------------------------

    def run(self, version: str) -> ModelRun:
        folder = self.folder(version)
        return ModelRun(
            version,
            ArtifactConfig.from_dict(_read_json(folder / "config.json")),
            _read_json(folder / "metrics.json"),
            _read_json(folder / PROMOTION_FILE),
        )

    def record_promotion(self, version: str, decision: dict) -> None:
        write_file(self.folder(version) / PROMOTION_FILE, json.dumps(decision, indent=2))

    def new_version(self, model_type: str, run_date: str, suffix: str = "") -> str:
        """The name for a new training attempt: the first of `version_name`'s attempts that does not exist."""
        attempt = 1
        while self.folder(version_name(model_type, run_date, suffix, attempt)).exists():
            attempt += 1
        return version_name(model_type, run_date, suffix, attempt)

    def _promoted(self, up_to: str, before: bool, model_type: str | None, exclude: str | None) -> str | None:
        kept = []
        for version in self.versions():
            day = version_date(version)
            if day is None or version == exclude or (model_type and not version.startswith(f"{model_type}-")):
                continue
            if (day < up_to if before else day <= up_to) and (run := self.run(version)).promoted:
                kept.append((day, run.promotion.get("decided_at") or "", version))
        return max(kept)[2] if kept else None

    def promoted_as_of(self, run_date: str, exclude: str | None = None) -> str | None:
        """The model the gate kept last for a date up to `run_date` (`exclude` aside): what is current
        as of that date, whichever DAG or command trained it."""
        return self._promoted(run_date, False, None, exclude)

    def promoted_before(self, run_date: str, model_type: str | None = None) -> str | None:
        """The model of `model_type` the gate kept last for a date earlier than `run_date`."""
        return self._promoted(run_date, True, model_type, None)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _number(value: object) -> float | None:
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
