"""Aggregation of per-(module, validation) voter columns into one score per training sample (spec §4–§5).

Input layouts
-------------
* a list / iterable of per-module score matrices ``S^b`` of shape ``(m, n)`` (one per module in the group; an
  iterable is consumed once, module by module, so memory stays O(m·n) for one module at a time),
* a single ``(m, n)`` matrix (one module), or
* the score tensor ``T[n, B, m]`` (train, module, validation).

Every (module b, validation j) pair is one voter (spec §2.3). Output ``s ∈ R^n``: HIGHER = more helpful; the
filter removes the bottom. Non-finite input raises :class:`~layerinf.errors.LayerinfError`.

Validation filter (spec §4): ``correct`` is the mask of correctly predicted validation samples; ``use_correct``
True keeps only those voters, False keeps all, None follows the paper (Mean: all; Rank/Vote: correct only
when a mask is given). An empty correct set falls back to all validation samples with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from layerinf.errors import LayerinfError
from layerinf.ranks import TIE_METHODS, check_tie, rank_rows

__all__ = ["AGGREGATORS", "TIE_METHODS", "mean", "rank", "rank_rows", "select_validation",
           "vote", "vote_count"]

AGGREGATORS = ("mean", "rank", "vote")  # the built-ins; registry.AGGREGATORS also holds registered ones
DEFAULT_KAPPA = 0.30  # spec §5.3 / §11.2: κ as a fraction of n
_ROW_BLOCK = 256  # voter rows ranked at once (bounds the temporary to 256 × n)


# ------------------------------------------------------------------------------------------ input handling


def select_validation(correct: Any, m: int, use_correct: bool | None, aggregator: str = "mean") -> np.ndarray:
    """Indices of the validation samples whose voters count (spec §4).

    ``use_correct=None`` means the paper's rule: all for Mean, the correctly predicted for every other aggregator
    (``registry.aggregate`` passes a registered aggregator's own ``default_use_correct`` instead). An empty
    correct set falls back to all ``m`` samples with a warning.
    """
    if use_correct is None:
        use_correct = aggregator != "mean" and correct is not None
    if not use_correct:
        return np.arange(m)
    if correct is None:
        raise LayerinfError("use_correct=True needs the correct-prediction mask of the validation samples",
                            "pass correct=<bool array of length m> or use_correct=False")
    mask = np.asarray(correct, dtype=bool).reshape(-1)
    if mask.shape[0] != m:
        raise LayerinfError(f"the correct mask has {mask.shape[0]} entries but there are {m} validation samples",
                            "pass one flag per validation sample")
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        warnings.warn("no validation sample is predicted correctly; aggregating over all validation samples",
                      RuntimeWarning, stacklevel=3)
        return np.arange(m)
    return idx


def _module_matrices(scores: Any) -> Iterator[np.ndarray | torch.Tensor]:
    """Yield per-module (m × n) matrices from any accepted layout (lazily for iterables)."""
    if isinstance(scores, (np.ndarray, torch.Tensor)):
        if scores.ndim == 2:
            yield scores
            return
        if scores.ndim == 3:  # T[n, B, m]
            for b in range(scores.shape[1]):
                yield scores[:, b, :].T
            return
        raise LayerinfError(f"scores must be (m × n) matrices or T[n, B, m], got shape {tuple(scores.shape)}",
                            "pass a list of per-module validation × train matrices")
    if isinstance(scores, Iterable):
        for S in scores:
            if np.ndim(S) != 2:
                raise LayerinfError(f"a per-module score matrix has shape {np.shape(S)}, expected (m, n)",
                                    "pass validation × train matrices, one per module")
            yield S
        return
    raise LayerinfError(f"cannot aggregate {type(scores).__name__}", "pass a list of (m × n) score matrices")


def _voter_blocks(scores: Any, correct: Any, use_correct: bool | None, aggregator: str,
                  row_block: int | None = None) -> Iterator[torch.Tensor]:
    """Yield (voters × n) float64 blocks of the selected voter rows, module by module; checks finiteness/shape."""
    row_block = row_block or _ROW_BLOCK
    n = None
    rows = None
    any_module = False
    for S in _module_matrices(scores):
        any_module = True
        m_b, n_b = S.shape
        if n is None:
            n = n_b
            rows = select_validation(correct, m_b, use_correct, aggregator)
            m = m_b
        elif n_b != n or m_b != m:
            raise LayerinfError(f"per-module score matrices disagree in shape: {(m_b, n_b)} vs {(m, n)}",
                                "all modules of a group must share the validation and training samples")
        for a in range(0, len(rows), row_block):
            sel = rows[a : a + row_block]
            if isinstance(S, torch.Tensor):
                block = S[torch.from_numpy(sel)]
            else:
                block = torch.from_numpy(np.ascontiguousarray(S[sel]))
            if block.dtype not in (torch.float32, torch.float64):
                block = block.to(torch.float64)
            if not bool(torch.isfinite(block).all()):
                raise LayerinfError("the influence scores contain NaN or infinite values",
                                    "recompute the scores (check the gradients for overflow)")
            yield block
    if not any_module:
        raise LayerinfError("nothing to aggregate: the group has no modules", "check the layer group")


# ------------------------------------------------------------------------------------------------ ranking


def vote_count(R: Any, K: int) -> Any:
    """Linearly decaying bottom-K votes ``max(K − r, 0)`` for 0-based ranks r (spec §5.3)."""
    if isinstance(R, torch.Tensor):
        return torch.clamp(K - R, min=0)
    return np.maximum(K - np.asarray(R, dtype=np.float64), 0.0)


# ---------------------------------------------------------------------------------------------- aggregators


def mean(scores: Any, correct: Any = None, use_correct: bool | None = None) -> np.ndarray:
    """Mean over voters (spec §5.1): s_k = (1/P) Σ_p X_kp. Default: all validation samples."""
    total, P = None, 0
    for block in _voter_blocks(scores, correct, use_correct, "mean"):
        part = block.sum(dim=0, dtype=torch.float64)
        total = part if total is None else total + part
        P += block.shape[0]
    return (total / P).numpy()


def rank(scores: Any, correct: Any = None, use_correct: bool | None = None, tie_method: str = "min") -> np.ndarray:
    """Mean 0-based ascending rank over voters (spec §5.2); low = detrimental. Default: correct voters only."""
    check_tie(tie_method)
    total, P = None, 0
    for block in _voter_blocks(scores, correct, use_correct, "rank"):
        part = rank_rows(block, tie_method).sum(dim=0)
        total = part if total is None else total + part
        P += block.shape[0]
    return (total / P).numpy()


def vote(scores: Any, correct: Any = None, use_correct: bool | None = None, kappa: float = DEFAULT_KAPPA,
         tie_method: str = "min", normalize: bool = False) -> np.ndarray:
    """Vote (spec §5.3): s_k = −Σ_p max(K − r_kp, 0) with K = ⌊κ·n + 1e-9⌋; ``normalize`` divides by P.

    K = 0 gives all-zero scores and a warning; K ≥ n makes Vote order-equivalent to Rank.
    """
    check_tie(tie_method)
    if not (kappa >= 0 and math.isfinite(kappa)):
        raise LayerinfError(f"vote kappa must be a fraction ≥ 0, got {kappa}", "use e.g. 0.30 (30 % of n)")
    total, P, K = None, 0, None
    for block in _voter_blocks(scores, correct, use_correct, "vote"):
        if K is None:
            K = int(math.floor(kappa * block.shape[1] + 1e-9))
            if K == 0:
                warnings.warn(f"vote: K = ⌊κ·n⌋ = 0 (κ={kappa}, n={block.shape[1]}); all scores are 0",
                              RuntimeWarning, stacklevel=2)
        part = vote_count(rank_rows(block, tie_method), K).sum(dim=0)
        total = part if total is None else total + part
        P += block.shape[0]
    s = -total
    if normalize:
        s = s / P
    return (s + 0.0).numpy()  # + 0.0 turns −0.0 into 0.0
