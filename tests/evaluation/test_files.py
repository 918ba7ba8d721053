"""`cfrec evaluate`: reading rating files strictly, and the protocol on MovieLens 100k u1."""

import json

import pytest
from support import planted_choices

from cfmodel.cli import main
from cfmodel.errors import CfrecError
from cfmodel.evaluation.files import evaluate_files, read_ratings_file
from cfmodel.ingest.source_options import get_layout
from cfmodel.training.config import TrainConfig

RANKING_KEYS = {"precision@10", "recall@10", "ndcg@10", "map@10", "coverage@10"}


def write_split(tmp_path):
    ratings = planted_choices()
    lines = [f"{r.user_id[1:]}\t{r.item_id[1:]}\t{int(r.rating)}\t{r.timestamp}" for r in ratings.itertuples()]
    (tmp_path / "x.base").write_text("\n".join(lines[::2][:-1] + lines[1::2][: len(lines) // 4]) + "\n")
    (tmp_path / "x.test").write_text("\n".join(lines[1::2][len(lines) // 4 :] + ["5\t999\t3\t0"]) + "\n")
    return tmp_path / "x.base", tmp_path / "x.test"


def test_read_ratings_file_in_the_sources_layout(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t10\t5\t881250949\n2\t20\t3\t891717742\n")
    frame = read_ratings_file(path, get_layout("movielens-100k"))
    assert frame.to_dict("records") == [
        {"user_id": "1", "item_id": "10", "rating": 5.0, "timestamp": 881250949},
        {"user_id": "2", "item_id": "20", "rating": 3.0, "timestamp": 891717742},
    ]


def test_header_files_are_read_by_column_name(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("book_id,user_id,rating\n258,314,5\n4081,314,4\n")
    frame = read_ratings_file(path, get_layout("goodbooks"))
    assert frame[["user_id", "item_id", "rating"]].values.tolist() == [["314", "258", 5.0], ["314", "4081", 4.0]]


@pytest.mark.parametrize(
    "line, message",
    [
        ("3\t30\tfive\t1", "rating not numeric on line 2"),
        ("3\t30\t9\t1", "rating out of scale on line 2"),
        ("3\t\t4\t1", "missing item on line 2"),
        ("3\t30\t4\tyesterday", "timestamp not numeric on line 2"),
    ],
)
def test_bad_lines_are_errors_that_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.data"
    path.write_text("1\t10\t5\t1\n" + line + "\n")
    with pytest.raises(CfrecError, match=message):
        read_ratings_file(path, get_layout("movielens-100k"))


def test_evaluate_command_prints_one_json_line(tmp_path, capsys):
    train, test = write_split(tmp_path)
    assert (
        main(
            [
                "evaluate",
                "--source",
                "movielens-100k",
                "--train",
                str(train),
                "--test",
                str(test),
                "--model",
                "rank",
                "--epochs",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    assert RANKING_KEYS <= set(result) and "rmse" not in result
    assert result["model"] == "rank" and result["device"] == "cpu" and result["train_seconds"] > 0
    assert RANKING_KEYS <= set(result["popularity"]) and result["catalog"] == 61  # item 999 only in test
    assert result["config"]["valid_pct"] == 0.0 and result["epochs_run"] == 3


def test_missing_file_is_a_clear_cli_error(tmp_path, capsys):
    assert (
        main(["evaluate", "--source", "movielens-100k", "--train", str(tmp_path / "a"), "--test", str(tmp_path / "b")])
        == 2
    )
    assert "rating file" in capsys.readouterr().err


# The targets are measured on this split; each model here uses its default settings.
@pytest.mark.parametrize(
    "model, check",
    [
        ("dot", lambda r: r["rmse"] <= 0.915 and r["mae"] < 0.73),
        ("nn", lambda r: r["rmse"] <= 0.94),
        ("rank", lambda r: r["ndcg@10"] >= 0.45 and r["precision@10"] >= 0.40),
    ],
)
def test_default_models_on_movielens_u1(ml100k, model, check):
    result = evaluate_files(
        "movielens-100k",
        ml100k / "u1.base",
        ml100k / "u1.test",
        TrainConfig.for_model(model, valid_pct=0.0),
        device="cpu",
        progress=False,
    )
    assert result["users"] == 459 and result["test_rows"] == 20000 and result["catalog"] == 1682
    assert result["popularity"]["ndcg@10"] == pytest.approx(0.3254, abs=5e-4)
    assert check(result), {k: v for k, v in result.items() if k != "config"}
    if model != "rank":
        assert result["unseen_rows"] == 32  # u1.test ratings of items nobody rated in u1.base


@pytest.mark.parametrize("command", ["train", "evaluate", "lr-find", "fold-in", "interpret"])
def test_model_commands_explain_every_option(command):
    from cfmodel.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"cfrec {command} {action.option_strings[0]} has no help text"


def test_train_options_reach_the_config():
    from cfmodel.cli import build_parser
    from cfmodel.cli.models import train_config

    args = build_parser().parse_args(
        [
            "evaluate",
            "--source",
            "s",
            "--train",
            "a",
            "--test",
            "b",
            "--model",
            "nn",
            "--layers",
            "64,32",
            "--dropout",
            "0.1",
            "--epochs",
            "3",
            "--patience",
            "0",
        ]
    )
    config = train_config(args)
    assert (config.model, config.layers, config.ps, config.epochs, config.patience) == ("nn", (64, 32), 0.1, 3, 0)
    assert config.lr == TrainConfig(model="nn").lr and config.valid_pct == 0.0
    with pytest.raises(CfrecError, match="--layers must be comma-separated"):
        train_config(
            build_parser().parse_args(["evaluate", "--source", "s", "--train", "a", "--test", "b", "--layers", "x"])
        )


def test_one_file_is_split_by_each_users_latest_ratings_or_a_keyed_random_part(tmp_path, capsys):
    from cfmodel.evaluation.files import holdout_split
    from cfmodel.training.splits import id_keys, random_split

    ratings = planted_choices()
    train, test = holdout_split(ratings, "user-time", 0.2, seed=1)
    assert len(train) + len(test) == len(ratings) and not set(train.index) & set(test.index)
    latest_train = train.groupby("user_id")["timestamp"].max()
    earliest_test = test.groupby("user_id")["timestamp"].min()
    assert (earliest_test >= latest_train[earliest_test.index]).all()  # each user's latest are held out
    assert set(train["user_id"]) == set(ratings["user_id"])  # everyone keeps some to learn from
    once, twice = holdout_split(ratings, "random", 0.2, seed=1)[1], holdout_split(ratings, "random", 0.2, seed=1)[1]
    assert once.index.equals(twice.index) and 0.1 < len(once) / len(ratings) < 0.3
    assert not holdout_split(ratings, "random", 0.2, seed=2)[1].index.equals(once.index)
    # Training then holds out a validation part of what is left, with the same seed: a part of its
    # own, not the rows already held out (which would leave it empty).
    rest = holdout_split(ratings, "random", 0.2, seed=1)[0]
    valid_rows = random_split(id_keys(rest["user_id"].to_numpy()), id_keys(rest["item_id"].to_numpy()), 0.2, 1)[1]
    assert 0.1 < len(valid_rows) / len(rest) < 0.3

    folder = tmp_path / "ml"
    folder.mkdir()
    lines = [f"{r.user_id[1:]}\t{r.item_id[1:]}\t{int(r.rating)}\t{r.timestamp}" for r in ratings.itertuples()]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    argv = ["evaluate", "--source", "movielens-100k", "--input", str(folder), "--model", "dot", "--epochs", "1"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["holdout"] == "user-time" and result["test_rows"] == len(test)

    books = tmp_path / "books"
    books.mkdir()
    (books / "ratings.csv").write_text("user_id,book_id,rating\n1,10,5\n1,11,4\n2,10,3\n")
    assert main(["evaluate", "--source", "goodbooks", "--input", str(books)]) == 2
    assert "needs timestamps" in capsys.readouterr().err
    assert main(["evaluate", "--source", "goodbooks", "--input", str(books), "--train", str(books)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["evaluate", "--source", "goodbooks"]) == 2
    assert "--input PATH" in capsys.readouterr().err
