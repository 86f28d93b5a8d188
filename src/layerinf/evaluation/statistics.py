"""Comparison statistics over configurations and runs (spec §7.3–§7.4): win rate, Pareto ranks, Spearman,
paired Wilcoxon and Friedman with the Nemenyi post-hoc; and the uncertainty of one run's numbers: the Student
t-interval of a mean over repeated retrainings (:func:`t_interval`) and the bootstrap over training examples of
the detection metrics NDR@k, AUC-NDR and ROC-AUC (:func:`bootstrap_detection`, :func:`percentile_interval`).
Undefined cases give NaN and a warning.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats

from layerinf.errors import LayerinfError

__all__ = ["bootstrap_counts", "bootstrap_detection", "friedman", "pareto_ranks", "percentile_interval",
           "spearman", "t_interval", "wilcoxon_paired", "win_rate"]


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


# ------------------------------------------------------------------------------------------- uncertainty


def t_interval(values: Any, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the two-sided Student t confidence interval of the mean: t_{(1+level)/2, n−1} ·
    s / √n with the sample standard deviation s (ddof = 1). NaN values are ignored; returns (mean, half, n),
    the half-width NaN with fewer than two values (a single measurement has no interval)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(v[0]), float("nan"), 1
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return float(v.mean()), half, n


def bootstrap_counts(n: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """(B × n) multiplicities of B resamples of n items drawn with replacement (row b: how many times each item
    was drawn in resample b; every row sums to n). Draws ``rng.integers(0, n, (B, n))``."""
    idx = rng.integers(0, n, size=(B, n))
    flat = idx + (np.arange(B, dtype=np.int64) * n)[:, None]
    return np.bincount(flat.reshape(-1), minlength=B * n).reshape(B, n)


def _detection_block(W: np.ndarray, order: np.ndarray, mask: np.ndarray, K: int) -> tuple[np.ndarray, ...]:
    """NDR@K, AUC-NDR, ROC-AUC of B resamples given as multiplicities ``W`` (B × n), for one score order."""
    n = W.shape[1]
    Wo = W[:, order]  # multiplicities in filter order: the copies of one example are adjacent
    cum = np.cumsum(Wo, axis=1, dtype=np.int64)  # resample items up to each example (inclusive)
    noisy_pos = mask[order]
    Wn = Wo[:, noisy_pos].astype(np.float64)  # only noisy examples count below
    end = cum[:, noisy_pos].astype(np.float64)
    before = end - Wn  # items of the resample ahead of each noisy example's copies
    N = Wn.sum(axis=1)  # noisy items per resample
    C = n - N
    hits = np.clip(K - before, 0.0, Wn).sum(axis=1)  # noisy copies inside the first K items
    # Σ_t hits(t) over t = 1..n: a noisy copy at position p counts in n − p + 1 prefixes
    area = (Wn * (n + 1) - Wn * before - Wn * (Wn + 1) / 2).sum(axis=1)
    denom = N * (N + 1) / 2 + N * (n - N)  # Σ_t min(t, N)
    clean_ahead = end - np.cumsum(Wn, axis=1)  # clean items ahead of each noisy example
    pairs = (Wn * (C[:, None] - clean_ahead)).sum(axis=1)  # (noisy, clean) pairs, the noisy one removed first
    with np.errstate(divide="ignore", invalid="ignore"):
        ndr = np.where(N > 0, hits / N, np.nan)
        auc_ndr = np.where(N > 0, area / denom, np.nan)
        roc = np.where((N > 0) & (C > 0), pairs / (N * C), np.nan)
    return ndr, auc_ndr, roc


def bootstrap_detection(scores: Any, noisy: Any, *, B: int = 1000, seed: int = 0, k: float = 0.30,
                        max_cells: int = 4_000_000) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the detection metrics of one or several score columns (spec §7.1 metrics).

    ``scores`` is (n,) or (n × C), higher = more helpful; ``noisy`` the (n,) noise mask. Each of ``B`` resamples
    draws n training examples with replacement (seeded by ``seed``; the same resamples for every column, so
    columns are compared on the same data) and recomputes, per column, NDR@k (``k`` of the resample removed),
    AUC-NDR and ROC-AUC, exactly as :func:`~layerinf.evaluation.detection.ndr_at`, ``auc_ndr`` and ``roc_auc``
    (``ties="stable"``) would on the resampled examples, ties broken by training index as in the filter order
    (copies of one example sit together). Vectorised: resamples are multiplicity matrices, processed in blocks
    of at most ``max_cells`` entries. A resample without noisy (or, for ROC-AUC, clean) examples gives NaN.

    Returns ``{"ndr": (B × C), "auc_ndr": (B × C), "roc_auc": (B × C)}`` (C = 1 for a 1-D ``scores``).
    """
    from layerinf.evaluation.detection import _noise_mask, filter_order, removal_count

    S = np.asarray(scores, dtype=np.float64)
    S = S.reshape(-1, 1) if S.ndim == 1 else S
    if S.ndim != 2:
        raise LayerinfError(f"bootstrap_detection needs (n,) or (n × C) scores, got shape {S.shape}",
                            "pass one score column per configuration")
    n, n_cols = S.shape
    mask = _noise_mask(noisy, n)
    if B < 1 or n < 1:
        raise LayerinfError(f"the bootstrap needs B ≥ 1 resamples of n ≥ 1 examples (got B={B}, n={n})",
                            "use e.g. B=1000")
    orders = [filter_order(S[:, c]) for c in range(n_cols)]
    K = removal_count(k, n)
    out = {name: np.empty((B, n_cols)) for name in ("ndr", "auc_ndr", "roc_auc")}
    rng = np.random.default_rng(seed)
    block = max(1, min(B, max_cells // max(n, 1)))
    for start in range(0, B, block):
        stop = min(B, start + block)
        W = bootstrap_counts(n, stop - start, rng).astype(np.int32)
        for c, order in enumerate(orders):
            ndr, auc, roc = _detection_block(W, order, mask, K)
            out["ndr"][start:stop, c], out["auc_ndr"][start:stop, c], out["roc_auc"][start:stop, c] = ndr, auc, roc
    return out


def percentile_interval(replicates: Any, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap interval: the (1 − level)/2 and (1 + level)/2 quantiles of the replicates along
    ``axis``, NaN replicates ignored (all NaN → NaN)."""
    r = np.asarray(replicates, dtype=np.float64)
    q = [100 * (0.5 - level / 2), 100 * (0.5 + level / 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column gives NaN, as documented
        lo, hi = np.nanpercentile(r, q, axis=axis)
    return lo, hi
