"""Ranks of scores within each row, one definition for all (ground floor: any package may import it).

The Rank and Vote aggregators (``influence.aggregate``) and the layer-wise noise-rank diagnostic
(``evaluation.detection.noise_rank``) rank with :func:`rank_rows`, so a diagnostic's ranks are the aggregator's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from layerinf.errors import LayerinfError

TIE_METHODS = ("min", "average", "ordinal")


def check_tie(tie_method: str) -> str:
    if tie_method not in TIE_METHODS:
        raise LayerinfError(f"unknown tie method '{tie_method}'", f"use one of {', '.join(TIE_METHODS)}")
    return tie_method


def rank_rows(X: Any, tie_method: str = "min") -> np.ndarray | torch.Tensor:
    """0-based ascending ranks within each ROW of X (each row = one voter over n training samples), spec §5.2.

    ``"min"``: #{k' : x_k' < x_k} (the paper formula); ``"average"``: mean 0-based rank of the tie block;
    ``"ordinal"``: stable, ties broken by ascending training index. Returns float64 (numpy for numpy input).
    """
    check_tie(tie_method)
    is_torch = isinstance(X, torch.Tensor)
    Xn = X.detach().cpu().numpy() if is_torch else np.asarray(X)
    if Xn.dtype not in (np.float32, np.float64):
        Xn = Xn.astype(np.float64)
    squeeze = Xn.ndim == 1
    if squeeze:
        Xn = Xn[None, :]
    rows, n = Xn.shape
    # min/average ranks depend only on the tie blocks, so the fast (unstable, SIMD) argsort suffices there
    order = np.argsort(Xn, axis=1, kind="stable" if tie_method == "ordinal" else None)
    pos = np.broadcast_to(np.arange(n, dtype=np.float64), (rows, n))
    if tie_method == "ordinal" or n == 0:
        ranks_sorted = pos
    else:
        vals = np.take_along_axis(Xn, order, axis=1)
        differs = vals[:, 1:] != vals[:, :-1]
        first = np.ones((rows, n), dtype=bool)
        first[:, 1:] = differs
        ranks_sorted = np.maximum.accumulate(np.where(first, pos, 0.0), axis=1)  # tie-block start = "min"
        if tie_method == "average":
            last = np.ones((rows, n), dtype=bool)
            last[:, :-1] = differs
            end = np.minimum.accumulate(np.where(last, pos, float(n))[:, ::-1], axis=1)[:, ::-1]
            ranks_sorted = (ranks_sorted + end) / 2.0
    R = np.empty((rows, n), dtype=np.float64)
    np.put_along_axis(R, order, ranks_sorted, axis=1)
    if squeeze:
        R = R[0]
    return torch.from_numpy(R) if is_torch else R
