"""All or nothing: a step that fails, or is killed at any point, leaves the warehouse exactly as it was."""

import subprocess
import sys

import pytest
from support import snapshot, text_folder

from cfmodel.warehouse import publish, withdraw, write_file
from cfmodel.warehouse.transaction import UNDO, all_or_nothing, roll_back


@pytest.fixture
def warehouse(tmp_path):
    root = tmp_path / "wh"
    publish(root / "ratings", text_folder("old ratings"))
    publish(root / "increments" / "run_date=D", text_folder("old increment"))
    publish(root / "items_increments" / "run_date=D", text_folder("old items"))
    write_file(root / "CURRENT", "old\n")
    return root


def night(root):
    """What a step writes: replaces a table and a partition, adds one, drops one."""
    publish(root / "increments" / "run_date=D", text_folder("new increment"))
    publish(root / "report" / "run_date=D", text_folder("new report"))
    withdraw(root / "items_increments" / "run_date=D")
    publish(root / "ratings", text_folder("new ratings"))
    write_file(root / "CURRENT", "new\n")
    write_file(root / "promotion.json", "{}")


def test_a_step_that_fails_leaves_everything_as_it_was(warehouse):
    before = snapshot(warehouse)
    with pytest.raises(RuntimeError, match="disk full"), all_or_nothing(warehouse, "ingest"):
        night(warehouse)
        raise RuntimeError("disk full")
    assert snapshot(warehouse) == before
    assert not (warehouse / UNDO).exists() and not (warehouse / "report").joinpath("run_date=D").exists()


def test_a_step_that_succeeds_shows_everything_and_keeps_nothing_old(warehouse):
    with all_or_nothing(warehouse, "ingest"):
        night(warehouse)
    assert (warehouse / "ratings" / "part-0.parquet").read_text() == "new ratings"
    assert (warehouse / "report" / "run_date=D" / "part-0.parquet").read_text() == "new report"
    assert not (warehouse / "items_increments" / "run_date=D").exists()
    assert (warehouse / "CURRENT").read_text() == "new\n" and (warehouse / "promotion.json").is_file()
    assert not (warehouse / UNDO).exists() and not list(warehouse.rglob("_TRANSACTION"))


KILLED = """
import os, sys
from pathlib import Path
from cfmodel.warehouse import atomic, transaction
from cfmodel.warehouse.transaction import all_or_nothing

root, kill_at = Path(sys.argv[1]), int(sys.argv[2])
calls = 0

def counted(function):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os._exit(9)  # killed: no exception handler, no cleanup
        return function(*args, **kwargs)
    return wrapper

# Every file operation the transaction makes is a place to be killed.
for name in ("rename", "unlink"):
    setattr(Path, name, counted(getattr(Path, name)))
os.replace = counted(os.replace)
os.link = counted(os.link)
transaction.Transaction._note = counted(transaction.Transaction._note)
atomic._exchange = counted(atomic._exchange)

def write(content):
    def w(tmp):
        tmp.mkdir()
        (tmp / "part-0.parquet").write_text(content)
    return w

with all_or_nothing(root, "ingest"):
    atomic.publish(root / "increments" / "run_date=D", write("new increment"))
    atomic.publish(root / "report" / "run_date=D", write("new report"))
    atomic.withdraw(root / "items_increments" / "run_date=D")
    atomic.publish(root / "ratings", write("new ratings"))
    atomic.write_file(root / "CURRENT", "new\\n")
    atomic.write_file(root / "promotion.json", "{}")
print("finished", calls)
"""


def test_a_step_killed_at_any_file_operation_is_rolled_back_by_the_next_writer(warehouse):
    before = snapshot(warehouse)
    finished = subprocess.run([sys.executable, "-c", KILLED, str(warehouse), "0"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    operations = int(finished.stdout.split()[-1])
    assert finished.returncode == 0 and operations > 10
    roll_back(warehouse)  # nothing unfinished: a no-op
    for kill_at in range(1, operations + 1):
        with all_or_nothing(warehouse, "ingest"):  # put the warehouse back where it started
            publish(warehouse / "ratings", text_folder("old ratings"))
            publish(warehouse / "increments" / "run_date=D", text_folder("old increment"))
            publish(warehouse / "items_increments" / "run_date=D", text_folder("old items"))
            withdraw(warehouse / "report")
            write_file(warehouse / "CURRENT", "old\n")
            withdraw(warehouse / "promotion.json")
        assert snapshot(warehouse) == before
        killed = subprocess.run([sys.executable, "-c", KILLED, str(warehouse), str(kill_at)])
        assert killed.returncode == 9
        committed = (warehouse / UNDO / "committed.jsonl").exists()
        roll_back(warehouse)
        visible_markers = [p for p in warehouse.rglob("_TRANSACTION") if not p.parent.name.startswith(".")]
        assert not (warehouse / UNDO).exists() and not visible_markers
        if committed:  # killed after the commit point: the step stands, whole
            assert (warehouse / "ratings" / "part-0.parquet").read_text() == "new ratings"
            assert (warehouse / "report" / "run_date=D" / "part-0.parquet").read_text() == "new report"
            assert not (warehouse / "items_increments" / "run_date=D").exists()
            assert (warehouse / "CURRENT").read_text() == "new\n" and (warehouse / "promotion.json").is_file()
        else:
            assert snapshot(warehouse) == before, f"killed at file operation {kill_at}"
