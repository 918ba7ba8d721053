"""Readers and publishing: a reader is never broken by a publish and never sees half a step."""

import subprocess
import sys
import time

from support import text_folder, write_warehouse

from cfmodel.cli import main
from cfmodel.warehouse import publish
from cfmodel.warehouse.transaction import all_or_nothing

# Lists a table's files, then reads them a while later: what Spark, DuckDB and pyarrow do.
SLOW_READER = """
import sys, time
from pathlib import Path
from cfmodel.warehouse.lock import reading

root = Path(sys.argv[1])
with reading(root):
    files = sorted((root / "ratings").glob("*.parquet")) + sorted((root / "items").glob("*.parquet"))
    print("listed", flush=True)
    time.sleep(float(sys.argv[2]))
    print(" ".join(f.read_text() for f in files), flush=True)
"""

HOLD_OFF_READERS = """
import sys, time
from cfmodel.warehouse.lock import readers_excluded
with readers_excluded(sys.argv[1]):
    print("publishing", flush=True)
    time.sleep(30)
"""


def reader(root, seconds):
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_READER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True
    )


def test_a_publish_waits_for_readers_of_the_version_it_replaces(tmp_path):
    root = tmp_path / "wh"
    publish(root / "ratings", text_folder("old-ratings"))
    publish(root / "items", text_folder("old-items"))
    slow = reader(root, 1.5)
    assert slow.stdout.readline().strip() == "listed"
    with all_or_nothing(root, "ingest"):
        started = time.monotonic()
        publish(root / "ratings", text_folder("new-ratings"))
        assert time.monotonic() - started > 1.0  # the swap waited for the reader to finish
    # Without the wait the files it listed would have been moved away: FileNotFoundError.
    assert slow.stdout.read().split() == ["old-ratings", "old-items"]
    assert slow.wait() == 0
    assert (root / "ratings" / "part-0.parquet").read_text() == "new-ratings"


def test_a_reader_arriving_during_a_step_waits_and_sees_all_of_it(tmp_path):
    root = tmp_path / "wh"
    publish(root / "ratings", text_folder("old-ratings"))
    publish(root / "items", text_folder("old-items"))
    with all_or_nothing(root, "ingest"):
        publish(root / "ratings", text_folder("new-ratings"))
        late = reader(root, 0)
        time.sleep(1.5)
        assert late.poll() is None  # still waiting: it would have read new ratings beside old items
        publish(root / "items", text_folder("new-items"))
    assert late.stdout.read().split() == ["listed", "new-ratings", "new-items"]
    assert late.wait() == 0


def test_cfrec_sql_waits_for_a_step_to_finish_publishing_up_to_a_limit(tmp_path, capsys, monkeypatch):
    wh = write_warehouse(tmp_path / "wh")
    monkeypatch.setenv("CFREC_READ_WAIT_SECONDS", "1")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OFF_READERS, str(wh)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "publishing"
        assert main(["sql", "--warehouse", str(wh), "SELECT count(*) AS n FROM ratings"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "still publishing a step after 1 s (CFREC_READ_WAIT_SECONDS)" in err, err
    finally:
        holder.kill()
        holder.wait()
    assert main(["sql", "--warehouse", str(wh), "SELECT count(*) AS n FROM ratings"]) == 0
