"""One writer per warehouse: a second writer fails with one line, and a killed writer leaves no lock."""

import signal
import subprocess
import sys

from support import write_warehouse

from cfmodel.cli import main

HOLDER = """
import sys, time
from cfmodel.warehouse.lock import writer_lock
with writer_lock(sys.argv[1], 'ingest'):
    print('locked', flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(warehouse, seconds):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(warehouse), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CFREC_LOCK_WAIT_SECONDS", "0")
    wh = write_warehouse(tmp_path / "wh")
    holder = hold(wh, 60)
    try:
        assert main(["quality", "--warehouse", str(wh)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is being written by 'ingest' (pid {holder.pid} on" in err, err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The operating system dropped the killed writer's lock: the next writer goes ahead.
    assert main(["train", "--warehouse", str(wh), "--run-date", "2026-03-01"]) == 0
    assert (wh / "models" / "rank-2026-03-01" / "_SUCCESS").exists()


def test_a_trained_model_waits_for_the_writer_before_it_rather_than_be_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("CFREC_LOCK_WAIT_SECONDS", "0")
    wh = write_warehouse(tmp_path / "wh")
    holder = hold(wh, 8)  # longer than the training takes
    assert main(["train", "--warehouse", str(wh), "--run-date", "2026-03-01"]) == 0
    assert holder.poll() == 0  # it saved only once the other writer had finished
    assert (wh / "models" / "rank-2026-03-01" / "_SUCCESS").exists()


def test_a_writer_waits_for_the_lock_up_to_the_configured_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CFREC_LOCK_WAIT_SECONDS", "30")
    wh = write_warehouse(tmp_path / "wh")
    holder = hold(wh, 2)
    assert main(["train", "--warehouse", str(wh), "--run-date", "2026-03-01"]) == 0
    assert holder.wait(timeout=30) == 0


def test_training_holds_the_lock_only_to_save_its_model(tmp_path):
    from cfmodel import pipeline
    from cfmodel.config import Night, TrainRun
    from cfmodel.training.config import TrainConfig
    from cfmodel.training.loop import fit
    from cfmodel.warehouse.lock import writer_lock

    wh = write_warehouse(tmp_path / "wh")
    free_while_training = []

    def fit_beside_another_writer(*args, **kwargs):
        with writer_lock(wh, "ingest", wait=0):
            free_while_training.append(True)
        return fit(*args, **kwargs)

    night = Night(str(wh), "2026-03-01")
    result = pipeline.train(
        night, TrainConfig.for_model("dot", epochs=1), TrainRun(device="cpu"), fitter=fit_beside_another_writer
    )
    # Both fits (the validated model, then the refit on every rating) run with the lock free.
    assert free_while_training == [True, True] and result.version == "dot-2026-03-01"
    assert (wh / "models" / "dot-2026-03-01" / "_SUCCESS").exists()
