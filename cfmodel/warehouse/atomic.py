"""Publishing a table directory atomically: readers see the previous version or the new one, never half.

Every table, partition and model version is written to a hidden temporary folder beside its
target and swapped into place when complete, with a `_SUCCESS` marker; `is_published` is how a
reader tells a complete one.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cfmodel.errors import CfrecError
from cfmodel.warehouse.transaction import active

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"


def is_published(path: Path) -> bool:
    """Whether `path` is a complete, published table, partition or model version."""
    return (Path(path) / SUCCESS).is_file()


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
    temporary folders of writers that died are removed: writers hold the warehouse's writer lock
    (`cfmodel.warehouse.lock`), so no other writer of `final` can be at work.
    """
    if not final.parent.is_dir():
        return
    old = [p for p in _leftovers(final, "old") if is_published(p)]
    if not final.exists() and old:
        log.warning("restoring %s from %s, left by an interrupted publish", final, old[-1].name)
        old[-1].rename(final)
    for path in _leftovers(final, "old"):
        shutil.rmtree(path, ignore_errors=True)
    for path in _leftovers(final, "tmp"):
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
        (tmp / SUCCESS).touch()
        crash_if_injected(final)
        if (transaction := active()) is not None:  # keep the previous version until the step ends
            transaction.swap_in(tmp, final, swap)
        else:
            swap(tmp, final, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


def swap(tmp: Path, final: Path, aside: Path) -> None:
    """Put the complete folder `tmp` at `final`; the previous version, if any, ends up at `aside`."""
    if not final.exists():
        tmp.rename(final)
    elif _exchange(tmp, final):
        tmp.rename(aside)  # after the exchange it holds the previous version
    else:
        final.rename(aside)
        tmp.rename(final)


def withdraw(final: Path) -> None:
    """Remove a published table or partition (inside a transaction: keep it until the step ends)."""
    if (transaction := active()) is not None:
        transaction.withdraw(final)
    elif final.is_file():
        final.unlink()
    else:
        shutil.rmtree(final, ignore_errors=True)


def write_file(final: Path, text: str) -> None:
    """Replace a small file (a pointer, a record) in one step; inside a transaction the previous one is
    kept until the step ends."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if (transaction := active()) is not None:
        transaction.replace_file(tmp, final)
    else:
        os.replace(tmp, final)


def write_arrow(table: pa.Table) -> Callable[[Path], None]:
    """A `publish` writer for a small table built on the driver: one Parquet file."""

    def write(tmp: Path) -> None:
        import pyarrow.parquet as pq

        tmp.mkdir(parents=True)
        pq.write_table(table, tmp / "part-00000.parquet")

    return write
