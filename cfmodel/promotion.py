"""Deciding which trained model version scoring uses: the one named in models/CURRENT."""

from __future__ import annotations

from pathlib import Path

from cfmodel import artifact


def promote(models_dir: Path, candidate: artifact.ModelArtifact) -> dict:
    """Make `candidate` the current model.

    Every newly trained model is promoted for now; a quality gate against the current model is
    not implemented yet.
    """
    previous = (models_dir / "CURRENT").read_text().strip() if (models_dir / "CURRENT").is_file() else None
    artifact.set_current(models_dir, candidate.version)
    return {"promoted": True, "version": candidate.version, "previous": previous, "reason": "no gate configured"}
