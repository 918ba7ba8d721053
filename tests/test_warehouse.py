import os

import pytest

from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, publish


def write_file(content):
    def write(tmp):
        tmp.mkdir()
        (tmp / "part-0").write_text(content)
    return write


def test_publish_replaces_and_marks_success(tmp_path):
    target = tmp_path / "t" / "run_date=2026-01-01"
    publish(target, write_file("one"))
    publish(target, write_file("two"))
    assert (target / "part-0").read_text() == "two"
    assert (target / "_SUCCESS").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["run_date=2026-01-01"]


def test_failed_write_leaves_previous_version_intact(tmp_path):
    target = tmp_path / "t"
    publish(target, write_file("good"))

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
