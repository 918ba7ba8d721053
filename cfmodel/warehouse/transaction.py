"""All or nothing: what one step writes for a night appears whole, or the previous state stays.

Inside `all_or_nothing`, every `publish`, `withdraw` of a table or partition, and `write_file` of a
small file such as CURRENT keeps the version it replaces in `<warehouse>/.undo/` instead of deleting
it, and first notes in a journal there what it is about to do; each new folder carries a marker
naming the step's transaction. If the step fails, the journal is played backwards and every target
gets its previous version back. If the process is killed, the next writer of the warehouse, which
holds the writer lock, finds the journal and rolls back the same way before it starts
(`roll_back`). When the step succeeds, the kept versions are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path

from cfmodel.warehouse.lock import readers_excluded

log = logging.getLogger(__name__)

UNDO = ".undo"
JOURNAL = "journal.jsonl"
COMMITTED = "committed.jsonl"  # the journal, renamed: the one atomic step that makes a transaction stand
MARKER = "_TRANSACTION"  # inside each version a transaction published; readers skip '_' files

_active: ContextVar[Transaction | None] = ContextVar("cfrec_transaction", default=None)


class Transaction:
    """The journal of one step's changes to a warehouse, and how to undo them."""

    def __init__(self, root: Path, step: str) -> None:
        self.root, self.step = Path(root), step
        self.token = uuid.uuid4().hex[:12]
        self.folder = self.root / UNDO
        self.folder.mkdir(parents=True, exist_ok=True)
        self.journal = self.folder / JOURNAL
        self.count = 0
        self.held = ExitStack()  # readers held off from the first visible change to the end
        self.holding = False
        self.changed: list[Path] = []  # the folders it swapped in or withdrew

    def _hold_off_readers(self) -> None:
        if not self.holding:
            self.held.enter_context(readers_excluded(self.root))
            self.holding = True

    def _note(self, entry: dict) -> None:
        """Append to the journal and make it durable before the change it announces."""
        with open(self.journal, "a") as f:
            f.write(json.dumps({**entry, "token": self.token}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _keep_path(self) -> Path:
        self.count += 1
        return self.folder / f"{self.token}-{self.count}"

    def swap_in(self, tmp: Path, final: Path, swap: Callable[[Path, Path, Path], None]) -> None:
        """Put the complete folder `tmp` at `final` with `swap` (`atomic.swap`), keeping what was
        there to undo with."""
        self._hold_off_readers()
        (tmp / MARKER).write_text(self.token)
        kept = self._keep_path()
        self.changed.append(final)
        self._note({"final": str(final), "kept": str(kept), "tmp": str(tmp), "existed": final.exists()})
        swap(tmp, final, kept)

    def replace_file(self, tmp: Path, final: Path) -> None:
        """Put the file `tmp` at `final`; a hard link keeps the previous one to undo with."""
        self._hold_off_readers()
        kept = self._keep_path()
        self._note({"final": str(final), "kept": str(kept), "existed": final.exists(), "file": True})
        if final.exists():
            os.link(final, kept)
        os.replace(tmp, final)

    def withdraw(self, final: Path) -> None:
        """Take `final` away (a partition a re-run no longer has), keeping it to undo with."""
        if not final.exists():
            return
        self._hold_off_readers()
        kept = self._keep_path()
        self.changed.append(final)
        self._note({"final": str(final), "kept": str(kept), "withdrawn": True})
        final.rename(kept)

    def commit(self) -> None:
        if self.journal.exists():
            os.replace(self.journal, self.folder / COMMITTED)
        _finish(self.folder)


def _finish(folder: Path) -> None:
    """After the commit point: drop the markers and the kept versions (again, if killed midway)."""
    for entry in read_journal(folder / COMMITTED):
        if not entry.get("file"):
            (Path(entry["final"]) / MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def read_journal(journal: Path) -> list[dict]:
    if not journal.is_file():
        return []
    entries = []
    for line in journal.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:  # a line cut short by a kill: its change never started
            break
    return entries


def _undo(entry: dict) -> None:
    final, kept = Path(entry["final"]), Path(entry["kept"])
    if entry.get("file"):
        if kept.exists():
            os.replace(kept, final)
        elif not entry["existed"]:
            final.unlink(missing_ok=True)
        return
    if entry.get("withdrawn"):
        if kept.exists() and not final.exists():
            kept.rename(final)
        return
    tmp = Path(entry["tmp"])
    marker = final / MARKER
    if marker.is_file() and marker.read_text() == entry["token"]:
        shutil.rmtree(final)  # the new version is in place: take it away
    if entry["existed"] and not final.exists():
        # The previous version was moved aside (or, killed right after the exchange, is still where
        # the new one was written).
        (kept if kept.exists() else tmp).rename(final)
    shutil.rmtree(tmp, ignore_errors=True)  # a new version that never got swapped in


def roll_back(root: Path) -> bool:
    """Undo every change an unfinished transaction of `root` made, newest first; True if there was one.
    A transaction killed after its commit point is finished instead."""
    if not (Path(root) / UNDO).exists():
        return False
    with readers_excluded(root):
        return _roll_back(Path(root))


def _roll_back(root: Path) -> bool:
    folder = root / UNDO
    if not folder.exists():
        return False
    if (folder / COMMITTED).exists():
        _finish(folder)
        return False
    entries = read_journal(folder / JOURNAL)
    for entry in reversed(entries):
        _undo(entry)
    shutil.rmtree(folder, ignore_errors=True)
    if entries:
        log.warning("rolled back %d changes of an unfinished step in %s", len(entries), root)
    return bool(entries)


def active() -> Transaction | None:
    return _active.get()


@contextmanager
def all_or_nothing(root: Path, step: str) -> Iterator[Transaction]:
    """Run a step whose writes to `root` must appear together or not at all. The caller holds the
    warehouse's writer lock."""
    roll_back(root)
    transaction = Transaction(root, step)
    reset = _active.set(transaction)
    try:
        with transaction.held:
            try:
                yield transaction
            except BaseException:
                _roll_back(Path(root))  # with readers still held off, if this step changed anything
                raise
            transaction.commit()
    finally:
        _active.reset(reset)
