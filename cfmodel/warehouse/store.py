"""The warehouse folder: where each table, partition and the model registry live."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cfmodel.errors import CfrecError
from cfmodel.paths import resolved
from cfmodel.warehouse.schemas import ITEMS, MODELS, RUN_DATE, Table

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Warehouse:
    root: Path

    @classmethod
    def open(cls, path: str | Path, create: bool = True) -> Warehouse:
        root = resolved(path, "warehouse")
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

    def table(self, table: Table | str) -> Path:
        return self.root / (table.name if isinstance(table, Table) else table)

    def partition(self, table: Table | str, run_date: str) -> Path:
        return self.table(table) / f"{RUN_DATE}={run_date}"

    def require(self, table: Table | str) -> Path:
        path = self.table(table)
        if not path.exists():
            name = table.name if isinstance(table, Table) else table
            raise CfrecError(f"table '{name}' not found in warehouse {self.root}; run 'cfrec ingest' first")
        return path

    @property
    def models(self) -> Path:
        """The model registry's folder (`cfmodel.registry`)."""
        return self.root / MODELS

    def tables(self) -> dict[str, bool]:
        """Every readable table -> whether it is partitioned (`name=value` folders, e.g. run_date=D).

        Hidden folders (writes in progress) and the models folder are not tables.
        """
        found = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []:
            if folder.name.startswith((".", "_")) or folder == self.models:
                continue
            visible = [c for c in folder.iterdir() if not c.name.startswith((".", "_"))]
            if any(c.is_dir() and "=" in c.name and any(c.glob("*.parquet")) for c in visible):
                found[folder.name] = True
            elif any(c.is_file() and c.suffix == ".parquet" for c in visible):
                found[folder.name] = False
        return found

    def partitions(self, table: Table | str) -> dict[str, Path]:
        """run_date -> folder of each partition readers can see (visible Parquet files in it), oldest first."""
        folder = self.table(table)
        found = {}
        for path in sorted(folder.glob(f"{RUN_DATE}=*")) if folder.is_dir() else []:
            if path.is_dir() and any(not f.name.startswith((".", "_")) for f in path.glob("*.parquet")):
                found[path.name.split("=", 1)[1]] = path
        return found

    def table_files(self, table: Table | str) -> list[Path]:
        """The Parquet files readers should see for a table: none under hidden folders (writes in
        progress, versions being swapped out) and no hidden files."""
        return parquet_files(self.table(table))

    def titles(self, item_ids: np.ndarray) -> np.ndarray:
        """The `items` table's title of each id (None where unknown, or with no items table)."""
        import numpy as np
        import pandas as pd

        item_ids = np.asarray(item_ids, dtype=object)
        titles = np.full(len(item_ids), None, dtype=object)
        path = self.table(ITEMS)
        if not path.exists():
            log.warning("no items table in %s: no titles", self.root)
            return titles
        items = pd.read_parquet(path, columns=["item_id", "title"]).drop_duplicates("item_id")
        found = pd.Index(items["item_id"]).get_indexer(pd.Index(item_ids.astype(str)))
        titles[found >= 0] = items["title"].to_numpy(dtype=object)[found[found >= 0]]
        return titles


def parquet_files(root: Path) -> list[Path]:
    """The Parquet files readers should see under `root` (a table or one partition): none under
    hidden folders (writes in progress, versions being swapped out) and no hidden files."""
    return sorted(
        path
        for path in root.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
    )
