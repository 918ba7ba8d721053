"""`cfrec evaluate`: train on one rating file, measure on another (or on a part held out of one
file), by the ranking protocol.

Protocol (as in cfmodel.evaluation.holdout): the catalog is every item of either file; users = every user
with at least one test rating; candidates = the catalog minus the items that user rated in train
and minus items nobody rated in train; relevant = the user's test items (any rating); top 10 by
score. Rating models also report rmse and mae over the test ratings whose user and item appear in
train (the rest are counted, never silently dropped). The model trains on the whole train file
unless `valid_pct` carves a validation part out of it (for early stopping); the test file is
never used for any decision.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cfmodel.errors import CfrecError
from cfmodel.evaluation import HOLDOUTS
from cfmodel.ingest.layouts import SourceLayout
from cfmodel.ingest.source_options import get_layout
from cfmodel.training.config import TrainConfig
from cfmodel.training.ids import IdIndex
from cfmodel.training.interactions import Interactions

log = logging.getLogger(__name__)


def _column(frame: pd.DataFrame, column: str | int, path: Path, what: str) -> pd.Series:
    try:
        return frame[column] if isinstance(column, str) else frame.iloc[:, column]
    except (KeyError, IndexError):
        raise CfrecError(f"{path}: no {what} column '{column}'") from None


def read_ratings_file(path: str | Path, layout: SourceLayout) -> pd.DataFrame:
    """A rating file in `layout` (cfmodel.ingest.layouts.SourceLayout) -> user_id, item_id, rating[, timestamp].

    Strict: a line that does not give a user, an item and a numeric rating within the source's
    scale is an error naming its line, since an evaluation on silently thinned data would mislead.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CfrecError(f"rating file {path} does not exist")
    spec = layout.ratings
    if spec.text is None:
        raw = pd.read_parquet(path)
        first_line = 0
    else:
        text = spec.text
        try:
            raw = pd.read_csv(
                path,
                sep=text.sep,
                header=0 if text.header else None,
                dtype=str,
                keep_default_na=False,
                encoding=text.encoding,
                engine="python" if len(text.sep) > 1 else "c",
                quoting=0 if text.quoted else 3,
            )
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise CfrecError(
                f"{path}: cannot be read as the {layout.name} layout: {str(exc).splitlines()[0]}"
            ) from None
        first_line = 2 if text.header else 1
    frame = pd.DataFrame(
        {
            "user_id": _column(raw, spec.user, path, "user").astype(str).str.strip(),
            "item_id": _column(raw, spec.item, path, "item").astype(str).str.strip(),
            "rating": pd.to_numeric(_column(raw, spec.rating, path, "rating"), errors="coerce"),
        }
    )
    if spec.timestamp is not None:
        frame["timestamp"] = pd.to_numeric(_column(raw, spec.timestamp, path, "timestamp"), errors="coerce")
    scale = layout.scale
    problems = {
        "missing user": frame["user_id"].isin(["", "nan"]),
        "missing item": frame["item_id"].isin(["", "nan"]),
        "rating not numeric": frame["rating"].isna(),
        "rating out of scale": (frame["rating"] < scale.min) | (frame["rating"] > scale.max) if scale.known else None,
        "timestamp not numeric": frame["timestamp"].isna() if "timestamp" in frame else None,
    }
    for reason, bad in problems.items():
        if bad is not None and bad.any():
            where = np.flatnonzero(bad.to_numpy())
            raise CfrecError(f"{path}: {reason} on line {where[0] + first_line} ({len(where)} such lines)")
    if frame.empty:
        raise CfrecError(f"rating file {path} holds no ratings")
    if "timestamp" in frame:
        frame["timestamp"] = frame["timestamp"].astype(np.int64)
    return frame


def _interactions(frame: pd.DataFrame, users: IdIndex, items: IdIndex) -> Interactions:
    ts = frame["timestamp"].to_numpy() if "timestamp" in frame else None
    return Interactions(users.encode(frame["user_id"]), items.encode(frame["item_id"]), frame["rating"].to_numpy(), ts)


def evaluate_frames(
    train: pd.DataFrame,
    test: pd.DataFrame,
    config: TrainConfig,
    device: str = "auto",
    scale: tuple[float, float] | None = None,
    progress: bool | None = None,
) -> dict:
    """Fit `config.model` on `train` and measure it and the most-popular baseline on `test`."""
    from cfmodel.evaluation.holdout import holdout_metrics
    from cfmodel.training.loop import fit, resolve_device
    from cfmodel.training.models import default_y_range, model_for
    from cfmodel.training.splits import id_keys, split

    dev = resolve_device(device)
    users = IdIndex.from_values(pd.concat([train["user_id"], test["user_id"]]))
    items = IdIndex.from_values(pd.concat([train["item_id"], test["item_id"]]))
    train_data, test_data = _interactions(train, users, items), _interactions(test, users, items)
    scale = scale or (float(train["rating"].min()), float(train["rating"].max()))
    model = model_for(config, len(users), len(items), config.y_range or default_y_range(*scale))
    fit_data, valid = train_data, None
    if config.valid_pct > 0:
        keys = (id_keys(users.ids), id_keys(items.ids))
        fit_data, valid = split(train_data, config.valid_pct, config.seed, config.split, keys)
    result = fit(model, fit_data, valid, config, dev, progress)
    measured = holdout_metrics(model, train_data, test_data, len(items), device=dev)
    return {
        "model": config.model,
        **measured["model"],
        "train_seconds": round(result.seconds, 3),
        "device": str(dev),
        "epochs_run": len(result.history),
        "train_rows": len(train_data),
        "test_rows": len(test_data),
        "catalog": len(items),
        "popularity": measured["popularity"],
        "config": config.as_dict(),
    }


def evaluate_files(
    source: str,
    train_path: str | Path,
    test_path: str | Path,
    config: TrainConfig,
    device: str = "auto",
    progress: bool | None = None,
) -> dict:
    layout = get_layout(source)
    train, test = read_ratings_file(train_path, layout), read_ratings_file(test_path, layout)
    return evaluate_frames(train, test, config, device, layout.scale.bounds, progress)


def holdout_split(ratings: pd.DataFrame, holdout: str, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) of one rating file: each user's latest `share` of ratings (`user-time`; a
    user keeps at least one in train, ties in time go by file order), or a random `share` chosen
    by a seeded hash of (user, item) (`random`), independent of the validation split that training
    then draws from the rest. A time split without timestamps is refused."""
    from cfmodel.training.splits import HOLDOUT_STREAM, id_keys, latest_split, random_split

    if holdout == "user-time":
        if "timestamp" not in ratings:
            raise CfrecError("--holdout user-time needs timestamps, and this source records none: use --holdout random")
        train_rows, test_rows = latest_split(
            IdIndex.from_values(ratings["user_id"]).encode(ratings["user_id"]), ratings["timestamp"].to_numpy(), share
        )
    elif holdout == "random":
        keys = (id_keys(ratings["user_id"].to_numpy()), id_keys(ratings["item_id"].to_numpy()))
        train_rows, test_rows = random_split(*keys, share, seed, HOLDOUT_STREAM)
    else:
        raise CfrecError(f"unknown hold-out '{holdout}' (use {' or '.join(HOLDOUTS)})")
    return ratings.iloc[train_rows], ratings.iloc[test_rows]


def ratings_path(source: str, path: str | Path) -> Path:
    """A rating file, or the one the source's layout names inside a folder."""
    from cfmodel.ingest.planning import find_files

    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    layout = get_layout(source)
    files = find_files(path, layout.ratings.pattern)
    if len(files) != 1:
        found = "none" if not files else f"{len(files)}"
        raise CfrecError(f"{path}: expected one {layout.ratings.pattern} of the {layout.name} layout, found {found}")
    return files[0].path


def evaluate_source(
    source: str,
    input_path: str | Path,
    holdout: str,
    config: TrainConfig,
    share: float = 0.2,
    device: str = "auto",
    progress: bool | None = None,
) -> dict:
    """Split one rating file by `holdout` and evaluate on the part held out."""
    layout = get_layout(source)
    ratings = read_ratings_file(ratings_path(source, input_path), layout)
    train, test = holdout_split(ratings, holdout, share, config.seed)
    return {"holdout": holdout, **evaluate_frames(train, test, config, device, layout.scale.bounds, progress)}
