import os
import subprocess
import sys

import pytest

from cfmodel.cli import build_parser, main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["ingest", "--source", "movielens-100k", "--input", "{tmp}/nowhere", "--warehouse", "{tmp}/wh"],
            "input folder {tmp}/nowhere does not exist",
        ),
        (
            ["ingest", "--source", "netflix-prize", "--input", "{tmp}", "--warehouse", "{tmp}/wh"],
            "unknown source 'netflix-prize' (known: csv, goodbooks, movielens-100k, movielens-10m, movielens-1m, "
            "movielens-latest, movietweetings)",
        ),
        (["ingest", "--source", "movielens-100k", "--input", "{tmp}", "--warehouse", "{tmp}/wh"], "has no u.data"),
        (["train", "--warehouse", "{tmp}/blocker/wh"], "is not writable"),
        (["train", "--warehouse", "{tmp}/wh"], "table 'ratings' not found"),
        (["score", "--warehouse", "{tmp}/wh", "--top-n", "0"], "--top-n must be at least 1"),
        (
            ["run", "--source", "movielens-100k", "--input", "{tmp}/nowhere", "--warehouse", "{tmp}/wh"],
            "does not exist",
        ),
        (["train", "--warehouse", "{tmp}/wh", "--device", "quantum"], "unknown device 'quantum'"),
    ],
)
def test_bad_input_gives_one_clear_line(capsys, tmp_path, argv, message):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    code, _, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"cfrec {argv[0]}: error: ")
    assert message.format(tmp=tmp_path) in err


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cfmodel.cli", "score", "--warehouse", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == f"cfrec score: error: table 'ratings' not found in warehouse {tmp_path}; run 'cfrec ingest' first"
    )


def test_spark_keeps_its_start_up_noise_in_its_log_not_on_stderr(tmp_path):
    from support import write_lines

    write_lines(tmp_path / "in" / "u.data", ["1\t1\t5\t1", "1\t2\t3\t2", "2\t1\t4\t3"])
    log = tmp_path / "spark.log"
    env = {**os.environ, "CFREC_SPARK_LOG": str(log)}
    argv = ["ingest", "--source", "movielens-100k", "--input", str(tmp_path / "in"), "--warehouse", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "cfmodel.cli", *argv], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(" cfmodel." in line for line in lines), result.stderr  # cfrec's own log only
    assert "log4j" in log.read_text()  # what Spark printed is kept


def test_bad_option_values_are_one_line_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--warehouse", str(tmp_path), "--run-date", "23/11/2026")
    assert code == 2 and err == "cfrec train: error: run date must be YYYY-MM-DD, got '23/11/2026'\n"
    code, _, err = run_cli(capsys, "train", "--warehouse", str(tmp_path), "--layers", "100,x")
    assert code == 2 and "--layers must be comma-separated sizes" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "quality", "--warehouse", str(tmp_path), "--max-reject-fraction", "2")
    assert code == 2 and "max reject fraction must be between 0 and 1" in err


@pytest.mark.parametrize("command", ["synth", "ingest", "train", "score", "run", "demo"])
def test_help_explains_every_option(command):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"cfrec {command} {action.option_strings[0]} has no help text"
    assert sub.format_help().startswith("usage: cfrec " + command)


def test_synth_writes_the_movielens_100k_layout(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "synth", "--dest", str(tmp_path), "--users", "50", "--items", "40", "--ratings", "600"
    )
    assert code == 0 and '"ratings": 600' in out
    data = (tmp_path / "u.data").read_text().splitlines()
    assert len(data) == 600
    pairs = {tuple(line.split("\t")[:2]) for line in data}
    assert len(pairs) == 600
    assert all(1 <= int(line.split("\t")[2]) <= 5 for line in data)
    items = (tmp_path / "u.item").read_bytes().decode("latin-1").splitlines()
    assert len(items) == 40 and all(len(line.split("|")) == 24 for line in items)


def test_paths_and_files_that_cannot_be_read_are_one_line(capsys, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ratings.csv.gz").write_bytes(b"not gzip at all")
    cases = [
        (
            [
                "ingest",
                "--source",
                "movielens-100k",
                "--input",
                str(tmp_path / "loop"),
                "--warehouse",
                str(tmp_path / "wh"),
            ],
            "input folder",
        ),
        (["train", "--warehouse", str(tmp_path / "loop")], "warehouse"),
        (
            [
                "ingest",
                "--source",
                "csv",
                "--input",
                str(tmp_path / "in"),
                "--ratings-file",
                "ratings.csv.gz",
                "--warehouse",
                str(tmp_path / "wh"),
            ],
            "ratings.csv.gz cannot be read",
        ),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
