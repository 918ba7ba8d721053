"""The warehouse folder: where each table lives, and publishing a table directory atomically."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cfmodel.errors import CfrecError

log = logging.getLogger(__name__)

# A temporary folder left this long by a writer of the same target is from a writer that died.
STALE_AFTER_SECONDS = 3600


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

    def table_files(self, name: str) -> list[Path]:
        """The Parquet files readers should see for a table: none under hidden folders (writes in
        progress, versions being swapped out) and no hidden files."""
        root = self.table(name)
        return sorted(
            path for path in root.rglob("*.parquet")
            if not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
        )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    rename = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if rename is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if rename(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to load (unusual platforms): fall back to two renames
    _LIBC = None


def _leftovers(final: Path, kind: str) -> list[Path]:
    return sorted(final.parent.glob(f".{kind}-{final.name}-*"), key=lambda p: p.stat().st_mtime)


def recover(final: Path) -> None:
    """Undo what a writer killed midway left behind for `final`.

    A writer killed between moving the previous version aside and moving the new one in leaves
    `final` missing and the previous version in a hidden `.old-` folder: it is put back. Hidden
    temporary folders of writers that died are removed once stale.
    """
    if not final.parent.is_dir():
        return
    old = [p for p in _leftovers(final, "old") if (p / "_SUCCESS").exists()]
    if not final.exists() and old:
        log.warning("restoring %s from %s, left by an interrupted publish", final, old[-1].name)
        old[-1].rename(final)
    for path in _leftovers(final, "old"):
        shutil.rmtree(path, ignore_errors=True)
    now = time.time()
    for path in _leftovers(final, "tmp"):
        if now - path.stat().st_mtime > STALE_AFTER_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


def crash_if_injected(final: Path) -> None:
    """Resilience testing: CFREC_INJECT_FAULT="<path suffix>:<marker file>" makes the first publish
    of a target ending with that suffix crash after writing and before swapping, once (the marker
    file records that it happened). Unset in normal operation."""
    spec = os.environ.get("CFREC_INJECT_FAULT")
    if not spec:
        return
    suffix, _, marker = spec.partition(":")
    if str(final).endswith(suffix) and marker and not Path(marker).exists():
        Path(marker).write_text(str(final))
        raise RuntimeError(f"injected fault while publishing {final}")


def publish(final: Path, write: Callable[[Path], None]) -> Path:
    """Write a directory beside `final` with `write(tmp)`, then swap it into place.

    Readers see either the previous complete directory or the new complete one: a writer that
    dies midway leaves only a hidden temporary directory, which Spark, pyarrow and DuckDB skip.
    On Linux the swap is one atomic exchange of the two directories; elsewhere it is two renames,
    and `recover` (run first by every publish) restores the previous version if a writer died
    between them. Re-publishing the same path replaces it. One writer per target at a time.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final)
    token = uuid.uuid4().hex[:12]
    tmp = final.parent / f".tmp-{final.name}-{token}"
    old = final.parent / f".old-{final.name}-{token}"
    try:
        write(tmp)
        if not tmp.is_dir():
            raise CfrecError(f"nothing was written for {final}")
        (tmp / "_SUCCESS").touch()
        crash_if_injected(final)
        if not final.exists():
            tmp.rename(final)
        elif _exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous version
        else:
            final.rename(old)
            tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final
