"""Exact top-k of dot-product models, screened in bfloat16.

A model that ranks by `u . v + b` (`CollabModel.ranking_factors`) is first scored in bfloat16,
which processors with AMX or AVX512-BF16 (and GPUs) multiply several times faster than float32.
Each user keeps the best `k + SCREEN_MARGIN` items of that screen (found by `chunked_top_k`), which
are scored again in float32; the best k of those are the list.

Why the lists stay exact: bfloat16 keeps 8 significant bits, so rounding a number moves it by at
most eps = 2^-8 of itself. The screen rounds each factor and the bias once, sums the products in
float32 and rounds the sum once, so its score of any item differs from the exact one by at most
about 3 eps (|u| |v| + |b|) (Cauchy-Schwarz bounds the sum of |u_j v_j| by |u| |v|);
`ROUNDING_BOUND` = 2^-6 = 4 eps leaves room for the float32 sums. An item the screen left out
scored at most the last screened score, hence exactly at most that plus the bound. When the
user's k-th exact score is above that, no item left out can be in the list. Users for whom it
is not (near-ties around the k-th place) are scored again over every item in float32, so every
list is the one float32 scoring gives.
"""

from __future__ import annotations

import numpy as np
import torch

from cfmodel.scoring.topk import mask, top_k
from cfmodel.training.models import CollabModel

SCREEN_MARGIN = 54  # screened items beyond k: 64 for a top 10
ROUNDING_BOUND = 2.0**-6
# A block of users held at once in the screen: small enough that its bfloat16 scores stay in cache.
SCREEN_USERS_PER_BLOCK = 128
# Screened columns per chunk of `chunked_top_k`.
CHUNK = 4


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether this device multiplies bfloat16 faster than float32 (elsewhere it is slower)."""
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return device.type == "cpu" and (amx() or avx512_bf16())


def screens(model: CollabModel, k: int) -> bool:
    """Whether `screened_top_k` serves this model's lists of k: a dot-product model, a catalog far
    wider than the screen, and hardware where bfloat16 pays."""
    factors = model.ranking_factors()
    return factors is not None and (k + SCREEN_MARGIN) * 4 <= model.n_items and bfloat16_is_fast(factors[1].device)


def _screen_tables(model: CollabModel) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The items in bfloat16, padded to whole chunks (`chunked_top_k`) with items scoring -inf."""
    _, items, bias = model.ranking_factors()
    width = -(-len(items) // CHUNK) * CHUNK
    items16 = torch.zeros((width, items.shape[1]), dtype=torch.bfloat16, device=items.device)
    bias16 = torch.full((width,), -torch.inf, dtype=torch.bfloat16, device=items.device)
    items16[: len(items)], bias16[: len(items)] = items, bias
    return items16, bias16, float(items.norm(dim=1).max()), float(bias.abs().max())


def chunked_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.topk(scores, k, dim=1)` for rows a whole number of CHUNKs wide: the same values, best
    first; where scores tie, the columns may be other columns of the same score.

    A full-row top-k copies and partially sorts every (score, column) pair. Here the columns are
    cut into chunks (chunk c: columns c, c + chunks, c + 2 chunks, ..., so that the chunks' maxima
    are one vectorised pass), and only the k chunks with the highest maxima are searched. Every
    score above the row's k-th best is the maximum of its chunk or below it, so fewer than k chunks
    have a maximum above the k-th best, and all of them are searched: the k best values are found."""
    rows, width = scores.shape
    chunks = width // CHUNK
    if chunks < 4 * k:
        return torch.topk(scores, k, dim=1)
    strided = scores.view(rows, CHUNK, chunks)
    _, best_chunks = torch.topk(strided.amax(dim=1), k, dim=1)
    candidates = strided.gather(2, best_chunks[:, None, :].expand(rows, CHUNK, k)).reshape(rows, CHUNK * k)
    values, at = torch.topk(candidates, k, dim=1)
    return values, torch.div(at, k, rounding_mode="floor") * chunks + best_chunks.gather(1, at % k)


def screened_top_k(
    model: CollabModel,
    users: torch.Tensor,
    k: int,
    rows: np.ndarray,
    cols: np.ndarray,
    masked_columns: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`top_k(model.ranking_scores(users), k, rows, cols, masked_columns)`, computed through the
    bfloat16 screen (call only where `screens(model, k)`)."""
    user_table, items, bias = model.ranking_factors()
    tables = model.once_per_weights("bfloat16 screen", lambda: _screen_tables(model))
    items16, bias16, largest_item, largest_bias = tables
    with torch.inference_mode():
        vectors = user_table[users]
        screen = torch.addmm(bias16, vectors.bfloat16(), items16.T)
        mask(screen, rows, cols, masked_columns)
        screened, picked = chunked_top_k(screen, k + SCREEN_MARGIN)
        picked.clamp_(max=len(items) - 1)  # padding columns: -inf, like masked ones, and dropped as they are
        exact = torch.bmm(items[picked], vectors[:, :, None])[:, :, 0] + bias[picked]
        exact[torch.isneginf(screened)] = -torch.inf  # masked: fewer items left than screened
        values, order = torch.topk(exact, k, dim=1)
        columns = picked.gather(1, order)
        last = screened[:, -1].float()
        bound = ROUNDING_BOUND * (vectors.norm(dim=1) * largest_item + largest_bias)
        unsure = ~(torch.isneginf(last) | (values[:, -1] > last + bound)) | exact.isnan().any(dim=1)
        columns, values, unsure = columns.cpu().numpy().copy(), values.cpu().numpy().copy(), unsure.cpu().numpy()
    missing = np.isneginf(values)
    values[missing], columns[missing] = np.nan, -1
    again = np.flatnonzero(unsure)
    if len(again):
        # Near-ties at the k-th place (or NaN scores, which top_k refuses): every item in float32.
        position = np.full(len(users), -1)
        position[again] = np.arange(len(again))
        keep = position[rows] >= 0
        columns[again], values[again] = top_k(
            model.ranking_scores(users[torch.as_tensor(again, device=users.device)]),
            k,
            position[rows[keep]],
            cols[keep],
            masked_columns,
        )
    return columns, values
