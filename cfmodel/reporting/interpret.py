"""Reading a trained model, as fastai's collab tutorial does.

- Item biases: which items are liked (or disliked) beyond what their raters' tastes explain,
  among the most-rated items, beside their mean rating.
- PCA of item vectors: three principal components over the most-rated items, the items at each
  end of each component, and a scatter PNG of the most popular ones labelled with titles.
- Nearest items by cosine similarity of their vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfmodel.errors import CfrecError
from cfmodel.registry.artifact import ModelArtifact
from cfmodel.registry.registry import ModelRegistry
from cfmodel.reporting import plots
from cfmodel.scoring.similar import unit_vectors
from cfmodel.scoring.topk import top_k
from cfmodel.warehouse import Warehouse
from cfmodel.warehouse.schemas import RATINGS


def item_stats(wh: Warehouse, trained: ModelArtifact) -> pd.DataFrame:
    """Per model item (in index order): item_id, title (the id when unknown), ratings (count), mean_rating."""
    ratings = pd.read_parquet(wh.require(RATINGS), columns=["item_id", "rating"])
    stats = ratings.groupby("item_id")["rating"].agg(ratings="count", mean_rating="mean")
    frame = pd.DataFrame({"item_id": trained.items.ids}).join(stats, on="item_id")
    frame["ratings"] = frame["ratings"].fillna(0).astype(np.int64)
    frame["title"] = pd.Series(wh.titles(trained.items.ids), dtype=object).fillna(frame["item_id"])
    return frame


def most_rated(stats: pd.DataFrame, n: int) -> np.ndarray:
    """Indices of the `n` most-rated items (ties: lower index first)."""
    order = np.lexsort((np.arange(len(stats)), -stats["ratings"].to_numpy()))
    rated = order[stats["ratings"].to_numpy()[order] > 0]
    return rated[:n]


def bias_extremes(trained: ModelArtifact, stats: pd.DataFrame, rows: np.ndarray, n: int) -> dict | None:
    """The `n` lowest and highest item biases among `rows`; None for a model without item biases."""
    if "i_bias" not in trained.model.item_tables:
        return None
    bias = trained.factors()["item_bias"][rows]
    table = stats.iloc[rows].assign(bias=bias).sort_values("bias")
    pick = lambda part: [  # noqa: E731
        {
            "item_id": r.item_id,
            "title": r.title,
            "bias": round(float(r.bias), 4),
            "mean_rating": round(float(r.mean_rating), 3),
            "ratings": int(r.ratings),
        }
        for r in part.itertuples()
    ]
    return {"lowest": pick(table.head(n)), "highest": pick(table.tail(n).iloc[::-1])}


def pca(vectors: np.ndarray, n_components: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates [n, k], explained variance ratio [k]) of centred `vectors`; each component's
    sign is fixed so its largest loading is positive, for stable output across runs."""
    centred = vectors - vectors.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    k = min(n_components, components.shape[0])
    components = components[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components *= signs[:, None]
    variance = singular**2
    return centred @ components.T, variance[:k] / variance.sum()


def similar_items(trained: ModelArtifact, stats: pd.DataFrame, item_id: str, n: int = 10) -> list[dict]:
    """The `n` items whose vectors have the highest cosine similarity to `item_id`'s."""
    index = int(trained.items.encode([item_id])[0])
    if index < 0:
        raise CfrecError(f"item '{item_id}' is not known to model {trained.version}")
    unit = unit_vectors(trained.factors()["item_vectors"])
    untrained = np.flatnonzero(stats["ratings"].to_numpy() == 0)  # rows nobody rated are noise
    best, cosine = top_k(torch.as_tensor(unit[[index]] @ unit.T), n, np.array([0]), np.array([index]), untrained)
    return [
        {"item_id": stats.item_id.iat[i], "title": stats.title.iat[i], "cosine": round(float(c), 4)}
        for i, c in zip(best[0], cosine[0])
        if i >= 0
    ]


def interpret(
    warehouse: str | Path,
    version: str | None = None,
    out_dir: str | Path | None = None,
    n: int = 15,
    popular: int = 1000,
    plot_items: int = 50,
    similar_to: list[str] | None = None,
) -> dict:
    """Item biases, item PCA and nearest items of a saved model; the PCA scatter goes to
    `out_dir`/item_pca.png (default WAREHOUSE/interpret/<version>/)."""
    wh = Warehouse.open(warehouse)
    trained = ModelRegistry(wh.models).load(version)
    stats = item_stats(wh, trained)
    rows = most_rated(stats, popular)
    if len(rows) < 3:
        raise CfrecError(f"model {trained.version} has fewer than 3 rated items: nothing to interpret")
    coords, explained = pca(trained.factors()["item_vectors"][rows].astype(np.float64))
    components = []
    for c in range(coords.shape[1]):
        order = np.argsort(coords[:, c], kind="stable")
        ends = lambda idx: [stats.title.iat[rows[i]] for i in idx]  # noqa: E731
        components.append(
            {
                "component": c + 1,
                "explained_variance": round(float(explained[c]), 4),
                "lowest": ends(order[:n]),
                "highest": ends(order[::-1][:n]),
            }
        )
    out = Path(out_dir) if out_dir else wh.root / "interpret" / trained.version
    out.mkdir(parents=True, exist_ok=True)
    shown = np.arange(min(plot_items, len(rows)))  # rows are most-rated first
    png = out / "item_pca.png"
    png.write_bytes(
        plots.scatter_png(
            coords[shown, 0],
            coords[shown, 1] if coords.shape[1] > 1 else np.zeros(len(shown)),
            [stats.title.iat[rows[i]] for i in shown],
            "component 1",
            "component 2",
            f"{trained.version}: item vectors of the {len(shown)} most-rated items",
        )
    )
    return {
        "model_version": trained.version,
        "items_considered": int(len(rows)),
        "item_bias": bias_extremes(trained, stats, rows, n),
        "pca": components,
        "pca_plot": str(png),
        "similar": {item: similar_items(trained, stats, item, n) for item in (similar_to or [])},
    }
