"""The warehouse folder: where each table lives, and publishing a table directory atomically."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cfmodel.errors import CfrecError


@dataclass(frozen=True)
class Warehouse:
    root: Path

    @classmethod
    def open(cls, path: str | Path, create: bool = True) -> "Warehouse":
        root = Path(path).expanduser().resolve()
        if create:
            try:
                root.mkdir(parents=True, exist_ok=True)
                probe = root / f".write-probe-{uuid.uuid4().hex}"
                probe.write_text("")
                probe.unlink()
            except OSError as exc:
                raise CfrecError(f"warehouse {root} is not writable: {exc.strerror or exc}") from None
        elif not root.is_dir():
            raise CfrecError(f"warehouse {root} does not exist")
        return cls(root)

    def table(self, name: str) -> Path:
        return self.root / name

    def partition(self, name: str, run_date: str) -> Path:
        return self.root / name / f"run_date={run_date}"

    def require(self, name: str) -> Path:
        path = self.table(name)
        if not path.exists():
            raise CfrecError(f"table '{name}' not found in warehouse {self.root}; run 'cfrec ingest' first")
        return path

    @property
    def models(self) -> Path:
        return self.root / "models"


def publish(final: Path, write: Callable[[Path], None]) -> Path:
    """Write a directory beside `final` with `write(tmp)`, then swap it into place.

    Readers see either the previous complete directory or the new complete one: a writer that
    dies midway leaves only a hidden temporary directory, which Spark, pyarrow and DuckDB skip.
    Re-publishing the same path replaces it.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = final.parent / f".tmp-{final.name}-{token}"
    old = final.parent / f".old-{final.name}-{token}"
    try:
        write(tmp)
        (tmp / "_SUCCESS").touch()
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final
