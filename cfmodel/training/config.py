"""The training options of every model, and each model type's defaults.

Only the standard library is imported here: the command line and the DAGs build their options
from this class without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cfmodel.errors import CfrecError
from cfmodel.options import option

MODEL_TYPES = ("dot", "nn", "rank")
# What orders the published lists by default: a model trained for them (a rating model beside it
# fills the predicted ratings), as lists from a rating model fall below the most-popular list.
DEFAULT_MODEL = "rank"
SPLITS = ("random", "time")
RANKING_LOSSES = ("softmax", "bpr")
RATING_MODELS = ("dot", "nn", "none")
# The ranking model's item-item term is an [items, items] matrix: 64 MB and a second's solve at most.
ITEM_ITEM_MAX_ITEMS = 4096

# Per model type, the settings a field left at None takes. They were chosen on held-out parts of
# MovieLens 100k (a random fifth of u1.base, and ua), then checked on u1.test (README, "Models").
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "dot": dict(n_factors=50, epochs=6, lr=7e-3, wd=0.5, bias_wd=0.01, bs=256, patience=2),
    "nn": dict(n_factors=None, epochs=5, lr=5e-3, wd=0.5, bias_wd=0.5, bs=256, patience=2),
    # The ranking model runs its whole one-cycle schedule (patience 0): its validation metric falls
    # while the learning rate is high and climbs as it anneals. On MovieLens 100k it peaks in the
    # last epochs anyway; on planted data of a larger catalog (16,000 x 6,000, 2.5M ratings) a
    # patience of 5 kept the weights of the early peak, level with popularity (NDCG@10 0.339 vs
    # 0.338), where the whole schedule reaches 0.441 (bench/tune_rank.py --planted). Without
    # patience only the last epoch is validated; --patience N (N >= epochs) shows the whole curve.
    "rank": dict(n_factors=128, epochs=20, lr=2e-2, wd=1.0, bias_wd=1.0, bs=4096, patience=0),
}


def _per_model(name: str) -> str:
    return "default: " + ", ".join(f"{m} {MODEL_DEFAULTS[m][name]}" for m in MODEL_TYPES)


def _layers(value: str | list | tuple) -> tuple[int, ...]:
    """'100,50' (command line) or [100, 50] (DAG params) -> (100, 50)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(int(p) for p in parts if str(p).strip())
    except ValueError:
        raise CfrecError(f"--layers must be comma-separated sizes such as 100,50, got '{value}'") from None


def _y_range(value: str | list | tuple | None) -> tuple[float, float] | None:
    """'0 10', '0,10' or [0, 10] -> (0.0, 10.0); none -> None (the source's default)."""
    if value is None or str(value).lower() in ("none", ""):
        return None
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise CfrecError(f"--y-range must be two numbers LO HI, got '{value}'") from None
    if not low < high:
        raise CfrecError(f"--y-range must have LO < HI, got {low} {high}")
    return (low, high)


def _history_dropout(value: float | str | None) -> float | None:
    """A share in [0, 1); none means a learned vector per user instead of one from the history."""
    if value is None or str(value).lower() in ("none", ""):
        return None
    try:
        share = float(value)
    except ValueError:
        raise CfrecError(f"--history-dropout must be a number in [0, 1) or none, got '{value}'") from None
    if not 0.0 <= share < 1.0:
        raise CfrecError(f"--history-dropout must be in [0, 1), got {share}")
    return share


def _patience(value: int | str | None) -> int | None:
    """0 (or none) means never stop early; None leaves it to the model type's default."""
    if value is None or str(value) == "":
        return None
    if str(value).lower() == "none":
        return 0
    try:
        return int(value)
    except ValueError:
        raise CfrecError(f"patience must be a whole number, got '{value}'") from None


@dataclass
class TrainConfig:
    """Training options; a field left at None takes its model type's default (MODEL_DEFAULTS)."""

    model: str = option(
        DEFAULT_MODEL,
        "dot: fastai's EmbeddingDotBias; nn: fastai's EmbeddingNN; rank: the dot architecture trained for top-N lists",
        choices=MODEL_TYPES,
    )
    n_factors: int | None = option(None, f"embedding size ({_per_model('n_factors')}; None for nn = fastai's rule)")
    epochs: int | None = option(None, f"passes over the training set ({_per_model('epochs')})")
    lr: float | None = option(None, f"peak learning rate of the one-cycle schedule ({_per_model('lr')})")
    wd: float | None = option(None, f"AdamW decoupled weight decay ({_per_model('wd')})")
    bias_wd: float | None = option(None, f"weight decay of the per-user and per-item biases ({_per_model('bias_wd')})")
    bs: int | None = option(None, f"batch size ({_per_model('bs')})")
    valid_pct: float = option(0.2, "fraction of ratings held out for validation")
    split: str = option(
        "random", "hold out a random part (random) or each user's latest ratings (time)", choices=SPLITS
    )
    seed: int = option(42, "seed for the split, init and shuffling")
    patience: int | None = option(
        None,
        "stop after this many epochs without a better validation metric and keep the best epoch's weights "
        f"(0 = never stop early; {_per_model('patience')})",
        parse=_patience,
    )
    layers: tuple[int, ...] = option(
        (50,), "nn: hidden layer sizes (fastai's tutorial uses 100,50)", metavar="N,N,...", parse=_layers
    )
    ps: float = option(0.0, "nn: dropout after each hidden layer", flag="--dropout")
    embed_p: float = option(0.1, "nn: dropout on the embeddings", flag="--embed-dropout")
    use_bn: bool = option(True, "nn: no batch norm after the hidden layers", flag="--no-batch-norm", negate=True)
    loss: str = option("softmax", "rank: training objective", choices=RANKING_LOSSES)
    n_negatives: int = option(4096, "rank softmax: items sampled per batch; the whole catalog when it is smaller")
    min_rating: float | None = option(
        None, "rank: only ratings at or above this count as positives (default: every rating)"
    )
    weight_by_rating: bool = option(False, "rank: weight each positive by its rating")
    history_dropout: float | None = option(
        0.8,
        "rank: each user's vector is computed from the items the user rated, hiding this share of them at each "
        "training step so that the model learns to predict unseen items (none: learn a vector per user)",
        parse=_history_dropout,
    )
    item_item: float = option(
        0.25,
        "rank: weight of a closed-form item-item term (EASE) added to the model's scores, relative to their "
        f"spread (0: none; only on catalogs of at most {ITEM_ITEM_MAX_ITEMS} items)",
    )
    item_item_l2: float = option(500.0, "rank: L2 weight of the item-item term")
    rating_model: str = option(
        "dot",
        "rank: the rating model trained beside it, with its own defaults, for the predicted rating shown with "
        "each recommendation (none: no predicted ratings)",
        choices=RATING_MODELS,
    )
    refit: bool = option(
        True,
        "publish the validated model itself, not one fitted again on every rating for the epochs validation "
        "chose (the validated one is always kept for the gate)",
        flag="--no-refit",
        negate=True,
    )
    max_rank_users: int | None = option(
        10_000, "validation ranking metrics on at most this many users (0 = all)", parse=lambda v: int(v) or None
    )
    y_range: tuple[float, float] | None = option(
        None,
        "rating models: predictions are squashed into LO..HI (default: from the bottom of the source's scale, "
        "or 0, to an eighth of its span above the top, as in fastai's tutorials; published ratings are clipped "
        "to the scale)",
        metavar=("LO", "HI"),
        nargs=2,
        parse=_y_range,
    )
    mixed_precision: bool = option(
        True, "no bfloat16 autocast on CUDA (it is never used on the CPU)", flag="--no-mixed-precision", negate=True
    )

    def __post_init__(self) -> None:
        if self.model not in MODEL_TYPES:
            raise CfrecError(f"unknown model type '{self.model}' (known: {', '.join(MODEL_TYPES)})")
        self.layers = _layers(self.layers)
        self.y_range = _y_range(self.y_range)
        self.patience = _patience(self.patience)
        self.history_dropout = _history_dropout(self.history_dropout)
        for name, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.check()

    @classmethod
    def for_model(cls, model: str = DEFAULT_MODEL, **overrides: Any) -> TrainConfig:
        """The model's defaults, with every override that is not None applied."""
        return cls(model=model, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers)
        out["y_range"] = list(self.y_range) if self.y_range else None
        return out

    def check(self) -> None:
        for name in ("epochs", "bs"):
            if getattr(self, name) < 1:
                raise CfrecError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise CfrecError(f"lr must be positive, got {self.lr}")
        if self.wd < 0 or self.bias_wd < 0:
            raise CfrecError(f"weight decay must be >= 0, got wd={self.wd}, bias_wd={self.bias_wd}")
        if self.item_item < 0 or self.item_item_l2 <= 0:
            raise CfrecError(
                f"the item-item term needs a weight >= 0 and an L2 weight > 0, "
                f"got {self.item_item} and {self.item_item_l2}"
            )
        if self.n_factors is not None and self.n_factors < 1:
            raise CfrecError(f"n_factors must be at least 1, got {self.n_factors}")
        if self.patience < 0:
            raise CfrecError(f"patience must be 0 (never stop early) or more, got {self.patience}")
        if not 0.0 <= self.valid_pct < 1.0:
            raise CfrecError(f"valid_pct must be in [0, 1), got {self.valid_pct}")
        if self.split not in SPLITS:
            raise CfrecError(f"unknown split '{self.split}' (use {' or '.join(SPLITS)})")
        if self.loss not in RANKING_LOSSES:
            raise CfrecError(f"unknown ranking loss '{self.loss}' (use {' or '.join(RANKING_LOSSES)})")
