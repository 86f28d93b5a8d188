"""Comparison statistics over configurations and runs (spec §7.3–§7.4): win rate, Pareto ranks, Spearman,
paired Wilcoxon and Friedman with the Nemenyi post-hoc. Undefined cases give NaN and a warning.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats

from layerinf.errors import LayerinfError

__all__ = ["friedman", "pareto_ranks", "spearman", "wilcoxon_paired", "win_rate"]


# ------------------------------------------------------------------------------- win rate and Pareto ranks


def win_rate(acc: Any, include_self: bool = False, ties: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Win rates of configurations over runs (spec §7.4). ``acc`` is (C configurations × R runs).

    F[c, c'] = fraction of runs where c strictly beats c' (+ ``ties`` × fraction of ties); F[c, c] = 0.
    win_rate = row sum / (C − 1), or / C with ``include_self=True`` ([C]'s numbers). wstd = row std of F
    including the diagonal, ddof = 1 ([C]). Returns (win_rate[C], F[C, C], wstd[C]).
    """
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise LayerinfError(f"win rates need a (configurations × runs) table with ≥ 2 rows, got {a.shape}",
                            "give at least two configurations and one run")
    if not np.all(np.isfinite(a)):
        raise LayerinfError("the accuracy table has missing or non-finite values",
                            "drop incomplete runs before computing win rates")
    diff = a[:, None, :] - a[None, :, :]
    F = (diff > 0).mean(axis=2) + float(ties) * (diff == 0).mean(axis=2)
    np.fill_diagonal(F, 0.0)
    C = a.shape[0]
    wr = F.sum(axis=1) / (C if include_self else C - 1)
    wstd = F.std(axis=1, ddof=1)
    return wr, F, wstd


def pareto_ranks(F: Any, tau: float) -> np.ndarray:
    """1-based Pareto front index of each configuration (spec §7.4).

    D = F where F > τ else 0 (diagonal 0); fitness = row of D; peel successive non-dominated fronts, where c is
    dominated by c'' if D[c''] ≥ D[c] element-wise and > somewhere.
    """
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2 or F.shape[0] != F.shape[1]:
        raise LayerinfError(f"pareto_ranks needs a square win matrix, got shape {F.shape}", "pass F from win_rate")
    D = np.where(F > tau, F, 0.0)
    np.fill_diagonal(D, 0.0)
    C = D.shape[0]
    ge = np.all(D[:, None, :] >= D[None, :, :], axis=2)  # ge[a, b]: D[a] ≥ D[b]
    gt = np.any(D[:, None, :] > D[None, :, :], axis=2)
    dominates = ge & gt  # dominates[a, b]: a dominates b
    ranks = np.zeros(C, dtype=np.int64)
    remaining = np.ones(C, dtype=bool)
    front = 0
    while remaining.any():
        front += 1
        dominated = (dominates[remaining][:, remaining]).any(axis=0)
        idx = np.flatnonzero(remaining)[~dominated]
        ranks[idx] = front
        remaining[idx] = False
    return ranks


# ------------------------------------------------------------------------------------------- statistics


def spearman(x: Any, y: Any) -> tuple[float, float]:
    """Spearman ρ and its two-sided p-value (scipy, average ranks; spec §7.3). Constant input → (NaN, NaN) + warning."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(x) != len(y):
        raise LayerinfError(f"spearman got series of lengths {len(x)} and {len(y)}", "pair the values up")
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        warnings.warn("spearman: a series is constant (or too short); the correlation is undefined",
                      RuntimeWarning, stacklevel=2)
        return float("nan"), float("nan")
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_paired(a: Any, b: Any) -> tuple[float, float]:
    """Paired Wilcoxon signed-rank test (scipy, two-sided; spec §7.4) → (statistic, p).

    All differences zero (or fewer than one pair) → (NaN, NaN) + warning.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise LayerinfError(f"wilcoxon_paired got {len(a)} and {len(b)} values", "pass paired samples")
    if len(a) == 0 or np.all(a == b):
        warnings.warn("wilcoxon: all paired differences are zero; the test is undefined", RuntimeWarning,
                      stacklevel=2)
        return float("nan"), float("nan")
    res = stats.wilcoxon(a, b)
    return float(res.statistic), float(res.pvalue)


def friedman(acc: Any, alpha: float = 0.05) -> dict[str, Any]:
    """Friedman χ² over configurations with runs as blocks, plus the Nemenyi post-hoc (spec §7.4).

    ``acc`` is (C configurations × R runs). Returns ``statistic``, ``pvalue``, ``avg_ranks`` (rank 1 = best
    accuracy within a run, ties averaged), ``cd`` (Nemenyi critical difference at ``alpha``:
    q_α/√2 · √(C(C+1)/(6R)) with q from the studentized range, df = ∞) and ``nemenyi_p`` (C × C p-values,
    as scikit-posthocs' ``posthoc_nemenyi_friedman``). Fewer than 3 configurations or 2 runs → NaNs + warning.
    """
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise LayerinfError("friedman needs a finite (configurations × runs) table", "drop incomplete runs")
    C, R = a.shape
    avg_ranks = stats.rankdata(-a, axis=0).mean(axis=1) if R else np.full(C, np.nan)
    out: dict[str, Any] = {"statistic": float("nan"), "pvalue": float("nan"), "avg_ranks": avg_ranks,
                           "cd": float("nan"), "nemenyi_p": np.full((C, C), np.nan)}
    if C < 3 or R < 2:
        warnings.warn("friedman: needs at least 3 configurations and 2 runs", RuntimeWarning, stacklevel=2)
        return out
    res = stats.friedmanchisquare(*a)
    out["statistic"], out["pvalue"] = float(res.statistic), float(res.pvalue)
    se = math.sqrt(C * (C + 1) / (6.0 * R))
    q_alpha = float(stats.studentized_range.ppf(1 - alpha, C, np.inf))
    out["cd"] = q_alpha / math.sqrt(2.0) * se
    q = np.abs(avg_ranks[:, None] - avg_ranks[None, :]) / se * math.sqrt(2.0)
    iu = np.triu_indices(C, 1)
    pvals = np.ones((C, C))
    pvals[iu] = np.clip(stats.studentized_range.sf(q[iu], C, np.inf), 0.0, 1.0)
    pvals[(iu[1], iu[0])] = pvals[iu]
    out["nemenyi_p"] = pvals
    return out
