"""Masked top-k: the best k columns of each row of a score block, never a masked cell.

The one selection routine behind the recommendations, the evaluation of every model and of the
popularity baseline, fold-in, similar items and model interpretation. Masks come as (row, column)
cells, e.g. each user's rated items, and as whole columns masked for every row, e.g. items nobody
rated. Selection runs on torch's `topk` on the block's own device, several times faster than
numpy's argpartition on wide rows; results come back as numpy.
"""

from __future__ import annotations

import numpy as np
import torch


def csr_cells(offsets: np.ndarray, values: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row column lists in CSR form (offsets into one flat array, as a Parquet or Arrow list
    column gives them) -> (row, column) cells, keeping only columns inside the block.

    Columns beyond `n_columns` exist in the catalog but not in the model (items that appeared after
    training), so the model cannot rank them and there is nothing to mask.
    """
    offsets = np.asarray(offsets, np.int64)
    values = np.asarray(values, np.int64)[offsets[0] : offsets[-1]]
    rows = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    inside = (values >= 0) & (values < n_columns)
    return rows[inside], values[inside]


def mask(
    block: torch.Tensor, rows: np.ndarray | None, cols: np.ndarray | None, masked_columns: np.ndarray | None
) -> None:
    """Set the cells (`rows[j]`, `cols[j]`) and every column in `masked_columns` of `block` to -inf."""
    device = block.device
    if rows is not None and len(rows):
        block[
            torch.as_tensor(np.asarray(rows, np.int64), device=device),
            torch.as_tensor(np.asarray(cols, np.int64), device=device),
        ] = -torch.inf
    if masked_columns is not None and len(masked_columns):
        block[:, torch.as_tensor(np.asarray(masked_columns, np.int64), device=device)] = -torch.inf


def top_k(
    scores: torch.Tensor | np.ndarray,
    k: int,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    masked_columns: np.ndarray | None = None,
    refuse_nan: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` columns per row of `scores` ([rows, columns], higher is better), skipping the
    masked cells (`rows[j]`, `cols[j]`) and every column in `masked_columns`.

    Returns (columns int64, values float32), each [rows, min(k, columns)], best first. Where a row
    has fewer than k candidates the tail holds column -1 and value NaN. `scores` may be modified in
    place. A NaN score is refused (ValueError) unless `refuse_nan` is False, when it ranks first,
    as `torch.topk` orders it.
    """
    # Inference mode lets the in-place mask write into blocks a model produced under inference mode.
    with torch.inference_mode():
        block = torch.as_tensor(scores)
        if block.dtype != torch.float32:
            block = block.float()
        mask(block, rows, cols, masked_columns)
        k = min(k, block.shape[1])
        if k == 0:
            return np.empty((block.shape[0], 0), np.int64), np.empty((block.shape[0], 0), np.float32)
        values, columns = torch.topk(block, k, dim=1, largest=True, sorted=True)
        values, columns = values.cpu().numpy().copy(), columns.cpu().numpy().astype(np.int64)
    # topk orders NaN above everything, so a NaN anywhere in a row's candidates shows up here.
    if refuse_nan and np.isnan(values).any():
        raise ValueError("the model produced NaN scores; refusing to rank them")
    missing = np.isneginf(values)
    values[missing] = np.nan
    columns[missing] = -1
    return columns, values
