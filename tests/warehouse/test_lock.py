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
        for argv in (["train", "--warehouse", str(wh), "--epochs", "1"], ["quality", "--warehouse", str(wh)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"is being written by 'ingest' (pid {holder.pid} on" in err, err
        assert not (wh / "models").exists()  # the refused training wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The operating system dropped the killed writer's lock: the next writer goes ahead.
    assert main(["train", "--warehouse", str(wh), "--epochs", "1", "--run-date", "2026-03-01"]) == 0
    assert (wh / "models" / "dot-2026-03-01" / "_SUCCESS").exists()


def test_a_writer_waits_for_the_lock_up_to_the_configured_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CFREC_LOCK_WAIT_SECONDS", "30")
    wh = write_warehouse(tmp_path / "wh")
    holder = hold(wh, 2)
    assert main(["train", "--warehouse", str(wh), "--epochs", "1", "--run-date", "2026-03-01"]) == 0
    assert holder.wait(timeout=30) == 0
