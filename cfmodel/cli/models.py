"""Commands that make and read models: train, evaluate, lr-find, fold-in, interpret."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cfmodel import options
from cfmodel.cli.data import add_night, add_warehouse, night_of
from cfmodel.config import GateConfig, ScoreConfig, TrainRun
from cfmodel.errors import CfrecError
from cfmodel.evaluation import HOLDOUTS
from cfmodel.training.config import TrainConfig

# The `TrainRun` options of the commands that train the nightly model.
TRAIN_RUN_OPTIONS = ("device", "warm_start", "version_suffix", "nproc", "launcher")


def add_train_arguments(p: argparse.ArgumentParser, run_options: tuple[str, ...] = ("device",), **defaults) -> None:
    """The model's options (their defaults depend on --model) and the given options of `TrainRun`."""
    group = p.add_argument_group("model and training (defaults depend on --model)")
    options.add_arguments(group, TrainConfig, defaults=defaults)
    options.add_arguments(group, TrainRun, only=run_options)


def train_config(args: argparse.Namespace) -> TrainConfig:
    return options.from_namespace(TrainConfig, args)


def cmd_train(args: argparse.Namespace) -> dict:
    """Train a candidate (data-parallel with --nproc), then put it through the gate, as the nightly DAG does."""
    from cfmodel import pipeline

    night, run = night_of(args), options.from_namespace(TrainRun, args)
    candidate = pipeline.train(night, train_config(args), run)
    decision = pipeline.gate(night, candidate.version, options.from_namespace(GateConfig, args))
    return {"train": candidate, "gate": decision, "processes": run.nproc}


def cmd_evaluate(args: argparse.Namespace) -> None:
    from cfmodel.evaluation.files import evaluate_files, evaluate_source

    device = options.from_namespace(TrainRun, args).device
    if args.input is not None:
        if args.train is not None or args.test is not None:
            raise CfrecError("give either --input (split by --holdout) or --train and --test, not both")
        result = evaluate_source(args.source, args.input, args.holdout, train_config(args), args.holdout_pct, device)
    elif args.train is None or args.test is None:
        raise CfrecError("give --train FILE and --test FILE, or --input PATH to split one rating file")
    else:
        result = evaluate_files(args.source, args.train, args.test, train_config(args), device=device)
    print(json.dumps(result, default=str))


def cmd_lr_find(args: argparse.Namespace) -> dict:
    from cfmodel.training.lr_find import lr_find_on_warehouse

    device = options.from_namespace(TrainRun, args).device
    found = lr_find_on_warehouse(args.warehouse, train_config(args), device, args.start_lr, args.end_lr, args.num_it)
    plot = Path(args.plot).expanduser()
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot.write_bytes(found.png())
    return {
        "model": found.model,
        "suggested_lr": found.suggested,
        "suggestions": found.suggestions,
        "steps": len(found.lrs),
        "plot": str(plot),
    }


def cmd_fold_in(args: argparse.Namespace) -> dict:
    from cfmodel.scoring.foldin import fold_in_file

    top_n = options.from_namespace(ScoreConfig, args).top_n
    return fold_in_file(args.warehouse, args.ratings, args.model_version, top_n, args.l2, args.out)


def cmd_interpret(args: argparse.Namespace) -> dict:
    from cfmodel.reporting.interpret import interpret

    return interpret(
        args.warehouse,
        args.model_version,
        args.out,
        n=args.n,
        popular=args.popular,
        plot_items=args.plot_items,
        similar_to=args.similar_to,
    )


def _add_model_version(p: argparse.ArgumentParser, what: str = "model to use") -> None:
    p.add_argument("--model-version", default=None, help=f"{what} (default: the current one)")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fit an embedding model (dot, nn or rank) on the ratings table (PyTorch)",
        description="Fit a model (--model dot, nn or rank) on the warehouse's ratings, hold out a part "
        "for validation, and save a versioned artifact WAREHOUSE/models/MODEL-RUN_DATE with "
        "the hold-out metrics of the model and the most-popular baseline; the model gate "
        "then decides whether it becomes current, as in the nightly DAG.",
    )
    add_night(p)
    add_train_arguments(p, run_options=TRAIN_RUN_OPTIONS)
    options.add_arguments(p.add_argument_group("model gate"), GateConfig)
    p.set_defaults(func=cmd_train)


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="train on one rating file, measure on another (rmse and top-10 metrics)",
        description="Fit a model on --train and print one JSON line of its metrics on --test (or on a "
        "part --holdout takes out of --input): rmse and "
        "mae (rating models), precision, recall, NDCG, MAP and coverage at 10 (every user "
        "with a test rating; candidates = items the user did not rate in train), beside "
        "the most-popular baseline's.",
    )
    p.add_argument("--source", required=True, help="layout of the rating files, e.g. movielens-100k")
    p.add_argument("--train", metavar="FILE", help="ratings to train on, e.g. ml-100k/u1.base")
    p.add_argument("--test", metavar="FILE", help="ratings to measure on, e.g. ml-100k/u1.test")
    p.add_argument(
        "--input", metavar="PATH", help="instead of --train/--test: one rating file (or a folder holding the source's)"
    )
    p.add_argument(
        "--holdout",
        choices=HOLDOUTS,
        default="user-time",
        help="with --input: measure on each user's latest ratings (user-time, the default) or a random part",
    )
    p.add_argument("--holdout-pct", type=float, default=0.2, help="with --input: the share held out (default 0.2)")
    add_train_arguments(p, valid_pct=0.0)
    p.set_defaults(func=cmd_evaluate)


def add_lr_find(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lr-find",
        help="sweep the learning rate on the ratings table and plot loss against it",
        description="fastai's learning-rate finder on the warehouse's ratings (training part): "
        "writes the loss-vs-learning-rate plot and prints the suggested rate.",
    )
    add_warehouse(p)
    add_train_arguments(p)
    p.add_argument(
        "--plot", default="lr_find.png", metavar="PNG", help="where to write the plot (default ./lr_find.png)"
    )
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--num-it", type=int, default=100, help="batches in the sweep (default 100)")
    p.set_defaults(func=cmd_lr_find)


def add_fold_in(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fold-in",
        help="recommend to new users from a few of their ratings, without retraining",
        description="Fit a vector for each user in --ratings with the model's item vectors held "
        "fixed, and print (or write) their top-N items. Rows naming items the model does "
        "not know are listed as rejects with a reason.",
    )
    add_warehouse(p)
    p.add_argument("--ratings", required=True, metavar="FILE", help="CSV or TSV with a header: user_id,item_id,rating")
    _add_model_version(p)
    # A few users: every item is scored exactly, so there is no candidate shortlist to size.
    options.add_arguments(p, ScoreConfig, only=("top_n",))
    p.add_argument(
        "--l2",
        type=float,
        default=None,
        help="pull of each new vector towards zero (default: dot 0.05, nn 0.05, rank 0.2)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the recommendations here (.parquet or .csv) instead of printing them",
    )
    p.set_defaults(func=cmd_fold_in)


def add_interpret(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpret",
        help="item biases, PCA of item vectors (PNG) and nearest items of a model",
        description="What a trained model learned: items liked or disliked beyond their raters' tastes "
        "(biases), the three main directions of the item vectors with a labelled scatter "
        "plot, and nearest items by cosine similarity.",
    )
    add_warehouse(p)
    _add_model_version(p, "model to read")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="folder for item_pca.png (default WAREHOUSE/interpret/VERSION)"
    )
    p.add_argument("--n", type=int, default=15, help="items listed per end of each ranking (default 15)")
    p.add_argument("--popular", type=int, default=1000, help="consider the N most-rated items (default 1000)")
    p.add_argument("--plot-items", type=int, default=50, help="most-rated items labelled in the scatter (default 50)")
    p.add_argument(
        "--similar-to", nargs="*", default=None, metavar="ITEM_ID", help="list the nearest items of these items"
    )
    p.set_defaults(func=cmd_interpret)


def register(sub: argparse._SubParsersAction) -> None:
    add_train(sub)
    add_evaluate(sub)
    add_lr_find(sub)
    add_fold_in(sub)
    add_interpret(sub)
