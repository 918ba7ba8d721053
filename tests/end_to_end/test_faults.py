"""Fault injection at every step boundary: a night's step (ingest, train, evaluate, gate, score,
tables) that fails after any of its writes leaves the warehouse exactly as it was, and running it
again repairs everything."""

import shutil
import subprocess

import pytest
from support import snapshot, wait_for, write_lines

from cfmodel import pipeline
from cfmodel.config import GateConfig, IngestConfig, Night, ScoreConfig, TablesConfig, TrainRun
from cfmodel.registry.registry import ModelRegistry
from cfmodel.training.config import TrainConfig
from cfmodel.warehouse.transaction import Transaction

pytestmark = pytest.mark.slow
GENRES = 19


def u_item(item_id: int) -> str:
    return "|".join(
        [
            str(item_id),
            f"Film {item_id} (1995)",
            "",
            "",
            "u",
            *["1" if g == item_id % GENRES else "0" for g in range(GENRES)],
        ]
    )


def night_files(root, users, with_items=True):
    lines = [f"{u}\t{i}\t{(u * i) % 5 + 1}\t{1000 + u * 40 + i}" for u in users for i in range(1, 30) if (u + i) % 3]
    write_lines(root / "u.data", lines)
    if with_items:
        write_lines(root / "u.item", [u_item(i) for i in range(1, 30)], encoding="latin-1")
    return root


class Fault(RuntimeError):
    pass


def fail_after(monkeypatch, writes: int):
    """Make the step fail right after its `writes`-th publish or withdrawal lands."""
    seen = {"n": 0}
    for name in ("swap_in", "withdraw", "replace_file"):
        original = getattr(Transaction, name)

        def counted(self, *args, _original=original, **kwargs):
            _original(self, *args, **kwargs)
            seen["n"] += 1
            if seen["n"] == writes:
                raise Fault(f"injected after write {writes}")

        monkeypatch.setattr(Transaction, name, counted)
    return seen


def every_boundary(monkeypatch, warehouse, step) -> int:
    """Fail `step` after its 1st, 2nd, ... write until it runs through; the warehouse must be
    unchanged after every failure. Returns how many writes the step makes."""
    before = snapshot(warehouse)
    writes = 1
    while True:
        with monkeypatch.context() as patch:
            seen = fail_after(patch, writes)
            try:
                step()
            except Fault:
                assert snapshot(warehouse) == before, f"failed after write {writes}"
                writes += 1
                continue
        return seen["n"]


def test_every_step_of_a_night_is_all_or_nothing(spark, tmp_path, monkeypatch):
    wh = tmp_path / "wh"
    first = Night(str(wh), "2026-05-01")
    ingest = IngestConfig(source="movielens-100k", input_path=str(night_files(tmp_path / "d1", range(1, 40))))
    pipeline.ingest(spark, first, ingest)
    model = TrainConfig.for_model("dot", epochs=1)
    pipeline.train(first, model, TrainRun(device="cpu"))
    decision = pipeline.gate(first, "dot-2026-05-01", GateConfig(gate_metric="rmse"))  # promote it
    pipeline.score(spark, first, ScoreConfig(top_n=5), decision.score_with)
    pipeline.publish_tables(spark, first, TablesConfig(similar_k=3), decision.score_with)

    # The next night: new users, no items file this time (its items partition is withdrawn).
    second = Night(str(wh), "2026-05-02")
    tonight = IngestConfig(
        source="movielens-100k", input_path=str(night_files(tmp_path / "d2", range(30, 60), with_items=False))
    )
    writes = every_boundary(monkeypatch, wh, lambda: pipeline.ingest(spark, second, tonight))
    assert writes >= 8  # increments, rejects, current tables, indices, scale, report...
    assert (wh / "ingest_report" / "run_date=2026-05-02" / "_SUCCESS").exists()

    assert every_boundary(monkeypatch, wh, lambda: pipeline.train(second, model, TrainRun(device="cpu"))) == 1
    registry = ModelRegistry(wh / "models")
    assert registry.versions()[-1] == "dot-2026-05-02"  # the failed attempts left nothing
    assert every_boundary(monkeypatch, wh, lambda: pipeline.evaluate(second, "dot-2026-05-02")) == 1
    gate = GateConfig(gate_tolerance=1.0, gate_metric="rmse")  # promote it whatever its quality: CURRENT moves
    assert every_boundary(monkeypatch, wh, lambda: pipeline.gate(second, "dot-2026-05-02", gate)) == 2
    assert registry.current() == "dot-2026-05-02" and registry.run("dot-2026-05-02").promoted
    assert every_boundary(monkeypatch, wh, lambda: pipeline.score(spark, second, ScoreConfig(top_n=5))) == 1
    tables = every_boundary(monkeypatch, wh, lambda: pipeline.publish_tables(spark, second, TablesConfig(similar_k=3)))
    assert tables == 6  # user and item factors, similar items, model runs, metrics, run report


def test_a_failed_reingest_keeps_the_good_run_of_that_date(spark, tmp_path, monkeypatch):
    """The probe: re-ingesting a date failed on its items file after the ratings increment had been
    replaced, and the next night rebuilt `ratings` from the half-written date."""
    wh = tmp_path / "wh"
    night = Night(str(wh), "2026-05-01")
    good = IngestConfig(source="movielens-100k", input_path=str(night_files(tmp_path / "good", range(1, 40))))
    pipeline.ingest(spark, night, good)
    before = snapshot(wh)
    truncated = night_files(tmp_path / "bad", range(1, 20))
    from cfmodel.ingest import job

    def broken_items(*args, **kwargs):
        raise OSError("unexpected end of file in u.item")

    monkeypatch.setattr(job, "parse_item_files", broken_items)
    with pytest.raises(OSError, match="unexpected end of file"):
        pipeline.ingest(spark, night, IngestConfig(source="movielens-100k", input_path=str(truncated)))
    assert snapshot(wh) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system (tmpfs): a real full disk, where this machine lets the tests mount one."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_leaves_the_warehouse_as_it_was(spark, tmp_path, small_disk, capsys):
    from cfmodel.cli import main

    wh = small_disk / "wh"
    small = night_files(tmp_path / "small", range(1, 20))
    ingest = ["ingest", "--source", "movielens-100k", "--warehouse", str(wh)]
    assert main([*ingest, "--input", str(small), "--run-date", "2026-05-01"]) == 0
    before = snapshot(wh)
    large = night_files(tmp_path / "large", range(1, 8000))  # ~155k ratings: more than the disk holds
    capsys.readouterr()
    assert main([*ingest, "--input", str(large), "--run-date", "2026-05-02"]) == 2
    assert capsys.readouterr().err == "cfrec ingest: error: no space left on device\n"
    assert snapshot(wh) == before
    # A Spark task that failed on the full disk leaves its deleted files open, holding their space,
    # until the JVM collects its streams: the next night is a new process (spark-submit, cfrec),
    # here it is the same JVM.
    spark.sparkContext._jvm.System.gc()
    wait_for(lambda: shutil.disk_usage(small_disk).free > 2**19, 30, "the failed task's files to close", every=0.5)
    assert main([*ingest, "--input", str(small), "--run-date", "2026-05-02"]) == 0  # and the next night runs
