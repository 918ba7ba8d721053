import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from support import text_folder

from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, publish
from cfmodel.warehouse import atomic as publishing


def test_publish_replaces_and_marks_success(tmp_path):
    target = tmp_path / "t" / "run_date=2026-01-01"
    publish(target, text_folder("one", "part-0"))
    publish(target, text_folder("two", "part-0"))
    assert (target / "part-0").read_text() == "two"
    assert (target / "_SUCCESS").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["run_date=2026-01-01"]


def test_failed_write_leaves_previous_version_intact(tmp_path):
    target = tmp_path / "t"
    publish(target, text_folder("good", "part-0"))

    def crash(tmp):
        tmp.mkdir()
        (tmp / "part-0").write_text("half")
        raise RuntimeError("executor lost")

    with pytest.raises(RuntimeError):
        publish(target, crash)
    assert (target / "part-0").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_warehouse_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(CfrecError, match="not writable"):
        Warehouse.open(locked / "wh")


def test_warehouse_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CfrecError, match="not writable"):
        Warehouse.open(tmp_path / "file" / "wh")
    with pytest.raises(CfrecError, match="run 'cfrec ingest' first"):
        Warehouse.open(tmp_path / "wh").require("ratings")


def write_frame(frame):
    def write(tmp):
        tmp.mkdir()
        frame.to_parquet(tmp / "part-0.parquet", index=False)

    return write


def test_swap_is_one_atomic_exchange_on_linux(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for path, text in ((a, "new"), (b, "old")):
        path.mkdir()
        (path / "x").write_text(text)
    if not publishing._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here; publish uses two renames")
    assert (b / "x").read_text() == "new" and (a / "x").read_text() == "old"


def test_previous_version_moved_aside_by_a_killed_writer_is_restored(tmp_path):
    final = tmp_path / "t" / "run_date=2026-01-01"
    aside = final.parent / ".old-run_date=2026-01-01-0123456789ab"
    publish(aside, text_folder("previous", "part-0"))  # a complete version, as the interrupted writer left it

    def crash(tmp):
        raise RuntimeError("executor lost")

    with pytest.raises(RuntimeError):
        publish(final, crash)
    assert (final / "part-0").read_text() == "previous"
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_the_next_write_removes_what_killed_writers_left(tmp_path):
    final = tmp_path / "t"
    for name in (".tmp-t-killed000000", ".tmp-t-killed111111", ".old-t-killed222222", ".tmp-other-keep00000"):
        (tmp_path / name).mkdir()
    publish(final, text_folder("x", "part-0"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-other-keep00000", "t"]


KILLED_WRITER = """
import sys, time
from pathlib import Path
import pandas as pd
from cfmodel.warehouse import publish

def write(tmp):
    tmp.mkdir()
    pd.DataFrame({"user_id": ["new"] * 3}).to_parquet(tmp / "part-0.parquet", index=False)
    (tmp / "part-1.parquet").write_bytes(b"PAR1 half a file")
    print("written", flush=True)
    time.sleep(600)

publish(Path(sys.argv[1]), write)
"""


def test_writer_killed_midway_leaves_previous_partition_intact_and_readable(tmp_path):
    from cfmodel.warehouse.sql import query

    final = tmp_path / "wh" / "recommendations" / "run_date=2026-01-01"
    publish(final, write_frame(pd.DataFrame({"user_id": ["old", "old"]})))
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(final)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    leftovers = [p.name for p in final.parent.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1  # the killed writer's half-written folder, hidden from readers
    assert pd.read_parquet(final)["user_id"].tolist() == ["old", "old"]
    assert pd.read_parquet(final.parent)["user_id"].tolist() == ["old", "old"]
    assert query(tmp_path / "wh", "SELECT user_id, run_date FROM recommendations")["user_id"].tolist() == ["old", "old"]
    publish(final, write_frame(pd.DataFrame({"user_id": ["next"]})))
    assert pd.read_parquet(final.parent)["user_id"].tolist() == ["next"]


def test_tables_lists_partitioned_and_plain_tables_not_models_or_writes_in_progress(tmp_path):
    wh = Warehouse.open(tmp_path / "wh")
    frame = pd.DataFrame({"x": [1]})
    publish(wh.table("items"), write_frame(frame))
    publish(wh.partition("recommendations", "2026-01-01"), write_frame(frame))
    publish(wh.models / "dot-2026-01-01", write_frame(frame))
    (wh.root / ".tmp-items-0123456789ab").mkdir()
    (wh.root / "empty").mkdir()
    assert wh.tables() == {"items": False, "recommendations": True}
